"""Classification metrics for the counterfeit class, on top of scikit-learn's arithmetic.

Point estimates come from scikit-learn. Bootstrap confidence intervals resample *groups* (photos
of one item move together, since they are not independent evidence) and evaluate each replicate
as integer sample weights: threshold metrics from weighted confusion counts, ROC-AUC and PR-AUC
from scikit-learn with `sample_weight`. Breakdowns repeat all of it per category or brand.

Labels are class indices (cfimg.labels): COUNTERFEIT_INDEX, 1, is scikit-learn's positive label.
A score at or above the threshold is a counterfeit verdict (cfimg.card.is_counterfeit).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from cfimg.card import is_counterfeit
from cfimg.labels import COUNTERFEIT_INDEX


def reliability_bins(
    labels: np.ndarray,
    p_counterfeit: np.ndarray,
    bins: int = 15,
    sample_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Confidence of the predicted class vs its accuracy in equal-width bins over [0.5, 1]:
    per bin the mean confidence, the accuracy and the (weighted) count. The reliability
    diagram and the ECE are both read from these bins."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    weight = (
        np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    )
    predicted = is_counterfeit(p_counterfeit, 0.5)  # the more probable class; a tie: counterfeit
    confidence = np.where(predicted, p_counterfeit, 1.0 - p_counterfeit)
    correct = (predicted == (labels == COUNTERFEIT_INDEX)).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, weights=weight, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=weight * confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=weight * correct, minlength=bins) / count
    return {"edges": edges, "confidence": mean_confidence, "accuracy": accuracy, "count": count}


def expected_calibration_error(
    labels: np.ndarray,
    p_counterfeit: np.ndarray,
    bins: int = 15,
    sample_weight: np.ndarray | None = None,
) -> float:
    """ECE of the two-class prediction: confidence of the predicted class vs its accuracy,
    averaged over equal-width confidence bins weighted by their counts."""
    table = reliability_bins(labels, p_counterfeit, bins, sample_weight)
    total = table["count"].sum()
    if total <= 0:
        return float("nan")
    filled = table["count"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    return float(np.sum(table["count"][filled] / total * gaps))


def classification_metrics(
    labels: np.ndarray, p_counterfeit: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Headline metrics; AUCs are NaN when only one class is present (they are undefined)."""
    labels = np.asarray(labels).astype(int)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64)
    predicted = is_counterfeit(p_counterfeit, threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted))
        if both_classes
        else float("nan"),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, p_counterfeit))
        if both_classes
        else float("nan"),
        "pr_auc": float(skm.average_precision_score(labels, p_counterfeit))
        if both_classes
        else float("nan"),
        "ece": expected_calibration_error(labels, p_counterfeit),
        "threshold": float(threshold),
    }


CI_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "fpr",
    "roc_auc",
    "pr_auc",
    "ece",
)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """{"n_genuine", "n_counterfeit"}: how many labels are of each class."""
    n_counterfeit = int((np.asarray(labels).reshape(-1) == COUNTERFEIT_INDEX).sum())
    return {"n_genuine": int(np.size(labels)) - n_counterfeit, "n_counterfeit": n_counterfeit}


def confusion_counts(labels: np.ndarray, flagged: np.ndarray, weights: np.ndarray | None = None):
    """{"tn", "fp", "fn", "tp"} of counterfeit verdicts `flagged` against `labels`: ints, or with
    `weights` [B, N] (bootstrap multiplicities) one weighted count per row."""
    counterfeit = labels == COUNTERFEIT_INDEX
    cells = {
        "tn": ~counterfeit & ~flagged,
        "fp": ~counterfeit & flagged,
        "fn": counterfeit & ~flagged,
        "tp": counterfeit & flagged,
    }
    if weights is None:
        return {name: int(cell.sum()) for name, cell in cells.items()}
    return {name: weights @ cell for name, cell in cells.items()}


def evaluation_metrics(
    labels: np.ndarray, p_counterfeit: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """classification_metrics plus the confusion counts, the false-positive rate on genuine
    items and the class counts."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_counterfeit = np.asarray(p_counterfeit).reshape(-1)
    counts = confusion_counts(labels, is_counterfeit(p_counterfeit, threshold))
    fp, tn = counts["fp"], counts["tn"]
    return {
        **classification_metrics(labels, p_counterfeit, threshold),
        "fpr": fp / (fp + tn) if fp + tn else float("nan"),
        **class_counts(labels),
        **counts,
    }


def group_ids(groups: np.ndarray | list | None, n: int) -> np.ndarray:
    """Integer group ids; an unknown (empty) group makes a sample its own group."""
    if groups is None:
        return np.arange(n)
    index: dict[tuple[str, str | int], int] = {}
    ids = np.empty(n, dtype=np.int64)
    for i, group in enumerate(groups):
        key = ("item", str(group)) if str(group) else ("image", i)
        ids[i] = index.setdefault(key, len(index))
    return ids


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_replicate_metrics(
    labels: np.ndarray, p_counterfeit: np.ndarray, flagged: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The CI_METRICS for each row of `weights` [B, N] (bootstrap multiplicities)."""
    counts = confusion_counts(labels, flagged, weights)
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    recall = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    specificity = _ratio(tn, tn + fp)
    both = (tp + fn > 0) & (tn + fp > 0)
    values = {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": np.where(both, (recall + specificity) / 2, np.nan),
        # zero_division=0, as in scikit-learn's point estimates
        "precision": np.nan_to_num(precision, nan=0.0),
        "recall": np.nan_to_num(recall, nan=0.0),
        "f1": np.nan_to_num(_ratio(2 * tp, 2 * tp + fp + fn), nan=0.0),
        "fpr": _ratio(fp, fp + tn),
        "roc_auc": np.full(len(weights), np.nan),
        "pr_auc": np.full(len(weights), np.nan),
        "ece": np.full(len(weights), np.nan),
    }
    for b, row in enumerate(weights):
        values["ece"][b] = expected_calibration_error(labels, p_counterfeit, sample_weight=row)
        if both[b]:
            values["roc_auc"][b] = skm.roc_auc_score(labels, p_counterfeit, sample_weight=row)
            values["pr_auc"][b] = skm.average_precision_score(
                labels, p_counterfeit, sample_weight=row
            )
    return values


def bootstrap_intervals(
    labels: np.ndarray,
    p_counterfeit: np.ndarray,
    threshold: float = 0.5,
    *,
    groups: np.ndarray | list | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals {metric: [low, high]} for CI_METRICS.

    Each replicate draws as many groups as there are, with replacement (a cluster bootstrap);
    `groups` holds one item id per sample ("" = unknown, the sample is its own group). Replicates
    where a metric is undefined (e.g. no genuine item drawn, for the FPR) are left out of that
    metric's interval; a metric never defined gets [NaN, NaN].
    """
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    if n_resamples <= 0 or labels.size == 0:
        return {name: [float("nan"), float("nan")] for name in CI_METRICS}
    ids = group_ids(groups, labels.size)
    n_groups = int(ids.max()) + 1
    flagged = is_counterfeit(p_counterfeit, threshold)
    rng = np.random.default_rng(seed)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in CI_METRICS}
    chunk = max(1, min(n_resamples, 2_000_000 // max(labels.size, 1)))  # bounds [B, N] memory
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_groups, size=(size, n_groups))
        offsets = (np.arange(size)[:, None] * n_groups + draws).ravel()
        group_counts = np.bincount(offsets, minlength=size * n_groups).reshape(size, n_groups)
        weights = group_counts[:, ids].astype(np.float64)
        for name, values in _weighted_replicate_metrics(
            labels, p_counterfeit, flagged, weights
        ).items():
            collected[name].append(values)
    tail = (1.0 - level) / 2 * 100
    intervals = {}
    for name, parts in collected.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        intervals[name] = (
            [float(v) for v in np.percentile(values, [tail, 100 - tail])]
            if values.size
            else [float("nan"), float("nan")]
        )
    return intervals


def metrics_by(
    keys: np.ndarray | list,
    labels: np.ndarray,
    p_counterfeit: np.ndarray,
    threshold: float = 0.5,
    *,
    groups: np.ndarray | list | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """evaluation_metrics and bootstrap intervals for each distinct non-empty value of `keys`
    (a category or brand per sample), sorted by key. Empty when no sample has a key."""
    keys = np.asarray([str(k) for k in keys], dtype=object)
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_counterfeit = np.asarray(p_counterfeit).reshape(-1)
    group_array = None if groups is None else np.asarray([str(g) for g in groups], dtype=object)
    table = {}
    for key in sorted({k for k in keys if k}):
        rows = keys == key
        sub_groups = None if group_array is None else group_array[rows]
        table[key] = {
            **evaluation_metrics(labels[rows], p_counterfeit[rows], threshold),
            "ci": bootstrap_intervals(
                labels[rows],
                p_counterfeit[rows],
                threshold,
                groups=sub_groups,
                n_resamples=n_resamples,
                level=level,
                seed=seed,
            ),
        }
    return table


def metrics_by_type(
    types: list[list[str]],
    labels: np.ndarray,
    p_counterfeit: np.ndarray,
    threshold: float = 0.5,
) -> dict[str, dict]:
    """How well each kind of counterfeit is caught: for every type named in `types` (the types
    each photo's counterfeit carries; genuine photos carry none), the counterfeit photos with it
    against every genuine photo. recall: the share of them flagged at `threshold`; roc_auc: the
    chance that one of them scores above a genuine photo (NaN without genuine photos). A photo
    with several types counts for each, so `n_alone` says how many carry that type only: their
    `roc_auc_alone` is the type's own signal, not borrowed from a type it came with."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    genuine = p_counterfeit[labels != COUNTERFEIT_INDEX]
    counterfeit_types = [
        set(kinds) if label == COUNTERFEIT_INDEX else set()
        for kinds, label in zip(types, labels, strict=True)
    ]

    def auc(scores: np.ndarray) -> float:
        if not len(genuine) or not len(scores):
            return float("nan")
        truth = np.r_[np.zeros(len(genuine)), np.ones(len(scores))]
        return float(skm.roc_auc_score(truth, np.r_[genuine, scores]))

    table = {}
    for kind in sorted(set().union(*counterfeit_types)):
        with_kind = np.array([kind in kinds for kinds in counterfeit_types])
        alone = np.array([kinds == {kind} for kinds in counterfeit_types])
        scores = p_counterfeit[with_kind]
        table[kind] = {
            "n": int(with_kind.sum()),
            "recall": float(is_counterfeit(scores, threshold).mean()),
            "roc_auc": auc(scores),
            "n_alone": int(alone.sum()),
            "roc_auc_alone": auc(p_counterfeit[alone]),
        }
    return table
