"""The images an export is checked and calibrated on, decoded exactly as `cfimg predict` does.

Check images: --check-data, else the run's validation split, else (said so in the report) random
photos. Calibration images for int8: --calib, else the run's training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfimg.errors import CfimgError, UsageError
from cfimg.preprocess import Preprocessing

DEFAULT_CHECK_IMAGES = 256
DEFAULT_CALIB_IMAGES = 200


@dataclass
class CheckImages:
    """Images to check and calibrate with: model-sized crops, and (for --any-size) the decoded
    photos they came from."""

    crops: np.ndarray  # [N, S, S, 3] uint8
    decoded: list[np.ndarray]  # [H, W, 3] uint8 each; empty unless kept
    labels: np.ndarray | None  # [N] class indices, None when unlabelled
    source: str


def check_images(
    run_dir: Path | None,
    check_data: str | Path | None,
    prep: Preprocessing,
    limit: int,
    *,
    keep_decoded: bool,
) -> CheckImages:
    """Real labelled images: --check-data, else the run's validation split; random otherwise."""
    from cfimg.data import load_samples

    if check_data is not None:
        samples = load_samples(check_data)
        return load_images(
            _spread(samples, limit), prep, f"--check-data {check_data}", keep_decoded
        )
    if run_dir is not None:
        try:
            samples = [s for s in load_samples(run_dir / "split.csv") if s.split == "val"]
        except CfimgError:
            samples = []
        if samples:
            images = load_images(
                _spread(samples, limit), prep, f"validation split of {run_dir}", keep_decoded
            )
            if len(images.crops):
                return images
    return _random_images(prep, min(limit, 16), keep_decoded)


def calibration_images(
    run_dir: Path | None,
    calib_source: str | Path | None,
    prep: Preprocessing,
    limit: int,
    *,
    keep_decoded: bool,
) -> CheckImages:
    """--calib DATA (a dataset or any folder of images), else the run's training split."""
    from cfimg.data import load_samples
    from cfimg.errors import DatasetError

    if calib_source is not None:
        try:
            samples = load_samples(calib_source)
        except DatasetError:
            samples = unlabelled_images(Path(calib_source))
        source = f"--calib {calib_source}"
    elif run_dir is not None:
        samples = [s for s in load_samples(run_dir / "split.csv") if s.split == "train"]
        source = f"training split of {run_dir}"
    else:
        raise UsageError("--int8 needs calibration images: give --calib DATA (a folder of photos)")
    images = load_images(_spread(samples, limit), prep, source, keep_decoded)
    if not len(images.crops):
        raise UsageError(f"{source}: no readable images to calibrate int8 with")
    return images


def unlabelled_images(folder: Path) -> list:
    """The image files below `folder` as samples with no label (-1)."""
    from types import SimpleNamespace

    from cfimg.imageio import is_image_path

    if not folder.is_dir():
        raise UsageError(f"--calib {folder}: not a dataset or a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))
    return [SimpleNamespace(path=str(p), label=-1) for p in paths]


def load_images(
    samples: Sequence, prep: Preprocessing, source: str, keep_decoded: bool
) -> CheckImages:
    """Decode through the one image path, cfimg.model_input.load_model_input; a file it cannot
    read is skipped (a bad file is a dataset problem, not an export problem)."""
    from cfimg.model_input import load_model_input  # imports torch

    crops, decoded, labels = [], [], []
    for sample in samples:
        item = load_model_input(sample.path, prep, keep_image=keep_decoded)
        if item.error:
            continue
        crops.append(item.pixels)
        if keep_decoded:
            decoded.append(np.asarray(item.image, dtype=np.uint8))
        labels.append(int(getattr(sample, "label", -1)))
    has_labels = bool(labels) and all(label >= 0 for label in labels)
    size = prep.img_size_px
    return CheckImages(
        np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        decoded,
        np.asarray(labels) if has_labels else None,
        f"{source} ({len(crops)} images)",
    )


def _spread(samples: Sequence, limit: int) -> list:
    """At most `limit` samples taken evenly over the (path-sorted) list: every class and brand."""
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


def _random_images(prep: Preprocessing, count: int, keep_decoded: bool) -> CheckImages:
    """Smooth random photos of assorted sizes: a weak stand-in for real images, said so."""
    from PIL import Image

    from cfimg.preprocess import preprocess_image

    rng = np.random.default_rng(0)
    crops, decoded = [], []
    for index in range(count):
        scale = 1.0 + 1.5 * rng.random()
        width = int(prep.resize_px * (scale if index % 2 else 1.0 + 0.3 * rng.random()))
        height = int(prep.resize_px * (1.0 + 0.3 * rng.random() if index % 2 else scale))
        coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        crops.append(preprocess_image(image, prep))
        if keep_decoded:
            decoded.append(np.asarray(image, dtype=np.uint8))
    return CheckImages(
        np.stack(crops),
        decoded,
        None,
        f"random images ({count}; no run split or --check-data was available)",
    )
