"""A wristwatch lying face up: leather strap with buckle and holes, lugs and crown around the
case; the face (bezel, dial, print, date and hands) is drawn by `cfimg.synth.dial`.

The time shown, the date and the reflections are nuisances drawn from the make RNG, the same way
for genuine and counterfeit watches; the defects passed in alter single parts.
"""

from __future__ import annotations

import math

import numpy as np

from cfimg.synth.brands import RGB, WatchBrand, WatchColourway
from cfimg.synth.dial import (
    CX,
    CY,
    draw_bezel,
    draw_circle,
    draw_date,
    draw_dial,
    draw_hands,
    draw_indices,
    draw_minute_track,
    draw_print,
)
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
    mix_rgb,
    points_box,
    scale_rgb,
    shift_hue,
    stitch_line,
    union_box,
)


def render_watch(
    brand: WatchBrand,
    colours: WatchColourway,
    canvas_px: int,
    rng: np.random.Generator,
    defects: dict[str, dict],
) -> RenderedItem:
    c = ItemCanvas(canvas_px)
    tol = Tolerance(rng)
    rc = brand.case_r * tol(0.004)
    rd = rc * 0.78
    metal = colours.metal
    metal_dark = scale_rgb(METAL_BASE[metal], 0.45)
    hue = defects.get("hue_shift")
    hue_parts = ("strap_top", "strap_bottom") + (("bezel",) if brand.bezel != "hours12" else ())
    hue_part = hue_parts[int(hue["part"] * len(hue_parts))] if hue is not None else None

    def part_colour(part: str, rgb: RGB) -> RGB:
        return shift_hue(rgb, hue["degrees"]) if part == hue_part else rgb

    strap = jitter_rgb(colours.strap, rng, 0.012)
    stitch = StitchStyle(
        pitch=brand.stitch_pitch * tol(0.008),
        len_frac=brand.stitch_len_frac,
        slant_deg=brand.stitch_slant_deg + float(rng.normal(0.0, 1.5)),
        width=0.0036,
        thread=jitter_rgb(colours.thread, rng, 0.012),
        shadow=scale_rgb(strap, 0.4),
    )
    strap_boxes = _straps(
        c,
        brand,
        rc,
        part_colour("strap_top", strap),
        part_colour("strap_bottom", strap),
        stitch,
        rng,
        defects,
        metal,
    )
    if hue_part is not None and hue_part.startswith("strap"):
        c.mark("hue_shift", strap_boxes[hue_part], pad=0.005)

    _lugs(c, brand, rc, metal)
    _crown(c, brand, rc, metal, metal_dark, tol, defects)
    fill_metal_disc(
        c,
        (CX, CY),
        rc,
        metal,
        float(rng.uniform(20, 70)),
        float(rng.uniform(-0.4, 0.4)),
        outline=metal_dark,
    )
    bezel_rgb = part_colour("bezel", jitter_rgb(colours.bezel, rng, 0.012))
    draw_bezel(c, brand, rc, bezel_rgb, colours, metal_dark, defects)
    if hue_part == "bezel":
        c.mark("hue_shift", (CX - rc, CY - rc, CX + rc, CY + rc))

    dial = jitter_rgb(colours.dial, rng, 0.01)
    draw_circle(c, rc * 0.80, mix_rgb(dial, (0, 0, 0), 0.35))  # rehaut
    draw_dial(c, rd, dial, float(rng.uniform(0, math.pi)))
    draw_minute_track(c, rd, colours.print)
    draw_indices(c, brand, rd, colours, metal_dark, defects)
    draw_print(c, brand, rd, colours.print, defects)
    draw_date(c, brand, rd, metal_dark, rng, defects)
    draw_hands(c, brand, rd, colours, dial, metal_dark, rng, defects)

    glare_x, glare_y = float(rng.uniform(-0.6, 0.0)), float(rng.uniform(-0.7, -0.1))

    def shade(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r2 = ((x - CX) ** 2 + (y - CY) ** 2) / rd**2
        glare = np.exp(-(((x - CX) / rd - glare_x) ** 2 + ((y - CY) / rd - glare_y) ** 2) / 0.25)
        return 1.02 - 0.08 * ((x - CX) / 0.3) ** 2 + 0.16 * glare * (r2 < 1.0)

    hero = (CX - rc - 0.012, CY - rc - 0.05, CX + rc + 0.06, CY + rc + 0.05)
    return finish_item(c, shade, rng, grain_amp=0.03, hero_box_unit=hero)


def _straps(c, brand, rc, top_rgb, bottom_rgb, stitch, rng, defects, metal) -> dict:
    w = brand.strap_w
    y_top_lug, y_bot_lug = CY - rc * 0.7, CY + rc * 0.7
    boxes = {}
    lines = []
    for part, rgb, y0, y1 in (
        ("strap_top", top_rgb, y_top_lug, 0.045),
        ("strap_bottom", bottom_rgb, y_bot_lug, 0.93),
    ):
        taper = 0.86
        near = (CX - w / 2, CX + w / 2)
        far = (CX - w * taper / 2, CX + w * taper / 2)
        pts = [(near[0], y0), (near[1], y0), (far[1], y1), (far[0], y1)]
        if part == "strap_bottom":  # a rounded tip
            tip = [
                (CX + w * taper / 2 * math.cos(t), y1 + w * 0.35 * math.sin(t))
                for t in np.linspace(0, math.pi, 12)
            ]
            pts = pts[:2] + [pts[2]] + tip + [pts[3]]
        edge = scale_rgb(rgb, 0.55)
        c.draw.polygon(c.pts(pts), fill=rgb, outline=edge, width=max(1, int(0.004 * c.k)))
        boxes[part] = points_box(np.array(pts))
        inset = 0.014
        y_end = y1 + (0.05 if part == "strap_top" else -0.02)
        for side in (-1, 1):
            a = (CX + side * (w / 2 - inset), y0)
            b = (CX + side * (w * taper / 2 - inset), y_end)
            lines.append(np.array([a, b]))
    for y in (0.78, 0.83, 0.88):
        r = 0.0075
        c.draw.ellipse(c.px(CX - r, y - r, CX + r, y + r), fill=scale_rgb(bottom_rgb, 0.3))
    # buckle on the top strap
    bw = w * 1.16
    c.draw.rounded_rectangle(
        c.px(CX - bw / 2, 0.025, CX + bw / 2, 0.095),
        radius=0.015 * c.k,
        outline=METAL_BASE[metal],
        width=max(1, int(0.012 * c.k)),
    )
    c.draw.line(c.px(CX, 0.03, CX, 0.10), fill=METAL_BASE[metal], width=max(1, int(0.008 * c.k)))
    chosen = {
        kind: defects[kind]["line"] % len(lines)
        for kind in ("stitch_irregular", "stitch_density")
        if kind in defects
    }
    for i, line in enumerate(lines):
        style = stitch
        if chosen.get("stitch_density") == i:
            f = defects["stitch_density"]["factor"]
            style = StitchStyle(
                stitch.pitch * f,
                stitch.len_frac,
                stitch.slant_deg,
                stitch.width,
                stitch.thread,
                stitch.shadow,
            )
            c.mark("stitch_density", points_box(line), pad=0.012)
        irregular = None
        if chosen.get("stitch_irregular") == i:
            # the stretch nearest the case, which close-ups keep in frame
            irregular = dict(
                defects["stitch_irregular"],
                start=defects["stitch_irregular"]["start"] * 0.5,
                length=0.5,
            )
        box = stitch_line(c, line, style, rng, irregular=irregular)
        if box is not None:
            c.mark("stitch_irregular", box, pad=0.004)
    return boxes


def _lugs(c, brand, rc, metal) -> None:
    w = brand.strap_w
    for sx in (-1, 1):
        for sy in (-1, 1):
            xi, xo = CX + sx * (w / 2 + 0.003), CX + sx * (w / 2 + 0.040)
            y0, y1 = CY + sy * rc * 0.7, CY + sy * (rc + 0.045)
            pts = [(xi, y0), (xo, y0), (xo - sx * 0.006, y1), (xi, y1)]
            box = points_box(np.array(pts))
            fill_metal(
                c,
                box,
                lambda d, o, pts=pts: d.polygon(
                    [(x * c.k + o[0], y * c.k + o[1]) for x, y in pts], fill=255
                ),
                metal,
                90.0,
                0.1 * sx,
                outline=scale_rgb(METAL_BASE[metal], 0.5),
            )


def _crown(c, brand, rc, metal, dark, tol, defects) -> None:
    w, h = brand.crown_w * tol(0.01), brand.crown_h * tol(0.01)
    guard = brand.crown_guard
    change = defects.get("crown_shape")
    genuine_box = _crown_extent(rc, w, h, guard)
    if change is not None:
        w, h = w * change["factor"], h * change["factor"]
        guard = guard != change["flip_guard"]
    x0, x1 = CX + rc - 0.012, CX + rc + w
    box = (x0, CY - h / 2, x1, CY + h / 2)
    if guard:
        for sy in (-1, 1):
            y_in, y_out = CY + sy * (h / 2 + 0.002), CY + sy * (h / 2 + 0.022)
            pts = [
                (x0 - 0.01, y_out),
                (x0 + w * 0.8, y_in + sy * 0.006),
                (x0 + w * 0.8, y_in),
                (x0 - 0.01, y_in),
            ]
            gbox = points_box(np.array(pts))
            fill_metal(
                c,
                gbox,
                lambda d, o, pts=pts: d.polygon(
                    [(x * c.k + o[0], y * c.k + o[1]) for x, y in pts], fill=255
                ),
                metal,
                0.0,
                0.3,
                outline=dark,
            )
    fill_metal(
        c,
        box,
        lambda d, o: d.rounded_rectangle(
            (box[0] * c.k + o[0], box[1] * c.k + o[1], box[2] * c.k + o[0], box[3] * c.k + o[1]),
            radius=min(w, h) * 0.25 * c.k,
            fill=255,
        ),
        metal,
        90.0,
        0.0,
        outline=dark,
    )
    for i in range(brand.crown_flutes):
        y = box[1] + h * (i + 1) / (brand.crown_flutes + 1)
        c.draw.line(c.px(x0 + 0.014, y, x1 - 0.004, y), fill=dark, width=max(1, int(0.0025 * c.k)))
    if change is not None:
        c.mark("crown_shape", union_box(genuine_box, _crown_extent(rc, w, h, guard)), pad=0.006)


def _crown_extent(rc: float, w: float, h: float, guard: bool):
    x0 = CX + rc - 0.012
    reach = h / 2 + (0.024 if guard else 0.0)
    return (x0 - (0.01 if guard else 0.0), CY - reach, CX + rc + w, CY + reach)
