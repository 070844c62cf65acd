"""Training's per-epoch validation pass on the CPU: PyTorch eager against onnxruntime.

`cfimg.train.loop.validate` scores the validation split after every epoch. On the CPU it exports
the weights to fp32 ONNX in memory and runs onnxruntime (`TrainConfig.onnx_validation`, the
default); before, PyTorch eager scored it, and that took a third of each epoch of the default
recipe on 2 cores. This script runs both on a finished run's validation split, with the run's
own loader (workers, preprocessing), alternating (eager, onnx, eager, onnx...), the export
counted in the onnx time, and prints the seconds of each, the largest |Δ logit| and |Δ loss|
between them and the matmul GFLOP/s read before each round, as a Markdown table.

Usage:
    python scripts/bench_validate.py RUN [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads collapse on shared cores

from cfimg.benchutil import (  # noqa: E402
    matmul_gflops,
    print_rounds_table,
    run_reporting_errors,
)
from cfimg.errors import UsageError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch and onnxruntime threads")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return run_reporting_errors("bench_validate", measure, args)


def measure(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from cfimg.checkpoint import load_model
    from cfimg.data import load_samples
    from cfimg.distributed import DistributedContext
    from cfimg.models import ClassifierWithPreprocessing
    from cfimg.train.config import read_run_config
    from cfimg.train.loaders import make_loaders
    from cfimg.train.loop import validate

    config = read_run_config(args.run)  # one line for a missing or damaged config.json
    if not (args.run / "split.csv").is_file():
        raise UsageError(f"{args.run}: not a training run (no split.csv)")
    if args.threads:
        torch.set_num_threads(args.threads)
    network, card = load_model(args.run / "best.pt")
    model = ClassifierWithPreprocessing(network, card.preprocessing).eval()
    ctx = DistributedContext()
    samples = load_samples(args.run / "split.csv")
    _, _, val_loader, _, val_samples = make_loaders(samples, card.preprocessing, config, ctx)

    seconds: dict[str, list[float]] = {"pytorch eager": [], "onnxruntime (export included)": []}
    gflops: list[float] = []
    max_dlogit = max_dloss = 0.0
    for _ in range(args.rounds):
        gflops.append(matmul_gflops())
        results = []
        for name, onnx_card in zip(seconds, (None, card), strict=True):
            started = time.perf_counter()
            results.append(
                validate(model, val_loader, ctx, onnx_card=onnx_card, threads=args.threads)
            )
            seconds[name].append(time.perf_counter() - started)
        eager, onnx = results
        max_dlogit = max(max_dlogit, float(np.abs(eager.logits - onnx.logits).max()))
        max_dloss = max(max_dloss, abs(eager.loss - onnx.loss))

    side = card.preprocessing.img_size_px
    subject = f"{args.run}: {len(val_samples)} validation photos at {side} px, {card.arch}"
    print_rounds_table("validation pass", seconds, gflops, subject)
    print(f"max |Δ logit| between the two: {max_dlogit:.2e}; |Δ loss|: {max_dloss:.2e}")


if __name__ == "__main__":
    sys.exit(main())
