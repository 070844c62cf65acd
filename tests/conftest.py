"""Shared test helpers: tiny generated images and an in-process `cfimg` runner."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(
    path: Path, *, size_px: tuple[int, int] = (48, 40), seed: int = 0, fmt: str | None = None
) -> Path:
    """Write a small noisy RGB image; distinct seeds give distinct file contents."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, size=3)
    noise = rng.integers(-30, 31, size=(size_px[1], size_px[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, format=fmt)
    return path


def make_image_tree(
    root: Path,
    *,
    labels: Sequence[str] = ("genuine", "counterfeit"),
    categories: Sequence[str] = ("bag", "watch"),
    brands: Sequence[str] = ("brand-a",),
    items: int = 3,
    views: int = 2,
    size_px: int = 40,
) -> list[Path]:
    """Write ROOT/<label>/<category>/<brand>/<label>-<category>-<brand>-item<i>_<view>.jpg.

    Every file has different pixels, so no two files are content duplicates.
    """
    paths = []
    for label in labels:
        for category in categories:
            for brand in brands:
                for item in range(items):
                    for view in range(1, views + 1):
                        name = f"{label}-{category}-{brand}-item{item}_{view}.jpg"
                        path = root / label / category / brand / name
                        seed = zlib.crc32(str(path.relative_to(root)).encode())
                        paths.append(write_image(path, size_px=(size_px, size_px), seed=seed))
    return paths


@pytest.fixture(name="write_image")
def write_image_fixture() -> Callable[..., Path]:
    """`write_image(path, size_px=(w, h), seed=0, fmt=None) -> path`: one small noisy image."""
    return write_image


@pytest.fixture(name="make_image_tree")
def make_image_tree_fixture() -> Callable[..., list[Path]]:
    """`make_image_tree(root, labels=..., categories=..., brands=..., items=3, views=2)`."""
    return make_image_tree


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """`run_cli(["data", "check", root]) -> (exit_code, stdout, stderr)`, run in-process."""
    from cfimg.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()  # drop output from before this call
        try:
            main([str(arg) for arg in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
