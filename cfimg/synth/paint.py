"""Drawing primitives shared by the bag and watch renderers: colour shifts and tolerances, the item
canvas that records defect boxes, stitch lines, metal fills, material grain, and the finishing step
that shades an item and hands it to the photographer. Lettering lives in `cfimg.synth.lettering`.

Items are drawn at twice the canvas resolution and box-filtered down, so edges are anti-aliased.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cfimg.synth.brands import RGB

SUPERSAMPLE = 2
Box = tuple[float, float, float, float]

METAL_BASE: dict[str, RGB] = {
    "gold": (212, 178, 104),
    "silver": (196, 198, 202),
    "steel": (190, 193, 198),
}


def scale_rgb(rgb: RGB, factor: float) -> RGB:
    return tuple(int(max(0, min(255, round(c * factor)))) for c in rgb)  # type: ignore[return-value]


def mix_rgb(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def jitter_rgb(rgb: RGB, rng: np.random.Generator, spread: float) -> RGB:
    """A colour within manufacturing tolerance: each channel scaled by about 1 +- spread."""
    gains = 1.0 + rng.normal(0.0, spread, size=3)
    return tuple(int(max(0, min(255, round(c * g)))) for c, g in zip(rgb, gains, strict=True))  # type: ignore[return-value]


def shift_hue(rgb: RGB, degrees: float) -> RGB:
    """Rotate the hue; a near-grey colour is tinted instead, since its hue cannot be seen."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    if s < 0.25:
        h = 0.08 if degrees > 0 else 0.60  # warm or cool cast
        s = min(1.0, s + abs(degrees) / 100.0)
        v = max(v, 0.18)
    else:
        h = (h + degrees / 360.0) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


class Tolerance:
    """Multiplicative manufacturing tolerance: tol(sd) is about 1 +- sd, never beyond 2.5 sd."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, sd: float) -> float:
        return 1.0 + min(2.5 * sd, max(-2.5 * sd, float(self.rng.normal(0.0, sd))))


@dataclass
class ItemCanvas:
    """The item drawn at SUPERSAMPLE x resolution on a transparent square, in unit coordinates."""

    canvas_px: int
    image: Image.Image = field(init=False)
    draw: ImageDraw.ImageDraw = field(init=False)
    defect_boxes: list[tuple[str, Box]] = field(default_factory=list)

    def __post_init__(self) -> None:
        side = self.canvas_px * SUPERSAMPLE
        self.image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image)

    @property
    def k(self) -> float:
        """Drawing pixels per canvas unit."""
        return float(self.canvas_px * SUPERSAMPLE)

    def px(self, *values: float) -> list[float]:
        return [v * self.k for v in values]

    def pts(self, points: np.ndarray | list) -> list[tuple[float, float]]:
        arr = np.asarray(points, dtype=np.float64) * self.k
        return [(float(x), float(y)) for x, y in arr]

    def mark(self, kind: str, box: Box, pad: float = 0.0) -> None:
        """Record a defect's box in unit coordinates (padded a little so it frames the part)."""
        x0, y0, x1, y1 = box
        self.defect_boxes.append((kind, (x0 - pad, y0 - pad, x1 + pad, y1 + pad)))

    def paste_mask(self, mask: Image.Image, centre: tuple[float, float], colour: RGB) -> Box:
        """Fill `colour` through an L mask centred at `centre` (unit); returns the unit box."""
        w, h = mask.size
        x = int(round(centre[0] * self.k - w / 2))
        y = int(round(centre[1] * self.k - h / 2))
        self.image.paste(Image.new("RGBA", mask.size, (*colour, 255)), (x, y), mask)
        return (x / self.k, y / self.k, (x + w) / self.k, (y + h) / self.k)

    def fill_with(
        self, texture: Image.Image, mask: Image.Image, origin_px: tuple[int, int]
    ) -> None:
        self.image.paste(texture, origin_px, mask)

    def soften(self, box: Box, cell_px: float) -> None:
        """Print reproduced at low resolution: the region is resampled through a coarse grid."""
        x0, y0, x1, y1 = (int(round(v * self.k)) for v in box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(self.image.width, x1), min(self.image.height, y1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        region = self.image.crop((x0, y0, x1, y1))
        cell = max(1.5, cell_px)
        small = region.resize(
            (max(1, round((x1 - x0) / cell)), max(1, round((y1 - y0) / cell))),
            Image.Resampling.BOX,
        )
        soft = small.resize(region.size, Image.Resampling.BILINEAR)
        soft = soft.filter(ImageFilter.GaussianBlur(cell * 0.35))
        soft.putalpha(region.getchannel("A"))
        self.image.paste(soft, (x0, y0))

    def finish(self) -> Image.Image:
        """The item at canvas resolution (box-filtered from the supersampled drawing)."""
        return self.image.reduce(SUPERSAMPLE)


def polyline_at(points: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and unit tangents at arc lengths `s` along a polyline."""
    seg = np.diff(points, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
    t = (s - cum[idx]) / np.maximum(seg_len[idx], 1e-12)
    pos = points[idx] + seg[idx] * t[:, None]
    tangent = seg[idx] / np.maximum(seg_len[idx], 1e-12)[:, None]
    return pos, tangent


def polyline_length(points: np.ndarray) -> float:
    d = np.diff(points, axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).sum())


@dataclass(frozen=True)
class StitchStyle:
    pitch: float  # unit
    len_frac: float
    slant_deg: float
    width: float  # unit
    thread: RGB
    shadow: RGB


def stitch_line(
    canvas: ItemCanvas,
    points: np.ndarray,
    style: StitchStyle,
    rng: np.random.Generator,
    *,
    tolerance: float = 0.03,
    irregular: dict | None = None,
) -> Box | None:
    """Saddle stitches along a polyline (unit coordinates).

    Genuine stitches vary by `tolerance` of the pitch. `irregular` ({start, length, spacing_sd,
    angle_sd_deg}) makes one stretch of the line uneven in spacing and angle, as a hand-fed
    machine would; the return value is that stretch's box (None without it).
    """
    rng = np.random.default_rng(int(rng.integers(1 << 62)))  # one parent draw, whatever the line
    total = polyline_length(points)
    count = max(2, int(total / style.pitch))
    gaps = np.full(count, style.pitch) * (1.0 + rng.normal(0.0, tolerance, size=count))
    angles = np.full(count, style.slant_deg) + rng.normal(0.0, 1.5, size=count)
    lengths = np.full(count, style.pitch * style.len_frac)
    wander = np.zeros(count)
    lo = hi = 0
    if irregular is not None:
        lo = int(count * irregular["start"])
        hi = min(count, lo + max(3, int(count * irregular["length"])))
        n = hi - lo
        sd = irregular["spacing_sd"]
        uneven = np.clip(1.0 + rng.normal(0.0, sd, size=n), 0.35, 2.2)
        # the stretch keeps its length, so the stitches after it stay where they belong
        gaps[lo:hi] = uneven * (gaps[lo:hi].sum() / uneven.sum())
        angles[lo:hi] += rng.normal(0.0, irregular["angle_sd_deg"], size=n)
        lengths[lo:hi] *= np.clip(1.0 + rng.normal(0.0, sd * 0.8, size=n), 0.4, 1.7)
        lengths[lo:hi][rng.random(n) < sd * 0.4] = 0.0  # skipped stitches
        # the line wanders off its track and comes back
        walk = np.cumsum(rng.normal(0.0, 1.0, size=n))
        walk -= np.linspace(walk[0], walk[-1], n)
        wander[lo:hi] = walk / max(1e-9, np.abs(walk).max()) * style.pitch * 2.5 * sd
    s = np.cumsum(gaps) - style.pitch * 0.5
    keep = s < total - style.pitch * 0.3
    s, angles, lengths, wander = s[keep], angles[keep], lengths[keep], wander[keep]
    pos, tangent = polyline_at(points, s)
    pos = pos + np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * wander[:, None]
    rad = np.deg2rad(angles)
    cos, sin = np.cos(rad), np.sin(rad)
    dx = (tangent[:, 0] * cos - tangent[:, 1] * sin) * lengths / 2
    dy = (tangent[:, 0] * sin + tangent[:, 1] * cos) * lengths / 2
    k = canvas.k
    width_px = max(1, int(round(style.width * k)))
    off = max(1.0, width_px * 0.45)
    draw = canvas.draw
    for (x, y), ex, ey, length in zip(pos * k, dx * k, dy * k, lengths, strict=True):
        if length <= 0.0:
            continue
        draw.line(
            [(x - ex + off, y - ey + off), (x + ex + off, y + ey + off)],
            fill=style.shadow,
            width=width_px,
        )
        draw.line([(x - ex, y - ey), (x + ex, y + ey)], fill=style.thread, width=width_px)
    if irregular is None or len(s) == 0:
        return None
    sel = slice(min(lo, len(s) - 1), max(min(hi, len(s)), min(lo, len(s) - 1) + 1))
    seg = pos[sel]
    reach = style.pitch * (1.0 + 2.5 * irregular["spacing_sd"])
    return (
        float(seg[:, 0].min() - reach),
        float(seg[:, 1].min() - reach),
        float(seg[:, 0].max() + reach),
        float(seg[:, 1].max() + reach),
    )


def union_box(*boxes: Box) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def points_box(points: np.ndarray, pad: float = 0.0) -> Box:
    p = np.asarray(points)
    return (
        float(p[:, 0].min() - pad),
        float(p[:, 1].min() - pad),
        float(p[:, 0].max() + pad),
        float(p[:, 1].max() + pad),
    )


def metal_texture(size: tuple[int, int], metal: str, angle_deg: float, phase: float) -> Image.Image:
    """Polished metal: bright and dark bands across the part, as a studio reflection gives."""
    w, h = size
    base = np.array(METAL_BASE[metal], dtype=np.float32) / 255.0
    a = math.radians(angle_deg)
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    t = x * math.cos(a) + y * math.sin(a)
    light = (
        0.86
        + 0.26 * np.cos(np.pi * (t * 1.2 + phase))
        + 0.12 * np.cos(np.pi * (t * 3.1 + 2 * phase))
    )
    rgb = np.clip(base[None, None, :] * light[..., None] * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").convert("RGBA")


def fill_metal(
    canvas: ItemCanvas,
    box: Box,
    shape_fn,
    metal: str,
    angle_deg: float,
    phase: float,
    outline: RGB | None = None,
) -> None:
    """Fill a shape with metal. `shape_fn(draw, offset_px)` draws the shape, white on black,
    on a mask the size of `box` (its coordinates shifted by `offset_px`)."""
    k = canvas.k
    x0, y0 = int(math.floor(box[0] * k)), int(math.floor(box[1] * k))
    x1, y1 = int(math.ceil(box[2] * k)), int(math.ceil(box[3] * k))
    size = (max(1, x1 - x0), max(1, y1 - y0))
    mask = Image.new("L", size, 0)
    shape_fn(ImageDraw.Draw(mask), (-x0, -y0))
    canvas.fill_with(metal_texture(size, metal, angle_deg, phase), mask, (x0, y0))
    if outline is not None:
        edge = mask.filter(ImageFilter.FIND_EDGES)
        canvas.image.paste(Image.new("RGBA", size, (*outline, 255)), (x0, y0), edge)


def fill_metal_disc(
    canvas: ItemCanvas,
    centre: tuple[float, float],
    radius: float,
    metal: str,
    angle_deg: float,
    phase: float,
    outline: RGB | None = None,
) -> None:
    """fill_metal on a disc (unit coordinates): rivets, watch cases."""
    cx, cy = centre
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    k = canvas.k

    def disc(draw: ImageDraw.ImageDraw, offset_px) -> None:
        draw.ellipse(
            (
                offset_px[0] + box[0] * k,
                offset_px[1] + box[1] * k,
                offset_px[0] + box[2] * k,
                offset_px[1] + box[3] * k,
            ),
            fill=255,
        )

    fill_metal(canvas, box, disc, metal, angle_deg, phase, outline=outline)


def rounded_polygon(corners: list[tuple[float, float]], radii: list[float], steps: int = 6):
    """A closed polygon with each corner rounded by its radius (unit coordinates)."""
    pts = np.asarray(corners, dtype=np.float64)
    n = len(pts)
    out = []
    for i in range(n):
        p, prev, nxt = pts[i], pts[i - 1], pts[(i + 1) % n]
        r = radii[i]
        if r <= 0:
            out.append(p)
            continue
        d0 = (prev - p) / np.linalg.norm(prev - p)
        d1 = (nxt - p) / np.linalg.norm(nxt - p)
        a = p + d0 * r
        b = p + d1 * r
        for t in np.linspace(0.0, 1.0, steps):
            # quadratic Bezier with the corner as control point
            out.append((1 - t) ** 2 * a + 2 * (1 - t) * t * p + t**2 * b)
    return np.asarray(out)


@functools.lru_cache(maxsize=2)
def _noise_tile(side: int) -> np.ndarray:
    # fixed seed: the tile is a constant of the generator, views differ by where they cut it
    return np.random.default_rng(20240601).standard_normal((side, side), dtype=np.float32)


def white_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian pixel noise: a random window of a cached tile (much cheaper than drawing
    fresh normals for every photo, and as good for sensor noise and material grain)."""
    h, w = shape
    side = 1024 if max(2 * h, w + 64) <= 1024 else 2048
    if max(2 * h, w + 64) > side:  # huge images: fresh noise
        return rng.standard_normal((h, w), dtype=np.float32)
    tile = _noise_tile(side)
    y = int(rng.integers(0, side - h + 1))
    x = int(rng.integers(0, side - w + 1))
    return tile[y : y + h, x : x + w]


def grain(shape: tuple[int, int], rng: np.random.Generator, cell: int) -> np.ndarray:
    """Smooth random field in [-1, 1] with features about `cell` pixels across."""
    h, w = shape
    gh, gw = h // cell + 3, w // cell + 3
    small = rng.random((gh, gw), dtype=np.float32) * 2.0 - 1.0
    big = Image.fromarray(small, "F").resize((gw * cell, gh * cell), Image.Resampling.BICUBIC)
    arr = np.asarray(big, dtype=np.float32)
    return arr[cell : cell + h, cell : cell + w]


@dataclass(frozen=True)
class RenderedItem:
    """An item on a transparent canvas, with its framing box and defect boxes (canvas pixels)."""

    image: Image.Image  # premultiplied RGBa, canvas_px square
    hero_box: Box  # the part a photographer frames (the whole bag; a watch's head)
    defect_boxes: tuple[tuple[str, Box], ...]


def shade_item(
    image: Image.Image, shade: np.ndarray, rng: np.random.Generator, grain_amp: float
) -> Image.Image:
    """Multiply the item's colours by a smooth shading field and a fine material grain."""
    arr = np.array(image)  # uint8 RGBA, writable
    h, w = arr.shape[:2]
    factor = white_noise((h, w), rng) * np.float32(grain_amp * 0.6)
    factor += np.float32(1.0)
    factor *= shade
    rgb = arr[..., :3].astype(np.float32)
    rgb *= factor[..., None]
    rgb += np.float32(0.5)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    arr[..., :3] = rgb
    return Image.fromarray(arr, "RGBA")


def finish_item(
    canvas: ItemCanvas,
    shade_fn,
    rng: np.random.Generator,
    grain_amp: float,
    hero_box_unit: Box | None = None,
) -> RenderedItem:
    """Downsample, shade, and convert the recorded unit boxes to canvas pixels."""
    image = canvas.finish()
    n = canvas.canvas_px
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    shade = shade_fn(coords[None, :], coords[:, None]).astype(np.float32)
    image = shade_item(image, np.broadcast_to(shade, (n, n)), rng, grain_amp)
    if hero_box_unit is None:
        bbox = image.getchannel("A").getbbox() or (0, 0, n, n)
        hero = tuple(float(v) for v in bbox)
    else:
        hero = tuple(v * n for v in hero_box_unit)
    boxes = tuple((kind, tuple(v * n for v in box)) for kind, box in canvas.defect_boxes)
    # premultiplied once here, so that each photo's resampling blends edges correctly
    return RenderedItem(image=image.convert("RGBa"), hero_box=hero, defect_boxes=boxes)  # type: ignore[arg-type]
