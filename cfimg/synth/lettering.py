"""Lettering for printed and embossed marks: text drawn letter by letter as an L mask, so that
tracking, single gaps, and single letters' size and slant can be set; the brand wordmark with its
defects applied, careless misspellings of small print, and placing masks on the canvas.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cfimg.synth.paint import Box


@functools.lru_cache(maxsize=256)
def font(size_px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font: no system font is needed, so every machine draws alike."""
    return ImageFont.load_default(size=max(4, int(size_px)))


def text_mask(
    text: str,
    size_px: float,
    *,
    tracking_em: float = 0.0,
    stretch: float = 1.0,
    stroke_px: int = 0,
    extra_gap_em: dict[int, float] | None = None,
    letter_scale: dict[int, float] | None = None,
    letter_shear: dict[int, float] | None = None,
) -> Image.Image:
    """Lettering as an L mask: per-letter placement so that tracking, single gaps, and single
    letters' size and slant can be set (the wordmark defects act through these)."""
    fnt = font(int(round(size_px)))
    extra_gap_em = extra_gap_em or {}
    letter_scale = letter_scale or {}
    letter_shear = letter_shear or {}
    ascent, descent = fnt.getmetrics()
    pad = stroke_px + 2 + int(size_px * 0.3)
    height = ascent + descent + 2 * pad
    advances = []
    for i, ch in enumerate(text):
        adv = fnt.getlength(ch) * letter_scale.get(i, 1.0)
        if i < len(text) - 1:
            adv += (tracking_em + extra_gap_em.get(i, 0.0)) * size_px
        advances.append(adv)
    width = int(math.ceil(sum(advances))) + 2 * pad
    mask = Image.new("L", (max(1, width), height), 0)
    x = float(pad)
    for i, ch in enumerate(text):
        if ch != " ":
            glyph = _glyph(ch, fnt, stroke_px, ascent, descent, pad)
            if i in letter_scale or i in letter_shear:
                glyph = _transform_glyph(glyph, letter_scale.get(i, 1.0), letter_shear.get(i, 0.0))
            gx = int(round(x - pad))
            gy = int(round(height / 2 - glyph.height / 2))
            mask.paste(255, (gx, gy), glyph)
        x += advances[i]
    if abs(stretch - 1.0) > 1e-3:
        mask = mask.resize((max(1, round(width * stretch)), height), Image.Resampling.BILINEAR)
    return mask


def _glyph(ch: str, fnt: ImageFont.FreeTypeFont, stroke: int, ascent: int, descent: int, pad: int):
    width = int(math.ceil(fnt.getlength(ch))) + 2 * pad
    glyph = Image.new("L", (width, ascent + descent + 2 * pad), 0)
    ImageDraw.Draw(glyph).text(
        (pad, pad + ascent),
        ch,
        font=fnt,
        fill=255,
        anchor="ls",
        stroke_width=stroke,
        stroke_fill=255,
    )
    return glyph


def _transform_glyph(glyph: Image.Image, scale: float, shear: float) -> Image.Image:
    w, h = glyph.size
    if abs(scale - 1.0) > 1e-3:
        glyph = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))))
        w, h = glyph.size
    if abs(shear) > 1e-3:
        # x_in = x_out + shear * (y_out - h / 2): slant about the letter's middle
        glyph = glyph.transform(
            (w, h),
            Image.Transform.AFFINE,
            (1, shear, -shear * h / 2, 0, 1, 0),
            Image.Resampling.BILINEAR,
        )
    return glyph


def rotated(mask: Image.Image, degrees_ccw: float) -> Image.Image:
    return mask.rotate(degrees_ccw, resample=Image.Resampling.BICUBIC, expand=True)


def mask_box(mask: Image.Image, centre: tuple[float, float], k: float) -> Box:
    """Unit box of the inked part of a mask pasted centred at `centre`."""
    bbox = mask.getbbox() or (0, 0, mask.width, mask.height)
    x = centre[0] * k - mask.width / 2
    y = centre[1] * k - mask.height / 2
    return ((x + bbox[0]) / k, (y + bbox[1]) / k, (x + bbox[2]) / k, (y + bbox[3]) / k)


# Letters a forger's typeface or a misreading turns each letter into.
LOOKALIKE: dict[str, str] = {
    "A": "4",
    "B": "R",
    "C": "G",
    "D": "O",
    "E": "F",
    "F": "E",
    "G": "C",
    "H": "N",
    "I": "L",
    "K": "X",
    "L": "I",
    "M": "N",
    "N": "M",
    "O": "Q",
    "P": "R",
    "Q": "O",
    "R": "P",
    "S": "5",
    "T": "Y",
    "U": "V",
    "V": "U",
    "X": "K",
    "Y": "T",
    "0": "O",
    "1": "I",
    "2": "Z",
    "3": "8",
    "4": "A",
    "5": "S",
    "8": "B",
    "9": "6",
}


def brand_lettering(
    text: str,
    size_px: float,
    tracking_em: float,
    stretch: float,
    defects: dict[str, dict],
) -> Image.Image:
    """The wordmark as an L mask, with the wordmark defects among `defects` applied."""
    extra_gap: dict[int, float] = {}
    scale: dict[int, float] = {}
    shear: dict[int, float] = {}
    stroke = 0
    spacing = defects.get("wordmark_spacing")
    if spacing is not None:
        if spacing["uniform"]:
            tracking_em += spacing["em"]
        else:
            extra_gap[min(len(text) - 2, int(spacing["gap"] * (len(text) - 1)))] = spacing["em"]
    weight = defects.get("wordmark_weight")
    if weight is not None:
        stroke = max(1, int(round(weight["stroke"] * size_px)))
    form = defects.get("wordmark_letterform")
    if form is not None:
        i = min(len(text) - 1, int(form["letter"] * len(text)))
        if form["level"] >= 1:
            text = text[:i] + LOOKALIKE.get(text[i], text[i].lower()) + text[i + 1 :]
            scale[i] = 1.38 if form["level"] >= 2 else 1.24
        if form["level"] == 0:
            shear[i] = 0.38 if form["pick"] < 0.5 else -0.38
            scale[i] = 0.92
    return text_mask(
        text,
        size_px,
        tracking_em=tracking_em,
        stretch=stretch,
        stroke_px=stroke,
        extra_gap_em=extra_gap,
        letter_scale=scale,
        letter_shear=shear,
    )


def misspell(text: str, level: int, seed: int) -> str:
    """Small print as a careless copy has it: letters dropped or doubled, or one substituted."""
    rng = np.random.default_rng(seed)
    letters = [i for i, ch in enumerate(text) if ch.isalnum()]
    if level == 0:
        i = int(rng.choice(letters))
        return text[:i] + LOOKALIKE.get(text[i], "O") + text[i + 1 :]
    out = text
    for _ in range(2 if level >= 2 else 1):
        letters = [i for i, ch in enumerate(out) if ch.isalnum()]
        i = int(rng.choice(letters))
        if rng.random() < 0.5 and len(letters) > 3:
            out = out[:i] + out[i + 1 :]
        else:
            out = out[:i] + out[i] + out[i:]
    return out
