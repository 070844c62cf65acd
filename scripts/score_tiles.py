"""Score a trained run on the whole frame and on N x N tiles of its training crops, with the same
weights each way: the paired comparison behind `cfimg train --tiles` (BENCHMARKS.md, round 13).

A run trained on native-scale crops (the default) sees a 224 px crop in training and, by default,
the whole 384 px frame at inference. This script rebuilds its best.pt with heads of 1, 2, 3...
tiles per side (cfimg.heads.HeadSpec.tiles; the tiles the size of the run's training crops),
exports each to ONNX in memory (cfimg.engines.network_twin, as `cfimg eval` scores a checkpoint)
and prints, for the run's test split and any --data set, each one's ROC-AUC and seconds, with the
matmul GFLOP/s read before each set.

Usage:
    python scripts/score_tiles.py RUN [--data LABELLED_DIR] [--tiles 1,2,3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads collapse on shared cores

from cfimg.benchutil import matmul_gflops, run_reporting_errors  # noqa: E402
from cfimg.errors import UsageError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="also score this labelled set (a fixed holdout)")
    parser.add_argument("--tiles", default="1,2,3", help="tiles per side to compare [1,2,3]")
    parser.add_argument("--threads", type=int, help="onnxruntime threads")
    args = parser.parse_args()
    try:
        args.tiles = [int(n) for n in args.tiles.split(",")]
    except ValueError:
        parser.error(f"--tiles takes whole numbers separated by commas, got {args.tiles!r}")
    if any(n < 1 for n in args.tiles):
        parser.error("--tiles: each count must be 1 (the whole frame) or more")
    return run_reporting_errors("score_tiles", measure, args)


def measure(args: argparse.Namespace) -> None:
    import numpy as np

    from cfimg.checkpoint import load_model
    from cfimg.data import load_samples
    from cfimg.engines import network_twin
    from cfimg.metrics import classification_metrics
    from cfimg.model_input import load_model_input
    from cfimg.models import create_model
    from cfimg.train.config import read_run_config

    config = read_run_config(args.run)  # one line for a missing or damaged config.json
    tile_px = config.resolved_crop_px()
    if tile_px == 0:
        raise UsageError(f"{args.run}: trained on resized crops of the frame, so no tile side")
    network, card = load_model(args.run / "best.pt")
    sets = {"test split": [s for s in load_samples(args.run / "split.csv") if s.split == "test"]}
    if args.data is not None:
        sets[str(args.data)] = load_samples(args.data)
    engines = {}
    for tiles in args.tiles:
        head = replace(card.head, tiles=tiles, tile_px=tile_px if tiles > 1 else 0)
        tiled = create_model(card.arch, head=head, pretrained=False)
        tiled.load_state_dict(network.state_dict())
        engine = network_twin(tiled.eval(), replace(card, head=head), threads=args.threads)
        if engine is None:
            raise UsageError(f"{card.arch} with {tiles} x {tiles} tiles does not export to ONNX")
        engines[tiles] = engine

    print(f"{args.run}: {card.arch}, {card.preprocessing.img_size_px} px frame, {tile_px} px tiles")
    print("| set | photos | tiles per side | ROC-AUC | seconds | matmul GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, samples in sets.items():
        gflops = matmul_gflops()
        frames = np.stack([load_model_input(s.path, card.preprocessing).pixels for s in samples])
        labels = np.array([s.label for s in samples])
        for tiles, engine in engines.items():
            started = time.perf_counter()
            p_counterfeit = np.concatenate(
                [
                    engine.predict(frames[i : i + 32])[0][:, card.counterfeit_index]
                    for i in range(0, len(frames), 32)
                ]
            )
            seconds = time.perf_counter() - started
            roc_auc = classification_metrics(labels, p_counterfeit)["roc_auc"]
            print(
                f"| {name} | {len(samples)} | {tiles} | {roc_auc:.3f} | {seconds:.1f} "
                f"| {gflops:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
