"""Learning curve: the default recipe trained on nested shares of one dataset's training items,
each scored on the same test split, so it says what more photos of the same kind would buy.

    python scripts/learning_curve.py DATA --work lc                     # shares 0.25, 0.5, 1
    python scripts/learning_curve.py DATA --work lc --epochs 8 --holdout HOLDOUT --threads 1
    python scripts/learning_curve.py DATA --work lc --table             # Markdown from results

DATA is split once (grouped by item, stratified by label, category and brand, `--seed`), and
that split is written to WORK/split.csv. Each share keeps every validation and test photo and the
first share of each stratum's training items in one seeded order, so the smaller sets are nested
in the larger ones. A share f trains round(EPOCHS / f) epochs: every point sees the same number
of training views (the same optimisation steps), so the curve measures photos, not steps.

Each finished point appends one JSON line to WORK/results.jsonl (an interrupted curve continues
where it stopped) with the test split's balanced accuracy and ROC-AUC, the `--holdout` set's
ROC-AUC when given, the minutes and the matmul GFLOP/s read just before it. The table ends with
the least-squares gain per doubling of the training photos: with the curve still rising there,
more photos of the kind the set holds are worth collecting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads collapse on shared cores

from cfimg.benchutil import matmul_gflops, run_reporting_errors  # noqa: E402


def nested_shares(samples: list, shares: list[float], seed: int) -> dict[float, list]:
    """share -> the samples to train on: every val and test sample, and the first
    ceil(share x n) training items of each (label, category, brand) stratum, one seeded order
    per stratum for every share (so each set holds the smaller ones)."""
    from cfimg.data.splits import item_stratum

    items: dict[str, list] = defaultdict(list)
    for sample in samples:
        if sample.split == "train":
            items[sample.item_key].append(sample)
    by_stratum: dict[tuple, list[str]] = defaultdict(list)
    for key, photos in sorted(items.items()):
        by_stratum[item_stratum(photos)].append(key)  # the strata assign_splits deals out by
    order = random.Random(seed)
    for keys in by_stratum.values():
        order.shuffle(keys)
    held_out = [sample for sample in samples if sample.split != "train"]
    chosen = {}
    for share in shares:
        kept = {key for keys in by_stratum.values() for key in keys[: math.ceil(share * len(keys))]}
        chosen[share] = held_out + [s for key in sorted(kept) for s in items[key]]
    return chosen


def gain_per_doubling(rows: list[dict], key: str) -> float:
    """Least-squares slope of `key` against log2(training photos): its gain per doubling."""
    points = [(math.log2(row["train_photos"]), row[key]) for row in rows if key in row]
    if len({x for x, _ in points}) < 2:
        return float("nan")
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def table(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: row["train_photos"])
    held = all("holdout_roc_auc" in row for row in rows)
    lines = [
        "| share | training photos | items | epochs | test balanced acc. | test ROC-AUC "
        + ("| holdout ROC-AUC " if held else "")
        + "| minutes | matmul GFLOP/s |",
        "|---|---|---|---|---|---|" + ("---|" if held else "") + "---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['share']:g} | {row['train_photos']} | {row['train_items']} | {row['epochs']} "
            f"| {row['test_balanced_accuracy']:.3f} | {row['test_roc_auc']:.3f} "
            + (f"| {row['holdout_roc_auc']:.3f} " if held else "")
            + f"| {row['minutes']:.1f} | {row['matmul_gflops']} |"
        )
    keys = ["test_balanced_accuracy", "test_roc_auc"] + (["holdout_roc_auc"] if held else [])
    gains = ", ".join(f"{key} {gain_per_doubling(rows, key):+.3f}" for key in keys)
    return "\n".join(lines) + f"\n\nGain per doubling of the training photos: {gains}"


def measure(args: argparse.Namespace) -> None:
    from cfimg.data import load_samples
    from cfimg.data.sources import write_split_csv
    from cfimg.data.splits import assign_splits
    from cfimg.evaluate import evaluate
    from cfimg.train import TrainConfig, train, validate_config

    base = TrainConfig(data=str(args.data), seed=args.seed, threads=args.threads)
    epochs = args.epochs or base.epochs
    validate_config(replace(base, epochs=epochs))
    if args.holdout is not None:  # read it now, not after the first point's training
        load_samples(args.holdout)
    samples = assign_splits(
        load_samples(args.data), val_frac=base.val_frac, test_frac=base.test_frac, seed=args.seed
    )
    args.work.mkdir(parents=True, exist_ok=True)
    write_split_csv(samples, args.work / "split.csv")
    results = args.work / "results.jsonl"
    done = set()
    if results.is_file():
        done = {json.loads(line)["share"] for line in results.read_text().splitlines() if line}
    if args.threads:  # so the yardstick reads what the run's own threads get
        import torch

        torch.set_num_threads(args.threads)
    for share, chosen in nested_shares(samples, args.shares, args.seed).items():
        if share in done:
            continue
        point = args.work / f"share-{share:g}"
        point.mkdir(exist_ok=True)
        write_split_csv(chosen, point / "manifest.csv")
        config = replace(
            base,
            data=str(point / "manifest.csv"),
            out=str(point / "run"),
            overwrite=True,
            epochs=max(1, round(epochs / share)),
            early_stop_patience=0,  # every point its full share of views
            **({"workers": args.workers} if args.workers is not None else {}),
        )
        training = [s for s in chosen if s.split == "train"]
        print(f"share {share:g}: {len(training)} training photos, {config.epochs} epochs")
        gflops = matmul_gflops()
        started = time.perf_counter()
        train(config, progress=False, log=lambda line: print(f"  {line}", flush=True))
        minutes = (time.perf_counter() - started) / 60
        run = Path(config.out)
        test = evaluate(run, split="test", n_bootstrap=0, write_plots=False).report["metrics"]
        row = {
            "share": share,
            "train_photos": len(training),
            "train_items": len({s.item_key for s in training}),
            "epochs": config.epochs,
            "test_balanced_accuracy": float(test["balanced_accuracy"]),
            "test_roc_auc": float(test["roc_auc"]),
            "minutes": round(minutes, 2),
            "matmul_gflops": round(gflops),
            "seed": args.seed,
        }
        if args.holdout is not None:
            held = evaluate(
                run, args.holdout, out_dir=run / "eval-holdout", n_bootstrap=0, write_plots=False
            ).report["metrics"]
            row["holdout_roc_auc"] = float(held["roc_auc"])
        print(json.dumps(row), flush=True)
        with open(results, "a") as handle:  # one line per point: a kill loses only that point
            handle.write(json.dumps(row) + "\n")
    print(table(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="labelled photos (any source cfimg train reads)")
    parser.add_argument("--work", type=Path, default=Path("learning-curve"))
    parser.add_argument("--shares", default="0.25,0.5,1", help="shares of the training items")
    parser.add_argument("--epochs", type=int, help="epochs of the whole set [the recipe's]")
    parser.add_argument("--seed", type=int, default=0, help="split, subsets and training seed")
    parser.add_argument("--holdout", type=Path, help="also score every point on this set")
    parser.add_argument("--threads", type=int, help="torch threads (1: two curves side by side)")
    parser.add_argument("--workers", type=int, help="data-loading workers [the recipe's]")
    parser.add_argument("--table", action="store_true", help="only print the Markdown table")
    args = parser.parse_args(argv)
    if args.table:
        results = args.work / "results.jsonl"
        if not results.is_file():
            parser.error(f"{results}: no results yet")
        print(table(results))
        return 0
    try:
        args.shares = sorted({float(s) for s in args.shares.split(",")})
    except ValueError:
        parser.error(f"--shares takes numbers separated by commas, got {args.shares!r}")
    if not all(0 < share <= 1 for share in args.shares):
        parser.error("--shares: each share must be above 0 and at most 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be 1 or more")
    return run_reporting_errors("learning_curve", measure, args)


if __name__ == "__main__":
    sys.exit(main())
