"""The counterfeit defect catalogue: which defects each category can carry, how strong each is at
each difficulty, and the draw of concrete defect parameters for one counterfeit item.

Every defect is local (one part of the item) and geometric or print-level; none changes the whole
image. Magnitudes are relative to the feature they alter (pitch, font size, dial radius...), so
they mean the same at any image size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")

BAG_DEFECTS: tuple[str, ...] = (
    "monogram_pitch",
    "monogram_phase",
    "seam_misaligned",
    "stitch_irregular",
    "stitch_density",
    "wordmark_spacing",
    "wordmark_weight",
    "wordmark_letterform",
    "misspelt_print",
    "hue_shift",
    "soft_print",
    "engraving_shallow",
    "hardware_shape",
)
WATCH_DEFECTS: tuple[str, ...] = (
    "index_count",
    "date_window",
    "hand_proportions",
    "bezel_markings",
    "crown_shape",
    "stitch_irregular",
    "stitch_density",
    "wordmark_spacing",
    "wordmark_weight",
    "wordmark_letterform",
    "misspelt_print",
    "hue_shift",
    "soft_print",
)
DEFECTS_BY_CATEGORY: dict[str, tuple[str, ...]] = {"bag": BAG_DEFECTS, "watch": WATCH_DEFECTS}
DEFECT_KINDS: tuple[str, ...] = tuple(dict.fromkeys(BAG_DEFECTS + WATCH_DEFECTS))

# Magnitude of each defect at (easy, medium, hard). Units are in the comments.
MAGNITUDES: dict[str, tuple[float, float, float]] = {
    "monogram_pitch": (0.28, 0.18, 0.10),  # relative change of the grid pitch
    "monogram_phase": (0.50, 0.42, 0.25),  # grid shift, in pitches
    "seam_misaligned": (0.50, 0.40, 0.26),  # pattern shift across the seam, in pitches
    "stitch_irregular": (0.45, 0.34, 0.20),  # spacing s.d. in pitches (wander x2.5, angle x60 deg)
    "stitch_density": (0.50, 0.38, 0.20),  # relative change of the stitch pitch on one line
    "wordmark_spacing": (0.34, 0.21, 0.11),  # letter-spacing change, in em
    "wordmark_weight": (0.080, 0.055, 0.032),  # extra stroke, fraction of the font size
    "wordmark_letterform": (2, 1, 0),  # lookalike letter 1.38x (2) or 1.24x (1); 0: one slanted
    "misspelt_print": (2, 1, 0),  # 2: two letters dropped/doubled; 1: one; 0: one substituted
    "hue_shift": (40.0, 26.0, 14.0),  # hue rotation of one part, degrees
    "soft_print": (0.42, 0.30, 0.18),  # pixel size of the soft print, fraction of the print size
    "engraving_shallow": (0.15, 0.32, 0.52),  # engraving contrast left (genuine: 1)
    "hardware_shape": (0.34, 0.24, 0.13),  # relative change of the hardware's aspect or size
    "index_count": (2, 1, 0),  # 2: two indices missing; 1: one missing; 0: one half-length
    "date_window": (26.0, 17.0, 9.0),  # window displaced along the dial, degrees
    "hand_proportions": (0.34, 0.25, 0.13),  # relative change of one hand's length or width
    "bezel_markings": (0.50, 0.40, 0.22),  # bezel scale rotated, in major divisions
    "crown_shape": (0.55, 0.40, 0.20),  # relative change of the crown's size
}

# How many defects a counterfeit carries: 1, 2 or 3 with these probabilities.
DEFECT_COUNT_P: tuple[float, float, float] = (0.35, 0.40, 0.25)


# Defects only legible at full resolution: at easy and medium, made for models that see the photo
# at 224-320 px, they always come with another defect, so no counterfeit is invisible at that size.
FULL_RESOLUTION_ONLY: frozenset[str] = frozenset({"misspelt_print"})


def magnitude(kind: str, difficulty: str) -> float:
    return MAGNITUDES[kind][DIFFICULTIES.index(difficulty)]


def sample_defects(
    category: str, difficulty: str, first_kind: str, rng: np.random.Generator
) -> dict[str, dict[str, Any]]:
    """Draw 1 to 3 distinct defects, the first one given, each with its concrete parameters.

    The first kind is chosen by the caller (cycling through the catalogue) so that every kind
    appears in even a small set.
    """
    catalogue = DEFECTS_BY_CATEGORY[category]
    if first_kind not in catalogue:
        raise ValueError(f"{first_kind} is not a {category} defect")
    count = int(rng.choice([1, 2, 3], p=DEFECT_COUNT_P))
    if first_kind in FULL_RESOLUTION_ONLY and difficulty != "hard":
        count = max(count, 2)
    others = [kind for kind in catalogue if kind != first_kind]
    kinds = [first_kind] + [str(k) for k in rng.choice(others, size=count - 1, replace=False)]
    return {kind: _params(kind, category, magnitude(kind, difficulty), rng) for kind in kinds}


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _params(kind: str, category: str, mag: float, rng: np.random.Generator) -> dict[str, Any]:
    """Concrete parameters of one defect; `mag` is its magnitude at the chosen difficulty."""
    jitter = float(rng.uniform(0.9, 1.15))  # no two counterfeiters are off by exactly as much
    if kind == "monogram_pitch":
        return {"factor": 1.0 + _sign(rng) * mag * jitter}
    if kind == "monogram_phase":
        axis = str(rng.choice(["x", "y", "xy"]))
        return {"axis": axis, "shift": _sign(rng) * mag * jitter}
    if kind == "seam_misaligned":
        # the lower panel is shifted, or turned upside down (and then rarely in register either)
        return {"flip": bool(rng.random() < 0.4), "shift": _sign(rng) * mag * jitter}
    if kind == "stitch_irregular":
        return {
            "line": int(rng.integers(0, 1 << 16)),
            "start": float(rng.uniform(0.05, 0.55)),
            "length": 0.4,
            "spacing_sd": mag * jitter,
            "angle_sd_deg": 60.0 * mag * jitter,
        }
    if kind == "stitch_density":
        return {"line": int(rng.integers(0, 1 << 16)), "factor": 1.0 + _sign(rng) * mag * jitter}
    if kind == "wordmark_spacing":
        uniform = bool(rng.random() < 0.5)
        em = mag * jitter if uniform else mag * jitter * 1.8
        return {"uniform": uniform, "em": _sign(rng) * em if uniform else em, "gap": rng.random()}
    if kind == "wordmark_weight":
        return {"stroke": mag * jitter}
    if kind == "wordmark_letterform":
        return {"level": int(mag), "letter": float(rng.random()), "pick": float(rng.random())}
    if kind == "misspelt_print":
        return {"level": int(mag), "seed": int(rng.integers(0, 1 << 31))}
    if kind == "hue_shift":
        return {"degrees": _sign(rng) * mag * jitter, "part": float(rng.random())}
    if kind == "soft_print":
        return {"cell": mag * jitter, "part": float(rng.random())}
    if kind == "engraving_shallow":
        return {"contrast": min(0.8, mag * jitter)}
    if kind == "hardware_shape":
        return {"mode": str(rng.choice(["aspect", "size"])), "factor": 1.0 + _sign(rng) * mag}
    if kind == "index_count":
        return {"level": int(mag), "pick": float(rng.random())}
    if kind == "date_window":
        return {"degrees": _sign(rng) * mag * jitter}
    if kind == "hand_proportions":
        hand = str(rng.choice(["minute_short", "hour_long", "hour_wide"]))
        return {"hand": hand, "change": mag * jitter}
    if kind == "bezel_markings":
        return {"divisions": _sign(rng) * mag * jitter}
    if kind == "crown_shape":
        return {"factor": 1.0 + _sign(rng) * mag * jitter, "flip_guard": bool(rng.random() < 0.3)}
    raise ValueError(f"unknown defect kind {kind!r}")
