"""`cfimg eval` of a run on the CPU: PyTorch eager against onnxruntime through an in-memory export.

`cfimg.evaluate.evaluate` scores a checkpoint on the CPU with onnxruntime (an fp32 export in
memory, `cfimg.engines.onnx_twin`); `onnx_on_cpu=False` keeps PyTorch eager. This script runs
both on the same run and split, alternating (eager, twin, eager, twin...), with the bootstrap the
demo uses, and prints the seconds of each, the largest |Δp| between them and the matmul GFLOP/s
read before each round, as a Markdown table for BENCHMARKS.md.

Usage:
    python scripts/bench_eval.py RUN [--split test] [--rounds 2] [--bootstrap 200]

The run is not changed (no --save-threshold); reports go to a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads collapse on shared cores

from cfimg.benchutil import (  # noqa: E402
    matmul_gflops,
    print_rounds_table,
    run_reporting_errors,
)
from cfimg.evaluate import evaluate  # noqa: E402


def p_counterfeit(report_dir: Path) -> list[float]:
    with open(report_dir / "predictions.csv", newline="", encoding="utf-8") as handle:
        return [float(row["p_counterfeit"]) for row in csv.DictReader(handle)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    if args.rounds < 1 or args.bootstrap < 0:
        parser.error("--rounds must be at least 1 and --bootstrap at least 0")
    return run_reporting_errors("bench_eval", measure, args)


def measure(args: argparse.Namespace) -> None:
    seconds: dict[str, list[float]] = {"pytorch eager": [], "onnxruntime (in-memory export)": []}
    gflops: list[float] = []
    max_dp = 0.0
    with tempfile.TemporaryDirectory(prefix="cfimg-bench-eval-") as folder:
        for round_index in range(args.rounds):
            gflops.append(matmul_gflops())
            outputs = {}
            for name, onnx_on_cpu in zip(seconds, (False, True), strict=True):
                out = Path(folder) / f"{round_index}-{onnx_on_cpu}"
                started = time.perf_counter()
                result = evaluate(
                    args.run,
                    split=args.split,
                    out_dir=out,
                    n_bootstrap=args.bootstrap,
                    write_plots=False,
                    device="cpu",
                    onnx_on_cpu=onnx_on_cpu,
                )
                seconds[name].append(time.perf_counter() - started)
                outputs[name] = p_counterfeit(out)
                n_scored = result.report["data"]["n_scored"]
            eager, twin = outputs.values()
            max_dp = max(max_dp, max(abs(a - b) for a, b in zip(eager, twin, strict=True)))

    subject = f"{args.run}, split {args.split} ({n_scored} photos scored, plus the fitting split)"
    print_rounds_table("engine", seconds, gflops, subject)
    print(f"max |Δp| between the two: {max_dp:.2e}")


if __name__ == "__main__":
    sys.exit(main())
