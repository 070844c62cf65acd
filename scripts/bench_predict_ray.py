"""Benchmark `cfimg predict --engine ray` against the local engine, and the driver's ceiling.

On the photo-like 1600x1200 JPEGs and the efficientnet_lite0 ONNX model of
scripts/bench_predict.py (made once, in the same cache folder), each run in its own process:

  (a) `cfimg predict` with the local engine (decode processes, onnxruntime in the main one);
  (b) `cfimg predict --engine ray` on a local Ray started for the run: the images/s it reports
      (Ray and actor start-up excluded), its wall time (included), and the difference per image;
  (c) the driver's ceiling: rows/s through the whole Ray path when there is nothing to decode or
      classify (listed paths that do not exist: every row an error row), at two batch sizes,
      whose inverse is the engine's own cost per row; and pre-made rows through the result
      writer alone, CSV and Parquet.

The cores are shared, so a matmul GFLOP/s reading is taken before each figure and printed
beside it.

    python scripts/bench_predict_ray.py [--images 300] [--cache-dir DIR] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_predict as base  # noqa: E402 - the photos, the model and the predict runner

WRITER_ROWS = 200_000


def gflops() -> float:
    return base.child("gflops")["gflops"]


def writer_ceiling(suffix: str, rows_total: int = WRITER_ROWS, batch: int = 32) -> float:
    """Rows/s of pre-made rows through open_result_writer, a batch of `batch` per write."""
    from cfimg.results import PredictionRow, open_result_writer

    rows = [
        PredictionRow(f"/data/listings/{n:07d}.jpg", "genuine", 0.125, 0.5, "bench@0", 1600, 1200)
        for n in range(batch)
    ]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with open_result_writer(Path(folder) / f"rows{suffix}", resume=False) as writer:
            for _ in range(rows_total // batch):
                writer.write(rows)
        return rows_total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of 1600x1200 JPEGs")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache/cfimg-bench-predict"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each engine")
    parser.add_argument("--missing-paths", type=int, default=20_000, help="for the ceiling")
    args = parser.parse_args()

    cache = args.cache_dir
    folder = cache / f"photos-v2-{args.images}"
    photos = base.make_photos(folder, args.images)
    _, onnx_path = base.make_model(cache)
    work = cache / "runs-ray"
    work.mkdir(exist_ok=True)
    ray_flags = ["--engine", "ray"]

    figures: list[tuple[str, str, float]] = []  # (measure, value, GFLOP/s just before)
    runs: dict[str, list[tuple[dict, float]]] = {"local": [], "ray": []}
    for repeat in range(args.repeats):
        print(f"round {repeat + 1}/{args.repeats}", flush=True)
        for engine, flags in (("local", []), ("ray", ray_flags)):
            reading = gflops()
            out = work / f"{engine}.csv"
            runs[engine].append((base.run_predict(onnx_path, [str(folder)], out, flags), reading))
    best = {engine: max(runs[engine], key=lambda run: run[0]["images_per_s"]) for engine in runs}
    for engine, (run, reading) in best.items():
        rates = ", ".join(f"{r['images_per_s']:.1f}" for r, _ in runs[engine])
        figures += [
            (f"{engine}: images/s, best of {args.repeats} ({rates})",
             f"{run['images_per_s']:.1f}", reading),
            (f"{engine}: wall time for {args.images} photos, start-up included",
             f"{run['wall_s']:.1f} s", reading),
            (f"{engine}: peak RSS, driver and its process tree",
             f"{run['tree_peak_mib']:.0f} MiB", reading),
        ]  # fmt: skip
    local_run, ray_run = best["local"][0], best["ray"][0]
    per_image_ms = 1000 / ray_run["images_per_s"] - 1000 / local_run["images_per_s"]
    start_up_s = ray_run["wall_s"] - args.images / ray_run["images_per_s"]
    local_start_up_s = local_run["wall_s"] - args.images / local_run["images_per_s"]
    figures += [
        ("ray - local, per image at steady state", f"{per_image_ms:+.2f} ms", best["ray"][1]),
        ("ray - local, fixed start-up (Ray, actors)",
         f"{start_up_s - local_start_up_s:+.1f} s", best["ray"][1]),
    ]  # fmt: skip

    print("driver ceiling", flush=True)
    listing = base.path_list(cache, photos, args.missing_paths)
    for engine, flags in (("local", []), ("ray", ray_flags)):
        for batch_size in (32, 256):
            reading = gflops()
            out = work / f"ceiling-{engine}-{batch_size}.csv"
            run = base.run_predict(onnx_path, [f"@{listing}"], out, [*flags, "-b", str(batch_size)])
            rate = run["images_per_s"]
            figures.append(
                (f"{engine}: rows/s with nothing to decode ({args.missing_paths:,} missing "
                 f"files), batch {batch_size}; per row", f"{rate:.0f}; {1000 / rate:.3f} ms",
                 reading)
            )  # fmt: skip
    for suffix in (".csv", ".parquet"):
        reading = gflops()
        rate = writer_ceiling(suffix)
        figures.append(
            (f"result writer alone, pre-made rows, {suffix[1:]}, batch 32", f"{rate:,.0f} rows/s",
             reading)
        )  # fmt: skip

    print()
    print(
        f"{args.images} JPEGs {base.WIDTH}x{base.HEIGHT} q90, efficientnet_lite0 224 px ONNX "
        f"fp32, {os.cpu_count()} cores ({base._cpu_name()}); local Ray with as many CPUs, "
        "default actors (1 per 2 CPUs, 1 thread each)"
    )
    print()
    print("| measure | value | matmul GFLOP/s before |")
    print("|---|---|---|")
    for measure, value, reading in figures:
        print(f"| {measure} | {value} | {reading:.0f} |")


if __name__ == "__main__":
    main()
