"""report.json's "items" section: for each aggregation rule (cfimg.items.ITEM_RULES), item-level
metrics on the evaluated split at an item threshold fitted on the fitting split's items.

An item is `Sample.item_key` (its item_id, or the photo alone when it has none); its
p_counterfeit aggregates its scored photos' (unreadable photos are left out, as `cfimg predict
--items` leaves out error rows), and it is counterfeit when any of its photos is labelled so
(`cfimg data check` reports items with mixed labels). The item threshold of each rule is fitted
on the fitting split's items, kept simple and parallel to the photo threshold:
- with a photo target (--target-fpr, --target-precision, --target-recall): the same target;
- otherwise the model card's item threshold, when it has one for that rule;
- otherwise the threshold that maximises balanced accuracy;
- when none of these can be had (the items hold one class only): the photo threshold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from cfimg.card import ModelCard
from cfimg.data import Sample
from cfimg.items import ITEM_RULES, aggregate, group_indices
from cfimg.labels import COUNTERFEIT_INDEX
from cfimg.metrics import bootstrap_intervals, evaluation_metrics
from cfimg.operating import Target, fit_operating_point, value_between

THRESHOLD_MAX_BALANCED_ACCURACY = "max balanced accuracy"
THRESHOLD_CARD = "model card"
THRESHOLD_PHOTO = "photo threshold"
ITEM_METRICS = ("roc_auc", "balanced_accuracy", "accuracy", "precision", "recall", "fpr", "pr_auc")


@dataclass(frozen=True)
class ItemScores:
    """Items of a set of scored photos: one label, p_counterfeit and photo count per item."""

    labels: np.ndarray
    p_counterfeit: np.ndarray
    n_photos: np.ndarray


def item_scores(samples: list[Sample], p_counterfeit: np.ndarray, rule: str) -> ItemScores:
    groups = list(group_indices(sample.item_key for sample in samples).values())
    counterfeit = [any(samples[i].label == COUNTERFEIT_INDEX for i in rows) for rows in groups]
    p = np.asarray(p_counterfeit, dtype=np.float64)
    return ItemScores(
        labels=np.where(counterfeit, COUNTERFEIT_INDEX, 1 - COUNTERFEIT_INDEX),
        p_counterfeit=np.array([aggregate(p[rows], rule) for rows in groups]),
        n_photos=np.array([len(rows) for rows in groups]),
    )


def threshold_max_balanced_accuracy(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The threshold where (recall + specificity) / 2 is highest (the first, i.e. highest, of
    ties), midway to the next lower score; None when it cannot beat flagging all or nothing."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    if best == 0:  # roc_curve's first point flags nothing: no threshold separates the classes
        return None
    below = thresholds[best + 1] if best + 1 < len(thresholds) else min(0.0, thresholds[best])
    return value_between(float(below), float(thresholds[best]))


def fit_item_threshold(
    fit: ItemScores, target: Target | None, card_threshold: float | None, photo_threshold: float
) -> tuple[float, str, bool]:
    """(threshold, how it was chosen, whether its target was reached); see the module docstring."""
    if target is not None:
        try:
            point = fit_operating_point(fit.labels, fit.p_counterfeit, target.kind, target.value)
            return point.threshold, f"target {target.describe()}", point.reachable
        except ValueError:
            return photo_threshold, THRESHOLD_PHOTO, False
    if card_threshold is not None:
        return card_threshold, THRESHOLD_CARD, True
    threshold = threshold_max_balanced_accuracy(fit.labels, fit.p_counterfeit)
    if threshold is None:
        return photo_threshold, THRESHOLD_PHOTO, True
    return threshold, THRESHOLD_MAX_BALANCED_ACCURACY, True


def rule_section(
    evaluated: ItemScores,
    fit: ItemScores,
    target: Target | None,
    card_threshold: float | None,
    photo_threshold: float,
    n_bootstrap: int,
    seed: int,
) -> dict:
    threshold, source, reachable = fit_item_threshold(fit, target, card_threshold, photo_threshold)
    metrics = evaluation_metrics(evaluated.labels, evaluated.p_counterfeit, threshold)
    fit_metrics = evaluation_metrics(fit.labels, fit.p_counterfeit, threshold)
    intervals = bootstrap_intervals(  # each item is its own group
        evaluated.labels, evaluated.p_counterfeit, threshold, n_resamples=n_bootstrap, seed=seed
    )
    return {
        "threshold": threshold,
        "threshold_source": source,
        "reachable": reachable,
        "n": metrics["n"],
        **{name: metrics[name] for name in ITEM_METRICS},
        **{name: metrics[name] for name in ("tp", "fp", "tn", "fn")},
        "ci": {name: intervals[name] for name in ("roc_auc", "balanced_accuracy")},
        "fit": {name: fit_metrics[name] for name in ("n", "roc_auc", "balanced_accuracy")},
    }


def items_section(
    card: ModelCard,
    evaluated: tuple[list[Sample], np.ndarray],
    fitting: tuple[list[Sample], np.ndarray],
    *,
    rule: str,
    target: Target | None,
    card_item_threshold: float | None,
    photo_threshold: float,
    split: str,
    fit_split: str,
    n_bootstrap: int,
    seed: int,
) -> dict:
    """The "items" section (cfimg.report documents it). `evaluated` and `fitting` are
    (samples, p_counterfeit) and `card_item_threshold` the card's, at the temperature in use;
    `rule` is the one --save-threshold stores (its threshold is "threshold")."""
    rules = {}
    for name in ITEM_RULES:
        eval_items, fit_items = item_scores(*evaluated, name), item_scores(*fitting, name)
        card_threshold = card_item_threshold if name == card.item_rule else None
        rules[name] = rule_section(
            eval_items, fit_items, target, card_threshold, photo_threshold, n_bootstrap, seed
        )
    counts = item_scores(*evaluated, rule)
    best = max(ITEM_RULES, key=lambda name: _sortable(rules[name]["fit"]["roc_auc"]))
    return {
        "split": split,
        "fit_split": fit_split,
        "unit": "item_id" if any(s.item_id for s in evaluated[0]) else "image",
        "n_items": int(counts.labels.size),
        "n_genuine": int((counts.labels != COUNTERFEIT_INDEX).sum()),
        "n_counterfeit": int((counts.labels == COUNTERFEIT_INDEX).sum()),
        "n_fit_items": rules[rule]["fit"]["n"],
        "photos_per_item": _histogram(counts.n_photos),
        "rule": rule,
        "card_rule": card.item_rule,
        "threshold": rules[rule]["threshold"],
        "best_rule_on_fit": best,
        "rules": rules,
    }


def _sortable(value: float) -> float:
    return value if value == value else -1.0  # NaN (one class only) sorts last


def _histogram(n_photos: np.ndarray) -> dict[str, int]:
    """{"1": items with one photo, "2": ...}."""
    return {str(k): n for k, n in sorted(Counter(n_photos.tolist()).items())}
