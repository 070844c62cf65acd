"""The face of the wristwatch: the marked bezel, the sunburst dial with its minute track, indices
and numerals, the printed logo, wordmark and small print, the date window and the three hands.

Positions are in unit coordinates around the watch's centre (CX, CY); angles run clockwise from
twelve o'clock.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from cfimg.synth.brands import RGB, WatchBrand, WatchColourway
from cfimg.synth.lettering import brand_lettering, mask_box, misspell, rotated, text_mask
from cfimg.synth.paint import METAL_BASE, ItemCanvas, points_box, scale_rgb, union_box

CX = CY = 0.5  # the watch centre, unit coordinates
BEZEL_SCALES = {"dive60": 60, "gmt24": 24, "hours12": 12}


def _polar(r: float, degrees: float) -> tuple[float, float]:
    """Point at radius r, clockwise from twelve o'clock."""
    a = math.radians(degrees)
    return (CX + r * math.sin(a), CY - r * math.cos(a))


def _local(points: list[tuple[float, float]], degrees: float) -> np.ndarray:
    """Points given as (along the radius, across it) turned to `degrees` clockwise from twelve."""
    a = math.radians(degrees)
    along = np.array([math.sin(a), -math.cos(a)])
    across = np.array([math.cos(a), math.sin(a)])
    p = np.asarray(points, dtype=np.float64)
    return np.array([CX, CY]) + p[:, :1] * along + p[:, 1:2] * across


def draw_circle(
    c: ItemCanvas, r: float, fill: RGB, outline: RGB | None = None, width: float = 0.0
) -> None:
    """A disc of radius r about the watch centre."""
    c.draw.ellipse(
        c.px(CX - r, CY - r, CX + r, CY + r),
        fill=fill,
        outline=outline,
        width=max(1, int(width * c.k)) if outline else 0,
    )


def draw_bezel(
    c: ItemCanvas,
    brand: WatchBrand,
    rc: float,
    insert_rgb: RGB,
    colours: WatchColourway,
    dark: RGB,
    defects: dict[str, dict],
) -> None:
    """The bezel ring with its scale: a coloured insert, or engraved hour marks."""
    r_out, r_in = rc * 0.955, rc * 0.80
    engraved = brand.bezel == "hours12"
    ink = scale_rgb(dark, 0.6) if engraved else colours.bezel_print
    if not engraved:
        draw_circle(c, r_out, insert_rgb)
    c.draw.ellipse(
        c.px(CX - r_out, CY - r_out, CX + r_out, CY + r_out),
        outline=dark,
        width=max(1, int(0.003 * c.k)),
    )
    rot = 0.0
    if "bezel_markings" in defects:
        rot = defects["bezel_markings"]["divisions"] * 30.0
        c.mark("bezel_markings", (CX - rc, CY - rc, CX + rc, CY + rc))
    units = BEZEL_SCALES[brand.bezel]
    band = r_out - r_in
    mid = (r_out + r_in) / 2
    numeral_px = band * 0.50 * c.k
    wide, thin = max(1, int(0.007 * c.k)), max(1, int(0.0035 * c.k))
    for u in range(units):
        a = u * 360.0 / units + rot
        if u == 0:
            tri = _local(
                [
                    (r_out - band * 0.15, -band * 0.30),
                    (r_out - band * 0.15, band * 0.30),
                    (r_in + band * 0.22, 0.0),
                ],
                a,
            )
            c.draw.polygon(c.pts(tri), fill=ink)
            continue
        label = _bezel_label(brand.bezel, u)
        if label:
            mask = rotated(text_mask(label, numeral_px, tracking_em=-0.05), -a)
            c.paste_mask(mask, _polar(mid, a), ink)
        elif brand.bezel == "dive60" and (u % 5 == 0 or u < 15):
            length = band * (0.42 if u % 5 == 0 else 0.22)
            c.draw.line(
                c.pts(_local([(r_out - band * 0.18, 0), (r_out - band * 0.18 - length, 0)], a)),
                fill=ink,
                width=wide if u % 5 == 0 else thin,
            )
        elif brand.bezel == "gmt24":
            r = band * 0.09
            x, y = _polar(mid, a)
            c.draw.ellipse(c.px(x - r, y - r, x + r, y + r), fill=ink)
        elif brand.bezel == "hours12" and u % 3 == 0:
            c.draw.line(
                c.pts(_local([(r_out - band * 0.12, 0), (r_in + band * 0.12, 0)], a)),
                fill=ink,
                width=int(wide * 1.6),
            )
        elif brand.bezel == "hours12":
            c.draw.line(
                c.pts(_local([(r_out - band * 0.2, 0), (r_in + band * 0.3, 0)], a)),
                fill=ink,
                width=wide,
            )
    c.draw.ellipse(
        c.px(CX - r_in, CY - r_in, CX + r_in, CY + r_in),
        outline=dark,
        width=max(1, int(0.003 * c.k)),
    )


def _bezel_label(kind: str, u: int) -> str:
    if kind == "dive60":
        return str(u) if u % 10 == 0 else ""
    if kind == "gmt24":
        return str(u) if u % 2 == 0 else ""
    return ""


def draw_dial(c: ItemCanvas, rd: float, rgb: RGB, sun_angle: float) -> None:
    """Sunburst finish: brightness follows the angle around the centre."""
    k = c.k
    x0 = int(math.floor((CX - rd) * k))
    n = int(math.ceil(2 * rd * k)) + 1
    coords = (np.arange(n, dtype=np.float32) + x0 + 0.5) / k - CX
    x, y = coords[None, :], coords[:, None]
    theta = np.arctan2(y, x)
    r2 = (x * x + y * y) / rd**2
    light = 1.0 + 0.13 * np.cos(2 * (theta - sun_angle)) - 0.05 * r2
    rgb_arr = np.clip(np.array(rgb, np.float32)[None, None, :] * light[..., None] + 6.0, 0, 255)
    alpha = np.where(r2 <= 1.0, 255, 0).astype(np.uint8)
    arr = np.dstack([rgb_arr.astype(np.uint8), alpha])
    img = Image.fromarray(arr, "RGBA")
    c.image.paste(img, (x0, x0), img)


def draw_minute_track(c: ItemCanvas, rd: float, ink: RGB) -> None:
    """Sixty ticks round the dial's edge, every fifth one longer."""
    for m in range(60):
        major = m % 5 == 0
        pts = _local([(rd * 0.985, 0), (rd * (0.925 if major else 0.95), 0)], m * 6.0)
        c.draw.line(c.pts(pts), fill=ink, width=max(1, int((0.0045 if major else 0.0025) * c.k)))


def _date_hour(brand: WatchBrand) -> int:
    return int(round(brand.date_angle_deg / 30.0)) % 12


def draw_indices(
    c: ItemCanvas,
    brand: WatchBrand,
    rd: float,
    colours: WatchColourway,
    dark: RGB,
    defects: dict[str, dict],
) -> None:
    """Hour indices in the brand's shape, and numerals where the brand has them."""
    numeral_hours = {0: "12", 3: "3", 6: "6", 9: "9"} if brand.numerals else {}
    numeral_hours.pop(_date_hour(brand), None)
    hours = [h for h in range(12) if h != _date_hour(brand) and h not in numeral_hours]
    missing: set[int] = set()
    short: set[int] = set()
    count = defects.get("index_count")
    if count is not None:
        candidates = [h for h in hours if h != 0]
        start = int(count["pick"] * len(candidates))
        chosen = [
            candidates[(start + i * 4) % len(candidates)] for i in range(max(1, count["level"]))
        ]
        (missing if count["level"] >= 1 else short).update(chosen)
        box = points_box(np.array([_polar(rd * 0.8, h * 30.0) for h in chosen]), pad=rd * 0.2)
        c.mark("index_count", box)
    r_out = rd * 0.90
    length, width = brand.index_len * rd, brand.index_w * rd
    outline = max(1, int(0.003 * c.k))
    for h in hours:
        if h in missing:
            continue
        a = h * 30.0
        ln = length * (0.5 if h in short else 1.0)
        for shape in _index_shapes(brand.index_shape, h, r_out, ln, width):
            c.draw.polygon(c.pts(_local(shape, a)), fill=colours.lume, outline=dark, width=outline)
    for h, label in numeral_hours.items():
        mask = text_mask(label, rd * 0.21 * c.k, tracking_em=-0.02)
        c.paste_mask(mask, _polar(rd * 0.73, h * 30.0), colours.print)


def _index_shapes(shape: str, h: int, r_out: float, length: float, width: float):
    r_in = r_out - length
    if shape == "dot" and h not in (0, 6, 9):
        r = width / 2
        mid = r_out - r * 1.1
        return [[(mid + r * math.cos(t), r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 20)]]
    if shape == "dot" and h == 0:
        return [[(r_out, -width * 0.75), (r_out, width * 0.75), (r_in, 0.0)]]
    if shape == "dot":
        return [[(r_out, -width / 3), (r_out, width / 3), (r_in, width / 3), (r_in, -width / 3)]]
    if shape == "wedge":
        wedge = [(r_out, -width / 2), (r_out, width / 2), (r_in, 0.0)]
        if h == 0:
            return [
                [(x, y - width * 0.55) for x, y in wedge],
                [(x, y + width * 0.55) for x, y in wedge],
            ]
        return [wedge]
    bar = [(r_out, -width / 2), (r_out, width / 2), (r_in, width / 2), (r_in, -width / 2)]
    if h == 0:
        return [[(x, y - width * 0.8) for x, y in bar], [(x, y + width * 0.8) for x, y in bar]]
    return [bar]


def _logo(c, brand, centre, size, ink) -> None:
    x, y = centre
    s = size
    if brand.logo == "chevron":
        pts = [(x - s, y + s * 0.5), (x, y - s * 0.5), (x + s, y + s * 0.5)]
        c.draw.line(c.pts(pts), fill=ink, width=max(1, int(s * 0.35 * c.k)), joint="curve")
    elif brand.logo == "star":
        pts = []
        for i in range(10):
            a = i * math.pi / 5 - math.pi / 2
            r = s * (1.0 if i % 2 == 0 else 0.42)
            pts.append((x + r * math.cos(a), y + r * math.sin(a)))
        c.draw.polygon(c.pts(pts), fill=ink)
    else:
        c.draw.ellipse(
            c.px(x - s, y - s, x + s, y + s), outline=ink, width=max(1, int(s * 0.3 * c.k))
        )
        c.draw.ellipse(c.px(x - s * 0.3, y - s * 0.3, x + s * 0.3, y + s * 0.3), fill=ink)


def draw_print(
    c: ItemCanvas, brand: WatchBrand, rd: float, ink: RGB, defects: dict[str, dict]
) -> None:
    """Logo, wordmark and two lines of small print on the dial."""
    size_px = brand.wordmark_h * rd * c.k
    logo_c = (CX, CY - rd * (0.53 if brand.numerals else 0.56))
    _logo(c, brand, logo_c, rd * (0.06 if brand.numerals else 0.075), ink)
    word = brand_lettering(brand.name, size_px, brand.tracking_em, brand.stretch, defects)
    word_c = (CX, CY - rd * 0.40)
    c.paste_mask(word, word_c, ink)
    word_box = mask_box(word, word_c, c.k)
    genuine = text_mask(brand.name, size_px, tracking_em=brand.tracking_em, stretch=brand.stretch)
    for kind in ("wordmark_spacing", "wordmark_weight", "wordmark_letterform"):
        if kind in defects:
            c.mark(kind, union_box(word_box, mask_box(genuine, word_c, c.k)), pad=0.006)
    lines = list(brand.small_print)
    wrong = defects.get("misspelt_print")
    if wrong is not None:
        which = wrong["seed"] % 2
        lines[which] = misspell(lines[which], wrong["level"], wrong["seed"])
    small_boxes = []
    for i, line in enumerate(lines):
        mask = text_mask(line, rd * 0.075 * c.k, tracking_em=0.06)
        centre = (CX, CY + rd * (0.27 + 0.11 * i))
        c.paste_mask(mask, centre, ink)
        small_boxes.append(mask_box(mask, centre, c.k))
    if wrong is not None:
        which = wrong["seed"] % 2
        spec = text_mask(brand.small_print[which], rd * 0.075 * c.k, tracking_em=0.06)
        spec_box = mask_box(spec, (CX, CY + rd * (0.27 + 0.11 * which)), c.k)
        c.mark("misspelt_print", union_box(small_boxes[which], spec_box), pad=0.006)
    soft = defects.get("soft_print")
    if soft is not None:
        if soft["part"] < 0.5:
            box = (
                word_box[0] - 0.01,
                logo_c[1] - rd * 0.1,
                word_box[2] + 0.01,
                word_box[3] + 0.006,
            )
        else:
            x0 = min(b[0] for b in small_boxes)
            x1 = max(b[2] for b in small_boxes)
            box = (x0 - 0.008, small_boxes[0][1] - 0.006, x1 + 0.008, small_boxes[1][3] + 0.006)
        # the cell is relative to the size of the print it blurs
        print_px = size_px if soft["part"] < 0.5 else rd * 0.075 * c.k
        c.soften(box, soft["cell"] * print_px)
        c.mark("soft_print", box)


def draw_date(
    c: ItemCanvas,
    brand: WatchBrand,
    rd: float,
    dark: RGB,
    rng: np.random.Generator,
    defects: dict[str, dict],
) -> None:
    """The date window with a day drawn from `rng`."""
    day = int(rng.integers(1, 32))
    angle = brand.date_angle_deg
    moved = defects.get("date_window")
    if moved is not None:
        angle += moved["degrees"]
    w, h = rd * 0.19, rd * 0.15
    boxes = []
    for a in (brand.date_angle_deg, angle) if moved is not None else (angle,):
        x, y = _polar(rd * brand.date_r, a)
        boxes.append((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    x, y = _polar(rd * brand.date_r, angle)
    box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    c.draw.rectangle(c.px(*box), fill=(246, 244, 236), outline=dark, width=max(1, int(0.005 * c.k)))
    c.paste_mask(text_mask(str(day), h * 0.78 * c.k, tracking_em=-0.02), (x, y), (20, 20, 22))
    if moved is not None:
        c.mark(
            "date_window",
            (
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ),
            pad=0.006,
        )


def _hand_shape(shape: str, length: float, width: float, tail: float):
    if shape == "sword":
        return [
            (-tail, -width * 0.3),
            (length * 0.72, -width / 2),
            (length, 0.0),
            (length * 0.72, width / 2),
            (-tail, width * 0.3),
        ]
    if shape == "dauphine":
        return [(-tail, 0.0), (length * 0.2, -width / 2), (length, 0.0), (length * 0.2, width / 2)]
    return [
        (-tail, -width / 2),
        (length - width / 2, -width / 2),
        (length, 0.0),
        (length - width / 2, width / 2),
        (-tail, width / 2),
    ]


def draw_hands(
    c: ItemCanvas,
    brand: WatchBrand,
    rd: float,
    colours: WatchColourway,
    dial: RGB,
    dark: RGB,
    rng: np.random.Generator,
    defects: dict[str, dict],
) -> None:
    """Hour, minute and seconds hands at a time drawn from `rng`, with their shadows."""
    hour, minute, second = rng.uniform(0, 12), rng.uniform(0, 60), rng.uniform(0, 60)
    hour_len, minute_len = brand.hour_len * rd, brand.minute_len * rd
    hour_w, minute_w = brand.hour_w * rd, brand.minute_w * rd
    change = defects.get("hand_proportions")
    hour_angle, minute_angle = (hour % 12) * 30.0 + minute * 0.5, minute * 6.0
    genuine_hands = {
        "hour": _local(_hand_shape(brand.hands, hour_len, hour_w, rd * 0.12), hour_angle),
        "minute": _local(_hand_shape(brand.hands, minute_len, minute_w, rd * 0.15), minute_angle),
    }
    if change is not None:
        if change["hand"] == "minute_short":
            minute_len *= 1.0 - change["change"]
        elif change["hand"] == "hour_long":
            hour_len *= 1.0 + change["change"]
        else:
            hour_w *= 1.0 + 2.5 * change["change"]
    hands = [
        ("hour", _local(_hand_shape(brand.hands, hour_len, hour_w, rd * 0.12), hour_angle)),
        ("minute", _local(_hand_shape(brand.hands, minute_len, minute_w, rd * 0.15), minute_angle)),
    ]
    shadow = scale_rgb(dial, 0.45)
    offset = np.array([0.005, 0.008])
    for _, pts in hands:
        c.draw.polygon(c.pts(pts + offset), fill=shadow)
    outline = max(1, int(0.003 * c.k))
    for _, pts in hands:
        c.draw.polygon(c.pts(pts), fill=colours.lume, outline=dark, width=outline)
    if change is not None:
        which = "minute" if change["hand"] == "minute_short" else "hour"
        drawn, spec = dict(hands)[which], genuine_hands[which]
        extent = np.vstack([drawn, spec, drawn + offset, spec + offset])
        c.mark("hand_proportions", points_box(extent), pad=0.008)
    accent = (196, 44, 38) if brand.bezel == "dive60" else colours.print
    sec = _local([(-rd * 0.22, 0.0), (rd * 0.93, 0.0)], second * 6.0)
    c.draw.line(c.pts(sec + offset), fill=shadow, width=max(1, int(0.005 * c.k)))
    c.draw.line(c.pts(sec), fill=accent, width=max(1, int(0.005 * c.k)))
    x, y = _polar(-rd * 0.15, second * 6.0)
    r = rd * 0.04
    c.draw.ellipse(c.px(x - r, y - r, x + r, y + r), fill=accent)
    r = rd * 0.045
    c.draw.ellipse(
        c.px(CX - r, CY - r, CX + r, CY + r),
        fill=METAL_BASE[colours.metal],
        outline=dark,
        width=outline,
    )
