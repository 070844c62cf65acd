"""Ablation of the training recipe: each lever alone on top of a baseline, and the combination.

    python scripts/ablate_recipe.py --work ablation                # synthesises med2000 if needed
    python scripts/ablate_recipe.py --work ablation --recipes baseline,combined --seeds 0,1
    python scripts/ablate_recipe.py --work ablation --table        # Markdown from results.jsonl
    python scripts/ablate_recipe.py --work abl --data demo --holdout holdout   # + a fixed set

Every run trains with `cfimg.train.train` on the synthetic medium set (`cfimg synth med --n 2000
--seed 0 --difficulty medium --size 512`), picks best.pt on validation, and is scored on the
grouped test split with `cfimg.evaluate.evaluate` (balanced accuracy at the validation-fitted
threshold, ROC-AUC). One JSON line per finished run is appended to WORK/results.jsonl, so an
interrupted ablation continues where it stopped; each line carries the matmul GFLOP/s measured
just before the run, the training minutes and images/s, so runs on this shared machine can be
compared. The table gives the mean over seeds and ± half the seed spread (max - min).

The seed also draws the split, so on a set of ~1,200 photos each run's test split is a different
~200 photos and single-seed gaps of 0.05 are noise. `--holdout DIR` scores every run on one more
labelled set as well, the same for all runs (a synthetic one from another seed holds other
items), so recipes are compared on the same photos.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads collapse on shared cores

from cfimg.augment import AugmentConfig  # noqa: E402
from cfimg.benchutil import matmul_gflops  # noqa: E402
from cfimg.heads import DEFAULT_POOLING  # noqa: E402
from cfimg.train import TrainConfig  # noqa: E402

# The recipe before this ablation: 224 px input resized from the whole photo, average pooling,
# every stage trained. Pinned explicitly: the automatic defaults have moved since.
BASELINE = dict(
    img_size_px=224,
    freeze_stages=0,
    pooling="avg",
    augment=AugmentConfig(native_crop_px=0),
    epochs=12,
    early_stop_patience=0,
    cpu_bf16=True,
)


def recipes(frame_px: int = 512, crop_px: int = 256) -> dict[str, tuple[str, dict]]:
    """name -> (what it changes, TrainConfig overrides on top of BASELINE). `frame_px`: the
    photos' side, which full-frame inference takes whole through the fully convolutional net."""
    full_frame = dict(img_size_px=frame_px)
    native = {**full_frame, "augment": AugmentConfig(native_crop_px=crop_px)}
    # Undo BASELINE's pins, so TrainConfig makes its automatic choices (fp32 on the CPU: bf16
    # autocast measured slower, not faster, on the CPUs tried; BENCHMARKS.md, round 3).
    defaults = dict(
        img_size_px=None,
        freeze_stages=None,
        pooling=DEFAULT_POOLING,
        augment=AugmentConfig(),
        cpu_bf16=False,
    )
    # The default of rounds 2-6 (3 stages frozen, average pooling): the `default_*` levers below
    # were measured against it and stay pinned to it, so each repeats its BENCHMARKS.md row.
    r6 = {**defaults, "freeze_stages": 3, "pooling": "avg"}
    return {
        "baseline": ("224 px resized view, avg pooling, EMA warmed up, bf16", {}),
        "no_ema": ("baseline without EMA", dict(ema_decay=0.0)),
        "no_bf16": ("fp32 instead of bf16 autocast", dict(cpu_bf16=False)),
        "full_frame": (f"{frame_px} px input (full frame), resized crops", full_frame),
        "native_crop": (f"full frame at inference, {crop_px} px native-scale crops", native),
        "max_pool": ("max pooling", dict(pooling="max")),
        "attn_pool": ("gated attention pooling", dict(pooling="attn")),
        "gem_pool": ("GeM pooling", dict(pooling="gem")),
        "head_first": ("1 epoch head only, then all", dict(freeze_backbone_epochs=1)),
        "layer_decay": ("layer-wise lr decay 0.8", dict(layer_decay=0.8)),
        "native_freeze": (
            "native_crop + stem and first 2 stages frozen",
            {**native, "freeze_stages": 3},
        ),
        "default": (
            "today's defaults (384 px frame, crops of the arch's side, 5 stages frozen, relate)",
            defaults,
        ),
        "default_detail": (
            "today's defaults on the 512 px frame (--detail), the same 224 px crops",
            {**defaults, "detail": True},
        ),
        "default_compiled": (
            "today's defaults, the training step compiled (torch.compile): more epochs a minute",
            {**defaults, "compile": True},
        ),
        "default_full_frame": (
            "today's defaults trained on resized crops of 70-100% of the frame at the frame's"
            " size (no native crops), so relation pooling sees the item in training as at"
            " inference",
            {**defaults, "augment": AugmentConfig(native_crop_px=0)},
        ),
        "default_crop320": (
            "today's defaults with 320 px native crops instead of the arch's 224: most of a"
            " 384 px frame in view, at about half full-frame training's cost",
            {**defaults, "augment": AugmentConfig(native_crop_px=320)},
        ),
        "default_mixup": (
            "today's defaults + mixup (alpha 0.4): blended photo pairs against memorising",
            {**defaults, "mixup_alpha": 0.4},
        ),
        "default_cov": (
            "today's defaults with covariance pooling (average + the cells' second-order"
            " statistics, bilinear pooling) instead of relation pooling",
            {**defaults, "pooling": "cov"},
        ),
        "default_tiles2": (
            "today's defaults, inference on 2 x 2 tiles of the training crops' side, their"
            " logits averaged, instead of the whole frame at once",
            {**defaults, "tiles": 2},
        ),
        "default_tiles3": (
            "today's defaults, inference on 3 x 3 tiles of the training crops' side",
            {**defaults, "tiles": 3},
        ),
        "default_zoom": (
            "today's defaults + scale jitter of the native crops: each crop at the evaluation"
            " scale times a factor drawn log-uniformly in [0.8, 1.25]",
            {**defaults, "augment": AugmentConfig(native_zoom=1.25)},
        ),
        "default_r6": (
            "the default until round 7 (3 stages frozen, average pooling)",
            r6,
        ),
        "default_freeze5": ("default with 5 stages frozen", {**r6, "freeze_stages": 5}),
        "default_freeze6": ("default with 6 stages frozen", {**r6, "freeze_stages": 6}),
        "default_crop288": (
            "default with 288 px native crops",
            {**r6, "augment": AugmentConfig(native_crop_px=288)},
        ),
        "default_bs16": ("default with batch 16 (twice the steps)", {**r6, "batch_size": 16}),
        "default_gem": ("default + GeM pooling", {**r6, "pooling": "gem"}),
        "default_layer_decay": (
            "default + layer-wise lr decay 0.75",
            {**r6, "layer_decay": 0.75},
        ),
        "default_head_first": (
            "default, 1 epoch head only first",
            {**r6, "freeze_backbone_epochs": 1},
        ),
        "default_attn": ("default + gated attention pooling", {**r6, "pooling": "attn"}),
        "default_relate": (
            "default + relation pooling (self-attention over the cells)",
            {**r6, "pooling": "relate"},
        ),
        "default_freeze5_relate": (
            "default with 5 stages frozen + relation pooling",
            {**r6, "freeze_stages": 5, "pooling": "relate"},
        ),
        "default_no_rotate": (
            "default without rotation or perspective",
            {**r6, "augment": AugmentConfig(rotate_deg=0.0, perspective_p=0.0)},
        ),
        "default_lite1": (
            "default on efficientnet_lite1 (its 240 px crops)",
            {**r6, "arch": "efficientnet_lite1"},
        ),
        "combined": (
            "native crops + full frame + attention pooling + layer decay 0.8, lr 3e-4",
            {**native, "pooling": "attn", "layer_decay": 0.8, "lr": 3e-4},
        ),
    }


RECIPES = recipes()


def synthesise_if_missing(data: Path) -> None:
    if (data / "manifest.csv").is_file():
        return
    from cfimg.synth import generate_dataset

    generate_dataset(data, n_images=2000, seed=0, difficulty="medium", size_px=512, progress=False)


def done_runs(results: Path) -> set[tuple[str, int]]:
    if not results.is_file():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(row["recipe"], row["seed"]) for row in rows}


def run_one(
    data: Path,
    work: Path,
    recipe: str,
    seed: int,
    epochs: int | None,
    recipe_table: dict,
    holdout: Path | None = None,
    threads: int | None = None,
) -> dict:
    from cfimg.evaluate import evaluate
    from cfimg.train import train

    overrides = {**BASELINE, **recipe_table[recipe][1]}
    if epochs is not None:
        overrides["epochs"] = epochs
    run_dir = work / "runs" / f"{recipe}-s{seed}"
    config = replace(
        TrainConfig(data=str(data)),
        out=str(run_dir),
        overwrite=True,
        seed=seed,
        threads=threads,
        **overrides,
    )
    if threads:  # so the yardstick reads what the run's own threads get
        import torch

        torch.set_num_threads(threads)
    gflops = matmul_gflops()
    started = time.perf_counter()
    result = train(config, progress=False, log=lambda line: print(f"  {line}", flush=True))
    minutes = (time.perf_counter() - started) / 60
    metrics = evaluate(run_dir, split="test", n_bootstrap=0, write_plots=False).report["metrics"]
    scores = {}
    if holdout is not None:  # one fixed set for every run: no split noise in the comparison
        report = evaluate(
            run_dir, holdout, out_dir=run_dir / "eval-holdout", n_bootstrap=0, write_plots=False
        ).report
        held = report["metrics"]
        scores = {
            "holdout_balanced_accuracy": float(held["balanced_accuracy"]),
            "holdout_roc_auc": float(held["roc_auc"]),
            # per counterfeit type (a synthetic set's defect kinds), photos with that type only
            "holdout_types": {
                kind: m["roc_auc_alone"] for kind, m in report["counterfeit_types"].items()
            },
        }
    return {
        "recipe": recipe,
        "seed": seed,
        "test_balanced_accuracy": float(metrics["balanced_accuracy"]),
        "test_roc_auc": float(metrics["roc_auc"]),
        **scores,
        "val_balanced_accuracy": float(result.best_metrics.get("balanced_accuracy", float("nan"))),
        "minutes": round(minutes, 2),
        "images_per_s": round(mean_images_per_s(run_dir), 1),
        "epochs": config.epochs,
        "matmul_gflops": round(gflops),
        "cpu_count": os.cpu_count(),
    }


def mean_images_per_s(run_dir: Path) -> float:
    import csv

    with open(run_dir / "metrics.csv") as handle:
        values = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    return statistics.fmean(values) if values else float("nan")


def table(results: Path, recipe_table: dict = RECIPES) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = [
        "| recipe | what changes | test balanced acc. (mean, spread) | test ROC-AUC "
        "| holdout ROC-AUC | minutes | images/s | seeds | matmul GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, (what, _overrides) in recipe_table.items():
        runs = [row for row in rows if row["recipe"] == recipe]
        if not runs:
            continue

        def summary(key: str, runs=runs) -> str:
            values = [row[key] for row in runs if key in row]
            if len(values) < len(runs):  # a run made without --holdout
                return "—"
            spread = max(values) - min(values)
            return f"{statistics.fmean(values):.3f} (±{spread / 2:.3f})"

        lines.append(
            f"| {recipe} | {what} | {summary('test_balanced_accuracy')} | "
            f"{summary('test_roc_auc')} | {summary('holdout_roc_auc')} | "
            f"{statistics.fmean(r['minutes'] for r in runs):.1f} | "
            f"{statistics.fmean(r['images_per_s'] for r in runs):.1f} | "
            f"{','.join(str(r['seed']) for r in runs)} | "
            f"{'/'.join(str(r['matmul_gflops']) for r in runs)} |"
        )
    return "\n".join(lines)


def type_table(results: Path, recipe_table: dict = RECIPES) -> str:
    """Holdout ROC-AUC per counterfeit type, photos with that type alone, mean over seeds: which
    kinds of defect a recipe learns. Empty when no run has them (a holdout set without types)."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    by_recipe = {
        recipe: [
            row["holdout_types"]
            for row in rows
            if row["recipe"] == recipe and row.get("holdout_types")
        ]
        for recipe in recipe_table
    }
    by_recipe = {recipe: runs for recipe, runs in by_recipe.items() if runs}
    kinds = sorted({kind for runs in by_recipe.values() for run in runs for kind in run})
    if not kinds:
        return ""

    def mean(values: list) -> str:
        values = [v for v in values if v is not None and v == v]  # null/NaN: too few photos
        return f"{statistics.fmean(values):.2f}" if values else "—"

    lines = [
        "| counterfeit type (alone) | " + " | ".join(by_recipe) + " |",
        "|---|" + "---|" * len(by_recipe),
    ]
    for kind in kinds:
        cells = [mean([run.get(kind) for run in runs]) for runs in by_recipe.values()]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("ablation"))
    parser.add_argument("--data", type=Path, help="labelled photos [WORK/med2000, synthesised]")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs")
    parser.add_argument("--frame-px", type=int, default=512, help="the photos' side [512]")
    parser.add_argument("--crop-px", type=int, default=256, help="native crop side [256]")
    parser.add_argument(
        "--holdout",
        type=Path,
        help="also score every run on this labelled set, the same for all runs (e.g. `cfimg "
        "synth holdout --seed 7`): test splits of a few hundred photos differ by seed",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads per run (1: two ablations side by side)"
    )
    parser.add_argument("--table", action="store_true", help="only print the Markdown table")
    args = parser.parse_args(argv)
    results = args.work / "results.jsonl"
    chosen = recipes(args.frame_px, args.crop_px)
    if args.table:
        print(table(results, chosen))
        print("\n" + type_table(results, chosen))
        return 0
    if args.threads is not None and args.threads < 1:  # before torch.set_num_threads rejects it
        parser.error("--threads must be 1 or more")
    unknown = [r for r in args.recipes.split(",") if r not in chosen]
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {', '.join(chosen)}")
    if args.holdout is not None:  # read it now, not after the first run's hours of training
        from cfimg.data.sources import load_samples
        from cfimg.errors import DatasetError

        try:
            load_samples(args.holdout)
        except DatasetError as exc:
            parser.error(f"--holdout: {exc}")
    data = args.data or args.work / "med2000"
    args.work.mkdir(parents=True, exist_ok=True)
    synthesise_if_missing(data)
    finished = done_runs(results)
    for seed in (int(s) for s in args.seeds.split(",")):
        for recipe in args.recipes.split(","):
            if (recipe, seed) in finished:
                continue
            print(f"{recipe} seed {seed}: {chosen[recipe][0]}", flush=True)
            row = run_one(
                data, args.work, recipe, seed, args.epochs, chosen, args.holdout, args.threads
            )
            print(json.dumps(row), flush=True)
            with open(results, "a") as handle:  # one line per run: a kill loses only that run
                handle.write(json.dumps(row) + "\n")
    print(table(results, chosen))
    print("\n" + type_table(results, chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
