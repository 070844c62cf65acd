"""How often does the Grad-CAM peak land on the defect? Measured on synthetic counterfeits.

For every counterfeit of the chosen split that the model flags (p_counterfeit >= the card's
threshold) and that has at least one visible defect box in the manifest, the Grad-CAM peak is
mapped back to photo pixels (inverting cfimg.preprocess's resize + centre crop) and counted as a
hit when it falls inside a visible defect box. Two tolerances: exact, and boxes grown by half a
Grad-CAM cell (the heatmap's own resolution: input size / feature-map size, in photo pixels).

Baselines under the same rule, same photos:
- uniform random point in the whole photo (exact: covered-area fraction, not sampled draws); the
  synthetic manifest records no item outline, so "in the item" is not available unless the
  manifest has an `item_box` column ([x0,y0,x1,y1] in photo pixels), which is then used too;
- the photo's centre;
- another photo's Grad-CAM peak (relative position), averaged over all other flagged photos:
  tells whether the peak follows this photo's defect or just where defects usually are.

Also printed: the share of heatmap mass inside the boxes (against the share of area they cover)
and the exact-box hit rate per defect kind. Given an .onnx model, the heatmap is occlusion
sensitivity (cfimg.explain.occlusion_map) instead of Grad-CAM.

Usage:
    python scripts/bench_explain.py models/RUN [--data DATASET_OR_CSV] [--split test]

DATA defaults to RUN/split.csv (written by `cfimg train`, with the manifest's defect_boxes).
Prints a Markdown snippet for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

OCCLUSION_STRIDE_FRAC = 0.125  # cfimg.explain.occlusion_map's default


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def visible_defects(sample) -> list[tuple[str, tuple[float, ...]]]:
    """(kind, box) of each visible defect, box in photo pixels."""
    entries = json.loads(sample.extra.get("defect_boxes") or "[]")
    return [
        (str(e.get("kind", "")), tuple(map(float, e["box"])))
        for e in entries
        if e.get("visible") and e.get("box")
    ]


def visible_boxes(sample) -> list[tuple[float, ...]]:
    return [box for _kind, box in visible_defects(sample)]


def heat_mass_inside(heat: np.ndarray, boxes) -> float:
    """Share of the heatmap's total mass (photo pixels) that lies inside the boxes."""
    mask = np.zeros(heat.shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(int(y0), 0) : int(math.ceil(y1)), max(int(x0), 0) : int(math.ceil(x1))] = True
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 0.0


def item_box(sample) -> tuple[float, ...] | None:
    text = sample.extra.get("item_box")
    return tuple(map(float, json.loads(text))) if text else None


def resolution_px(explainer) -> float:
    """Side of one heatmap cell in model-input pixels: input size / feature-map size for
    Grad-CAM, the patch stride for occlusion (ONNX)."""
    import torch

    size = explainer.card.preprocessing.img_size_px
    if explainer.network is None:
        return size * OCCLUSION_STRIDE_FRAC

    from cfimg.models import feature_module

    shapes = []
    layer = feature_module(explainer.network)
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            explainer.network(torch.zeros(1, 3, size, size, device=explainer.device))
    finally:
        handle.remove()
    return size / shapes[-1][-1]


def select_samples(source: Path, split: str):
    from cfimg.data import load_samples
    from cfimg.labels import COUNTERFEIT_INDEX

    samples = load_samples(source)
    note = f"split `{split}` of {source}"
    if any(s.split for s in samples):
        samples = [s for s in samples if s.split == split]
    else:
        note = f"all of {source} (no split column: may include training images)"
    counterfeits = [s for s in samples if s.label == COUNTERFEIT_INDEX]
    with_boxes = [s for s in counterfeits if visible_boxes(s)]
    return counterfeits, with_boxes, note


def print_by_kind(records: list[dict]) -> None:
    """Exact-box peak hit rate per defect kind, beside the random-point rate for that kind."""
    from cfimg.explain import boxes_area_fraction, point_in_boxes

    kinds = sorted({kind for r in records for kind, _box in r["defects"]})
    print("| Defect kind | photos | peak in its box | random point in its box |")
    print("|---|---|---|---|")
    for kind in kinds:
        hits, chance = [], []
        for r in records:
            boxes = [box for k, box in r["defects"] if k == kind]
            if boxes:
                hits.append(point_in_boxes(r["peak"], boxes))
                chance.append(boxes_area_fraction(boxes, (0, 0, *r["size"])))
        print(
            f"| {kind} | {len(hits)} | {100 * np.mean(hits):.0f}% | {100 * np.mean(chance):.0f}% |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="run folder or best.pt")
    parser.add_argument("--data", type=Path, help="dataset folder/manifest (default RUN/split.csv)")
    parser.add_argument("--split", default="test", help="split to measure on (default test)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch

    from cfimg.benchutil import machine_summary, matmul_gflops
    from cfimg.checkpoint import resolve_checkpoint_path
    from cfimg.explain import (
        Explainer,
        boxes_area_fraction,
        gradcam_batch,
        heatmap_on_canvas,
        heatmap_peak,
        occlusion_map,
        point_in_boxes,
        view_box_in_original,
    )
    from cfimg.imageio import load_rgb
    from cfimg.preprocess import preprocess_image

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = resolve_checkpoint_path(args.model)
    source = args.data or checkpoint.parent / "split.csv"
    if not source.exists():
        print(f"error: {source}: not found; pass --data DATASET", file=sys.stderr)
        return 2
    counterfeits, samples, note = select_samples(source, args.split)
    if args.limit:
        samples = samples[: args.limit]
    gflops = matmul_gflops()
    explainer = Explainer(checkpoint, device=args.device)
    card, prep = explainer.card, explainer.card.preprocessing
    cell_px = resolution_px(explainer)

    records = []  # one per flagged photo
    scored = 0
    start = time.perf_counter()
    for first in range(0, len(samples), args.batch):
        chunk = samples[first : first + args.batch]
        photos = [load_rgb(s.path) for s in chunk]
        views = np.stack([preprocess_image(p, prep) for p in photos])
        if explainer.network is not None:
            heatmaps, p_counterfeit = gradcam_batch(explainer.network, card, views)
        else:  # ONNX: occlusion, one photo at a time
            pairs = [occlusion_map(explainer.engine.predict, card, view) for view in views]
            heatmaps, p_counterfeit = [h for h, _ in pairs], [p for _, p in pairs]
        scored += len(chunk)
        for sample, photo, heatmap, p in zip(chunk, photos, heatmaps, p_counterfeit, strict=True):
            if p < card.threshold:
                continue
            w, h = photo.size
            x0, _y0, x1, _y1 = view_box_in_original(w, h, prep)
            margin = 0.5 * cell_px * (x1 - x0) / prep.img_size_px  # half a cell, photo pixels
            peak = heatmap_peak(heatmap, w, h, prep)
            heat, _box = heatmap_on_canvas(heatmap, (w, h), (w, h), prep)
            boxes = visible_boxes(sample)
            records.append(
                {
                    "size": (w, h),
                    "boxes": boxes,
                    "defects": visible_defects(sample),
                    "mass": heat_mass_inside(heat, boxes),
                    "item": item_box(sample),
                    "peak": peak,
                    "margin": margin,
                }
            )
    elapsed = time.perf_counter() - start

    def rates(margin_of) -> dict[str, tuple[int, float]]:
        n = len(records)
        result = {}
        hits = sum(point_in_boxes(r["peak"], r["boxes"], margin_of(r)) for r in records)
        result[f"{method} peak"] = (hits, hits / n if n else float("nan"))
        area = [
            boxes_area_fraction(r["boxes"], (0, 0, *r["size"]), margin_of(r), grid_px=0.5)
            for r in records
        ]
        result["uniform random point in the photo"] = (None, float(np.mean(area)) if n else 0)
        if records and all(r["item"] for r in records):
            item = [
                boxes_area_fraction(r["boxes"], r["item"], margin_of(r), grid_px=0.5)
                for r in records
            ]
            result["uniform random point in the item box"] = (None, float(np.mean(item)))
        centre = sum(
            point_in_boxes((r["size"][0] / 2, r["size"][1] / 2), r["boxes"], margin_of(r))
            for r in records
        )
        result["photo centre"] = (centre, centre / n if n else float("nan"))
        relative = [
            None
            if r["peak"] is None
            else (r["peak"][0] / r["size"][0], r["peak"][1] / r["size"][1])
            for r in records
        ]
        other = []
        for i, r in enumerate(records):
            moved = [
                (rel[0] * r["size"][0], rel[1] * r["size"][1])
                for j, rel in enumerate(relative)
                if j != i and rel is not None
            ]
            if moved:
                other.append(np.mean([point_in_boxes(m, r["boxes"], margin_of(r)) for m in moved]))
        result[f"another photo's {method} peak"] = (None, float(np.mean(other)) if other else 0)
        return result

    method = "Grad-CAM" if explainer.network is not None else "occlusion"
    exact = rates(lambda r: 0.0)
    tolerant = rates(lambda r: r["margin"])
    n = len(records)
    machine = machine_summary()
    no_peak = sum(r["peak"] is None for r in records)
    print(f"<!-- bench_explain: {time.strftime('%Y-%m-%d')} -->")
    print(f"### {method} localisation ({card.arch}, {card.model_id or checkpoint})\n")
    print(
        f"Data: {note}. {len(counterfeits)} counterfeit photos, {len(samples)} measured "
        f"(at least one visible defect box), {n} flagged at threshold {card.threshold:.3f} "
        f"and scored here ({no_peak} with an empty heatmap, counted as misses). "
        f"{explainer.method}; one heatmap cell = {cell_px:.0f} px of the "
        f"{prep.img_size_px} px input; tolerance = half a cell in photo pixels "
        f"(median {np.median([r['margin'] for r in records]) if records else 0:.1f} px).\n"
    )
    print("| Location | hit rate, exact box | hit rate, box + half a cell |")
    print("|---|---|---|")
    for name in exact:
        cells = []
        for table in (exact, tolerant):
            hits, rate = table[name]
            text = f"{100 * rate:.1f}%"
            if name == f"{method} peak" and n:
                low, high = wilson_interval(hits, n)
                text += f" (95% CI {100 * low:.0f}-{100 * high:.0f}%, {hits}/{n})"
            cells.append(text)
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    if records:
        mass = 100 * np.mean([r["mass"] for r in records])
        area = 100 * np.mean([boxes_area_fraction(r["boxes"], (0, 0, *r["size"])) for r in records])
        print(
            f"\nHeat mass inside the visible defect boxes: {mass:.1f}% on average, where the boxes "
            f"cover {area:.1f}% of the photo (a heatmap blind to the defect scores about the "
            "latter).\n"
        )
        print_by_kind(records)
    per_image_ms = 1000 * elapsed / max(scored, 1)
    print(
        f"\n{method} + decode: {per_image_ms:.0f} ms/photo on {explainer.device} "
        f"(batch {args.batch}); {machine.get('cpu', '')}, matmul {gflops:.0f} GFLOP/s.\n"
        f"Command: `python scripts/bench_explain.py {' '.join(sys.argv[1:])}`"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
