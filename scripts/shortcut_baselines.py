#!/usr/bin/env python3
"""Shortcut baselines for the synthetic benchmark: can a model that sees only global image
statistics tell genuine from counterfeit? It should not: the counterfeit cues are small and local.

Trains logistic regression (L2, C chosen by grouped cross-validation) on
  1. colour histograms (joint RGB 8x8x8 plus 32 bins per channel), and
  2. 32x32 grey thumbnails,
with a held-out split grouped by item_id (all views of an item on one side), and prints a
markdown table. Each must stay at or below 0.65 accuracy.

    python scripts/shortcut_baselines.py /tmp/med2000              # an existing `cfimg synth` set
    python scripts/shortcut_baselines.py /tmp/med2000 --generate   # make it first if missing
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cfimg.synth import generate_dataset, read_manifest

MAX_ACCURACY = 0.65
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # inverse L2 strength


def colour_histogram(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8).reshape(-1, 3)
    joint = np.bincount(
        (arr[:, 0] >> 5).astype(np.int64) * 64 + (arr[:, 1] >> 5) * 8 + (arr[:, 2] >> 5),
        minlength=512,
    )
    per_channel = [np.bincount(arr[:, c] >> 3, minlength=32) for c in range(3)]
    hist = np.concatenate([joint, *per_channel]).astype(np.float64)
    return hist / len(arr)


def grey_thumbnail(img: Image.Image) -> np.ndarray:
    thumb = img.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(thumb, dtype=np.float64).ravel() / 255.0


def features(root: Path, rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    hists, thumbs = [], []
    for row in rows:
        with Image.open(root / row["path"]) as img:
            img.draft("RGB", (128, 128))  # JPEG DCT scaling: both features need little detail
            small = img.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR)
        hists.append(colour_histogram(small))
        thumbs.append(grey_thumbnail(small))
    return np.stack(hists), np.stack(thumbs)


def grouped_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A quarter of the items held out, all views of an item on one side, classes balanced."""
    splitter = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed)
    train, test = next(splitter.split(groups, y, groups=groups))
    return train, test


def fit_and_score(x, y, groups, train, test) -> dict[str, float]:
    """Pick C by 5-fold grouped CV on the training part, refit on all of it, score the test part."""
    folds = list(GroupKFold(n_splits=5).split(x[train], y[train], groups[train]))

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, tol=1e-3))

    def cv_accuracy(c: float) -> float:
        scores = []
        for fit_idx, val_idx in folds:
            fitted = model(c).fit(x[train][fit_idx], y[train][fit_idx])
            scores.append(accuracy_score(y[train][val_idx], fitted.predict(x[train][val_idx])))
        return float(np.mean(scores))

    best_c = max(C_GRID, key=cv_accuracy)
    fitted = model(best_c).fit(x[train], y[train])
    predicted = fitted.predict(x[test])
    return {
        "accuracy": accuracy_score(y[test], predicted),
        "balanced_accuracy": balanced_accuracy_score(y[test], predicted),
        "train_accuracy": accuracy_score(y[train], fitted.predict(x[train])),
        "C": best_c,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a `cfimg synth` output folder")
    parser.add_argument("--generate", action="store_true", help="generate the set if missing")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args(argv)

    manifest = args.data / "manifest.csv"
    if not manifest.exists():
        if not args.generate:
            print(
                f"error: {manifest}: not found (pass --generate to make the set)", file=sys.stderr
            )
            return 2
        generate_dataset(
            args.data,
            n_images=args.n,
            seed=args.seed,
            difficulty=args.difficulty,
            size_px=args.size,
        )
    rows = read_manifest(manifest)
    start = time.perf_counter()
    hists, thumbs = features(args.data, rows)
    y = np.array([row["label"] == "counterfeit" for row in rows], dtype=np.int64)
    groups = np.array([row["item_id"] for row in rows])
    train, test = grouped_split(y, groups, args.split_seed)
    assert not set(groups[train]) & set(groups[test])
    majority = max(np.mean(y[test]), 1 - np.mean(y[test]))
    difficulty = rows[0]["difficulty"]
    print(
        f"Shortcut baselines on {args.data} ({len(rows)} images, {len(set(groups))} items, "
        f"difficulty {difficulty}); held-out split grouped by item_id: "
        f"{len(train)} train / {len(test)} test images.\n"
    )
    print("| features | dims | test accuracy | test balanced acc. | train accuracy | C |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| majority class | 0 | {majority:.3f} | 0.500 | - | - |")
    failed = False
    for name, x in (
        ("colour histogram (RGB 8x8x8 + 3x32)", hists),
        ("32x32 grey thumbnail", thumbs),
    ):
        score = fit_and_score(x, y, groups, train, test)
        failed |= score["accuracy"] > MAX_ACCURACY
        print(
            f"| {name} | {x.shape[1]} | {score['accuracy']:.3f} | "
            f"{score['balanced_accuracy']:.3f} | {score['train_accuracy']:.3f} | "
            f"{score['C']:.0e} |"
        )
    print(
        f"\nlogistic regression, L2, C by 5-fold grouped CV on the training part; "
        f"limit: {MAX_ACCURACY:.2f} test accuracy; {time.perf_counter() - start:.0f} s"
    )
    if failed:
        print(f"FAIL: a shortcut baseline scored above {MAX_ACCURACY:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
