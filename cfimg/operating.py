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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TARGET_KINDS = ("precision", "recall", "fpr")


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
    positive_scores = np.sort(scores[labels == 1]).astype(np.float64)
    negative_scores = np.sort(scores[labels == 0]).astype(np.float64)
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
    above = np.unique(scores[scores >= threshold])  # ascending: nearest first
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
    uncertain = (scores >= low) & (scores < high)
    decided = ~uncertain
    flagged = decided & (scores >= threshold)
    n_decided = int(decided.sum())
    correct = int(((flagged == (labels == 1)) & decided).sum())
    tp = int((flagged & (labels == 1)).sum())
    return {
        "low": float(low),
        "high": float(high),
        "n": int(labels.size),
        "n_uncertain": int(uncertain.sum()),
        "n_uncertain_genuine": int((uncertain & (labels == 0)).sum()),
        "n_uncertain_counterfeit": int((uncertain & (labels == 1)).sum()),
        "coverage": n_decided / labels.size if labels.size else float("nan"),
        "accuracy_decided": correct / n_decided if n_decided else float("nan"),
        "precision_decided": tp / int(flagged.sum()) if flagged.any() else float("nan"),
        "recall_decided": tp / int((decided & (labels == 1)).sum())
        if (decided & (labels == 1)).any()
        else float("nan"),
    }
