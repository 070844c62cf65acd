"""Classification metrics for the counterfeit class, on top of scikit-learn's arithmetic."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(
    labels: np.ndarray, p_counterfeit: np.ndarray, bins: int = 15
) -> float:
    """ECE of the two-class prediction: confidence of the predicted class vs its accuracy,
    averaged over equal-width confidence bins weighted by their counts."""
    labels = np.asarray(labels)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64)
    predicted = (p_counterfeit >= 0.5).astype(int)
    confidence = np.where(predicted == 1, p_counterfeit, 1.0 - p_counterfeit)
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def classification_metrics(
    labels: np.ndarray, p_counterfeit: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Headline metrics; AUCs are NaN when only one class is present (they are undefined)."""
    labels = np.asarray(labels).astype(int)
    p_counterfeit = np.asarray(p_counterfeit, dtype=np.float64)
    predicted = (p_counterfeit >= threshold).astype(int)
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
