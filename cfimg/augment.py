"""Training augmentations that keep counterfeit cues: geometry and photography vary, the print
does not. No horizontal flip by default (mirrored lettering is itself a counterfeit cue), only
mild brightness/contrast (a brand colour shifted in hue is a cue too).

Every random draw comes from a generator seeded by (seed, epoch, sample index), so a sample looks
the same whichever worker loads it and whether or not the run was resumed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from cfimg.preprocess import Preprocessing, resized_size


@dataclass(frozen=True)
class AugmentConfig:
    """The training augmentation's knobs; part of TrainConfig and so of every run's config.json."""

    # Mild geometry: proportions (pitch vs item size, letter widths, hardware aspect) are cues,
    # so crops keep the aspect ratio nearly square and most of the frame.
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area fraction of the random crop
    crop_ratio: tuple[float, float] = (0.95, 1.05)
    rotate_deg: float = 8.0
    perspective: float = 0.05  # corner displacement as a fraction of the side
    perspective_p: float = 0.2
    blur_p: float = 0.1
    blur_radius_px: float = 1.0
    noise_p: float = 0.2
    noise_std: float = 6.0  # in 0..255 levels
    jpeg_p: float = 0.25
    jpeg_quality: tuple[int, int] = (60, 95)
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False
    # Native-scale crops: a random square of this side from the photo at the evaluation scale
    # (shorter side resize_px), so training sees the pixels inference sees, a few px wide cues
    # included, while the fully convolutional network still covers the whole frame at inference.
    # 0: a resized view of most of the frame (crop_scale), at the model's input size. None: the
    # training config decides (TrainConfig.resolved_crop_px: the architecture's input side when
    # the frame is larger than it); augment_image treats it as 0.
    native_crop_px: int | None = None
    # Scale jitter of the native crops: each one's scale drawn log-uniformly in [1/z, z] times the
    # evaluation scale. An item fills a different share of each photo, so a cue's size in pixels
    # varies from photo to photo anyway; proportions (the aspect ratio) are kept. 1: no jitter.
    native_zoom: float = 1.0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator for sample `index`'s view in `epoch`: the same in any worker, on resume."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)
    return generator


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=generator)) < p


def random_resized_crop_box(
    width: int, height: int, aug: AugmentConfig, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box rule, drawn from `generator`."""
    area = width * height
    log_ratio = (math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(generator, *aug.crop_scale)
        ratio = math.exp(_uniform(generator, *log_ratio))
        w = round(math.sqrt(target_area * ratio))
        h = round(math.sqrt(target_area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(_uniform(generator, 0, width - w + 1))
            top = int(_uniform(generator, 0, height - h + 1))
            return left, top, left + w, top + h
    side = min(width, height)  # fall back to the centre square, as evaluation sees it
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def native_crop(
    image: Image.Image,
    prep: Preprocessing,
    size_px: int,
    generator: torch.Generator,
    zoom: float = 1.0,
) -> Image.Image:
    """A random size_px square of `image` at the evaluation scale (shorter side resize_px), or,
    with `zoom` z > 1, at that scale times a factor drawn log-uniformly in [1/z, z]."""
    scaled = resized_size(image.width, image.height, prep.resize_px)
    if zoom > 1.0:
        factor = math.exp(_uniform(generator, -math.log(zoom), math.log(zoom)))
        # the box, in `image`'s pixels, that becomes size_px at the evaluation scale x factor
        side = min(size_px * image.width / (scaled[0] * factor), image.width, image.height)
        left = _uniform(generator, 0, image.width - side)
        top = _uniform(generator, 0, image.height - side)
        box = (left, top, left + side, top + side)
        return image.resize((size_px, size_px), prep.pil_filter, box=box)
    if scaled != image.size:
        image = image.resize(scaled, prep.pil_filter)
    left = int(_uniform(generator, 0, image.width - size_px + 1))
    top = int(_uniform(generator, 0, image.height - size_px + 1))
    return image.crop((left, top, left + size_px, top + size_px))


def _perspective_coeffs(size: int, strength: float, generator: torch.Generator) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) that move each corner by up to `strength`."""
    d = strength * size
    src = [(0, 0), (size, 0), (size, size), (0, size)]
    dst = [(x + _uniform(generator, -d, d), y + _uniform(generator, -d, d)) for x, y in src]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs)).tolist()


def augment_image(
    image: Image.Image, prep: Preprocessing, aug: AugmentConfig, generator: torch.Generator
) -> np.ndarray:
    """RGB photo -> uint8 [S, S, 3] training view, resampled with the card's interpolation
    (S: native_crop_px when set, else the model's input size)."""
    if not aug.native_crop_px:
        size = prep.img_size_px
        box = random_resized_crop_box(image.width, image.height, aug, generator)
        view = image.resize((size, size), prep.pil_filter, box=box)
    else:
        size = aug.native_crop_px
        view = native_crop(image, prep, size, generator, aug.native_zoom)
    fill = tuple(int(c) for c in np.asarray(view).reshape(-1, 3).mean(axis=0))
    if aug.rotate_deg > 0:
        angle = _uniform(generator, -aug.rotate_deg, aug.rotate_deg)
        view = view.rotate(angle, resample=prep.pil_filter, fillcolor=fill)
    if _chance(generator, aug.perspective_p):
        coeffs = _perspective_coeffs(size, aug.perspective, generator)
        view = view.transform(
            (size, size), Image.Transform.PERSPECTIVE, coeffs, prep.pil_filter, fillcolor=fill
        )
    if aug.hflip and _chance(generator, 0.5):
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if _chance(generator, aug.blur_p):
        view = view.filter(ImageFilter.GaussianBlur(_uniform(generator, 0.3, aug.blur_radius_px)))
    if _chance(generator, aug.jpeg_p):
        buffer = io.BytesIO()
        view.save(buffer, "JPEG", quality=int(_uniform(generator, *aug.jpeg_quality)))
        view = Image.open(buffer).convert("RGB")
    pixels = np.asarray(view, dtype=np.float32)
    gain = 1.0 + _uniform(generator, -aug.contrast, aug.contrast)
    offset = 255.0 * _uniform(generator, -aug.brightness, aug.brightness)
    pixels = (pixels - pixels.mean()) * gain + pixels.mean() + offset
    if _chance(generator, aug.noise_p):
        noise = torch.randn(pixels.shape, generator=generator).numpy() * aug.noise_std
        pixels = pixels + noise
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def decode_size_for_training(prep: Preprocessing, aug: AugmentConfig) -> int:
    """Shorter side to decode at so the smallest random crop is not upsampled much."""
    if aug.native_crop_px:  # at the evaluation scale, or up to native_zoom times it
        return math.ceil(prep.resize_px * max(aug.native_zoom, 1.0))
    return math.ceil(prep.resize_px / math.sqrt(max(aug.crop_scale[0], 0.25)))


def mixup_batch(
    images_uint8_nhwc: torch.Tensor, alpha: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018; timm's `--mixup`): each photo of the batch blended with another
    of the same batch, weight lam ~ Beta(alpha, alpha). Returns the blended uint8 batch, the
    partner of each photo (an index permutation) and lam; the loss is then
    lam * loss(own label) + (1 - lam) * loss(partner's label). A regulariser against memorising a
    small set: a photo is never seen twice the same, and each blend keeps both photos' fine print
    at full resolution, only fainter. Drawn from `seed`, so a resumed run repeats its blends."""
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(images_uint8_nhwc))).to(images_uint8_nhwc.device)
    blended = lam * images_uint8_nhwc.float() + (1.0 - lam) * images_uint8_nhwc[partner].float()
    return blended.round_().clamp_(0, 255).to(torch.uint8), partner, lam
