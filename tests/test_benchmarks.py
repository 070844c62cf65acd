"""The benchmark suite keeps working: its smoke mode runs every section and writes the report.

Speed itself is measured by scripts/benchmark.py, never asserted in a test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEADINGS = (
    "## Inference engines: PyTorch eager vs ONNX fp32 vs ONNX int8",
    "## `cfimg predict` end to end",
    "## Training speed: `cfimg train` vs a bare PyTorch loop",
    "## `cfimg synth` speed",
    "## Grad-CAM localisation (`cfimg explain`)",
    "## GPU",
)


@pytest.mark.slow
def test_benchmark_suite_smoke_mode_writes_every_section(tmp_path):
    out, figures = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    command = [
        sys.executable,
        "scripts/benchmark.py",
        "--smoke",
        "--out",
        str(out),
        "--json",
        str(figures),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    for heading in HEADINGS:
        assert heading in report
    assert "**Failed**" not in report
    sections = json.loads(figures.read_text())["sections"]
    assert all(section["ok"] for section in sections.values())
    ratio = sections["train"]["result"]["ratio"]
    assert math.isfinite(ratio) and ratio > 0  # both loops measured (no bar: smoke sizes)
    export = sections["export"]["results"][0]
    assert set(export["latency_ms"]) == {"pytorch eager", "onnx fp32", "onnx int8"}
    assert export["gflops_per_image"] > 0


def test_benchmark_rejects_an_unknown_section():
    command = [sys.executable, "scripts/benchmark.py", "--only", "export,nonsense"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "unknown section nonsense" in done.stderr
