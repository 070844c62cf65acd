"""Dataset sources (folder tree, split folders, CSV manifest), grouped splits and dataset checks.

Class names and their order live in cfimg.labels.

Sources `load_samples` reads:
- a folder tree ROOT/<label>/**, where the folders below the label folder are metadata:
  ROOT/<label>/<category>/<brand>/<item>/.../photo.jpg (every level optional; a third level of
  folders, and anything deeper, names the item: all photos in it are one physical item);
- split folders ROOT/{train,val,test}/<label>/** (aliases: training, valid, validation, testing);
- a CSV manifest with columns path,label and optional category,brand,item_id,split (paths
  relative to the CSV; other columns are kept in `Sample.extra`); a folder holding manifest.csv
  is read through it. `write_split_csv` writes this format, so a run's split.csv reads back.

Items: photos of one physical item must never be split between train and test, or accuracy is
inflated by the model recognising the item. Unless the manifest gives `item_id`, the item is
derived from the file name: the first group of `group_regex` when it matches, otherwise the stem
with a trailing view suffix ("_1", "-2", " (3)": one or two digits) stripped. Derived ids are
prefixed by the file's folder (below the split folder), so "IMG_1.jpg" in two folders are two
items while "bag7_1.jpg" and "bag7_2.jpg" in one folder are one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from cfimg.errors import DatasetError, ImageLoadError, UsageError
from cfimg.fileio import atomic_write_text
from cfimg.imageio import DEFAULT_MAX_PIXELS, is_image_path, load_rgb
from cfimg.labels import CLASS_NAMES, COUNTERFEIT_INDEX, LABEL_ALIASES, label_index  # noqa: F401

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "category", "brand", "item_id", "split")
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")

# "bag7_1", "bag7-2", "bag7 (3)", "bag7(3)" -> "bag7". Only one or two digits after _ or -, so
# camera names such as IMG_0042 or DSC-1234 stay distinct items.
VIEW_SUFFIX = re.compile(r"(?:\s*\(\d{1,3}\)|[_-]\d{1,2})$")
_SKIPPED_DIRS = frozenset({"__MACOSX", "@eaDir"})


@dataclass(frozen=True)
class Sample:
    """One labelled photo. `label` is an index into CLASS_NAMES; empty strings mean unknown.

    `extra` holds manifest columns cfimg does not interpret (view, difficulty, defects...);
    treat it as read-only. It takes no part in equality or hashing.
    """

    path: str
    label: int
    category: str = ""
    brand: str = ""
    item_id: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]


def split_name(name: str) -> str | None:
    """Canonical split name ("train", "val", "test") of a spelling, or None."""
    return SPLIT_ALIASES.get(name.strip().lower())


# ----------------------------------------------------------------------------------------------
# Loading


def item_id_rule(group_regex: str | None = None) -> Callable[[str], str]:
    """The function from a file name to its item id (see the module docstring).

    Raises UsageError for a regex that does not compile or has no capture group.
    """
    pattern = None
    if group_regex:
        try:
            pattern = re.compile(group_regex)
        except re.error as exc:
            raise UsageError(f"--group-regex {group_regex!r}: invalid regex ({exc})") from None
        if pattern.groups < 1:
            raise UsageError(
                f"--group-regex {group_regex!r}: needs a capture group, e.g. '^([A-Za-z]+\\d+)_'"
            )

    def rule(file_name: str) -> str:
        if pattern is not None:
            match = pattern.search(file_name)
            if match and match.group(1):
                return match.group(1)
        stem = os.path.splitext(file_name)[0]
        return VIEW_SUFFIX.sub("", stem) or stem

    return rule


def detect_layout(source: str | Path) -> str:
    """'manifest', 'split-folders' or 'folders': how `load_samples` will read `source`."""
    path = Path(source)
    if path.is_file():
        return "manifest"
    if (path / MANIFEST_NAME).is_file():
        return "manifest"
    if any(split_name(child.name) for child in _subdirs(path)):
        return "split-folders"
    return "folders"


def load_samples(source: str | Path, *, group_regex: str | None = None) -> list[Sample]:
    """All labelled photos of a folder tree, split-folder root, CSV manifest or folder with a
    manifest.csv, sorted by path, with absolute paths. Raises DatasetError naming the path."""
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    rule = item_id_rule(group_regex)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: not a folder or a .csv manifest")
        samples = _read_manifest(path, rule)
    elif not path.is_dir():
        raise DatasetError(f"{path}: not a folder or a .csv manifest")
    elif (path / MANIFEST_NAME).is_file():
        samples = _read_manifest(path / MANIFEST_NAME, rule)
    elif detect_layout(path) == "split-folders":
        samples = _read_split_folders(path, rule)
    else:
        samples = _read_label_folders(path, rule, split="")
    if not samples:
        raise DatasetError(
            f"{path}: no images found (expected {path}/genuine/... and {path}/counterfeit/..., "
            f"train/val/test split folders, or a {MANIFEST_NAME})"
        )
    return sorted(samples, key=lambda sample: sample.path)


def _subdirs(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
    return [child for child in children if child.is_dir() and not _skipped(child.name)]


def _skipped(name: str) -> bool:
    """Hidden entries and OS litter (macOS '._photo.jpg' resource forks look like JPEGs)."""
    return name.startswith(".") or name in _SKIPPED_DIRS


def _read_split_folders(root: Path, rule: Callable[[str], str]) -> list[Sample]:
    samples = []
    for child in _subdirs(root):
        split = split_name(child.name)
        if split is None:
            kind = "a label folder" if label_index(child.name) is not None else "a split folder"
            raise DatasetError(
                f"{child}: {kind} beside split folders; expected only train/, val/ and test/ "
                f"in {root}"
            )
        samples.extend(_read_label_folders(child, rule, split=split))
    return samples


def _read_label_folders(root: Path, rule: Callable[[str], str], *, split: str) -> list[Sample]:
    samples = []
    for label_dir in _subdirs(root):
        label = label_index(label_dir.name)
        if label is None:
            raise DatasetError(
                f"{label_dir}: folder is not a label (expected one of: {', '.join(LABEL_ALIASES)})"
            )
        for file_path in _walk_files(label_dir):
            if is_image_path(file_path):
                samples.append(_folder_sample(file_path, label_dir, label, split, rule))
    return samples


def _folder_sample(
    file_path: Path, label_dir: Path, label: int, split: str, rule: Callable[[str], str]
) -> Sample:
    folders = file_path.relative_to(label_dir).parts[:-1]
    category = folders[0] if len(folders) > 0 else ""
    brand = folders[1] if len(folders) > 1 else ""
    item_dir = "/".join((label_dir.name, *folders))
    # Three or more folder levels: the deepest ones name the item, so they hold one item.
    item_id = item_dir if len(folders) > 2 else f"{item_dir}/{rule(file_path.name)}"
    return Sample(
        path=os.path.abspath(file_path),
        label=label,
        category=category,
        brand=brand,
        item_id=item_id,
        split=split,
    )


def _walk_files(top: Path) -> Iterator[Path]:
    """Files below `top` in sorted order, following folder symlinks but never in a cycle."""
    seen: set[str] = set()
    for folder, dir_names, file_names in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dir_names[:] = []
            continue
        seen.add(real)
        dir_names[:] = sorted(name for name in dir_names if not _skipped(name))
        for name in sorted(file_names):
            if not _skipped(name):
                yield Path(folder) / name


def _read_manifest(csv_path: Path, rule: Callable[[str], str]) -> list[Sample]:
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            return _parse_manifest(csv.DictReader(handle), csv_path, rule)
    except UnicodeDecodeError:
        raise DatasetError(f"{csv_path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None


def _parse_manifest(
    reader: csv.DictReader, csv_path: Path, rule: Callable[[str], str]
) -> list[Sample]:
    if not reader.fieldnames:
        raise DatasetError(f"{csv_path}: empty manifest (expected a header row: path,label,...)")
    columns = {name: (name or "").strip().lower() for name in reader.fieldnames}
    missing = [name for name in REQUIRED_COLUMNS if name not in columns.values()]
    if missing:
        found = ", ".join(columns.values())
        raise DatasetError(f"{csv_path}: missing column(s) {', '.join(missing)} (found: {found})")
    samples: dict[str, Sample] = {}
    for raw in reader:
        row = {columns[key]: (value or "").strip() for key, value in raw.items() if key in columns}
        sample = _manifest_sample(row, csv_path, reader.line_num, rule)
        earlier = samples.setdefault(sample.path, sample)
        if earlier.label != sample.label:
            raise DatasetError(
                f"{csv_path}: line {reader.line_num}: {row['path']} is listed again with a "
                f"different label ({sample.label_name} vs {earlier.label_name})"
            )
    return list(samples.values())


def _manifest_sample(
    row: dict[str, str], csv_path: Path, line: int, rule: Callable[[str], str]
) -> Sample:
    where = f"{csv_path}: line {line}"
    if not row.get("path"):
        raise DatasetError(f"{where}: empty path")
    label = label_index(row.get("label", ""))
    if label is None:
        raise DatasetError(
            f"{where}: unknown label {row.get('label', '')!r} (allowed: {', '.join(LABEL_ALIASES)})"
        )
    split = ""
    if row.get("split"):
        split = split_name(row["split"]) or ""
        if not split:
            raise DatasetError(
                f"{where}: unknown split {row['split']!r} (allowed: {', '.join(SPLIT_ALIASES)})"
            )
    relative = row["path"].replace("\\", "/")
    item_dir = os.path.dirname(relative)
    derived = rule(os.path.basename(relative))
    return Sample(
        path=os.path.abspath(os.path.join(csv_path.parent, relative)),
        label=label,
        category=row.get("category", ""),
        brand=row.get("brand", ""),
        item_id=row.get("item_id") or (f"{item_dir}/{derived}" if item_dir else derived),
        split=split,
        extra={key: value for key, value in row.items() if key not in MANIFEST_COLUMNS},
    )


def write_split_csv(samples: Sequence[Sample], path: str | Path) -> None:
    """Write samples as a manifest (path,label,category,brand,item_id,split + extra columns),
    atomically. Paths below the CSV's folder are written relative to it, others absolute."""
    path = Path(path)
    folder = os.path.abspath(path.parent)
    extra_columns = sorted({key for sample in samples for key in sample.extra})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*MANIFEST_COLUMNS, *extra_columns])
    for sample in samples:
        writer.writerow(
            [
                _portable_path(sample.path, folder),
                sample.label_name,
                sample.category,
                sample.brand,
                sample.item_id,
                sample.split,
                *(sample.extra.get(key, "") for key in extra_columns),
            ]
        )
    atomic_write_text(path, buffer.getvalue())


def _portable_path(sample_path: str, folder: str) -> str:
    absolute = os.path.abspath(sample_path)
    if os.path.commonpath([absolute, folder]) == folder:
        return Path(os.path.relpath(absolute, folder)).as_posix()
    return absolute


# ----------------------------------------------------------------------------------------------
# Splitting


def assign_splits(
    samples: Sequence[Sample], *, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0
) -> list[Sample]:
    """Give every sample a split: grouped by item, stratified by (label, category), seeded.

    Samples that already have a split keep it (and so do the other photos of their item); when
    every sample has one, nothing changes. The remaining items are dealt out per stratum by
    systematic sampling in a seeded order, so each stratum gets floor or ceil of its share.
    Then, per class, with items that were free to move: train gets at least one item; val (when
    val_frac > 0) at least one once the class has 2 items; test (when test_frac > 0) at least
    one once it has 3 items. Fractions count items, not photos.
    """
    check_fractions(val_frac, test_frac)
    if all(sample.split for sample in samples):
        return list(samples)
    groups = _groups(samples)
    given = {key: _given_split(members) for key, members in groups.items()}
    fixed = {key: split for key, split in given.items() if split}
    free = [key for key in groups if key not in fixed]
    strata = {key: _stratum(members) for key, members in groups.items()}
    assignment = dict(fixed)
    assignment.update(_deal_out(free, strata, val_frac, test_frac, seed))
    _guarantee_each_class(assignment, strata, set(free), val_frac, test_frac, seed)
    return [
        sample if sample.split else replace(sample, split=assignment[_group_key(sample)])
        for sample in samples
    ]


def check_fractions(val_frac: float, test_frac: float) -> None:
    """Raise UsageError unless 0 <= val_frac, test_frac and their sum is below 1."""
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise UsageError(
            f"--val-frac {val_frac} and --test-frac {test_frac}: each must be >= 0 and "
            "their sum below 1"
        )


def _group_key(sample: Sample) -> str:
    return sample.item_id or sample.path


def _groups(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[_group_key(sample)].append(sample)
    return dict(sorted(groups.items()))


def _given_split(members: list[Sample]) -> str:
    return next((sample.split for sample in members if sample.split), "")


def _stratum(members: list[Sample]) -> tuple[int, str]:
    """The (label, category) most of an item's photos have; ties go to the smallest."""
    counts = Counter((sample.label, sample.category) for sample in members)
    return min(counts, key=lambda stratum: (-counts[stratum], stratum))


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and parts; independent of Python's hash salt."""
    text = "\x1f".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def _deal_out(
    keys: list[str],
    strata: dict[str, tuple[int, str]],
    val_frac: float,
    test_frac: float,
    seed: int,
) -> dict[str, str]:
    by_stratum: dict[tuple[int, str], list[str]] = defaultdict(list)
    for key in keys:
        by_stratum[strata[key]].append(key)
    assignment = {}
    for stratum, members in by_stratum.items():
        ordered = sorted(members, key=lambda key: (_unit(seed, "order", key), key))
        offset = _unit(seed, "offset", *stratum)
        for position, key in enumerate(ordered):
            point = (position + offset) / len(ordered)
            if point < test_frac:
                assignment[key] = "test"
            elif point < test_frac + val_frac:
                assignment[key] = "val"
            else:
                assignment[key] = "train"
    return assignment


def _guarantee_each_class(
    assignment: dict[str, str],
    strata: dict[str, tuple[int, str]],
    movable: set[str],
    val_frac: float,
    test_frac: float,
    seed: int,
) -> None:
    for label in range(len(CLASS_NAMES)):
        keys = [key for key in assignment if strata[key][0] == label]

        def count(split: str, keys: list[str] = keys) -> int:
            return sum(assignment[key] == split for key in keys)

        def move(donors: Sequence[str], to: str, keys: list[str] = keys) -> None:
            for donor in donors:
                candidates = [k for k in keys if k in movable and assignment[k] == donor]
                if candidates:
                    assignment[_pick(candidates, strata, assignment, seed)] = to
                    return

        if keys and count("train") == 0:
            move(["val", "test"] if count("val") >= count("test") else ["test", "val"], "train")
        if val_frac > 0 and len(keys) >= 2 and count("val") == 0:
            donors = [s for s in ("test", "train") if count(s) >= 2] + ["test"]
            move(donors, "val")
        if test_frac > 0 and len(keys) >= 3 and count("test") == 0:
            move([s for s in ("train", "val") if count(s) >= 2], "test")


def _pick(
    candidates: list[str], strata: dict[str, tuple[int, str]], assignment: dict[str, str], seed: int
) -> str:
    """The item to move: from the stratum with most items in that split, so small categories
    keep theirs; ties broken by the seeded order."""
    split = assignment[candidates[0]]
    in_split = Counter(strata[key] for key in assignment if assignment[key] == split)
    return min(candidates, key=lambda key: (-in_split[strata[key]], _unit(seed, "order", key), key))


# ----------------------------------------------------------------------------------------------
# Fingerprints, duplicates, leaks


def dataset_fingerprint(samples: Sequence[Sample]) -> str:
    """16 hex digits over (path relative to the common folder, label, split, file size): changes
    when files are added, removed, relabelled, re-split or rewritten with another size, but not
    when the whole dataset moves. Reads no file contents."""
    if not samples:
        return hashlib.sha256(b"").hexdigest()[:16]
    paths = [os.path.abspath(sample.path) for sample in samples]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    lines = sorted(
        f"{Path(os.path.relpath(path, root)).as_posix()}\t{sample.label_name}\t"
        f"{sample.split}\t{_file_size(path)}"
        for path, sample in zip(paths, samples, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


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
        size = _file_size(sample.path)
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
            splits[_group_key(sample)].add(sample.split)
    return {
        key: tuple(name for name in SPLIT_NAMES if name in found)
        for key, found in sorted(splits.items())
        if len(found) > 1
    }


def find_mixed_label_items(samples: Sequence[Sample]) -> list[str]:
    """Item ids with photos labelled both genuine and counterfeit: one of them is mislabelled."""
    labels: dict[str, set[int]] = defaultdict(set)
    for sample in samples:
        labels[_group_key(sample)].add(sample.label)
    return sorted(key for key, found in labels.items() if len(found) > 1)


# ----------------------------------------------------------------------------------------------
# Checks


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


def required_splits(*, splits_given: bool, val_frac: float, test_frac: float) -> tuple[str, ...]:
    """Splits training needs: train always; val unless val_frac is 0 (with given splits, val);
    test only when a test fraction was asked for."""
    if splits_given:
        return ("train", "val")
    wanted = {"train": True, "val": val_frac > 0, "test": test_frac > 0}
    return tuple(name for name in SPLIT_NAMES if wanted[name])


def training_blockers(
    samples: Sequence[Sample],
    *,
    unreadable: Iterable[str] = (),
    required: Sequence[str] = ("train", "val"),
) -> list[str]:
    """Reasons training on these samples (with splits assigned) would fail; empty when it can
    go ahead. Unreadable files are left out of the counts, as training skips them."""
    skipped = set(unreadable)
    readable = [sample for sample in samples if sample.path not in skipped]
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
        items[value][sample.label].add(_group_key(sample))
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
        return len({_group_key(sample) for sample in self.samples})


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
