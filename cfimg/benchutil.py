"""Helpers for benchmark scripts: a reading of the machine's speed to print beside every figure,
the A/B table they print, and their one-line errors."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of a square torch matmul on the CPU: a yardstick for shared cores."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def machine_summary() -> dict[str, str]:
    import numpy
    import onnxruntime
    import PIL
    import torch

    import cfimg

    return {
        "cpu": _cpu_name(),
        "cores": str(__import__("os").cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "cfimg": cfimg.__version__,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """Median and half the min-max range, the '12.3 ± 0.4' printed in BENCHMARKS.md."""
    return statistics.median(values), (max(values) - min(values)) / 2


def print_rounds_table(
    what: str, seconds: dict[str, list[float]], gflops: list[float], subject: str
) -> None:
    """The Markdown block the A/B benchmark scripts print: the machine, the matmul readings,
    `subject`, then one row per variant (the first is the baseline) with its median seconds,
    every round's and its speed-up over the baseline."""
    machine = machine_summary()
    print(f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores")
    print(f"- matmul GFLOP/s before each round: {', '.join(f'{g:.0f}' for g in gflops)}")
    print(f"- {subject}")
    print()
    print(f"| {what} | seconds (median of rounds) | rounds | speed-up |")
    print("|---|---|---|---|")
    base = statistics.median(next(iter(seconds.values())))
    for name, values in seconds.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {median:.1f} | {rounds} | {base / median:.2f}x |")
    print()


def run_reporting_errors(script: str, measure: Callable[[Any], None], args: Any) -> int:
    """`measure(args)`, with a cfimg error (a missing run, a damaged checkpoint...) printed as
    one line naming the script, and cfimg's exit code for it, not a traceback."""
    from cfimg.errors import CfimgError

    try:
        measure(args)
    except CfimgError as exc:
        print(f"{script}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
