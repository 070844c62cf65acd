"""Dataset checks: what would make training on a dataset fail (blockers) or mislead (warnings).

Byte-identical files, items whose photos sit in more than one split, items with both labels,
files that do not decode, and per-class counts per split, category and brand. `check_dataset`
runs them all the way training would see the data and returns the `DatasetReport` that
`cfimg data check` prints.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cfimg.data.sources import SPLIT_NAMES, Sample, detect_layout, file_size_bytes, load_samples
from cfimg.data.splits import assign_splits, check_fractions, dataset_fingerprint, required_splits
from cfimg.errors import ImageLoadError
from cfimg.imageio import DEFAULT_MAX_PIXELS, load_rgb
from cfimg.labels import CLASS_NAMES


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with identical bytes; `splits` and `labels` are per path, in the same order."""

    sha256: str
    paths: tuple[str, ...]
    splits: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def crosses_splits(self) -> bool:
        """The same photo in two splits: test accuracy measures memory, not skill."""
        return len({split for split in self.splits if split}) > 1

    @property
    def conflicting_labels(self) -> bool:
        return len(set(self.labels)) > 1


def find_duplicates(samples: Sequence[Sample]) -> list[DuplicateGroup]:
    """Groups of byte-identical files. Only files sharing a size are hashed, so a dataset
    without duplicates costs one stat per file. Cross-split groups come first."""
    by_size: dict[int, list[Sample]] = defaultdict(list)
    for sample in {sample.path: sample for sample in samples}.values():
        size = file_size_bytes(sample.path)
        if size > 0:
            by_size[size].append(sample)
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for sample in same_size:
                digest = _sha256_file(sample.path)
                if digest:
                    by_digest[digest].append(sample)
    groups = [
        DuplicateGroup(
            sha256=digest,
            paths=tuple(sample.path for sample in members),
            splits=tuple(sample.split for sample in members),
            labels=tuple(sample.label for sample in members),
        )
        for digest, members in by_digest.items()
        if len(members) > 1
    ]
    return sorted(groups, key=lambda group: (not group.crosses_splits, group.paths))


def _sha256_file(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None  # reported as unreadable by the image check
    return digest.hexdigest()


def find_item_leaks(samples: Sequence[Sample]) -> dict[str, tuple[str, ...]]:
    """Items whose photos sit in more than one split, with those splits (given splits only can
    leak: `assign_splits` never does)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        if sample.split:
            splits[sample.item_key].add(sample.split)
    return {
        key: tuple(name for name in SPLIT_NAMES if name in found)
        for key, found in sorted(splits.items())
        if len(found) > 1
    }


def find_mixed_label_items(samples: Sequence[Sample]) -> list[str]:
    """Item ids with photos labelled both genuine and counterfeit: one of them is mislabelled."""
    labels: dict[str, set[int]] = defaultdict(set)
    for sample in samples:
        labels[sample.item_key].add(sample.label)
    return sorted(key for key, found in labels.items() if len(found) > 1)


def verify_images(
    samples: Sequence[Sample],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
) -> dict[str, str]:
    """Decode every image (JPEGs at reduced scale) and return {path: reason} for failures.

    Threads, because Pillow releases the GIL while decoding."""
    paths = sorted({sample.path for sample in samples})
    workers = workers or min(4, os.cpu_count() or 1)

    def failure(path: str) -> str | None:
        try:
            load_rgb(path, max_pixels=max_pixels, min_side_px=64)
        except ImageLoadError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(failure, paths))
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason}


def split_readable(
    samples: Sequence[Sample], unreadable: Iterable[str]
) -> tuple[list[Sample], list[Sample]]:
    """(readable, unreadable) samples. Split only the readable ones, as training does, so a
    broken file never takes the one val or test slot of a small class."""
    skipped = set(unreadable)
    readable = [sample for sample in samples if sample.path not in skipped]
    return readable, [sample for sample in samples if sample.path in skipped]


def training_blockers(
    samples: Sequence[Sample],
    *,
    unreadable: Iterable[str] = (),
    required: Sequence[str] = ("train", "val"),
) -> list[str]:
    """Reasons training on these samples (with splits assigned) would fail; empty when it can
    go ahead. Unreadable files are left out of the counts, as training skips them."""
    readable, _ = split_readable(samples, unreadable)
    if not readable:
        return ["no readable images"]
    present = {sample.label for sample in readable}
    missing = [CLASS_NAMES[label] for label in range(len(CLASS_NAMES)) if label not in present]
    if missing:
        return [f"no {name} images" for name in missing]
    blockers = []
    for split in required:
        labels = {sample.label for sample in readable if sample.split == split}
        if not labels:
            blockers.append(f"the {split} split is empty")
            continue
        blockers.extend(
            f"the {split} split has no {name} images"
            for label, name in enumerate(CLASS_NAMES)
            if label not in labels
        )
    return blockers


@dataclass(frozen=True)
class CountRow:
    """Images and items per class (CLASS_NAMES order) for one split, category or brand."""

    name: str
    images: tuple[int, ...]
    items: tuple[int, ...]

    @property
    def total_images(self) -> int:
        return sum(self.images)

    @property
    def imbalance(self) -> float:
        """Largest class over smallest, in images; inf when a class is absent."""
        smallest = min(self.images)
        return max(self.images) / smallest if smallest else float("inf")


def count_rows(samples: Sequence[Sample], by: str) -> list[CountRow]:
    """Counts grouped by a Sample field ('split', 'category' or 'brand'); splits in train, val,
    test order, other values sorted."""
    images: dict[str, list[int]] = defaultdict(lambda: [0] * len(CLASS_NAMES))
    items: dict[str, list[set[str]]] = defaultdict(lambda: [set() for _ in CLASS_NAMES])
    for sample in samples:
        value = getattr(sample, by)
        images[value][sample.label] += 1
        items[value][sample.label].add(sample.item_key)
    order = SPLIT_NAMES if by == "split" else ()
    names = [name for name in order if name in images] + sorted(set(images) - set(order))
    return [
        CountRow(name, tuple(images[name]), tuple(len(found) for found in items[name]))
        for name in names
    ]


@dataclass
class DatasetReport:
    """Everything `cfimg data check` shows; `blockers` empty means training can go ahead."""

    source: str
    layout: str
    samples: list[Sample]
    splits_given: bool
    unreadable: dict[str, str]
    duplicates: list[DuplicateGroup]
    item_leaks: dict[str, tuple[str, ...]]
    mixed_label_items: list[str]
    fingerprint: str
    blockers: list[str]
    warnings: list[str]

    @property
    def trainable(self) -> bool:
        return not self.blockers

    @property
    def readable_samples(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.path not in self.unreadable]

    @property
    def item_count(self) -> int:
        return len({sample.item_key for sample in self.samples})


def check_dataset(
    source: str | Path,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
    group_regex: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    workers: int | None = None,
) -> DatasetReport:
    """Load `source`, decode every image (unless verify=False), split the readable ones as
    training should (`split_readable`, then `assign_splits`) and collect what would make training
    fail (blockers) or mislead (warnings). The fingerprint covers the readable samples."""
    check_fractions(val_frac, test_frac)
    loaded = load_samples(source, group_regex=group_regex)
    splits_given = all(sample.split for sample in loaded)
    unreadable = verify_images(loaded, max_pixels=max_pixels, workers=workers) if verify else {}
    usable, skipped = split_readable(loaded, unreadable)
    usable = assign_splits(usable, val_frac=val_frac, test_frac=test_frac, seed=seed)
    samples = sorted(usable + skipped, key=lambda sample: sample.path)
    required = required_splits(splits_given=splits_given, val_frac=val_frac, test_frac=test_frac)
    report = DatasetReport(
        source=str(source),
        layout=detect_layout(source),
        samples=samples,
        splits_given=splits_given,
        unreadable=unreadable,
        duplicates=find_duplicates(samples),
        item_leaks=find_item_leaks(samples) if splits_given else {},
        mixed_label_items=find_mixed_label_items(samples),
        fingerprint=dataset_fingerprint(usable),
        blockers=training_blockers(samples, unreadable=unreadable, required=required),
        warnings=[],
    )
    report.warnings = dataset_warnings(report)
    return report


def dataset_warnings(report: DatasetReport) -> list[str]:
    """Problems that do not stop training but make its numbers wrong or weak."""
    warnings = []
    if report.unreadable:
        warnings.append(f"{len(report.unreadable)} unreadable file(s) will be skipped")
    leaking = [group for group in report.duplicates if group.crosses_splits]
    if leaking:
        warnings.append(f"{len(leaking)} identical file group(s) span splits (leak)")
    if report.item_leaks:
        warnings.append(f"{len(report.item_leaks)} item(s) have photos in more than one split")
    if any(group.conflicting_labels for group in report.duplicates):
        warnings.append("identical files carry different labels")
    if report.mixed_label_items:
        warnings.append(f"{len(report.mixed_label_items)} item(s) have both labels")
    readable = report.readable_samples
    warnings.extend(_imbalance_warnings(readable))
    warnings.extend(_shortcut_warnings(readable))
    if report.splits_given and not any(sample.split == "test" for sample in readable):
        warnings.append("no test split: final metrics will come from the val split")
    return warnings


def _imbalance_warnings(samples: Sequence[Sample]) -> list[str]:
    rows = [row for row in count_rows(samples, "split") if row.name == "train"]
    if rows and 3.0 <= rows[0].imbalance < float("inf"):
        counts = ", ".join(
            f"{n} {name}" for name, n in zip(CLASS_NAMES, rows[0].images, strict=True)
        )
        return [f"train classes are imbalanced {rows[0].imbalance:.1f}:1 ({counts})"]
    return []


def _shortcut_warnings(samples: Sequence[Sample]) -> list[str]:
    """A category seen in one class only lets a model learn 'watch means fake' instead of cues."""
    warnings = []
    for row in count_rows(samples, "category"):
        if row.name and min(row.images) == 0 and len(CLASS_NAMES) > 1:
            only = CLASS_NAMES[row.images.index(max(row.images))]
            warnings.append(
                f"category {row.name!r} has only {only} images: the model may learn the "
                "category instead of the cues"
            )
    return warnings
