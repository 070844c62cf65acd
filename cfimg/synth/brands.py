"""Invented brands, each a specification that genuine items follow within tight tolerance.

All names, marks and lettering are made up for this benchmark; none is a real trademark.
Geometry is in canvas units: the item canvas is the unit square, x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]


def hex_rgb(code: str) -> RGB:
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


@dataclass(frozen=True)
class BagColourway:
    """One colour scheme a bag model is sold in (a nuisance: it says nothing about authenticity)."""

    canvas: RGB  # coated canvas of the body
    motif: RGB  # printed monogram
    leather: RGB  # trim, handles, patch
    thread: RGB
    edge_paint: RGB
    metal: str  # "gold" or "silver"


@dataclass(frozen=True)
class BagBrand:
    name: str  # the wordmark, as printed
    slug: str  # folder and item-id name
    initials: str  # two letters: the monogram's lettered motif and the hardware engraving
    small_print: str  # under the wordmark on the leather patch
    colourways: tuple[BagColourway, ...]
    # body: a trapezoid with rounded lower corners, centred on x = 0.5
    body_top_w: float
    body_bottom_w: float
    body_h: float
    corner_r: float
    handle_h: float
    seam_frac: float  # height of the base seam, as a fraction of the body height from the top
    # monogram: motif A (the initials) and motif B (a shape) on a grid, A and B alternating
    motif_shape: str  # "flower", "diamond", "star" or "quatrefoil"
    pitch: float  # grid pitch (both axes)
    stagger: bool  # alternate rows shifted by half a pitch
    phase_x: float  # a motif column sits at x = 0.5 + phase_x * pitch
    phase_y: float  # the first motif row sits phase_y * pitch below the trim
    motif_frac: float  # motif size as a fraction of the pitch
    # wordmark on the leather patch
    wordmark_h: float  # font size, canvas units
    tracking_em: float
    stretch: float  # horizontal scale of the lettering (condensed < 1 < extended)
    stamp: str  # "deboss" (pressed into the leather) or "foil" (hot-stamped in the metal colour)
    # stitching
    stitch_pitch: float
    stitch_len_frac: float  # visible thread as a fraction of the pitch
    stitch_slant_deg: float
    # hardware on the top trim
    hardware: str  # "turnlock", "plate" or "shield"
    hardware_w: float
    hardware_h: float


@dataclass(frozen=True)
class WatchColourway:
    dial: RGB
    print: RGB  # dial text and minute track
    lume: RGB  # index and hand fill
    bezel: RGB  # bezel insert
    bezel_print: RGB
    strap: RGB
    thread: RGB
    metal: str  # "steel" or "gold"


@dataclass(frozen=True)
class WatchBrand:
    name: str
    slug: str
    small_print: tuple[str, str]  # two lines above six o'clock
    logo: str  # mark above the wordmark: "chevron", "star" or "ring"
    colourways: tuple[WatchColourway, ...]
    case_r: float
    bezel: str  # "dive60", "gmt24" or "hours12"
    index_shape: str  # "baton", "dot" or "wedge"
    index_len: float  # radial length, as a fraction of the dial radius
    index_w: float
    numerals: bool  # Arabic 12, 6 and 9 instead of those indices
    date_angle_deg: float  # clockwise from twelve: 90 is three o'clock
    date_r: float  # window centre radius, fraction of the dial radius
    hands: str  # "sword", "dauphine" or "baton"
    hour_len: float  # fractions of the dial radius
    minute_len: float
    hour_w: float
    minute_w: float
    wordmark_h: float  # font size as a fraction of the dial radius
    tracking_em: float
    stretch: float
    crown_w: float  # canvas units
    crown_h: float
    crown_flutes: int
    crown_guard: bool
    strap_w: float
    stitch_pitch: float
    stitch_len_frac: float
    stitch_slant_deg: float


BAG_BRANDS: tuple[BagBrand, ...] = (
    BagBrand(
        name="VELMORA",
        slug="velmora",
        initials="VM",
        small_print="MAISON VELMORA  PARIS",
        colourways=(
            BagColourway(
                hex_rgb("6b4a2e"),
                hex_rgb("d9b77a"),
                hex_rgb("b9824e"),
                hex_rgb("e3c27a"),
                hex_rgb("7a2a1c"),
                "gold",
            ),
            BagColourway(
                hex_rgb("3b3433"),
                hex_rgb("a9a39a"),
                hex_rgb("2a2220"),
                hex_rgb("c9b48a"),
                hex_rgb("1b1515"),
                "gold",
            ),
        ),
        body_top_w=0.66,
        body_bottom_w=0.80,
        body_h=0.50,
        corner_r=0.07,
        handle_h=0.30,
        seam_frac=0.70,
        motif_shape="flower",
        pitch=0.095,
        stagger=True,
        phase_x=0.0,
        phase_y=0.55,
        motif_frac=0.58,
        wordmark_h=0.050,
        tracking_em=0.12,
        stretch=1.0,
        stamp="foil",
        stitch_pitch=0.0165,
        stitch_len_frac=0.62,
        stitch_slant_deg=18.0,
        hardware="turnlock",
        hardware_w=0.095,
        hardware_h=0.095,
    ),
    BagBrand(
        name="ARDELLE",
        slug="ardelle",
        initials="AE",
        small_print="ARDELLE  MILANO  1931",
        colourways=(
            BagColourway(
                hex_rgb("2c3a57"),
                hex_rgb("b7c2d6"),
                hex_rgb("1f2433"),
                hex_rgb("d8d2c4"),
                hex_rgb("121521"),
                "silver",
            ),
            BagColourway(
                hex_rgb("8a6f57"),
                hex_rgb("efe6d3"),
                hex_rgb("5a3b27"),
                hex_rgb("f0e2c2"),
                hex_rgb("3a2215"),
                "silver",
            ),
        ),
        body_top_w=0.74,
        body_bottom_w=0.78,
        body_h=0.46,
        corner_r=0.04,
        handle_h=0.26,
        seam_frac=0.68,
        motif_shape="diamond",
        pitch=0.085,
        stagger=False,
        phase_x=0.5,
        phase_y=0.5,
        motif_frac=0.55,
        wordmark_h=0.046,
        tracking_em=0.30,
        stretch=0.86,
        stamp="foil",
        stitch_pitch=0.0145,
        stitch_len_frac=0.58,
        stitch_slant_deg=0.0,
        hardware="plate",
        hardware_w=0.19,
        hardware_h=0.060,
    ),
    BagBrand(
        name="SOVRAINE",
        slug="sovraine",
        initials="SV",
        small_print="SOVRAINE  FONDEE EN 1908",
        colourways=(
            BagColourway(
                hex_rgb("7d2230"),
                hex_rgb("e8c9a8"),
                hex_rgb("d2a06a"),
                hex_rgb("fbeed6"),
                hex_rgb("5a1420"),
                "gold",
            ),
            BagColourway(
                hex_rgb("35513c"),
                hex_rgb("d8d1b4"),
                hex_rgb("a6713f"),
                hex_rgb("f3e5c8"),
                hex_rgb("4a2a16"),
                "gold",
            ),
        ),
        body_top_w=0.60,
        body_bottom_w=0.82,
        body_h=0.52,
        corner_r=0.10,
        handle_h=0.32,
        seam_frac=0.72,
        motif_shape="star",
        pitch=0.105,
        stagger=True,
        phase_x=0.5,
        phase_y=0.45,
        motif_frac=0.62,
        wordmark_h=0.052,
        tracking_em=0.05,
        stretch=1.12,
        stamp="deboss",
        stitch_pitch=0.019,
        stitch_len_frac=0.70,
        stitch_slant_deg=-22.0,
        hardware="shield",
        hardware_w=0.085,
        hardware_h=0.105,
    ),
)

WATCH_BRANDS: tuple[WatchBrand, ...] = (
    WatchBrand(
        name="HALBRECHT",
        slug="halbrecht",
        small_print=("AUTOMATIC CHRONOMETER", "300 M  1000 FT"),
        logo="chevron",
        colourways=(
            WatchColourway(
                hex_rgb("14171c"),
                hex_rgb("f2f2ee"),
                hex_rgb("e9f0d8"),
                hex_rgb("1b2a6b"),
                hex_rgb("f2f2ee"),
                hex_rgb("1a1a1a"),
                hex_rgb("d8d8d0"),
                "steel",
            ),
            WatchColourway(
                hex_rgb("16335e"),
                hex_rgb("f4f1e8"),
                hex_rgb("f0efe0"),
                hex_rgb("15284f"),
                hex_rgb("f4f1e8"),
                hex_rgb("5b3a22"),
                hex_rgb("e8d6b0"),
                "steel",
            ),
        ),
        case_r=0.25,
        bezel="dive60",
        index_shape="dot",
        index_len=0.20,
        index_w=0.11,
        numerals=False,
        date_angle_deg=90.0,
        date_r=0.66,
        hands="sword",
        hour_len=0.55,
        minute_len=0.86,
        hour_w=0.085,
        minute_w=0.065,
        wordmark_h=0.15,
        tracking_em=0.10,
        stretch=1.0,
        crown_w=0.040,
        crown_h=0.085,
        crown_flutes=7,
        crown_guard=True,
        strap_w=0.22,
        stitch_pitch=0.0155,
        stitch_len_frac=0.6,
        stitch_slant_deg=0.0,
    ),
    WatchBrand(
        name="ORNEVAL",
        slug="orneval",
        small_print=("AUTOMATIQUE", "GENEVE"),
        logo="star",
        colourways=(
            WatchColourway(
                hex_rgb("e9e5dc"),
                hex_rgb("1d1d22"),
                hex_rgb("2a2a30"),
                hex_rgb("b8b4ab"),
                hex_rgb("2b2b2b"),
                hex_rgb("6d4326"),
                hex_rgb("e0c08a"),
                "gold",
            ),
            WatchColourway(
                hex_rgb("2f4f3c"),
                hex_rgb("f1ece0"),
                hex_rgb("e8d9a8"),
                hex_rgb("8e8778"),
                hex_rgb("232323"),
                hex_rgb("2b1d14"),
                hex_rgb("cdb58a"),
                "gold",
            ),
        ),
        case_r=0.24,
        bezel="hours12",
        index_shape="baton",
        index_len=0.22,
        index_w=0.045,
        numerals=True,
        date_angle_deg=180.0,
        date_r=0.55,
        hands="dauphine",
        hour_len=0.52,
        minute_len=0.84,
        hour_w=0.10,
        minute_w=0.075,
        wordmark_h=0.14,
        tracking_em=0.25,
        stretch=0.9,
        crown_w=0.032,
        crown_h=0.070,
        crown_flutes=9,
        crown_guard=False,
        strap_w=0.20,
        stitch_pitch=0.013,
        stitch_len_frac=0.55,
        stitch_slant_deg=15.0,
    ),
    WatchBrand(
        name="KASSIMIR",
        slug="kassimir",
        small_print=("DUAL TIME AUTOMATIC", "100 M  330 FT"),
        logo="ring",
        colourways=(
            WatchColourway(
                hex_rgb("1c1c1e"),
                hex_rgb("eeeeea"),
                hex_rgb("e6edd0"),
                hex_rgb("8c1d26"),
                hex_rgb("f0f0ea"),
                hex_rgb("222222"),
                hex_rgb("c8c8c0"),
                "steel",
            ),
            WatchColourway(
                hex_rgb("c9ccce"),
                hex_rgb("16181c"),
                hex_rgb("f5f5ef"),
                hex_rgb("1e5a45"),
                hex_rgb("eeeeea"),
                hex_rgb("8a5a33"),
                hex_rgb("efe1c4"),
                "steel",
            ),
        ),
        case_r=0.26,
        bezel="gmt24",
        index_shape="wedge",
        index_len=0.24,
        index_w=0.075,
        numerals=False,
        date_angle_deg=90.0,
        date_r=0.68,
        hands="baton",
        hour_len=0.58,
        minute_len=0.88,
        hour_w=0.065,
        minute_w=0.050,
        wordmark_h=0.145,
        tracking_em=0.04,
        stretch=1.15,
        crown_w=0.046,
        crown_h=0.078,
        crown_flutes=5,
        crown_guard=False,
        strap_w=0.23,
        stitch_pitch=0.018,
        stitch_len_frac=0.66,
        stitch_slant_deg=-12.0,
    ),
)

CATEGORIES: tuple[str, ...] = ("bag", "watch")
BRANDS_BY_CATEGORY: dict[str, tuple[BagBrand, ...] | tuple[WatchBrand, ...]] = {
    "bag": BAG_BRANDS,
    "watch": WATCH_BRANDS,
}
