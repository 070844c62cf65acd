"""A monogram-canvas handbag, front view: body with base seam, top trim, handles on stitched
tabs, a stamped leather patch, and metal hardware with an engraving.

Genuine bags follow the brand specification within manufacturing tolerance; the defects passed in
(see cfimg.synth.defects) alter single parts. The make RNG draws the same values whatever the
defects, so genuine and counterfeit bags differ only where a defect acts.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cfimg.synth.brands import RGB, BagBrand, BagColourway
from cfimg.synth.lettering import brand_lettering, mask_box, misspell, text_mask
from cfimg.synth.paint import (
    METAL_BASE,
    ItemCanvas,
    RenderedItem,
    StitchStyle,
    Tolerance,
    fill_metal,
    fill_metal_disc,
    finish_item,
    jitter_rgb,
    points_box,
    rounded_polygon,
    scale_rgb,
    shift_hue,
    stitch_line,
    union_box,
)

HUE_PARTS = ("handle", "trim", "patch")
STITCH_LINES = ("trim", "seam", "handle")


def render_bag(
    brand: BagBrand,
    colours: BagColourway,
    canvas_px: int,
    rng: np.random.Generator,
    defects: dict[str, dict],
) -> RenderedItem:
    c = ItemCanvas(canvas_px)
    tol = Tolerance(rng)
    top_w = brand.body_top_w * tol(0.008)
    bottom_w = brand.body_bottom_w * tol(0.008)
    body_h = brand.body_h * tol(0.008)
    handle_h = brand.handle_h * float(rng.uniform(0.90, 1.05))  # handles rest as they fall
    handle_w = 0.030
    trim_h = 0.055
    cx = 0.5
    y_top = (1.0 - handle_h - body_h - handle_w) / 2 + handle_h + handle_w
    y_bot = y_top + body_h
    y_seam = y_top + brand.seam_frac * body_h

    def x_side(y: float, side: float) -> float:
        return cx + side * (top_w + (bottom_w - top_w) * (y - y_top) / body_h) / 2

    leather = jitter_rgb(colours.leather, rng, 0.012)
    parts = {part: leather for part in HUE_PARTS}
    hue = defects.get("hue_shift")
    if hue is not None:
        hue_part = HUE_PARTS[int(hue["part"] * len(HUE_PARTS))]
        parts[hue_part] = shift_hue(leather, hue["degrees"])
    edge = jitter_rgb(colours.edge_paint, rng, 0.012)
    thread = jitter_rgb(colours.thread, rng, 0.012)
    stitch = StitchStyle(
        pitch=brand.stitch_pitch * tol(0.008),
        len_frac=brand.stitch_len_frac,
        slant_deg=brand.stitch_slant_deg + float(rng.normal(0.0, 1.5)),
        width=0.0042,
        thread=thread,
        shadow=scale_rgb(leather, 0.45),
    )
    stitch_defect_line = {}
    for kind in ("stitch_irregular", "stitch_density"):
        if kind in defects:
            stitch_defect_line[kind] = STITCH_LINES[defects[kind]["line"] % len(STITCH_LINES)]

    def stitches(name: str, points: np.ndarray, style: StitchStyle = stitch) -> None:
        density = defects.get("stitch_density")
        if density is not None and stitch_defect_line.get("stitch_density") == name:
            style = StitchStyle(
                style.pitch * density["factor"],
                style.len_frac,
                style.slant_deg,
                style.width,
                style.thread,
                style.shadow,
            )
            c.mark("stitch_density", points_box(points), pad=0.015)
        irregular = None
        if stitch_defect_line.get("stitch_irregular") == name:
            irregular = defects["stitch_irregular"]
        box = stitch_line(c, points, style, rng, irregular=irregular)
        if box is not None:
            c.mark("stitch_irregular", box, pad=0.005)

    # back handle, mostly hidden by the body
    hx = top_w * 0.27
    arc = _handle_points(cx, y_top - 0.01, hx, handle_h)
    c.draw.line(
        c.pts(arc + [0.018, -0.014]),
        fill=scale_rgb(parts["handle"], 0.62),
        width=int(handle_w * c.k),
        joint="curve",
    )

    # body: coated canvas with the monogram, continued (or not) across the base seam
    corners = [
        (x_side(y_top, -1), y_top),
        (x_side(y_top, 1), y_top),
        (x_side(y_bot, 1), y_bot),
        (x_side(y_bot, -1), y_bot),
    ]
    r = brand.corner_r
    outline = rounded_polygon(corners, [r * 0.2, r * 0.2, r, r])
    canvas_rgb = jitter_rgb(colours.canvas, rng, 0.012)
    motif_rgb = jitter_rgb(colours.motif, rng, 0.012)
    _draw_body(c, brand, outline, canvas_rgb, motif_rgb, y_top + trim_h, y_seam, tol, defects)
    if "monogram_pitch" in defects or "monogram_phase" in defects:
        panel = (x_side(y_bot, -1), y_top + trim_h, x_side(y_bot, 1), y_bot)
        for kind in ("monogram_pitch", "monogram_phase"):
            if kind in defects:
                c.mark(kind, panel)
    if "seam_misaligned" in defects:
        c.mark(
            "seam_misaligned", (x_side(y_bot, -1), y_seam - brand.pitch, x_side(y_bot, 1), y_bot)
        )

    patch_cy = y_top + trim_h + 0.085
    patch_h = brand.wordmark_h * 2.05
    soft = defects.get("soft_print")
    if soft is not None and soft["part"] >= 0.5:
        # low-resolution print on one stretch of the canvas below the patch
        span = top_w * 0.42
        x0 = x_side(y_seam, -1) + 0.02 + (soft["part"] - 0.5) * 2 * (top_w - span - 0.04)
        y0 = patch_cy + patch_h / 2 + 0.01
        box = (x0, y0, x0 + span, y_seam - 0.012)
        c.soften(box, soft["cell"] * brand.motif_frac * brand.pitch * c.k)
        c.mark("soft_print", box)

    # base seam and side piping
    seam_line = np.array([[x_side(y_seam, -1), y_seam], [x_side(y_seam, 1), y_seam]])
    c.draw.line(c.pts(seam_line), fill=scale_rgb(canvas_rgb, 0.5), width=max(1, int(0.005 * c.k)))
    stitches("seam", seam_line + [[0.025, -0.012], [-0.025, -0.012]])
    closed = np.vstack([outline, outline[:1]])
    c.draw.line(c.pts(closed), fill=edge, width=int(0.017 * c.k), joint="curve")
    c.draw.line(c.pts(closed), fill=leather, width=int(0.010 * c.k), joint="curve")

    # top trim
    y_trim = y_top + trim_h
    band = [
        (x_side(y_top, -1), y_top),
        (x_side(y_top, 1), y_top),
        (x_side(y_trim, 1), y_trim),
        (x_side(y_trim, -1), y_trim),
    ]
    c.draw.polygon(c.pts(band), fill=parts["trim"])
    for y in (y_top, y_trim):
        c.draw.line(
            c.pts([(x_side(y, -1), y), (x_side(y, 1), y)]),
            fill=edge,
            width=max(1, int(0.0045 * c.k)),
        )
    y_st = y_top + trim_h * 0.64
    stitches("trim", np.array([[x_side(y_st, -1) + 0.02, y_st], [x_side(y_st, 1) - 0.02, y_st]]))

    # tabs, front handle
    for side in (-1.0, 1.0):
        _tab(c, cx + side * hx, y_top, trim_h, parts["handle"], edge, stitch, rng, colours.metal)
    c.draw.line(c.pts(arc), fill=edge, width=int((handle_w + 0.007) * c.k), joint="curve")
    c.draw.line(c.pts(arc), fill=parts["handle"], width=int(handle_w * c.k), joint="curve")
    stitches("handle", arc[3:-3])
    patch_box = _patch(
        c, brand, colours, cx, patch_cy, patch_h, parts["patch"], edge, stitch, rng, defects
    )
    if hue is not None:
        boxes = {
            # both handles and their tabs are cut from the same hide
            "handle": union_box(
                points_box(arc, pad=handle_w),
                points_box(arc + [0.018, -0.014], pad=handle_w),
                (cx - hx - 0.03, y_top - 0.04, cx + hx + 0.03, y_trim + 0.04),
            ),
            "trim": (band[0][0], y_top, band[1][0], y_trim),
            "patch": patch_box,
        }
        c.mark("hue_shift", boxes[hue_part], pad=0.005)
    _hardware(c, brand, colours.metal, cx, y_top + trim_h / 2, tol, rng, defects)

    def shade(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        across = np.clip(((x - cx) / (bottom_w / 2)) ** 2, 0.0, 1.3)
        down = np.clip((y - y_top) / body_h, 0.0, 1.0)
        return 1.04 - 0.20 * across - 0.08 * down

    return finish_item(c, shade, rng, grain_amp=0.035)


def _handle_points(cx: float, y0: float, hx: float, height: float) -> np.ndarray:
    t = np.linspace(math.pi, 0.0, 40)
    # a little squarer than an ellipse at the top, as a stiff leather handle sits
    lift = np.sin(t) ** 0.8
    return np.stack([cx + hx * np.cos(t) * 1.05, y0 - height * lift], axis=1)


def _motif_shape(shape: str, size_px: int) -> Image.Image:
    s = size_px
    mask = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(mask)
    m = s / 2
    if shape == "flower":
        r = s * 0.22
        for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0)):
            x, y = m + dx * s * 0.24, m + dy * s * 0.24
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
        d.ellipse((m - s * 0.09, m - s * 0.09, m + s * 0.09, m + s * 0.09), fill=0)
    elif shape == "diamond":
        d.polygon([(m, 0), (s - 1, m), (m, s - 1), (0, m)], fill=255)
        q = s * 0.22
        d.polygon([(m, m - q), (m + q, m), (m, m + q), (m - q, m)], fill=0)
    else:  # star: four points
        pts = []
        for i in range(8):
            a = i * math.pi / 4 - math.pi / 2
            rr = m * (0.98 if i % 2 == 0 else 0.30)
            pts.append((m + rr * math.cos(a), m + rr * math.sin(a)))
        d.polygon(pts, fill=255)
    return mask


def _draw_body(c, brand, outline, canvas_rgb, motif_rgb, y_panel, y_seam, tol, defects) -> None:
    k = c.k
    x0, y0, x1, y1 = points_box(outline)
    ox, oy = int(math.floor(x0 * k)), int(math.floor(y0 * k))
    size = (int(math.ceil(x1 * k)) - ox, int(math.ceil(y1 * k)) - oy)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([(x * k - ox, y * k - oy) for x, y in outline], fill=255)

    motif_px = max(3, int(round(brand.motif_frac * brand.pitch * k)))
    letters = text_mask(brand.initials, motif_px * 0.82, tracking_em=-0.18)
    letters = letters.crop(letters.getbbox())
    motif_a = letters.resize((motif_px, int(motif_px * letters.height / letters.width) + 1))
    motif_b = _motif_shape(brand.motif_shape, motif_px)
    pitch = brand.pitch * tol(0.004)
    phase_x = brand.phase_x + min(0.03, max(-0.03, float(tol.rng.normal(0.0, 0.012))))
    phase_y = brand.phase_y + min(0.03, max(-0.03, float(tol.rng.normal(0.0, 0.012))))
    if "monogram_pitch" in defects:
        pitch *= defects["monogram_pitch"]["factor"]
    if "monogram_phase" in defects:
        d = defects["monogram_phase"]
        phase_x += d["shift"] if "x" in d["axis"] else 0.0
        phase_y += d["shift"] if "y" in d["axis"] else 0.0
    gx = 0.5 + phase_x * pitch
    gy = y_panel + phase_y * pitch

    layer = Image.new("RGBA", size, (*canvas_rgb, 255))
    ink = {id(m): Image.new("RGBA", m.size, (*motif_rgb, 255)) for m in (motif_a, motif_b)}
    seam_px = int(round(y_seam * k)) - oy
    upper = (0, seam_px + motif_px)
    _monogram(
        layer, ink, motif_a, motif_b, brand.stagger, gx * k - ox, gy * k - oy, pitch * k, upper
    )
    seam = defects.get("seam_misaligned")
    lower_layer = Image.new("RGBA", size, (*canvas_rgb, 255))
    flip = seam is not None and seam["flip"]
    shift = seam["shift"] if seam is not None else 0.0
    a2 = motif_a.rotate(180) if flip else motif_a
    b2 = motif_b.rotate(180) if flip else motif_b
    ink2 = {
        id(a2): Image.new("RGBA", a2.size, (*motif_rgb, 255)),
        id(b2): Image.new("RGBA", b2.size, (*motif_rgb, 255)),
    }
    _monogram(
        lower_layer,
        ink2,
        a2,
        b2,
        brand.stagger,
        (gx + shift * pitch) * k - ox,
        gy * k - oy,
        pitch * k,
        (seam_px - motif_px, size[1]),
    )
    layer.paste(lower_layer.crop((0, seam_px, size[0], size[1])), (0, seam_px))
    c.image.paste(layer, (ox, oy), mask)


def _monogram(layer, ink, motif_a, motif_b, stagger, gx, gy, pitch, y_range) -> None:
    """Motifs on a grid through (gx, gy) with the given pitch (layer pixels), rows in y_range."""
    w, _ = layer.size
    j0 = math.floor((y_range[0] - gy) / pitch) - 1
    j1 = math.ceil((y_range[1] - gy) / pitch) + 1
    i0 = math.floor(-gx / pitch) - 2
    i1 = math.ceil((w - gx) / pitch) + 2
    for j in range(j0, j1 + 1):
        y = gy + j * pitch
        offset = pitch / 2 if stagger and j % 2 else 0.0
        for i in range(i0, i1 + 1):
            use_a = (j % 2 == 0) if stagger else ((i + j) % 2 == 0)
            motif = motif_a if use_a else motif_b
            x = gx + i * pitch + offset
            layer.paste(
                ink[id(motif)],
                (int(round(x - motif.width / 2)), int(round(y - motif.height / 2))),
                motif,
            )


def _tab(c, x, y_top, trim_h, leather, edge, stitch, rng, metal) -> None:
    w, y0, y1 = 0.052, y_top - 0.035, y_top + trim_h + 0.035
    c.draw.rounded_rectangle(
        c.px(x - w / 2, y0, x + w / 2, y1),
        radius=0.012 * c.k,
        fill=leather,
        outline=edge,
        width=max(1, int(0.004 * c.k)),
    )
    inset = 0.009
    loop = np.array(
        [
            [x - w / 2 + inset, y0 + 0.02],
            [x - w / 2 + inset, y1 - inset],
            [x + w / 2 - inset, y1 - inset],
            [x + w / 2 - inset, y0 + 0.02],
        ]
    )
    stitch_line(c, loop, stitch, rng)
    r = 0.010
    ry = y0 + 0.013
    fill_metal_disc(c, (x, ry), r, metal, 35.0, 0.2, outline=scale_rgb(METAL_BASE[metal], 0.5))


def _patch(c, brand, colours, cx, cy, patch_h, leather, edge, stitch, rng, defects):
    size_px = brand.wordmark_h * c.k
    # the patch is cut to fit the lettering, so wrong spacing shows as a wrong patch as well
    mark = brand_lettering(brand.name, size_px, brand.tracking_em, brand.stretch, defects)
    ink_w = mark.getbbox() or (0, 0, mark.width, 0)
    patch_w = (ink_w[2] - ink_w[0]) / c.k + 0.075
    box = (cx - patch_w / 2, cy - patch_h / 2, cx + patch_w / 2, cy + patch_h / 2)
    c.draw.rounded_rectangle(
        c.px(*box), radius=0.010 * c.k, fill=leather, outline=edge, width=max(1, int(0.0045 * c.k))
    )
    inset = 0.011
    loop = np.array(
        [
            [box[0] + inset, box[1] + inset],
            [box[2] - inset, box[1] + inset],
            [box[2] - inset, box[3] - inset],
            [box[0] + inset, box[3] - inset],
            [box[0] + inset, box[1] + inset],
        ]
    )
    stitch_line(
        c,
        loop,
        StitchStyle(
            stitch.pitch * 0.8,
            stitch.len_frac,
            stitch.slant_deg,
            stitch.width * 0.85,
            stitch.thread,
            stitch.shadow,
        ),
        rng,
    )
    text = brand.small_print
    if "misspelt_print" in defects:
        p = defects["misspelt_print"]
        text = misspell(text, p["level"], p["seed"])
    small = text_mask(text, size_px * 0.42, tracking_em=0.08)
    word_c = (cx, cy - patch_h * 0.14)
    small_c = (cx, cy + patch_h * 0.27)
    if brand.stamp == "foil":
        ink: RGB = METAL_BASE[colours.metal]
        shade = scale_rgb(leather, 0.55)
    else:
        ink = scale_rgb(leather, 0.52)
        shade = scale_rgb(leather, 1.28)
    d = 1.2 / c.k
    for mask, centre in ((mark, word_c), (small, small_c)):
        c.paste_mask(mask, (centre[0] + d, centre[1] + d), shade)
        c.paste_mask(mask, centre, ink)
    # the box covers the patch as it is and as it should be (its width follows the lettering)
    genuine = text_mask(brand.name, size_px, tracking_em=brand.tracking_em, stretch=brand.stretch)
    genuine_w = (genuine.getbbox() or (0, 0, 0, 0))[2] - (genuine.getbbox() or (0, 0, 0, 0))[0]
    genuine_half = genuine_w / c.k / 2 + 0.075 / 2
    genuine_box = (cx - genuine_half, box[1], cx + genuine_half, box[3])
    for kind in ("wordmark_spacing", "wordmark_weight", "wordmark_letterform"):
        if kind in defects:
            c.mark(kind, union_box(box, genuine_box, mask_box(mark, word_c, c.k)), pad=0.006)
    if "misspelt_print" in defects:
        spec = text_mask(brand.small_print, size_px * 0.42, tracking_em=0.08)
        spec_box = mask_box(spec, small_c, c.k)
        c.mark("misspelt_print", union_box(mask_box(small, small_c, c.k), spec_box), pad=0.006)
    soft = defects.get("soft_print")
    if soft is not None and soft["part"] < 0.5:
        c.soften(box, soft["cell"] * size_px * 0.7)  # between the wordmark and small print sizes
        c.mark("soft_print", box)
    return box


def _hardware(c, brand, metal, cx, cy, tol, rng, defects) -> None:
    w = brand.hardware_w * tol(0.01)
    h = brand.hardware_h * tol(0.01)
    genuine_box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    change = defects.get("hardware_shape")
    if change is not None:
        if change["mode"] == "aspect":
            w, h = w * change["factor"], h / change["factor"]
        else:
            w, h = w * change["factor"], h * change["factor"]
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    k = c.k
    kind = brand.hardware

    def shape(d: ImageDraw.ImageDraw, o) -> None:
        x0, y0, x1, y1 = (
            box[0] * k + o[0],
            box[1] * k + o[1],
            box[2] * k + o[0],
            box[3] * k + o[1],
        )
        if kind == "turnlock":
            d.ellipse((x0, y0, x1, y1), fill=255)
        elif kind == "plate":
            d.rounded_rectangle((x0, y0, x1, y1), radius=(y1 - y0) * 0.25, fill=255)
        else:
            mx = (x0 + x1) / 2
            d.polygon(
                [
                    (x0, y0),
                    (x1, y0),
                    (x1, y0 + (y1 - y0) * 0.55),
                    (mx, y1),
                    (x0, y0 + (y1 - y0) * 0.55),
                ],
                fill=255,
            )

    dark = scale_rgb(METAL_BASE[metal], 0.42)
    fill_metal(
        c,
        box,
        shape,
        metal,
        60.0 + float(rng.normal(0, 8)),
        float(rng.uniform(-0.3, 0.3)),
        outline=dark,
    )
    if kind == "turnlock":
        inner = 0.30
        c.draw.ellipse(
            c.px(cx - w * inner, cy - h * inner, cx + w * inner, cy + h * inner),
            outline=dark,
            width=max(1, int(0.003 * k)),
        )
    if kind == "plate":
        for sx in (-1, 1):
            x = cx + sx * (w / 2 - h * 0.28)
            rr = h * 0.09
            c.draw.ellipse(c.px(x - rr, cy - rr, x + rr, cy + rr), fill=dark)
    text = brand.name if kind == "plate" else brand.initials
    size = (h * 0.40 if kind == "plate" else h * 0.34) * k
    engraving = text_mask(text, size, tracking_em=0.05)
    contrast = 1.0
    shallow = defects.get("engraving_shallow")
    if shallow is not None:
        contrast = shallow["contrast"]
        engraving = engraving.filter(ImageFilter.GaussianBlur(size * 0.10 * (1.0 - contrast)))
    centre = (cx, cy - (h * 0.06 if kind == "shield" else 0.0))
    light = engraving.point(lambda v: int(v * contrast * 0.8))
    deep = engraving.point(lambda v: int(v * contrast))
    c.paste_mask(light, (centre[0] + 1.0 / k, centre[1] + 1.0 / k), (255, 250, 235))
    c.paste_mask(deep, centre, (40, 32, 24))
    for kind_name in ("engraving_shallow", "hardware_shape"):
        if kind_name in defects:
            c.mark(kind_name, union_box(box, genuine_box), pad=0.008)
