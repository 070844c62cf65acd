"""Dataset sources: the photos `load_samples` reads and the manifest `write_split_csv` writes.

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
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cfimg.errors import DatasetError, UsageError
from cfimg.fileio import atomic_write_text
from cfimg.imageio import is_image_path
from cfimg.labels import CLASS_NAMES, LABEL_ALIASES, label_index

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

    @property
    def item_key(self) -> str:
        """The item this photo belongs to for grouping: `item_id`, or the path when unknown."""
        return self.item_id or self.path


def split_name(name: str) -> str | None:
    """Canonical split name ("train", "val", "test") of a spelling, or None."""
    return SPLIT_ALIASES.get(name.strip().lower())


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


def file_size_bytes(path: str) -> int:
    """Size of the file at `path`, or -1 when it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
