"""Splits: which photos train, validate and test a model, and the fingerprint of the result.

`assign_splits` keeps every photo of an item in one split (see `cfimg.data.sources` for how
items are named), stratifies by (label, category, brand) and is seeded, so a dataset splits the
same way on every machine. `dataset_fingerprint` identifies a split dataset in run records without
reading file contents.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from cfimg.data.sources import SPLIT_NAMES, Sample, file_size_bytes
from cfimg.errors import UsageError
from cfimg.labels import CLASS_NAMES


def assign_splits(
    samples: Sequence[Sample], *, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0
) -> list[Sample]:
    """Give every sample a split: grouped by item, stratified by (label, category, brand), seeded.

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
    strata = {key: item_stratum(members) for key, members in groups.items()}
    assignment = dict(fixed)
    assignment.update(_deal_out(free, strata, val_frac, test_frac, seed))
    _guarantee_each_class(assignment, strata, set(free), val_frac, test_frac, seed)
    return [
        sample if sample.split else replace(sample, split=assignment[sample.item_key])
        for sample in samples
    ]


def check_fractions(val_frac: float, test_frac: float) -> None:
    """Raise UsageError unless 0 <= val_frac, test_frac and their sum is below 1."""
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise UsageError(
            f"--val-frac {val_frac} and --test-frac {test_frac}: each must be >= 0 and "
            "their sum below 1"
        )


def required_splits(*, splits_given: bool, val_frac: float, test_frac: float) -> tuple[str, ...]:
    """Splits training needs: train always; val unless val_frac is 0 (with given splits, val);
    test only when a test fraction was asked for."""
    if splits_given:
        return ("train", "val")
    wanted = {"train": True, "val": val_frac > 0, "test": test_frac > 0}
    return tuple(name for name in SPLIT_NAMES if wanted[name])


def _groups(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.item_key].append(sample)
    return dict(sorted(groups.items()))


def _given_split(members: list[Sample]) -> str:
    return next((sample.split for sample in members if sample.split), "")


Stratum = tuple  # (label, category) or (label, category, brand); the label always first


def item_stratum(members: list[Sample]) -> Stratum:
    """The (label, category, brand) most of an item's photos have; ties go to the smallest.

    Brand is part of it so that each brand's genuine and counterfeit items split in the same
    proportions: by (label, category) alone, one brand's validation photos were 42 counterfeit to
    24 genuine while its training photos were 105 to 128 (BENCHMARKS.md, round 13), so pooled
    figures mixed in each brand's base rate. Without a brand the stratum is (label, category),
    as before brands were part of it, so such a dataset splits as it always did."""

    def key(sample: Sample) -> Stratum:
        label_category = (sample.label, sample.category)
        return (*label_category, sample.brand) if sample.brand else label_category

    counts = Counter(key(sample) for sample in members)
    return min(counts, key=lambda stratum: (-counts[stratum], stratum))


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and parts; independent of Python's hash salt."""
    text = "\x1f".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def _deal_out(
    keys: list[str],
    strata: dict[str, Stratum],
    val_frac: float,
    test_frac: float,
    seed: int,
) -> dict[str, str]:
    by_stratum: dict[Stratum, list[str]] = defaultdict(list)
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
    strata: dict[str, Stratum],
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
    candidates: list[str], strata: dict[str, Stratum], assignment: dict[str, str], seed: int
) -> str:
    """The item to move: from the stratum with most items in that split, so small categories
    keep theirs; ties broken by the seeded order."""
    split = assignment[candidates[0]]
    in_split = Counter(strata[key] for key in assignment if assignment[key] == split)
    return min(candidates, key=lambda key: (-in_split[strata[key]], _unit(seed, "order", key), key))


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
        f"{sample.split}\t{file_size_bytes(path)}"
        for path, sample in zip(paths, samples, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
