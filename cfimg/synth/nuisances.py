"""Photographing an item: surface, framing, perspective, shadows, lighting, white balance, blur,
sensor noise and JPEG compression. Everything here ignores the label: genuine and counterfeit items
go through the same draws from the same distributions, and these variations dominate the image
statistics, so no global statistic tells the classes apart.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from cfimg.synth.paint import RenderedItem, grain, white_noise

SURFACES: tuple[str, ...] = ("studio", "wood", "marble", "linen", "concrete", "table_wall")

# Blur and noise grow with difficulty (they hide fine detail equally in both classes).
MAX_DEFOCUS_PX = {"easy": 0.8, "medium": 1.1, "hard": 1.5}  # Gaussian sigma at 512 px
MAX_NOISE = {"easy": 3.0, "medium": 5.0, "hard": 7.5}  # sensor noise sigma, 0-255 scale
PARTIAL_CROP_P = 0.12  # views where part of the item is out of frame
OCCUPANCY = (0.45, 0.85)  # the item's larger side, as a fraction of the frame
JPEG_QUALITY = (60, 95)


@dataclass(frozen=True)
class Shoot:
    """One seller's setup: all views of an item share the surface and its colours."""

    surface: str
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    angle: float
    warmth: float


def plan_shoot(rng: np.random.Generator) -> Shoot:
    surface = str(rng.choice(SURFACES))
    palettes = {
        "studio": [
            (0.93, 0.93, 0.92),
            (0.85, 0.86, 0.88),
            (0.30, 0.31, 0.33),
            (0.90, 0.86, 0.80),
            (0.78, 0.84, 0.86),
        ],
        "wood": [(0.55, 0.36, 0.20), (0.72, 0.55, 0.36), (0.36, 0.24, 0.15), (0.80, 0.68, 0.52)],
        "marble": [(0.92, 0.92, 0.90), (0.86, 0.85, 0.84), (0.25, 0.25, 0.26)],
        "linen": [(0.86, 0.82, 0.74), (0.70, 0.72, 0.74), (0.60, 0.52, 0.46), (0.88, 0.88, 0.86)],
        "concrete": [(0.62, 0.62, 0.60), (0.48, 0.48, 0.47), (0.74, 0.72, 0.69)],
        "table_wall": [(0.90, 0.88, 0.84), (0.80, 0.82, 0.80), (0.66, 0.70, 0.74)],
    }
    options = palettes[surface]
    a = np.array(options[int(rng.integers(len(options)))])
    a = a * rng.uniform(0.88, 1.08) * rng.uniform(0.97, 1.03, size=3)
    b = np.array(options[int(rng.integers(len(options)))])
    b = b * rng.uniform(0.7, 1.0) * rng.uniform(0.97, 1.03, size=3)
    return Shoot(
        surface=surface,
        colour_a=tuple(float(v) for v in np.clip(a, 0, 1)),
        colour_b=tuple(float(v) for v in np.clip(b, 0, 1)),
        angle=float(rng.uniform(0, math.pi)),
        warmth=float(rng.normal(0.0, 0.05)),
    )


def surface_image(shoot: Shoot, size: int, rng: np.random.Generator) -> np.ndarray:
    """The surface under the item, float32 RGB on a 0-255 scale (a fresh, writable array).
    Surfaces are drawn at half resolution and enlarged: the item is what the camera focuses on."""
    half = max(8, size // 2)
    small = np.clip(_surface(shoot, half, rng) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    big = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.array(big, dtype=np.float32)


def _surface(shoot: Shoot, s: int, rng: np.random.Generator) -> np.ndarray:
    lin = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
    x, y = lin[None, :], lin[:, None]
    a = np.array(shoot.colour_a, dtype=np.float32)
    b = np.array(shoot.colour_b, dtype=np.float32)
    kind = shoot.surface
    if kind == "studio":
        t = 1.0 + 0.16 * y * rng.choice([-1.0, 1.0]) - 0.10 * (x * x + y * y)
        out = (
            a[None, None, :] * t[..., None] + 0.012 * grain((s, s), rng, max(2, s // 16))[..., None]
        )
        return out
    cos, sin = math.cos(shoot.angle), math.sin(shoot.angle)
    u = x * cos + y * sin
    turb = grain((s, s), rng, max(2, s // 5)) * 0.6 + grain((s, s), rng, max(2, s // 20)) * 0.25
    if kind == "wood":
        return _wood(a, s, rng)
    if kind == "marble":
        t2 = turb + grain((s, s), rng, max(2, s // 60)) * 0.12
        veins = 1.0 - np.abs(np.sin(2 * np.pi * (u * rng.uniform(0.6, 1.3) + t2 * 1.1)))
        strength = np.clip(0.6 + 0.8 * grain((s, s), rng, max(2, s // 4)), 0.0, 1.0)
        veins = veins**30 * strength + 0.35 * veins**6 * strength
        vein_rgb = a * 0.62 if a.mean() > 0.5 else np.minimum(a * 2.6, 1.0)
        out = a[None, None, :] * (1.0 + 0.03 * turb)[..., None]
        return out + (vein_rgb - a)[None, None, :] * np.minimum(veins, 1.0)[..., None] * 0.7
    if kind == "linen":
        period = max(2.2, s / rng.uniform(60, 100))
        xs = np.arange(s, dtype=np.float32)
        weave = 0.010 * (
            np.sin(2 * np.pi * xs / period)[None, :] + np.sin(2 * np.pi * xs / period)[:, None]
        )
        slub = _streaks(s, rng, along=s // 6, across=max(2, s // 120)) * 0.05
        slub_t = _streaks(s, rng, along=s // 6, across=max(2, s // 120)).T * 0.04
        return a[None, None, :] * (1.0 + weave + slub + slub_t + 0.03 * turb)[..., None]
    if kind == "concrete":
        speck = rng.random((s, s), dtype=np.float32)
        speck = np.where(speck > 0.985, -0.12, 0.0).astype(np.float32)
        fine = white_noise((s, s), rng) * 0.025
        return a[None, None, :] * (1.0 + 0.09 * turb + fine + speck)[..., None]
    # table_wall: a wall behind, a table top in front, meeting at a soft horizon
    horizon = rng.uniform(-0.3, 0.05)
    blend = np.clip((y - horizon) / 0.012 + 0.5, 0.0, 1.0)
    wall = a[None, None, :] * (1.0 - 0.12 * (y + 0.5))[..., None]
    table = b[None, None, :] * (0.92 + 0.10 * (y - horizon))[..., None] + 0.02 * turb[..., None]
    return wall * (1.0 - blend[..., None]) + table * blend[..., None]


def _streaks(s: int, rng: np.random.Generator, along: int, across: int) -> np.ndarray:
    """Smooth noise stretched along x: features `along` pixels long and `across` pixels wide."""
    small = rng.random((s // across + 3, s // along + 3), dtype=np.float32) * 2.0 - 1.0
    big = Image.fromarray(small, "F").resize(
        (small.shape[1] * along, small.shape[0] * across), Image.Resampling.BICUBIC
    )
    return np.asarray(big, dtype=np.float32)[across : across + s, along : along + s]


def _wood(colour: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Planks with long, gently wandering grain; laid horizontally or vertically."""
    wander = _streaks(s, rng, along=max(4, s // 2), across=max(2, s // 10))
    fine = _streaks(s, rng, along=max(4, s // 4), across=2)
    y = (np.arange(s, dtype=np.float32) / s)[:, None]
    plank_w = rng.uniform(0.16, 0.32)
    phase = rng.uniform(0, 1)
    plank = np.floor(y / plank_w + phase)
    rings = np.sin(2 * np.pi * (y * rng.uniform(14, 26) + wander * 0.9 + plank * 0.37))
    tone = 0.80 + 0.10 * rings + 0.06 * fine + 0.05 * np.sin(plank * 12.9898)
    seam = np.abs((y / plank_w + phase) - np.round(y / plank_w + phase)) < 0.5 / (s * plank_w)
    tone = np.where(seam, tone * 0.55, tone)
    out = colour[None, None, :] * tone[..., None]
    return out.transpose(1, 0, 2) if rng.random() < 0.5 else out


@dataclass(frozen=True)
class Photo:
    image: Image.Image  # RGB
    jpeg_quality: int
    defect_boxes: list[dict]


def photograph(
    item: RenderedItem, shoot: Shoot, size_px: int, difficulty: str, rng: np.random.Generator
) -> Photo:
    """One photo of `item`: the same procedure for every item, whatever its label.

    Pixel arithmetic runs in float32 on a 0-255 scale, with the smooth fields (shadows, light)
    computed coarse and enlarged: a 512 px photo takes about 20 ms.
    """
    s = size_px
    homography = _framing(item, s, rng)
    warped = _place(item.image, homography, s)  # premultiplied RGBa
    layer = np.asarray(warped, dtype=np.float32)
    background = surface_image(shoot, s, rng)
    shadow = _shadow_factor(warped.getchannel("a"), s, rng)
    # background weight: uncovered by the item, darkened by its shadow
    weight = (1.0 - layer[..., 3] * np.float32(1.0 / 255.0)) * shadow
    img = background
    img *= weight[..., None]
    img += layer[..., :3]
    img *= _light_field(s, shoot, rng)
    img = _blur(img, s, difficulty, rng)
    _add_noise(img, difficulty, rng)
    img += 0.5
    np.clip(img, 0.0, 255.0, out=img)
    photo = Image.fromarray(img.astype(np.uint8), "RGB")
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    boxes = [_project_box(kind, box, homography, s) for kind, box in item.defect_boxes]
    return Photo(image=photo, jpeg_quality=quality, defect_boxes=boxes)


def encode_jpeg(photo: Photo) -> bytes:
    """Fixed encoder settings, so the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    photo.image.save(
        buffer,
        format="JPEG",
        quality=photo.jpeg_quality,
        subsampling=2,
        optimize=False,
        progressive=False,
    )
    return buffer.getvalue()


def _framing(item: RenderedItem, s: int, rng: np.random.Generator) -> np.ndarray:
    """Canvas-to-photo homography: scale, rotation, a little perspective, and position."""
    hx0, hy0, hx1, hy1 = item.hero_box
    extent = max(hx1 - hx0, hy1 - hy0)
    centre = ((hx0 + hx1) / 2, (hy0 + hy1) / 2)
    occupancy = rng.uniform(*OCCUPANCY)
    scale = occupancy * s / extent
    angle = math.radians(float(np.clip(rng.normal(0.0, 7.0), -20.0, 20.0)))
    tilt = rng.uniform(-0.22, 0.22, size=2)
    to_unit = np.array(
        [[1 / extent, 0, -centre[0] / extent], [0, 1 / extent, -centre[1] / extent], [0, 0, 1]]
    )
    keystone = np.array([[1, 0, 0], [0, 1, 0], [tilt[0], tilt[1], 1]])
    cs, sn = math.cos(angle) * scale * extent, math.sin(angle) * scale * extent
    turn = np.array([[cs, -sn, 0], [sn, cs, 0], [0, 0, 1]])
    h = turn @ keystone @ to_unit
    corners = _apply(h, np.array([[hx0, hy0], [hx1, hy0], [hx1, hy1], [hx0, hy1]]))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    margin = 0.03 * s
    shift = np.empty(2)
    for axis in range(2):
        low, high = margin - lo[axis], s - margin - hi[axis]
        shift[axis] = rng.uniform(low, high) if high > low else (low + high) / 2
    if rng.random() < PARTIAL_CROP_P:
        axis = int(rng.integers(2))
        side = float(rng.choice([-1.0, 1.0]))
        cut = rng.uniform(0.12, 0.30) * (hi[axis] - lo[axis])
        shift[axis] = (-lo[axis] - cut) if side < 0 else (s - hi[axis] + cut)
    place = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]])
    return place @ h


def _apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.hstack([points, np.ones((len(points), 1))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def _place(image: Image.Image, homography: np.ndarray, s: int) -> Image.Image:
    """The item (premultiplied RGBa) warped into the photo."""
    corners = _apply(homography, np.array([[0, 0], [image.width, 0], [0, image.height]], float))
    scale = min(
        np.hypot(*(corners[1] - corners[0])) / image.width,
        np.hypot(*(corners[2] - corners[0])) / image.height,
    )
    pre = 1.0
    if scale < 0.75:  # shrink first with a filtering resize: the warp alone would alias
        side = max(1, round(image.width * scale / 0.75))
        pre = side / image.width  # the exact ratio used (the canvas is square)
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    h = homography @ np.diag([1 / pre, 1 / pre, 1.0])
    inverse = np.linalg.inv(h)
    inverse /= inverse[2, 2]
    return image.transform(
        (s, s), Image.Transform.PERSPECTIVE, tuple(inverse.flatten()[:8]), Image.Resampling.BILINEAR
    )


def _shadow_factor(alpha: Image.Image, s: int, rng: np.random.Generator) -> np.ndarray:
    """Light left on the surface: a soft cast shadow away from the light and a darker contact
    shadow under the item, both computed at a quarter of the resolution."""
    light = rng.uniform(0, 2 * math.pi)
    side = max(4, s // 4)
    small = alpha.resize((side, side), Image.Resampling.BILINEAR)
    darkness = np.zeros((side, side), np.float32)
    for blur, dist, strength in (
        (rng.uniform(2.0, 6.0), rng.uniform(0.01, 0.05), rng.uniform(0.25, 0.5)),
        (1.0, 0.006, rng.uniform(0.15, 0.3)),
    ):
        soft = small.filter(ImageFilter.GaussianBlur(blur * side / 128.0))
        dx, dy = math.cos(light) * dist * side, math.sin(light) * dist * side
        soft = soft.transform(
            soft.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.Resampling.BILINEAR
        )
        darkness += np.asarray(soft, dtype=np.float32) * np.float32(strength / 255.0)
    factor = 1.0 - np.minimum(darkness, 0.75)
    big = Image.fromarray(factor, "F").resize((s, s), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32)


def _light_field(s: int, shoot: Shoot, rng: np.random.Generator) -> np.ndarray:
    """Exposure, a lighting gradient, vignetting and a soft window glow, times the white balance
    gains: an (s, s, 3) multiplier."""
    n = max(8, s // 8)  # the field is smooth: compute it coarse, enlarge it
    lin = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    x, y = lin[None, :], lin[:, None]
    direction = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0.0, 0.28)
    vignette = rng.uniform(0.0, 0.3)
    gx, gy = rng.uniform(-1, 1, size=2)
    glow = rng.uniform(0.0, 0.12)
    field = rng.uniform(0.82, 1.12) * (
        1.0 + gradient * (x * math.cos(direction) + y * math.sin(direction))
    ) * (1.0 - vignette * 0.5 * (x * x + y * y)) + glow * np.exp(
        -((x - gx) ** 2 + (y - gy) ** 2) / 0.6
    )
    warmth = shoot.warmth + rng.normal(0.0, 0.02)
    tint = rng.normal(0.0, 0.02)
    gains = np.array([1.0 + warmth, 1.0 + tint, 1.0 - warmth], dtype=np.float32)
    coarse = np.clip(field[..., None] * gains * 100.0, 0, 255).astype(np.uint8)
    big = Image.fromarray(coarse, "RGB").resize((s, s), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32) * np.float32(0.01)


def _blur(img: np.ndarray, s: int, difficulty: str, rng: np.random.Generator) -> np.ndarray:
    """Defocus (40% of photos) and camera shake (12%)."""
    scale = s / 512.0
    defocus = rng.random() < 0.4
    sigma = rng.uniform(0.3, MAX_DEFOCUS_PX[difficulty]) * scale
    shake = rng.random() < 0.12
    angle = rng.uniform(0, math.pi)
    if not (defocus or shake):
        return img
    photo = Image.fromarray(np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8), "RGB")
    if defocus:
        photo = photo.filter(ImageFilter.GaussianBlur(sigma))
    if shake:
        photo = photo.filter(_motion_kernel(angle))
    return np.array(photo, dtype=np.float32)


def _motion_kernel(angle: float) -> ImageFilter.Kernel:
    """A short straight smear (camera shake) as a 5x5 kernel."""
    weights = np.zeros((5, 5), np.float64)
    for t in np.linspace(-2.0, 2.0, 9):
        x, y = 2 + t * math.cos(angle), 2 + t * math.sin(angle)
        xi, yi = int(round(x)), int(round(y))
        weights[yi, xi] += 1.0
    weights /= weights.sum()
    return ImageFilter.Kernel((5, 5), tuple(weights.flatten()), scale=1.0)


def _add_noise(img: np.ndarray, difficulty: str, rng: np.random.Generator) -> None:
    """Sensor noise, in place: stronger in the shadows, mostly shared between the channels."""
    s = img.shape[0]
    sigma = np.float32(rng.uniform(0.5, MAX_NOISE[difficulty]))
    amplitude = img[..., 1] * np.float32(-0.6 / 255.0)
    amplitude += np.float32(1.3)
    amplitude *= sigma
    shared = white_noise((s, s), rng) * amplitude
    img += shared[..., None]
    chroma = np.stack([white_noise((s, s), rng) for _ in range(3)], axis=2)
    chroma *= (amplitude * np.float32(0.4))[..., None]
    img += chroma


def _project_box(kind: str, box, homography: np.ndarray, s: int) -> dict:
    """A defect's box in the photo: the bounding box of its warped outline, clipped to the frame.
    `visible` is false when less than half of it is left in the frame."""
    x0, y0, x1, y1 = box
    outline = np.array(
        [
            [x0, y0],
            [x1, y0],
            [x1, y1],
            [x0, y1],
            [(x0 + x1) / 2, y0],
            [x1, (y0 + y1) / 2],
            [(x0 + x1) / 2, y1],
            [x0, (y0 + y1) / 2],
        ]
    )
    p = _apply(homography, outline)
    bx0, by0 = p.min(axis=0)
    bx1, by1 = p.max(axis=0)
    full = max(1e-9, (bx1 - bx0) * (by1 - by0))
    cx0, cy0 = max(0.0, bx0), max(0.0, by0)
    cx1, cy1 = min(float(s), bx1), min(float(s), by1)
    if cx1 <= cx0 or cy1 <= cy0:
        return {"kind": kind, "box": None, "visible": False}
    inside = (cx1 - cx0) * (cy1 - cy0) / full
    clipped = [int(math.floor(cx0)), int(math.floor(cy0)), int(math.ceil(cx1)), int(math.ceil(cy1))]
    clipped = [min(max(v, 0), s) for v in clipped]
    return {"kind": kind, "box": clipped, "visible": bool(inside >= 0.5)}
