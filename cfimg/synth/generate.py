"""The dataset driver: plan balanced items, render and photograph them in worker processes, and
write the class/category/brand tree and the manifest.

Each item has its own random streams seeded from (seed, item index), so the output does not depend
on the number of workers, and the same arguments give byte-identical files. The streams that shape
and photograph an item never depend on its label; only the defect stream does.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfimg.data.sources import MANIFEST_NAME  # the manifest format cfimg.data reads
from cfimg.errors import UsageError
from cfimg.fileio import atomic_write_text
from cfimg.labels import CLASS_NAMES
from cfimg.synth.bag import render_bag
from cfimg.synth.brands import BRANDS_BY_CATEGORY, CATEGORIES
from cfimg.synth.defects import DEFECTS_BY_CATEGORY, DIFFICULTIES, sample_defects
from cfimg.synth.nuisances import encode_jpeg, photograph, plan_shoot
from cfimg.synth.paint import RenderedItem
from cfimg.synth.watch import render_watch

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "category",
    "brand",
    "item_id",
    "view",
    "difficulty",
    "defects",
    "defect_boxes",
)
VIEW_COUNT_P: tuple[float, float, float] = (0.3, 0.4, 0.3)  # 1, 2 or 3 photos of an item
MIN_SIZE_PX, MAX_SIZE_PX = 64, 2048
WATCH_CANVAS_SCALE = 1.25  # the watch head is the framed part; its strap runs beyond it

# Random streams of one item (the spawn key's second element).
STREAM_PLAN, STREAM_MAKE, STREAM_DEFECTS, STREAM_PHOTO = 0, 1, 2, 3
BRANDS_PER_CATEGORY = 3
BLOCK = len(CATEGORIES) * BRANDS_PER_CATEGORY  # (category, brand) pairs: a block has 2 x BLOCK


@dataclass(frozen=True)
class ItemPlan:
    index: int
    category: str
    brand: str  # slug
    label: str  # a CLASS_NAMES entry
    n_views: int
    first_defect: str  # "" for genuine items

    @property
    def item_id(self) -> str:
        return f"{self.category}-{self.brand}-{self.index:06d}"


@dataclass(frozen=True)
class SynthConfig:
    out_dir: Path
    seed: int
    difficulty: str
    size_px: int


def item_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, stream)))


def plan_items(n_images: int, seed: int) -> list[ItemPlan]:
    """Items in blocks of 12: every (category, brand) pair once genuine and once counterfeit.

    Item pairs (2k, 2k + 1) are a genuine item and its counterfeit twin of the same category and
    brand, with the same number of views, so even a small set is balanced in items and images.
    The view count comes from the pair's stream, not from the label.
    """
    n_labels = len(CLASS_NAMES)
    plans: list[ItemPlan] = []
    total = 0
    index = 0
    while total < n_images:
        is_fake = index % n_labels == 1
        category = CATEGORIES[(index // n_labels) % len(CATEGORIES)]
        brand_i = (index // (n_labels * len(CATEGORIES))) % BRANDS_PER_CATEGORY
        twin = index - index % n_labels
        views = 1 + int(item_rng(seed, twin, STREAM_PLAN).choice(3, p=VIEW_COUNT_P))
        views = min(views, n_images - total)
        first_defect = ""
        if is_fake:  # cycle through the catalogue, so every kind appears in a small set
            catalogue = DEFECTS_BY_CATEGORY[category]
            rank = (index // (n_labels * BLOCK)) * BRANDS_PER_CATEGORY + brand_i
            first_defect = catalogue[rank % len(catalogue)]
        plans.append(
            ItemPlan(
                index=index,
                category=category,
                brand=BRANDS_BY_CATEGORY[category][brand_i].slug,
                label=CLASS_NAMES[1] if is_fake else CLASS_NAMES[0],
                n_views=views,
                first_defect=first_defect,
            )
        )
        total += views
        index += 1
    return plans


def item_defects(plan: ItemPlan, config: SynthConfig) -> dict[str, dict]:
    """The item's defects with their parameters, first kind first (none for a genuine item)."""
    if not plan.first_defect:
        return {}
    rng = item_rng(config.seed, plan.index, STREAM_DEFECTS)
    return sample_defects(plan.category, config.difficulty, plan.first_defect, rng)


def render_item(plan: ItemPlan, config: SynthConfig) -> RenderedItem:
    """The item itself: its brand's specification, tolerance, and its defects if counterfeit."""
    brand = next(b for b in BRANDS_BY_CATEGORY[plan.category] if b.slug == plan.brand)
    make = item_rng(config.seed, plan.index, STREAM_MAKE)
    colours = brand.colourways[int(make.integers(len(brand.colourways)))]
    defects = item_defects(plan, config)
    if plan.category == "bag":
        item = render_bag(brand, colours, config.size_px, make, defects)  # type: ignore[arg-type]
    else:
        canvas_px = round(config.size_px * WATCH_CANVAS_SCALE)
        item = render_watch(brand, colours, canvas_px, make, defects)  # type: ignore[arg-type]
    unboxed = set(defects) - {kind for kind, _ in item.defect_boxes}
    if unboxed:  # a renderer bug, not a user error: every defect must say where it is
        raise RuntimeError(f"{plan.item_id}: defects without a box: {sorted(unboxed)}")
    return item


def make_item(plan: ItemPlan, config: SynthConfig) -> list[dict[str, str]]:
    """Render one item, photograph it n_views times, write the JPEGs; return manifest rows."""
    item = render_item(plan, config)
    photo_rng = item_rng(config.seed, plan.index, STREAM_PHOTO)
    shoot = plan_shoot(photo_rng)
    kinds = ";".join(item_defects(plan, config))
    rows = []
    for view in range(plan.n_views):
        photo = photograph(item, shoot, config.size_px, config.difficulty, photo_rng)
        rel = f"{plan.label}/{plan.category}/{plan.brand}/{plan.item_id}-v{view}.jpg"
        _write_bytes(config.out_dir / rel, encode_jpeg(photo))
        rows.append(
            {
                "path": rel,
                "label": plan.label,
                "category": plan.category,
                "brand": plan.brand,
                "item_id": plan.item_id,
                "view": str(view),
                "difficulty": config.difficulty,
                "defects": kinds,
                "defect_boxes": json.dumps(photo.defect_boxes, separators=(",", ":")),
            }
        )
    return rows


def _write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so a killed run never leaves a truncated JPEG under its final name.
    (No fsync per image: the manifest, written last and atomically, marks a finished run.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _make_item_task(args: tuple[ItemPlan, SynthConfig]) -> list[dict[str, str]]:
    return make_item(*args)


def generate_dataset(
    out_dir: str | Path,
    *,
    n_images: int = 2000,
    seed: int = 0,
    difficulty: str = "medium",
    size_px: int = 512,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic genuine/counterfeit product-photo dataset; returns the manifest's path.

    `workers`: worker processes (None: one per CPU; 0: in this process). The files do not depend
    on it. An existing dataset in `out_dir` is replaced only with `overwrite`.
    """
    config = _check_args(Path(out_dir), n_images, seed, difficulty, size_px)
    workers = _resolve_workers(workers)
    _prepare_out_dir(config.out_dir, overwrite)
    plans = plan_items(n_images, seed)
    for plan in plans:
        (config.out_dir / plan.label / plan.category / plan.brand).mkdir(
            parents=True, exist_ok=True
        )
    rows: list[dict[str, str]] = []
    with _progress_bar(progress, n_images) as advance:
        for item_rows in _run(plans, config, workers):
            rows.extend(item_rows)
            advance(len(item_rows))
    rows.sort(key=lambda row: row["path"])
    manifest = config.out_dir / MANIFEST_NAME
    atomic_write_text(manifest, manifest_text(rows))
    return manifest


def manifest_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _check_args(out_dir: Path, n_images: int, seed: int, difficulty: str, size_px: int):
    if n_images < 1:
        raise UsageError(f"--n must be at least 1 (got {n_images})")
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer (got {seed})")
    if difficulty not in DIFFICULTIES:
        raise UsageError(
            f"--difficulty must be one of {', '.join(DIFFICULTIES)} (got {difficulty!r})"
        )
    if not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise UsageError(
            f"--size must be between {MIN_SIZE_PX} and {MAX_SIZE_PX} px (got {size_px})"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a directory")
    return SynthConfig(out_dir=out_dir, seed=seed, difficulty=difficulty, size_px=size_px)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if workers < 0:
        raise UsageError(f"--workers must be 0 (in-process) or more (got {workers})")
    return workers


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    ours = [out_dir / MANIFEST_NAME, *(out_dir / name for name in CLASS_NAMES)]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{out_dir}: already holds a dataset ({existing[0].name}); "
            "choose another folder or pass --overwrite"
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    preview = out_dir / "preview.png"
    if overwrite and preview.exists():
        preview.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _run(plans: list[ItemPlan], config: SynthConfig, workers: int) -> Iterator[list[dict]]:
    tasks = [(plan, config) for plan in plans]
    if workers == 0 or len(plans) == 1:
        yield from map(_make_item_task, tasks)
        return
    # spawn: safe beside threads (the progress bar's) and the same on every platform
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=min(workers, len(plans))) as pool:
        yield from pool.imap_unordered(_make_item_task, tasks, chunksize=2)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over images written (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich import get_console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # No bar debris in logs and pipes.
    with Progress(*columns, disable=not get_console().is_terminal) as bar:
        task = bar.add_task("images", total=total)
        yield lambda n: bar.advance(task, n)
