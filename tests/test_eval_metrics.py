"""cfimg.metrics against independent computations: pairwise AUC, hand-counted confusions,
hand-computed ECE, and the item-level bootstrap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cfimg.metrics import (
    bootstrap_intervals,
    evaluation_metrics,
    expected_calibration_error,
    metrics_by,
    metrics_by_type,
    reliability_bins,
)

# A fixed example small enough to count by hand.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
SCORES = np.array([0.1, 0.3, 0.6, 0.2, 0.8, 0.4, 0.9, 0.7, 0.55, 0.45])


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random counterfeit > score of a random genuine), ties count half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_confusion_counts_and_threshold_metrics_match_hand_counts():
    m = evaluation_metrics(LABELS, SCORES, threshold=0.5)
    # flagged (>= 0.5): 0.6(g) 0.8(c) 0.9(c) 0.7(c) 0.55(c) -> tp=4 fp=1; missed 0.4(c) -> fn=1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 1, 1, 4)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["fpr"] == pytest.approx(1 / 5)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["balanced_accuracy"] == pytest.approx((4 / 5 + 4 / 5) / 2)
    assert m["f1"] == pytest.approx(0.8)


def test_roc_auc_matches_brute_force_pairwise_count_including_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + labels * 0.3, 1)  # coarse: many ties
    m = evaluation_metrics(labels, scores)
    assert m["roc_auc"] == pytest.approx(pairwise_auc(labels, scores))


def test_pr_auc_is_average_precision_over_the_ranked_list():
    order = np.argsort(-SCORES)
    ranked = LABELS[order]
    precisions_at_hits = [ranked[: k + 1].mean() for k in range(len(ranked)) if ranked[k] == 1]
    expected = float(np.mean(precisions_at_hits))  # no ties in SCORES
    assert evaluation_metrics(LABELS, SCORES)["pr_auc"] == pytest.approx(expected)


def test_ece_matches_a_hand_computation():
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.9, 0.9, 0.2])
    # bin of confidence 0.9: three predictions, two right -> |2/3 - 0.9|; bin of 0.8: one right
    expected = 3 / 4 * abs(2 / 3 - 0.9) + 1 / 4 * abs(1.0 - 0.8)
    assert expected_calibration_error(labels, scores) == pytest.approx(expected)
    bins = reliability_bins(labels, scores)
    assert bins["count"].sum() == 4


def test_auc_is_undefined_not_invented_with_one_class():
    m = evaluation_metrics(np.array([1, 1, 1]), np.array([0.2, 0.6, 0.9]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"]) and np.isnan(m["fpr"])


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    point = evaluation_metrics(labels, scores)
    intervals = bootstrap_intervals(labels, scores, n_resamples=300)
    for name in ("accuracy", "precision", "recall", "roc_auc", "pr_auc", "fpr"):
        low, high = intervals[name]
        assert low <= point[name] <= high
        assert high - low < 0.25


def test_bootstrap_resamples_items_not_images():
    """Five identical photos per item carry the evidence of one: the item-level interval on the
    duplicated set equals the image-level interval on one photo per item, not a narrower one."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 40)
    scores = np.clip(labels * 0.2 + rng.random(40) * 0.8, 0, 1)
    one_per_item = bootstrap_intervals(labels, scores, n_resamples=200, seed=5)
    by_item = bootstrap_intervals(
        np.repeat(labels, 5),
        np.repeat(scores, 5),
        groups=np.repeat([f"item{i}" for i in range(40)], 5),
        n_resamples=200,
        seed=5,
    )
    by_image = bootstrap_intervals(
        np.repeat(labels, 5), np.repeat(scores, 5), n_resamples=200, seed=5
    )
    for name in ("accuracy", "roc_auc"):
        assert by_item[name] == pytest.approx(one_per_item[name])
        assert by_image[name][1] - by_image[name][0] < by_item[name][1] - by_item[name][0]


def test_unknown_item_ids_fall_back_to_one_group_per_image():
    labels, scores = np.repeat(LABELS, 2), np.repeat(SCORES, 2)
    unknown = bootstrap_intervals(labels, scores, groups=[""] * 20, n_resamples=100, seed=3)
    images = bootstrap_intervals(labels, scores, n_resamples=100, seed=3)
    assert unknown == images


def test_breakdown_equals_metrics_of_each_subset():
    categories = np.array(["bag", "watch"] * 5)
    table = metrics_by(categories, LABELS, SCORES, 0.5, n_resamples=20)
    assert sorted(table) == ["bag", "watch"]
    for name in ("bag", "watch"):
        subset = evaluation_metrics(LABELS[categories == name], SCORES[categories == name], 0.5)
        for key in ("accuracy", "tp", "fp", "roc_auc", "n"):
            assert table[name][key] == pytest.approx(subset[key], nan_ok=True)
        assert set(table[name]["ci"]) >= {"accuracy", "roc_auc"}


def test_breakdown_is_empty_without_categories():
    assert metrics_by([""] * 10, LABELS, SCORES, 0.5, n_resamples=10) == {}


def test_counterfeit_types_are_scored_against_every_genuine_photo():
    # genuine: 0.1, 0.3, 0.6, 0.2, 0.45; counterfeit: 0.8 (a), 0.4 (a+b), 0.9 (b), 0.7, 0.55 (a)
    types = [[], [], [], [], ["a"], ["a", "b"], ["b"], [], ["a"], []]
    table = metrics_by_type(types, LABELS, SCORES, 0.5)
    assert sorted(table) == ["a", "b"]
    a, b = table["a"], table["b"]
    assert (a["n"], a["n_alone"], b["n"], b["n_alone"]) == (3, 2, 2, 1)
    assert a["recall"] == pytest.approx(2 / 3)  # 0.8 and 0.55 flagged, 0.4 missed
    assert b["recall"] == pytest.approx(1 / 2)
    # 0.8 beats 5 genuine, 0.4 beats 3 (0.1, 0.3, 0.2), 0.55 beats 4: 12 of 15 pairs
    assert a["roc_auc"] == pytest.approx(12 / 15)
    assert a["roc_auc_alone"] == pytest.approx(9 / 10)
    assert b["roc_auc"] == pytest.approx(8 / 10) and b["roc_auc_alone"] == pytest.approx(1.0)


def test_types_of_genuine_photos_are_ignored_and_no_types_is_empty():
    assert metrics_by_type([[]] * 10, LABELS, SCORES) == {}
    table = metrics_by_type([["a"]] * 10, LABELS, SCORES)  # a genuine photo's type means nothing
    assert table["a"]["n"] == 5
