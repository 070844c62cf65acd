"""cfimg's benchmark suite: every speed figure of BENCHMARKS.md, measured in one run.

Sections, run one after another (never two at once), each a separate process:

  export   scripts/bench_export.py per architecture at 224 px: PyTorch eager vs ONNX fp32 vs
           ONNX int8, batch-1 latency and batch-32 throughput; plus each model's GFLOPs (conv and
           linear multiply-adds x 2, counted here with forward hooks) and the GFLOP/s it achieves
           against the matmul GFLOP/s that bench_export measured beside it.
  predict  scripts/bench_predict.py: `cfimg predict` end to end vs a naive loop, efficiency
           against the decode-plus-inference bound, peak memory (its Markdown, as printed).
  train    scripts/bench_train.py: `cfimg.train.train()` vs a bare PyTorch loop on the same
           batches, images/s and data-wait fraction.
  synth    `cfimg synth` of N photos at 512 px with default workers, timed as a user runs it.
  explain  scripts/bench_explain.py on --run RUN (a trained run on a synth set): how often the
           Grad-CAM peak lands on the defect (its Markdown, as printed).
  gpu      when CUDA is present: AMP training (bench_train.py --gpu) and onnxruntime CUDA (and
           TensorRT where installed) fp32 vs fp16 latency and throughput; else one line saying so.

Each figure is the median over the sub-script's own repeated rounds, with half the min-max
spread. Writes Markdown (machine, versions, date, matmul GFLOP/s before and after, one table per
section) to --out and, with --json, the figures.

    python scripts/benchmark.py                               # everything, full sizes (long)
    python scripts/benchmark.py --run models/RUN --out BENCHMARKS.generated.md --json bench.json
    python scripts/benchmark.py --only export,train --archs efficientnet_lite0,resnet18
    python scripts/benchmark.py --smoke --out /tmp/b.md        # tiny sizes, under a minute
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
SECTIONS = ("export", "predict", "train", "synth", "explain", "gpu")
TITLES = {
    "export": "Inference engines: PyTorch eager vs ONNX fp32 vs ONNX int8",
    "predict": "`cfimg predict` end to end",
    "train": "Training speed: `cfimg train` vs a bare PyTorch loop",
    "synth": "`cfimg synth` speed",
    "explain": "Grad-CAM localisation (`cfimg explain`)",
    "gpu": "GPU",
}
DEFAULT_CACHE = Path.home() / ".cache" / "cfimg-bench"
GPU_ARCHS = "efficientnet_lite0,resnet50"
WORK_PREFIX = os.path.join(tempfile.gettempdir(), "cfimg-benchmark-")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- running sub-benchmarks ----------------------------------------------------------------------


@dataclass
class Child:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return f"exit {self.returncode}: {lines[-1].strip() if lines else 'no error message'}"

    def shown(self) -> str:
        """The command as a user would type it: scripts relative to the repository, files in
        the suite's temporary folder by their bare names."""
        parts = ["python"]
        for part in self.command[1:]:
            if part.endswith(".py"):
                part = os.path.relpath(part, REPO)
            elif part.startswith(WORK_PREFIX):
                part = Path(part).name
            parts.append(part)
        return shlex.join(parts)


def run_child(command: list[str], label: str) -> Child:
    """Run `python COMMAND...` from the repository root, echoing its output live to stderr."""
    command = [sys.executable, *map(str, command)]
    say(f"[{label}] {shlex.join(command[1:])}")
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(stream, name: str) -> None:
        for line in stream:
            captured[name].append(line)
            say(f"[{label}] {line.rstrip()}")

    threads = [
        threading.Thread(target=pump, args=(process.stdout, "stdout")),
        threading.Thread(target=pump, args=(process.stderr, "stderr")),
    ]
    for thread in threads:
        thread.start()
    returncode = process.wait()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    child = Child(
        command, returncode, "".join(captured["stdout"]), "".join(captured["stderr"]), wall_s
    )
    say(f"[{label}] {'done' if child.ok else 'FAILED, ' + child.failure()} in {wall_s:.1f} s")
    return child


def run_self(function: str, *args, label: str) -> tuple[Child, dict | None]:
    """One of this script's measurement functions in a fresh process; its JSON result."""
    child = run_child([__file__, "--child", function, *args], label)
    if not child.ok:
        return child, None
    return child, json.loads(child.stdout.strip().splitlines()[-1])


def markdown_from(text: str) -> str:
    """A sub-script's report without its progress lines: from the paragraph before its first
    table to the end."""
    lines = text.rstrip().splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first_table is None:
        return text.strip()
    start = first_table
    while start > 0 and lines[start - 1].strip():
        start -= 1
    if start > 0:  # include the paragraph before the blank line above the table
        start -= 1
        while start > 0 and lines[start - 1].strip():
            start -= 1
    return "\n".join(lines[start:]).strip()


def table_rows(markdown: str) -> list[dict]:
    """The rows of a Markdown table as dicts keyed by its header."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        return []
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header = cells[0]
    return [dict(zip(header, row, strict=False)) for row in cells[2:]]


def spread_text(values: list[float], digits: int = 1) -> str:
    from cfimg.benchutil import median_and_spread

    median, spread = median_and_spread(values)
    return f"{median:.{digits}f} ± {spread:.{digits}f}"


# -- measurements and helpers (the timed ones run in child processes) ------------------------


def count_gflops(archs: str, size_px: str) -> dict:
    """Forward GFLOPs per image: 2 x the multiply-adds of every Conv2d and Linear layer.
    Normalisation, activations, pooling and additions are left out (a few percent at most)."""
    import torch
    from torch import nn

    from cfimg.models import create_model

    result = {}
    for arch in archs.split(","):
        network = create_model(arch, pretrained=False).eval()
        total = [0]

        def conv(module, _inputs, output, total=total):
            kh, kw = module.kernel_size
            total[0] += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

        def linear(module, _inputs, output, total=total):
            total[0] += 2 * output.numel() * module.in_features

        handles = [
            m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
            for m in network.modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        ]
        with torch.no_grad():
            network(torch.zeros(1, 3, int(size_px), int(size_px)))
        for handle in handles:
            handle.remove()
        result[arch] = total[0] / 1e9
    return result


def tiny_run(folder: str | Path) -> dict:
    """An untrained mobilenet_v3_small run folder on 24 synthetic photos (all in the test split),
    so smoke mode can exercise bench_explain without training anything."""
    from dataclasses import replace

    from cfimg.card import ModelCard
    from cfimg.checkpoint import save_checkpoint
    from cfimg.data import load_samples, write_split_csv
    from cfimg.models import create_model, get_arch
    from cfimg.synth import generate_dataset

    run = Path(folder)
    if not (run / "best.pt").is_file():
        manifest = generate_dataset(
            run / "data", n_images=24, size_px=96, workers=0, progress=False, overwrite=True
        )
        samples = [replace(s, split="test") for s in load_samples(manifest)]
        write_split_csv(samples, run / "split.csv")
        arch = "mobilenet_v3_small"
        card = ModelCard(arch=arch, preprocessing=get_arch(arch).preprocessing.with_size(64))
        network = create_model(arch, pretrained=False)
        save_checkpoint(run / "best.pt", card=card, model_state=network.state_dict())
    return {"run": str(run)}


def export_for_gpu(folder: str, archs: str, size_px: str) -> dict:
    """fp32 and fp16 ONNX files of each arch (ImageNet weights for efficientnet_lite0, random
    for the rest: speed does not depend on them), through cfimg's own export."""
    from cfimg.card import ModelCard
    from cfimg.checkpoint import save_checkpoint
    from cfimg.export import export_onnx
    from cfimg.models import create_model, get_arch

    files = {}
    for arch in archs.split(","):
        out = Path(folder) / f"{arch}-{size_px}px.onnx"
        fp16 = out.with_name(f"{arch}-{size_px}px.fp16.onnx")
        if not (out.is_file() and fp16.is_file()):
            checkpoint = out.with_suffix(".pt")
            card = ModelCard(
                arch=arch, preprocessing=get_arch(arch).preprocessing.with_size(int(size_px))
            )
            network = create_model(arch, pretrained=arch == "efficientnet_lite0")
            save_checkpoint(checkpoint, card=card, model_state=network.state_dict())
            export_onnx(checkpoint, out, fp16=True, force=True, check=False, max_check_images=8)
        files[arch] = {"fp32": str(out), "fp16": str(fp16)}
    return files


def onnx_gpu_speed(files_json: str, devices: str, rounds: str) -> dict:
    """Batch-1 latency and batch-32 throughput of each file on each onnxruntime device, after a
    warm-up (TensorRT builds its engine there), in rounds that take turns between files."""
    import numpy as np

    from cfimg.engines import load_engine

    files = json.loads(files_json)
    engines = {}
    for arch, by_precision in files.items():
        for device in devices.split(","):
            for precision, path in by_precision.items():
                engine = load_engine(path, device=device)
                size = engine.card.preprocessing.img_size_px
                rng = np.random.default_rng(0)
                one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
                many = rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8)
                for _ in range(3):
                    engine.predict(one)
                    engine.predict(many)
                engines[(arch, device, precision)] = (engine, one, many)
    latency = {key: [] for key in engines}
    throughput = {key: [] for key in engines}
    for _ in range(int(rounds)):
        for key, (engine, one, many) in engines.items():
            latency[key].append(1000 * seconds_per_call(engine.predict, one, 20))
            throughput[key].append(32 / seconds_per_call(engine.predict, many, 10))
    return {
        "results": [
            {
                "arch": arch,
                "device": device,
                "provider": engines[(arch, device, precision)][0].device,
                "precision": precision,
                "latency_ms": latency[(arch, device, precision)],
                "throughput_img_s": throughput[(arch, device, precision)],
            }
            for arch, device, precision in engines
        ]
    }


def seconds_per_call(function, batch, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function(batch)  # returns numpy arrays: the device work is finished
    return (time.perf_counter() - start) / calls


def gpu_info() -> dict:
    import onnxruntime as ort
    import torch

    return {
        "cuda": torch.cuda.is_available(),
        "name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_cuda": torch.version.cuda,
        "onnxruntime_providers": ort.get_available_providers(),
    }


def matmul(*gpu: str) -> dict:
    """A matmul GFLOP/s reading, and with "gpu" what GPU the suite can use."""
    from cfimg.benchutil import matmul_gflops

    return {"gflops": matmul_gflops(), **({"gpu": gpu_info()} if gpu else {})}


# -- sections ------------------------------------------------------------------------------------


def section_export(args, work: Path) -> dict:
    archs = args.archs.split(",")
    gflops = count_gflops(args.archs, args.size)  # in this process: no timing involved
    results, notes, commands, verdicts = [], [], [], []
    for arch in archs:  # one process per arch: one that fails to export does not stop the rest
        out = work / f"export-{arch}.json"
        command = [
            SCRIPTS / "bench_export.py",
            "--archs",
            arch,
            "--size",
            args.size,
            "--threads",
            args.threads,
            "--json",
            out,
        ]
        if args.rounds:
            command += ["--rounds", args.rounds]
        child = run_child(command, f"export {arch}")
        commands.append(child.shown())
        if not child.ok:
            notes.append(f"{arch}: bench_export failed ({child.failure()})")
            continue
        figures = json.loads(out.read_text())
        verdicts += [
            line for line in child.stdout.splitlines() if line.startswith(("PASS ", "MISS "))
        ]
        for result in figures["results"]:
            result["matmul_gflops"] = [
                figures["matmul_gflops_before"],
                figures["matmul_gflops_after"],
            ]
            result["gflops_per_image"] = gflops.get(result["arch"])
            result["threads"] = figures["threads"]
            results.append(result)
    lines = [
        f"{args.size} px input, {args.threads} threads (onnxruntime without spinning, torch "
        "OMP_WAIT_POLICY=PASSIVE), uint8 NHWC in, normalisation inside the model; int8 is static "
        "QDQ. Median ± half the min-max spread over bench_export's rounds. GFLOPs: 2 x the "
        "multiply-adds of the conv and linear layers per image (int8 executes the same count as "
        "integer operations); achieved = GFLOPs x images/s, against the matmul GFLOP/s measured "
        "beside it (mean of its before and after readings).",
        "",
        "| arch | GFLOPs/img | engine | batch-1 latency (ms) | batch-32 (img/s) | vs eager b1 / "
        "b32 | achieved GFLOP/s b1 / b32 | b32 % of matmul |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines += export_rows(result)
    if verdicts:
        lines += ["", "bench_export's bars (medians):", "", *(f"- {line}" for line in verdicts)]
    return {
        "ok": not notes,
        "markdown": "\n".join(lines),
        "notes": notes,
        "commands": commands,
        "results": results,
    }


def export_rows(result: dict) -> list[str]:
    import statistics

    gflops = result["gflops_per_image"]
    ceiling = statistics.mean(result["matmul_gflops"])
    latency = {k: statistics.median(v) for k, v in result["latency_ms"].items()}
    rate = {k: statistics.median(v) for k, v in result["throughput_img_s"].items()}
    rows = []
    for engine in result["latency_ms"]:
        vs = (
            ""
            if engine == "pytorch eager"
            else f"{latency['pytorch eager'] / latency[engine]:.2f}x / "
            f"{rate[engine] / rate['pytorch eager']:.2f}x"
        )
        if gflops:
            achieved_b1, achieved_b32 = gflops / (latency[engine] / 1000), gflops * rate[engine]
            achieved = f"{achieved_b1:.1f} / {achieved_b32:.1f}"
            share = f"{100 * achieved_b32 / ceiling:.0f}% of {ceiling:.0f}"
        else:
            achieved = share = "n/a"
        rows.append(
            f"| {result['arch']} | {f'{gflops:.3g}' if gflops else 'n/a'} | {engine} | "
            f"{spread_text(result['latency_ms'][engine], 2)} | "
            f"{spread_text(result['throughput_img_s'][engine])} | {vs} | {achieved} | {share} |"
        )
    return rows


def section_predict(args, work: Path) -> dict:
    command = [SCRIPTS / "bench_predict.py", "--cache-dir", args.cache_dir / "predict"]
    if args.smoke:
        command += ["--images", 8, "--repeats", 1, "--passes", 1, "--memory-paths", 1000]
    elif args.rounds:
        command += ["--repeats", args.rounds]
    child = run_child(command, "predict")
    if not child.ok:
        return failed(child)
    text = markdown_from(child.stdout)
    return {"ok": True, "markdown": text, "commands": [child.shown()], "rows": table_rows(text)}


def section_train(args, work: Path, gpu: bool = False) -> dict:
    out = work / f"train{'-gpu' if gpu else ''}.json"
    command = [SCRIPTS / "bench_train.py", "--cache-dir", args.cache_dir / "train", "--json", out]
    if gpu:
        command.append("--gpu")
    if args.smoke:
        command.append("--smoke")
    elif args.rounds:
        command += ["--rounds", args.rounds]
    child = run_child(command, "train-gpu" if gpu else "train")
    if not child.ok:
        return failed(child)
    sys.path.insert(0, str(SCRIPTS))
    from bench_train import markdown

    report = json.loads(out.read_text())
    return {
        "ok": True,
        "markdown": markdown(report).strip(),
        "commands": [child.shown()],
        "result": report,
    }


def section_synth(args, work: Path) -> dict:
    n, size, repeats = (8, 128, 1) if args.smoke else (args.synth_images, 512, args.rounds or 3)
    out = work / "synth"
    wall, reported = [], []
    command = ["-m", "cfimg", "synth", out, "--n", n, "--size", size, "--overwrite", "--quiet"]
    for _ in range(repeats):
        child = run_child(command, "synth")
        if not child.ok:
            return failed(child)
        wall.append(n / child.wall_s)
        found = re.search(r" in ([0-9.]+) s", child.stdout)
        if found:
            reported.append(n / float(found.group(1)))
    rows = [f"| end to end, as a user runs it (process start included) | {spread_text(wall)} |"]
    if reported:
        rows.append(
            f"| generation alone (the time `cfimg synth` reports) | {spread_text(reported)} |"
        )
    lines = [
        f"`cfimg synth` of {n} photos at {size} px, medium difficulty, default workers (one per "
        f"CPU: {os.cpu_count()}); median ± half the min-max spread of {repeats} runs.",
        "",
        "| measure | images/s |",
        "|---|---|",
        *rows,
    ]
    return {
        "ok": True,
        "markdown": "\n".join(lines),
        "commands": [f"python -m cfimg synth OUT --n {n} --size {size}"],
        "images_per_s_end_to_end": wall,
        "images_per_s_reported": reported,
    }


def section_explain(args, work: Path) -> dict:
    run = args.run
    note = ""
    if run is None and args.smoke:
        run = tiny_run(args.cache_dir / "explain-smoke-run")["run"]
        note = "Smoke mode: an untrained model on 24 tiny photos; the figures mean nothing.\n\n"
    if run is None:
        return {
            "ok": True,
            "skipped": True,
            "markdown": "Skipped: pass `--run models/<run>` (a run trained on a `cfimg synth` "
            "set, whose split.csv carries the defect boxes).",
        }
    command = [SCRIPTS / "bench_explain.py", run]
    if args.smoke:
        command += ["--limit", 8]
    child = run_child(command, "explain")
    if not child.ok:
        return failed(child)
    text = child.stdout.strip()
    return {"ok": True, "markdown": note + text, "commands": [child.shown()], "rows": []}


def section_gpu(args, work: Path, info: dict) -> dict:
    if not info.get("cuda"):
        return {
            "ok": True,
            "skipped": True,
            "markdown": "Skipped: no CUDA device on this machine (torch.cuda.is_available() is "
            "False).",
        }
    parts, commands, ok = [f"Device: {info['name']} (CUDA {info['torch_cuda']})."], [], True
    train = section_train(args, work, gpu=True)
    ok &= train["ok"]
    commands += train.get("commands", [])
    parts += ["", "#### AMP training, default architecture", "", train["markdown"]]
    onnx = onnx_gpu_section(args, work, info)
    ok &= onnx["ok"]
    commands += onnx.get("commands", [])
    parts += ["", "#### onnxruntime on the GPU: fp32 vs fp16", "", onnx["markdown"]]
    return {
        "ok": ok,
        "markdown": "\n".join(parts),
        "commands": commands,
        "train": train,
        "onnx": onnx,
    }


def onnx_gpu_section(args, work: Path, info: dict) -> dict:
    providers = info["onnxruntime_providers"]
    devices = [
        device
        for device, provider in (
            ("cuda", "CUDAExecutionProvider"),
            ("tensorrt", "TensorrtExecutionProvider"),
        )
        if provider in providers
    ]
    if not devices:
        return {
            "ok": True,
            "markdown": "Skipped: this onnxruntime has no CUDAExecutionProvider (available: "
            f"{', '.join(providers)}); install `cfimg[gpu]` (onnxruntime-gpu).",
        }
    archs, size = ("mobilenet_v3_small", 64) if args.smoke else (args.gpu_archs, 224)
    rounds = 1 if args.smoke else (args.rounds or 5)
    folder = args.cache_dir / "gpu-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    child, files = run_self("export_for_gpu", folder, archs, size, label="gpu export")
    if files is None:
        return failed(child)
    child, speed = run_self(
        "onnx_gpu_speed", json.dumps(files), ",".join(devices), rounds, label="gpu onnx"
    )
    if speed is None:
        return failed(child)
    lines = [
        f"{size} px, uint8 NHWC in, probabilities copied back to the host; {rounds} rounds "
        "after a warm-up (TensorRT builds its engine there); median ± half the min-max spread.",
        "",
        "| arch | device (provider) | precision | batch-1 latency (ms) | batch-32 (img/s) |",
        "|---|---|---|---|---|",
    ]
    for r in speed["results"]:
        lines.append(
            f"| {r['arch']} | {r['device']} ({r['provider']}) | {r['precision']} | "
            f"{spread_text(r['latency_ms'], 2)} | {spread_text(r['throughput_img_s'])} |"
        )
    return {"ok": True, "markdown": "\n".join(lines), "commands": [child.shown()], **speed}


def failed(child: Child) -> dict:
    return {
        "ok": False,
        "markdown": f"**Failed** ({child.failure()}); command: `{child.shown()}`",
        "commands": [child.shown()],
    }


# -- report --------------------------------------------------------------------------------------


def write_report(args, report: dict) -> None:
    from cfimg.fileio import atomic_write_text

    machine = report["machine"]
    gpu = report["gpu"]
    lines = [
        "# cfimg benchmarks",
        "",
        f"Generated {report['date']} by `{report['command']}`"
        + (
            " (**smoke mode**: tiny sizes to keep the suite working; the figures mean nothing)"
            if args.smoke
            else ""
        )
        + ".",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores"
        + (f"; GPU: {gpu['name']} (CUDA {gpu['torch_cuda']})" if gpu.get("cuda") else "; no GPU"),
        "- Versions: "
        + ", ".join(f"{k} {machine[k]}" for k in machine if k not in ("cpu", "cores")),
        f"- torch fp32 matmul (1024x1024), a yardstick for how busy the shared cores were: "
        f"{report['matmul_gflops_before']:.0f} GFLOP/s before the suite, "
        f"{report['matmul_gflops_after']:.0f} after; each section also logs its own readings.",
        f"- Total time: {report['wall_s']:.0f} s.",
    ]
    for name, section in report["sections"].items():
        lines += ["", f"## {TITLES[name]}", "", section["markdown"].strip()]
        for note in section.get("notes", []):
            lines += ["", f"- {note}"]
        if section.get("commands"):
            shown = "; ".join(f"`{c}`" for c in section["commands"])
            lines += ["", f"<sub>{shown} ({section['wall_s']:.0f} s)</sub>"]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")


def parse_args(argv=None):
    from cfimg.models import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("BENCHMARKS.generated.md"), help="Markdown report"
    )
    parser.add_argument("--json", type=Path, help="also save every figure here")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--gpu", action="store_true", help="only the GPU section (--only gpu)")
    parser.add_argument("--run", type=Path, help="a trained run folder for the explain section")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the suite in < 60 s")
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="export section archs")
    parser.add_argument("--gpu-archs", default=GPU_ARCHS, help="archs for onnxruntime on GPU")
    parser.add_argument("--size", type=int, default=224, help="export section input size, px")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="export section threads"
    )
    parser.add_argument("--rounds", type=int, help="rounds per figure (default: each script's)")
    parser.add_argument("--synth-images", type=int, default=200, help="photos per synth run")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="generated photos and models"
    )
    args = parser.parse_args(argv)
    chosen = ["gpu"] if args.gpu else (args.only or ",".join(SECTIONS)).split(",")
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(
            f"--only: unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    args.sections = [s for s in SECTIONS if s in chosen]
    unknown_archs = [a for a in args.archs.split(",") if a not in ARCHITECTURES]
    if unknown_archs:
        parser.error(
            f"--archs: unknown {', '.join(unknown_archs)}; choose from {', '.join(ARCHITECTURES)}"
        )
    if args.run is not None and not args.run.exists():
        parser.error(f"--run {args.run}: not found")
    if args.smoke:
        args.archs, args.size, args.rounds = "mobilenet_v3_small", 64, 1
    args.cache_dir = args.cache_dir.expanduser().resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from cfimg.benchutil import machine_summary

    started = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    # Readings and GPU detection in this process: it runs no timed work of its own, and its
    # idle torch threads do not spin (OMP_WAIT_POLICY=PASSIVE).
    before = matmul("gpu")
    info = before["gpu"]
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "scripts/benchmark.py", *sys.argv[1:]]),
        "machine": machine_summary(),
        "gpu": info,
        "matmul_gflops_before": before["gflops"],
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="cfimg-benchmark-") as tmp:
        for name in args.sections:
            section_started = time.perf_counter()
            if name == "gpu":
                section = section_gpu(args, Path(tmp), info)
            else:
                section = globals()[f"section_{name}"](args, Path(tmp))
            section["wall_s"] = time.perf_counter() - section_started
            report["sections"][name] = section
    report["matmul_gflops_after"] = matmul()["gflops"]
    report["wall_s"] = time.perf_counter() - started
    write_report(args, report)
    failures = [name for name, s in report["sections"].items() if not s["ok"]]
    say(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""))
    if failures:
        say(f"failed sections: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(globals()[sys.argv[2]](*sys.argv[3:])))
    else:
        raise SystemExit(main())
