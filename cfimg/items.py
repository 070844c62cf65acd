"""Items (listings): one verdict per item from the p_counterfeit of its photos.

Analysts judge listings, not photos: a listing has several photos and a counterfeit may show its
cue in only one of them. Photos are grouped into items by the dataset layer's item rule
(cfimg.data.sources.item_id_rule: the file name with its view suffix stripped, or what
`group_regex` captures, prefixed by the photo's folder), or by a manifest's `item_id` column
(`items_from`; rows without one, and photos it does not list, fall back to the file-name rule,
as the dataset layer does). An item's p_counterfeit combines its photos' by one of ITEM_RULES:

- max: the most suspicious photo decides;
- mean_logit: the mean of the photos' counterfeit log-odds, back through the sigmoid;
- noisy_or: 1 - prod(1 - p), the chance that at least one photo shows a counterfeit.

The item's verdict is the model card's (ModelCard.item_verdict: its item threshold, else its
photo rule). `write_items_file` turns a `cfimg predict` result file into an items file, CSV or
JSONL by suffix (items_path_for: the results' own, CSV beside other formats), most suspicious
item first. `cfimg eval` measures the rules (cfimg.evaluate.items) and fits the item threshold.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

import numpy as np

from cfimg.card import DEFAULT_ITEM_RULE, ModelCard, verdict_at
from cfimg.data.sources import item_id_rule
from cfimg.errors import UsageError
from cfimg.fileio import atomic_write_bytes
from cfimg.results import VERDICT_ERROR, read_results

_ENCODING, _ERRORS = "utf-8", "surrogateescape"  # as result files: any file name round-trips
ITEM_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}  # items files are small: text formats only
_LOGIT_LIMIT = 30.0  # the log-odds of p = 0 or 1 (saturated float32 scores), kept finite


def _max(p: np.ndarray) -> float:
    return float(p.max())


def _mean_logit(p: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        log_odds = np.clip(np.log(p) - np.log1p(-p), -_LOGIT_LIMIT, _LOGIT_LIMIT)
    return float(1.0 / (1.0 + np.exp(-np.mean(log_odds))))


def _noisy_or(p: np.ndarray) -> float:
    return float(-np.expm1(np.sum(np.log1p(-np.clip(p, 0.0, 1.0)))))


ITEM_RULES: dict[str, Callable[[np.ndarray], float]] = {
    "max": _max,
    "mean_logit": _mean_logit,
    "noisy_or": _noisy_or,
}


def check_item_rule(rule: str) -> str:
    """`rule` if it is one of ITEM_RULES, else a UsageError naming the allowed ones."""
    if rule not in ITEM_RULES:
        raise UsageError(f"unknown item rule {rule!r}; use one of {', '.join(ITEM_RULES)}")
    return rule


def aggregate(p_counterfeit: Sequence[float] | np.ndarray, rule: str) -> float:
    """One item's p_counterfeit from its photos' (at least one) by `rule`."""
    p = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("an item needs at least one scored photo")
    return ITEM_RULES[check_item_rule(rule)](p)


def group_indices(keys: Iterable[str]) -> dict[str, list[int]]:
    """The positions of each distinct key, keys in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return groups


# -- which photo belongs to which item ------------------------------------------------------


def photo_item_id(path: str, rule: Callable[[str], str]) -> str:
    """The item of a photo by file name: its folder, then `rule` of its name (the dataset
    layer's derived item id)."""
    folder, name = os.path.split(path)
    return f"{folder}/{rule(name)}" if folder else rule(name)


def read_item_ids(manifest_path: str | Path) -> dict[str, str]:
    """{absolute photo path: item_id} of a CSV manifest with `path` and `item_id` columns
    (paths relative to the CSV, as in cfimg.data); rows with an empty item_id are left out."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise UsageError(f"{manifest_path}: items manifest not found")
    try:
        with open(manifest_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = {name: (name or "").strip().lower() for name in reader.fieldnames or []}
            missing = [c for c in ("path", "item_id") if c not in columns.values()]
            if missing:
                raise UsageError(
                    f"{manifest_path}: no {' or '.join(missing)} column, so it cannot group "
                    f"photos into items (found: {', '.join(columns.values()) or 'nothing'})"
                )
            item_ids = {}
            for raw in reader:
                row = {columns[k]: (v or "").strip() for k, v in raw.items() if k in columns}
                if row.get("path") and row.get("item_id"):
                    relative = row["path"].replace("\\", "/")
                    item_ids[os.path.abspath(manifest_path.parent / relative)] = row["item_id"]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{manifest_path}: not a readable CSV manifest ({exc})") from None
    return item_ids


def item_grouper(
    group_regex: str | None = None, items_from: str | Path | None = None
) -> Callable[[str], tuple[str, bool]]:
    """path -> (item id, whether the manifest listed it); see the module docstring."""
    rule = item_id_rule(group_regex)
    listed = read_item_ids(items_from) if items_from is not None else {}

    def item_of(path: str) -> tuple[str, bool]:
        item_id = listed.get(os.path.abspath(path)) if listed else None
        return (item_id, True) if item_id else (photo_item_id(path, rule), False)

    return item_of


# -- items from a result file ---------------------------------------------------------------


@dataclass(frozen=True)
class ItemRow:
    """One item's outcome. `n_photos` counts all its photos, `n_failed` those that could not be
    scored; an item with no scored photo has verdict "error" and p_counterfeit None.
    `photo_paths` lists its photos, most suspicious first (failed ones last)."""

    item_id: str
    n_photos: int
    n_failed: int
    p_counterfeit: float | None
    verdict: str
    threshold: float  # the item threshold the verdict used
    rule: str
    most_suspicious_path: str
    photo_paths: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["photo_paths"] = list(self.photo_paths)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ItemRow:
        """From a CSV row (all strings; photo_paths as a JSON list) or a JSONL object."""
        paths = values.get("photo_paths") or []
        p = values.get("p_counterfeit")
        return cls(
            item_id=str(values["item_id"]),
            n_photos=int(values["n_photos"]),
            n_failed=int(values["n_failed"]),
            p_counterfeit=None if p in (None, "") else float(p),
            verdict=str(values["verdict"]),
            threshold=float(values["threshold"]),
            rule=str(values["rule"]),
            most_suspicious_path=str(values.get("most_suspicious_path") or ""),
            photo_paths=tuple(json.loads(paths) if isinstance(paths, str) else paths),
        )


ITEM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ItemRow))


@dataclass
class _Photos:
    scored: list[tuple[float, str]] = field(default_factory=list)  # (p_counterfeit, path)
    failed: list[str] = field(default_factory=list)


def items_of_results(
    results_path: str | Path,
    item_of: Callable[[str], tuple[str, bool]],
    rule: str,
    verdict: Callable[[float], str],
    threshold: float,
) -> tuple[list[ItemRow], int]:
    """The items of a result file, most suspicious first (no-score items last), and how many
    photos the items manifest did not list."""
    photos: dict[str, _Photos] = {}
    unlisted = 0
    for row in read_results(results_path):
        item_id, was_listed = item_of(row.path)
        unlisted += not was_listed
        entry = photos.setdefault(item_id, _Photos())
        if row.failed or row.p_counterfeit is None:
            entry.failed.append(row.path)
        else:
            entry.scored.append((row.p_counterfeit, row.path))
    items = [_item_row(key, entry, rule, verdict, threshold) for key, entry in photos.items()]
    items.sort(key=lambda item: (item.p_counterfeit is None, -(item.p_counterfeit or 0.0)))
    return items, unlisted


def _item_row(item_id: str, entry: _Photos, rule: str, verdict, threshold) -> ItemRow:
    ranked = sorted(entry.scored, key=lambda scored: -scored[0])  # stable: file order in ties
    paths = (*(path for _, path in ranked), *entry.failed)
    p_item = aggregate([p for p, _ in ranked], rule) if ranked else None
    return ItemRow(
        item_id=item_id,
        n_photos=len(paths),
        n_failed=len(entry.failed),
        p_counterfeit=p_item,
        verdict=verdict(p_item) if p_item is not None else VERDICT_ERROR,
        threshold=threshold,
        rule=rule,
        most_suspicious_path=ranked[0][1] if ranked else "",
        photo_paths=paths,
    )


def items_format(items_path: str | Path) -> str:
    """'csv' or 'jsonl', by the items file's suffix; any other is a UsageError."""
    suffix = Path(items_path).suffix.lower()
    if suffix not in ITEM_FORMATS:
        allowed = " or ".join(ITEM_FORMATS)
        got = suffix or "no suffix"
        raise UsageError(f"{items_path}: an items file ends in {allowed} (got {got!r})")
    return ITEM_FORMATS[suffix]


def encode_items(items: Iterable[ItemRow], fmt: str) -> bytes:
    """An items file's bytes: CSV (a header, photo_paths as a JSON list) or JSONL."""
    if fmt == "jsonl":
        text = "".join(json.dumps(item.to_dict(), ensure_ascii=False) + "\n" for item in items)
        return text.encode(_ENCODING, _ERRORS)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ITEM_FIELDS)
    for item in items:
        values = ["" if value is None else value for value in astuple(item)]
        values[-1] = json.dumps(list(item.photo_paths), ensure_ascii=False)
        writer.writerow(values)
    return buffer.getvalue().encode(_ENCODING, _ERRORS)


def read_items(items_path: str | Path) -> Iterator[ItemRow]:
    """The rows of an items file written by `write_items_file`."""
    items_path = Path(items_path)
    fmt = items_format(items_path)
    if not items_path.is_file():
        raise UsageError(f"{items_path}: items file not found")
    with open(items_path, encoding=_ENCODING, errors=_ERRORS, newline="") as handle:
        records = (
            (json.loads(line) for line in handle if line.strip())
            if fmt == "jsonl"
            else csv.DictReader(handle)
        )
        try:
            for values in records:
                yield ItemRow.from_dict(values)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{items_path}: not a cfimg items file ({exc})") from None


def items_path_for(results_path: str | Path) -> Path:
    """Where the items of a result file go by default: results.csv -> results.items.csv,
    results.jsonl -> results.items.jsonl (and, for other result formats, .items.csv)."""
    results_path = Path(results_path)
    suffix = results_path.suffix if results_path.suffix.lower() in ITEM_FORMATS else ".csv"
    return results_path.with_name(f"{results_path.stem}.items{suffix}")


@dataclass(frozen=True)
class ItemsSummary:
    items_path: Path
    rule: str
    threshold: float  # the item threshold used (the photo threshold when none was fitted)
    n_items: int
    n_photos: int
    n_failed_photos: int
    n_unlisted: int  # photos the --items-from manifest did not list (grouped by file name)
    verdict_counts: dict[str, int]  # over items; "error": items without a scored photo


def write_items_file(
    results_path: str | Path,
    items_path: str | Path,
    card_or_threshold: ModelCard | float,
    rule: str | None = None,
    group_regex: str | None = None,
    items_from: str | Path | None = None,
) -> ItemsSummary:
    """Group the photo rows of a `cfimg predict` result file into items and write one row per
    item (see ItemRow) to `items_path` (.csv or .jsonl; see items_path_for), atomically, most
    suspicious first.

    Verdicts come from the card (ModelCard.item_verdict) or, given a number, from that
    threshold (as `cfimg predict --threshold` overrides the card's). `rule` None: the card's
    item_rule (DEFAULT_ITEM_RULE with a bare threshold); another rule than the card's does not
    use the card's item threshold (it was fitted for that rule) but its photo rule. UsageError
    for an unknown rule, a missing results file, or a manifest that cannot group photos.
    """
    fmt = items_format(items_path)
    card = card_or_threshold if isinstance(card_or_threshold, ModelCard) else None
    rule = check_item_rule(rule or (card.item_rule if card else DEFAULT_ITEM_RULE))
    if not Path(results_path).is_file():
        raise UsageError(f"{results_path}: result file not found, so there are no items to write")
    if Path(items_path).resolve() == Path(results_path).resolve():
        raise UsageError(f"{items_path}: the items file cannot replace the result file")
    if card is not None and rule != card.item_rule:
        card = card.updated(item_threshold=None)  # fitted for the card's rule, not this one
    if card is not None:
        verdict = card.item_verdict
        threshold = card.threshold if card.item_threshold is None else card.item_threshold
    else:
        threshold = float(card_or_threshold)

        def verdict(p_item: float) -> str:
            return verdict_at(p_item, threshold)

    item_of = item_grouper(group_regex, items_from)
    items, unlisted = items_of_results(results_path, item_of, rule, verdict, threshold)
    atomic_write_bytes(items_path, encode_items(items, fmt))
    return ItemsSummary(
        items_path=Path(items_path),
        rule=rule,
        threshold=threshold,
        n_items=len(items),
        n_photos=sum(item.n_photos for item in items),
        n_failed_photos=sum(item.n_failed for item in items),
        n_unlisted=unlisted if items_from is not None else 0,
        verdict_counts=dict(Counter(item.verdict for item in items)),
    )
