"""Operating points: the p_counterfeit threshold that reaches a stated target, and an
"uncertain" band around it.

A score at or above the threshold is a counterfeit verdict (the rule of cfimg.card.ModelCard).
The candidates are the observed scores (and one above them all, which flags nothing); the
threshold returned for a candidate lies midway between it and the next lower score, chosen to be
exactly representable in the scores' float type, so `p >= threshold` flags exactly the counted
scores: a reachable target is met on the data it was fitted on, by construction, not
approximately, while a last-bit difference in a recomputed score cannot flip a decision.

- target precision P: the lowest threshold whose precision is >= P (the most counterfeits caught
  at that precision; precision is not monotone in the threshold, so every candidate is checked).
- target recall R: the highest threshold whose recall is >= R (the fewest false alarms).
- target FPR F (false positives among genuine items): the lowest threshold whose FPR is <= F.

`choose_operating_point` is what `cfimg eval` applies: the model card's threshold and band, or
a target fitted on the fitting split, plus the band asked for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cfimg.calibration import remap_threshold
from cfimg.card import ModelCard, is_counterfeit
from cfimg.errors import DatasetError
from cfimg.labels import COUNTERFEIT_INDEX
from cfimg.metrics import evaluation_metrics

TARGET_KINDS = ("precision", "recall", "fpr")
_TARGET_NAMES = {"precision": "precision", "recall": "recall", "fpr": "FPR"}


def target_sign(kind: str) -> str:
    """How a target of `kind` is met: the FPR is a ceiling, precision and recall are floors."""
    return "<=" if kind == "fpr" else ">="


def in_uncertain_band(p_counterfeit, band: tuple[float, float]):
    """Whether p_counterfeit (one or an array) lies in [low, high): the "uncertain" verdict."""
    low, high = band
    return (p_counterfeit >= low) & (p_counterfeit < high)


@dataclass(frozen=True)
class Target:
    """An operating-point target: `kind` ("precision", "recall" or "fpr") and its value."""

    kind: str
    value: float

    def describe(self) -> str:
        return f"{_TARGET_NAMES[self.kind]} {target_sign(self.kind)} {self.value:g}"

    def met_by(self, achieved: float) -> bool:
        return achieved <= self.value if self.kind == "fpr" else achieved >= self.value


@dataclass(frozen=True)
class OperatingPoint:
    target: str  # "precision", "recall" or "fpr"
    target_value: float
    threshold: float
    reachable: bool  # False: no threshold meets the target; `threshold` is the closest one
    achieved: float  # the target metric at `threshold` on the fitting data
    tp: int
    fp: int
    tn: int
    fn: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Counts:
    thresholds: np.ndarray  # candidate thresholds, ascending: the distinct scores, then above all
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int
    dtype: type  # the scores' float type

    def margin_threshold(self, i: int) -> float:
        """A threshold with exactly candidate i's counts, as far from the scores as possible.

        Any t in (candidate[i-1], candidate[i]] flags the same scores; the midpoint leaves room
        for the last-bit differences between engines (PyTorch vs onnxruntime, CPU vs GPU).
        """
        below = self.thresholds[i - 1] if i > 0 else min(0.0, self.thresholds[0])
        above = self.thresholds[i]
        if i == len(self.thresholds) - 1 and below < 1.0:
            above = 1.0  # flags nothing; a probability never exceeds 1
        return value_between(below, above, self.dtype)


def _as_scores(scores: np.ndarray) -> np.ndarray:
    """Scores keep their own float dtype (float32 from the engines): thresholds are compared with
    exactly the values they were chosen from."""
    scores = np.asarray(scores).reshape(-1)
    return scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float64)


def _candidate_counts(labels: np.ndarray, scores: np.ndarray) -> _Counts:
    labels = np.asarray(labels).astype(int).reshape(-1)
    scores = _as_scores(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise ValueError("no scores to fit an operating point on")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    above_all = np.nextafter(scores.max(), scores.dtype.type(np.inf))
    thresholds = np.append(np.unique(scores), above_all).astype(np.float64)
    counterfeit = labels == COUNTERFEIT_INDEX
    positive_scores = np.sort(scores[counterfeit]).astype(np.float64)
    negative_scores = np.sort(scores[~counterfeit]).astype(np.float64)
    # Number of scores >= t for each candidate t: everything from the first index >= t on.
    tp = len(positive_scores) - np.searchsorted(positive_scores, thresholds, side="left")
    fp = len(negative_scores) - np.searchsorted(negative_scores, thresholds, side="left")
    return _Counts(
        thresholds, tp, fp, len(positive_scores), len(negative_scores), scores.dtype.type
    )


def value_between(low: float, high: float, dtype: type = np.float64) -> float:
    """A value of `dtype` in (low, high], near the middle: `x >= value` separates the two the
    same way whether x is compared as float32 or float64."""
    middle = dtype((low + high) / 2)
    return float(middle) if low < middle <= high else float(dtype(high))


def _point(
    target: str, value: float, counts: _Counts, i: int, reachable: bool, achieved
) -> OperatingPoint:
    tp, fp = int(counts.tp[i]), int(counts.fp[i])
    return OperatingPoint(
        target=target,
        target_value=float(value),
        threshold=counts.margin_threshold(i),
        reachable=bool(reachable),
        achieved=float(achieved[i]),
        tp=tp,
        fp=fp,
        tn=counts.negatives - fp,
        fn=counts.positives - tp,
    )


def threshold_for_precision(
    labels: np.ndarray, scores: np.ndarray, target: float
) -> OperatingPoint:
    counts = _candidate_counts(labels, scores)
    if counts.positives == 0:
        raise ValueError("a target precision needs at least one counterfeit example")
    flagged = counts.tp + counts.fp
    precision = np.divide(
        counts.tp, flagged, out=np.zeros(len(flagged), dtype=np.float64), where=flagged > 0
    )
    meets = (precision >= target) & (flagged > 0)
    if meets.any():
        return _point("precision", target, counts, int(np.argmax(meets)), True, precision)
    best = np.flatnonzero(precision == precision.max())[0]
    return _point("precision", target, counts, int(best), False, precision)


def threshold_for_recall(labels: np.ndarray, scores: np.ndarray, target: float) -> OperatingPoint:
    counts = _candidate_counts(labels, scores)
    if counts.positives == 0:
        raise ValueError("a target recall needs at least one counterfeit example")
    recall = counts.tp / counts.positives
    meets = recall >= target  # recall falls as the threshold rises: take the last that meets it
    if meets.any():
        return _point("recall", target, counts, int(np.flatnonzero(meets)[-1]), True, recall)
    return _point("recall", target, counts, 0, False, recall)


def threshold_for_fpr(labels: np.ndarray, scores: np.ndarray, target: float) -> OperatingPoint:
    counts = _candidate_counts(labels, scores)
    if counts.negatives == 0:
        raise ValueError("a target false-positive rate needs at least one genuine example")
    fpr = counts.fp / counts.negatives
    meets = fpr <= target  # always true for the last candidate, which flags nothing
    return _point("fpr", target, counts, int(np.argmax(meets)), True, fpr)


def fit_operating_point(
    labels: np.ndarray, scores: np.ndarray, target: str, value: float
) -> OperatingPoint:
    """Dispatch on `target` ("precision", "recall" or "fpr")."""
    fitters = {
        "precision": threshold_for_precision,
        "recall": threshold_for_recall,
        "fpr": threshold_for_fpr,
    }
    if target not in fitters:
        raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGET_KINDS)}")
    return fitters[target](labels, scores, value)


def uncertain_band_around(
    scores: np.ndarray, threshold: float, fraction: float
) -> tuple[float, float]:
    """A (low, high) band holding about `fraction` of `scores` (counted in distinct scores, so
    ties share a verdict), half just below `threshold` and half at or just above it: the items
    the model is least sure about.

    ModelCard.verdict answers "uncertain" for low <= p < high; each bound lies midway between
    the last score inside the band and the first outside it.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the uncertain fraction must be between 0 and 1, not {fraction}")
    scores = _as_scores(scores)
    half = int(round(fraction * scores.size / 2))
    below = np.unique(scores[scores < threshold])[::-1]  # descending: nearest first
    above = np.unique(scores[is_counterfeit(scores, threshold)])  # ascending: nearest first
    dtype = scores.dtype.type
    # Whole distinct scores only, so that equal scores share one verdict.
    n_below = min(half, below.size)
    n_above = min(half, above.size)
    if n_below == 0:
        low = float(threshold)
    elif n_below == below.size:
        low = float(below[-1])
    else:
        low = value_between(float(below[n_below]), float(below[n_below - 1]), dtype)
    if n_above == 0:
        high = float(threshold)
    elif n_above < above.size:
        high = value_between(float(above[n_above - 1]), float(above[n_above]), dtype)
    else:
        top = float(above[-1])
        high = (
            value_between(top, 1.0, dtype)
            if top < 1.0
            else float(np.nextafter(dtype(top), dtype(np.inf)))
        )
    return low, high


def band_counts(
    labels: np.ndarray, scores: np.ndarray, threshold: float, band: tuple[float, float]
) -> dict:
    """Three-way verdict counts: how many are left uncertain, and how good the decided rest is."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    low, high = band
    counterfeit = labels == COUNTERFEIT_INDEX
    uncertain = in_uncertain_band(scores, band)
    decided = ~uncertain
    flagged = decided & is_counterfeit(scores, threshold)
    n_decided = int(decided.sum())
    correct = int(((flagged == counterfeit) & decided).sum())
    tp = int((flagged & counterfeit).sum())
    return {
        "low": float(low),
        "high": float(high),
        "n": int(labels.size),
        "n_uncertain": int(uncertain.sum()),
        "n_uncertain_genuine": int((uncertain & ~counterfeit).sum()),
        "n_uncertain_counterfeit": int((uncertain & counterfeit).sum()),
        "coverage": n_decided / labels.size if labels.size else float("nan"),
        "accuracy_decided": correct / n_decided if n_decided else float("nan"),
        "precision_decided": tp / int(flagged.sum()) if flagged.any() else float("nan"),
        "recall_decided": tp / int((decided & counterfeit).sum())
        if (decided & counterfeit).any()
        else float("nan"),
    }


# --- what `cfimg eval` applies ------------------------------------------------------------


def target_check(metrics: dict, target: Target | None) -> dict:
    """The target metric's value in `metrics` and whether it meets the target (None: undefined)."""
    if target is None:
        return {"achieved": None, "target_met": None}
    achieved = metrics[target.kind]
    if achieved != achieved:  # NaN: e.g. no genuine item for an FPR
        return {"achieved": achieved, "target_met": None}
    return {"achieved": achieved, "target_met": bool(target.met_by(achieved))}


def choose_operating_point(
    card: ModelCard,
    target: Target | None,
    uncertain_band: tuple[float, float] | None,
    uncertain_frac: float | None,
    fit_labels: np.ndarray,
    fit_p: np.ndarray,
    *,
    temperature: float,
    fit_split: str,
    evaluated_split: str,
    notes: list[str],
) -> tuple[float, tuple[float, float] | None, dict]:
    """(threshold, band, {"source", "split", "point"}) on the probability scale of `temperature`.

    Without a target: the card's threshold and band, re-expressed at `temperature`; with one:
    the threshold fitted on (fit_labels, fit_p). An explicit band, or one fitted to hold
    `uncertain_frac` of fit_p, replaces the default. Warnings a reader must see go to `notes`.
    """

    def remap(value: float) -> float:
        return remap_threshold(value, card.temperature, temperature)

    if target is None:
        threshold = remap(card.threshold)
        choice = {"source": "model card", "split": None, "point": None}
        default_band = (
            (remap(card.uncertain_band[0]), remap(card.uncertain_band[1]))
            if card.uncertain_band
            else None
        )
    else:
        try:
            point = fit_operating_point(fit_labels, fit_p, target.kind, target.value)
        except ValueError as exc:
            raise DatasetError(f"cannot fit {target.describe()} on {fit_split}: {exc}") from None
        threshold = point.threshold
        fit_metrics = evaluation_metrics(fit_labels, fit_p, threshold)
        choice = {
            "source": f"target {target.describe()}",
            "split": fit_split,
            "point": {
                **point.to_dict(),
                "fitted_on": fit_split,
                "fit": {**fit_metrics, "split": fit_split},
            },
        }
        default_band = None
        if card.uncertain_band and uncertain_band is None and uncertain_frac is None:
            notes.append(
                "the model card's uncertain band belongs to its old threshold and is not used "
                "with the new operating point; give --uncertain-band or --uncertain-frac"
            )
    if (target is not None or uncertain_frac is not None) and evaluated_split == fit_split:
        notes.append(
            f"the operating point was fitted and measured on the same split ({evaluated_split}): "
            "its metrics there are optimistic; evaluate --split test for honest figures"
        )
    if uncertain_band is not None:
        band = uncertain_band
    elif uncertain_frac is not None:
        band = uncertain_band_around(fit_p, threshold, uncertain_frac)
    else:
        band = default_band
    if band is not None and not band[0] <= threshold <= band[1]:
        notes.append(
            f"the threshold {threshold:.4g} lies outside the uncertain band "
            f"[{band[0]:.4g}, {band[1]:.4g})"
        )
    return threshold, band, choice
