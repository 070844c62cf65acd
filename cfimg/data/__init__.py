"""Datasets: where labelled photos come from, how they are split, and what is wrong with them.

- `cfimg.data.sources`: `Sample`, the folder tree / split folder / CSV manifest readers behind
  `load_samples`, the item-id rule, and `write_split_csv`;
- `cfimg.data.splits`: `assign_splits` (grouped by item, stratified, seeded), the split
  fractions and splits training needs, and `dataset_fingerprint`;
- `cfimg.data.checks`: duplicates, item leaks, mixed labels, unreadable files, training
  blockers and counts, gathered by `check_dataset` for `cfimg data check`.

Class names and their order live in cfimg.labels. The names below are the package's API.
"""

from cfimg.data.checks import (
    CountRow,
    DatasetReport,
    check_dataset,
    count_rows,
    find_duplicates,
    find_item_leaks,
    split_readable,
    training_blockers,
    verify_images,
)
from cfimg.data.sources import Sample, detect_layout, item_id_rule, load_samples, write_split_csv
from cfimg.data.splits import assign_splits, dataset_fingerprint, required_splits

__all__ = [
    "CountRow",
    "DatasetReport",
    "Sample",
    "assign_splits",
    "check_dataset",
    "count_rows",
    "dataset_fingerprint",
    "detect_layout",
    "find_duplicates",
    "find_item_leaks",
    "item_id_rule",
    "load_samples",
    "required_splits",
    "split_readable",
    "training_blockers",
    "verify_images",
    "write_split_csv",
]
