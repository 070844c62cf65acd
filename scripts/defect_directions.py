"""ROC-AUC per defect kind *and direction* on a synthetic set: is a denser stitch line caught as
well as a sparser one, a shift left as well as a shift right?

A linear head on pooled features scores each feature one way. If the network had learnt "more
ink, more counterfeit" instead of "off the brand's specification", one direction of a two-sided
defect would score high and the other below chance. This script tells, from a predictions file
of `cfimg eval` and the generator's own record of each item's defect parameters.

The synthetic manifest names each photo's defect kinds, not their parameters; the generator is
deterministic, so the parameters are drawn again from the set's --n and --seed (as it was
synthesised), and every item's kinds are checked against the manifest before anything is scored.

    python scripts/defect_directions.py --data medhold --n 1000 --seed 7 \\
        RUN/eval-holdout/predictions.csv [more predictions.csv ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from cfimg.labels import CLASS_NAMES
from cfimg.metrics import metrics_by_type
from cfimg.synth.generate import SynthConfig, item_defects, plan_items, read_manifest

SIGNED_KEYS = ("factor", "shift", "degrees", "divisions")  # factor: 1 is the genuine value


def direction(kind: str, params: dict) -> str:
    """A short name for the way this defect departs from the genuine item."""
    for key in SIGNED_KEYS:
        if key in params:
            offset = params[key] - (1.0 if key == "factor" else 0.0)
            sign = "+" if offset > 0 else "-"
            if kind == "seam_misaligned" and params["flip"]:
                return f"flipped{sign}"
            if kind == "hardware_shape":
                return f"{params['mode']}{sign}"
            return sign
    if kind == "wordmark_spacing":
        return ("uniform+" if params["em"] > 0 else "uniform-") if params["uniform"] else "one gap"
    if kind == "hand_proportions":
        return params["hand"]
    return "one-sided"  # bolder, softer, shallower...: the kind has a single direction


def defect_parameters(data: Path, n_images: int, seed: int) -> dict[str, dict[str, dict]]:
    """item_id -> {kind: parameters}, drawn again and checked against the set's manifest."""
    manifest = data / "manifest.csv"
    try:
        rows = read_manifest(manifest)
    except OSError as exc:
        raise SystemExit(f"{manifest}: cannot read it ({exc.strerror or exc})") from None
    if not rows or not {"item_id", "defects", "difficulty"} <= rows[0].keys():
        raise SystemExit(f"{manifest}: not a cfimg synth manifest (no photos, or no defects)")
    difficulty = rows[0]["difficulty"]
    config = SynthConfig(data, seed, difficulty, size_px=0)
    drawn = {plan.item_id: item_defects(plan, config) for plan in plan_items(n_images, seed)}
    for row in rows:
        kinds = set(filter(None, row["defects"].split(";")))
        if row["item_id"] not in drawn or set(drawn[row["item_id"]]) != kinds:
            raise SystemExit(
                f"{manifest}: item {row['item_id']} does not match --n {n_images}"
                f" --seed {seed}; give the values the set was synthesised with"
            )
    return drawn


def direction_table(predictions: Path, parameters: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """ "kind direction" -> cfimg.metrics.metrics_by_type's figures (n, roc_auc against every
    genuine photo, and the same for the photos with that defect alone)."""
    try:
        with predictions.open(newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("p_counterfeit")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SystemExit(
            f"{predictions}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if not rows or not {"item_id", "label"} <= rows[0].keys():
        raise SystemExit(f"{predictions}: not a cfimg eval predictions file with scored photos")
    unknown = next((row for row in rows if row["item_id"] not in parameters), None)
    if unknown is not None:
        raise SystemExit(
            f"{predictions}: item {unknown['item_id']} is not in the set given by --data;"
            " score the predictions of that set"
        )
    types = [
        [f"{kind} {direction(kind, params)}" for kind, params in parameters[row["item_id"]].items()]
        for row in rows
    ]
    labels = np.array([CLASS_NAMES.index(row["label"]) for row in rows])
    scores = np.array([float(row["p_counterfeit"]) for row in rows])
    return metrics_by_type(types, labels, scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", nargs="+", type=Path, help="cfimg eval predictions.csv")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic set scored")
    parser.add_argument("--n", type=int, required=True, help="its cfimg synth --n")
    parser.add_argument("--seed", type=int, required=True, help="its cfimg synth --seed")
    args = parser.parse_args(argv)
    parameters = defect_parameters(args.data, args.n, args.seed)
    tables = [direction_table(path, parameters) for path in args.predictions]
    names = " | ".join(f"{path} (alone)" for path in args.predictions)
    print(f"| defect kind | direction | photos (alone) | {names} |")
    print("|---|---|---|" + "---|" * len(tables))
    for key in sorted(set().union(*tables)):
        kind, way = key.split(" ", 1)
        first = next(table[key] for table in tables if key in table)
        aucs = " | ".join(
            f"{table[key]['roc_auc']:.2f} ({table[key]['roc_auc_alone']:.2f})"
            if key in table
            else "-"
            for table in tables
        )
        print(f"| {kind} | {way} | {first['n']} ({first['n_alone']}) | {aucs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
