"""Run every CLI command over one tiny run and record what a user sees, to compare two versions.

    python scripts/check_cli_outputs.py record OUT_DIR        # with the cfimg on sys.path
    python scripts/check_cli_outputs.py compare OUT_A OUT_B   # exit 1 when they differ

A refactor that promises "behaviour unchanged" records once before and once after (another
checkout first on PYTHONPATH) and compares. Recorded per command: exit status, stdout and stderr
with timings masked, and every file written, by content hash (JSON and CSV with volatile fields
- timestamps, durations, absolute paths - masked first, so only real changes show).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

_VOLATILE = re.compile(
    r"(\d+(\.\d+)?\s*(s|ms|min|images/s|img/s|it/s|MiB|GiB)\b)"
    r"|(\d{4}-\d\d-\d\dT[\d:.+]+)|(\d+:\d\d(:\d\d)?)"
)
_VOLATILE_KEYS = {"created_utc", "seconds", "images_per_s", "data_wait_frac"}
_WAIT = re.compile(r"wait \d+%")


def _volatile_key(key: str) -> bool:
    return key in _VOLATILE_KEYS or key.endswith("_s")


def _mask(text: str, work: Path) -> str:
    text = _WAIT.sub("wait <t>", _VOLATILE.sub("<t>", text.replace(str(work), "<work>")))
    return re.sub(r" {2,}", " ", text)  # table padding follows the width of masked cells


def _mask_csv(text: str, work: Path) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return ""
    volatile = [i for i, name in enumerate(rows[0]) if _volatile_key(name)]
    for row in rows[1:]:
        for i in volatile:
            if i < len(row):
                row[i] = "<t>"
    return _mask("\n".join(",".join(row) for row in rows), work)


def _mask_json(value, work: Path):
    if isinstance(value, dict):
        return {k: ("<t>" if _volatile_key(k) else _mask_json(v, work)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_json(v, work) for v in value]
    if isinstance(value, str):
        return _mask(value, work)
    return value


def _file_digest(path: Path, work: Path) -> str:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            return (
                "json:"
                + hashlib.sha256(
                    json.dumps(_mask_json(data, work), sort_keys=True).encode()
                ).hexdigest()[:16]
            )
        except ValueError:
            pass
    if path.suffix == ".csv":
        return "csv:" + hashlib.sha256(_mask_csv(path.read_text(), work).encode()).hexdigest()[:16]
    if path.suffix in {".jsonl", ".md", ".txt", ".html"}:
        return "text:" + hashlib.sha256(_mask(path.read_text(), work).encode()).hexdigest()[:16]
    if path.suffix in {".pt", ".onnx", ".png", ".jpg"}:
        return "binary"  # timestamps inside (card, zip entries); their content is checked by use
    return "file"


def _commands(work: Path) -> list[tuple[str, list[str]]]:
    data, run = work / "data", work / "run"
    onnx = work / "model.onnx"
    return [
        (
            "synth",
            [
                "synth",
                str(data),
                "--n",
                "48",
                "--seed",
                "3",
                "--size",
                "160",
                "--workers",
                "0",
                "--quiet",
            ],
        ),
        ("data-check", ["data", "check", str(data)]),
        (
            "train",
            [
                "train",
                str(data),
                "--out",
                str(run),
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--img-size",
                "96",
                "--workers",
                "0",
                "--threads",
                "1",
                "--weight-decay",
                "0",
                "--ema-decay",
                "0",
                "--no-amp",
                "--quiet",
                "--seed",
                "1",
            ],
        ),
        ("eval", ["eval", str(run / "best.pt"), str(data), "--out", str(work / "report")]),
        ("export", ["export", str(run / "best.pt"), "--out", str(onnx)]),
        ("info-onnx", ["info", str(onnx)]),
        ("info-pt", ["info", str(run / "best.pt")]),
        ("predict", ["predict", str(onnx), str(data), "--out", str(work / "pred.csv"), "--sort"]),
        ("predict-jsonl", ["predict", str(onnx), str(data), "--out", str(work / "pred.jsonl")]),
        (
            "explain",
            [
                "explain",
                str(run / "best.pt"),
                str(data / "counterfeit" / "bag"),
                "--out",
                str(work / "explain"),
            ],
        ),
    ]


def record(out_dir: Path) -> None:
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    results = {}
    for name, args in _commands(work):
        before = {p for p in work.rglob("*") if p.is_file()}
        proc = subprocess.run(
            [sys.executable, "-m", "cfimg", *args], capture_output=True, text=True, env=env
        )
        written = sorted(p for p in work.rglob("*") if p.is_file() and p not in before)
        results[name] = {
            "exit": proc.returncode,
            "stdout": _mask(proc.stdout, work),
            "stderr": _mask(proc.stderr, work),
            "files": {str(p.relative_to(work)): _file_digest(p, work) for p in written},
        }
        print(f"{name}: exit {proc.returncode}, {len(written)} files", flush=True)
    (out_dir / "outputs.json").write_text(json.dumps(results, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    left = json.loads((a / "outputs.json").read_text())
    right = json.loads((b / "outputs.json").read_text())
    differences = 0
    for name in sorted(set(left) | set(right)):
        for key in ("exit", "stdout", "stderr", "files"):
            lv, rv = left.get(name, {}).get(key), right.get(name, {}).get(key)
            if lv != rv:
                differences += 1
                print(f"--- {name} {key} differs:\n  before: {lv!r}\n  after:  {rv!r}")
    print("identical" if not differences else f"{differences} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
