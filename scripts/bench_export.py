#!/usr/bin/env python3
"""Speed of exported models on CPU: PyTorch eager vs ONNX fp32 vs ONNX int8 (static QDQ).

For each architecture, batch-1 latency and batch-32 throughput at --size px, measured in rounds
that take turns between the three engines (so load from other processes on shared cores hits all
of them alike), reported as median ± half the min-max spread over rounds, beside a matmul
GFLOP/s reading taken before and after. Threads: --threads for both runtimes, onnxruntime with
allow_spinning=0, torch with OMP_WAIT_POLICY=PASSIVE; torch and onnxruntime never run at the
same time.

Weights: efficientnet_lite0 uses its packaged ImageNet weights; other archs are randomly
initialised (speed does not depend on the weights). int8 is calibrated on synthetic images
unless --calib DIR is given; that affects accuracy, not speed.

    python scripts/bench_export.py                       # efficientnet_lite0 and resnet18, 224 px
    python scripts/bench_export.py --json bench_export.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

BARS = {"onnx_fp32_vs_eager": 1.3, "int8_vs_fp32": 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="efficientnet_lite0,resnet18")
    parser.add_argument("--size", type=int, default=224, help="input size in px")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=Path, help="folder of photos to calibrate int8 with")
    parser.add_argument("--json", type=Path, help="also save the figures here")
    args = parser.parse_args()

    import torch

    from cfimg.benchutil import machine_summary, matmul_gflops

    torch.set_num_threads(args.threads)
    gflops_before = matmul_gflops()
    results = [bench_arch(arch, args) for arch in args.archs.split(",")]
    gflops_after = matmul_gflops()
    summary = {
        "machine": machine_summary(),
        "threads": args.threads,
        "size_px": args.size,
        "rounds": args.rounds,
        "matmul_gflops_before": round(gflops_before, 1),
        "matmul_gflops_after": round(gflops_after, 1),
        "results": results,
    }
    print_markdown(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nsaved {args.json}")


def bench_arch(arch: str, args) -> dict:
    import torch

    from cfimg.card import ModelCard
    from cfimg.export.contract import INPUT_NAME, UINT8_NHWC
    from cfimg.export.graph import build_onnx_model
    from cfimg.export.quantize import quantize_int8
    from cfimg.export.verify import feeds, ort_session
    from cfimg.models import ClassifierWithPreprocessing, create_model, get_arch

    network = create_model(arch, pretrained=arch == "efficientnet_lite0").eval()
    card = ModelCard(arch=arch, preprocessing=get_arch(arch).preprocessing.with_size(args.size))
    eager = ClassifierWithPreprocessing(network, card.preprocessing, card.temperature).eval()
    fp32 = build_onnx_model(network, card, input_format=UINT8_NHWC, opset=18)
    calibration = calibration_images(card.preprocessing, args.calib)
    int8 = quantize_int8(fp32, feeds(UINT8_NHWC, card.preprocessing, calibration, batch=16))
    sessions = {
        "onnx fp32": ort_session(fp32.SerializeToString(), threads=args.threads),
        "onnx int8": ort_session(int8.SerializeToString(), threads=args.threads),
    }
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    many = rng.integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8)

    def run_eager(batch: np.ndarray) -> None:
        with torch.inference_mode():
            eager(torch.from_numpy(batch))

    runners = {"pytorch eager": run_eager}
    for name, session in sessions.items():
        runners[name] = lambda batch, s=session: s.run(None, {INPUT_NAME: batch})
    for runner in runners.values():  # warm-up
        runner(one)
        runner(many)
    latency_ms = {name: [] for name in runners}
    throughput = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            latency_ms[name].append(1000 * seconds_per_call(runner, one, calls=10))
            throughput[name].append(32 / seconds_per_call(runner, many, calls=2))
    return {"arch": arch, "latency_ms": latency_ms, "throughput_img_s": throughput}


def calibration_images(prep, folder: Path | None):
    from PIL import Image

    from cfimg.export.images import CheckImages, load_images, unlabelled_images

    if folder is not None:
        return load_images(unlabelled_images(folder)[:200], prep, str(folder), False)
    from cfimg.preprocess import preprocess_image

    rng = np.random.default_rng(1)
    crops = []
    for _ in range(64):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((400, 300), Image.Resampling.BICUBIC)
        crops.append(preprocess_image(photo, prep))
    return CheckImages(np.stack(crops), [], None, "synthetic")


def seconds_per_call(runner, batch: np.ndarray, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        runner(batch)
    return (time.perf_counter() - start) / calls


def print_markdown(summary: dict) -> None:
    from cfimg.benchutil import median_and_spread

    print(
        f"\n{summary['machine']['cpu']}, {summary['threads']} threads, {summary['size_px']} px, "
        f"{summary['rounds']} rounds; matmul {summary['matmul_gflops_before']} GFLOP/s before, "
        f"{summary['matmul_gflops_after']} after\n"
    )
    print("| arch | engine | batch-1 latency (ms) | batch-32 (img/s) | vs eager | vs fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    verdicts = []
    for result in summary["results"]:
        latency = {k: median_and_spread(v) for k, v in result["latency_ms"].items()}
        rate = {k: median_and_spread(v) for k, v in result["throughput_img_s"].items()}
        for engine in latency:
            vs_eager = _ratios(latency, rate, engine, "pytorch eager")
            vs_fp32 = _ratios(latency, rate, engine, "onnx fp32") if "int8" in engine else ""
            print(
                f"| {result['arch']} | {engine} | {latency[engine][0]:.2f} ± "
                f"{latency[engine][1]:.2f} | {rate[engine][0]:.1f} ± {rate[engine][1]:.1f} | "
                f"{vs_eager} | {vs_fp32} |"
            )
        verdicts += _bars(result["arch"], latency, rate)
    print()
    for line in verdicts:
        print(line)


def _ratios(latency: dict, rate: dict, engine: str, baseline: str) -> str:
    if engine == baseline:
        return ""
    batch1 = latency[baseline][0] / latency[engine][0]
    batch32 = rate[engine][0] / rate[baseline][0]
    return f"{batch1:.2f}x / {batch32:.2f}x"


def _bars(arch: str, latency: dict, rate: dict) -> list[str]:
    lines = []
    for engine, baseline, bar in (
        ("onnx fp32", "pytorch eager", BARS["onnx_fp32_vs_eager"]),
        ("onnx int8", "onnx fp32", BARS["int8_vs_fp32"]),
    ):
        batch1 = latency[baseline][0] / latency[engine][0]
        batch32 = rate[engine][0] / rate[baseline][0]
        ok = batch1 >= bar and batch32 >= bar
        lines.append(
            f"{'PASS' if ok else 'MISS'} {arch}: {engine} vs {baseline} batch-1 {batch1:.2f}x, "
            f"batch-32 {batch32:.2f}x (bar {bar}x)"
        )
    return lines


if __name__ == "__main__":
    main()
