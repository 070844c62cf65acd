"""Operating points: every threshold meets its target on the data it was fitted on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfimg.operating import (
    band_counts,
    fit_operating_point,
    threshold_for_fpr,
    threshold_for_precision,
    threshold_for_recall,
    uncertain_band_around,
)


@st.composite
def scored_labels(draw):
    """Labels with float32 scores, often tied (scores drawn from a coarse grid)."""
    n = draw(st.integers(1, 60))
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    coarse = draw(st.booleans())
    values = (
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])
        if coarse
        else st.floats(0.0, 1.0, width=32)
    )
    scores = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float32)
    return labels, scores


def counts_at(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[int, int, int, int]:
    flagged = scores >= threshold
    tp = int((flagged & (labels == 1)).sum())
    fp = int((flagged & (labels == 0)).sum())
    return tp, fp, int((labels == 0).sum()) - fp, int((labels == 1).sum()) - tp


targets = st.floats(0.01, 1.0)


@settings(max_examples=300, deadline=None)
@given(scored_labels(), targets)
def test_target_precision_is_met_at_the_lowest_threshold_that_meets_it(data, target):
    labels, scores = data
    if not (labels == 1).any():
        return
    point = threshold_for_precision(labels, scores, target)
    tp, fp, tn, fn = counts_at(labels, scores, point.threshold)
    assert (tp, fp, tn, fn) == (point.tp, point.fp, point.tn, point.fn)
    lower = [s for s in np.unique(scores) if s < point.threshold]
    meeting_lower = [
        s for s in lower if (c := counts_at(labels, scores, s))[0] / (c[0] + c[1]) >= target
    ]
    if point.reachable:
        assert tp + fp > 0 and tp / (tp + fp) >= target
        assert not meeting_lower  # no lower threshold (catching more) also meets it
    else:
        all_precisions = [counts_at(labels, scores, s) for s in np.unique(scores)]
        assert all(c[0] / (c[0] + c[1]) < target for c in all_precisions)


@settings(max_examples=300, deadline=None)
@given(scored_labels(), targets)
def test_target_recall_is_met_at_the_highest_threshold_that_meets_it(data, target):
    labels, scores = data
    if not (labels == 1).any():
        return
    point = threshold_for_recall(labels, scores, target)
    tp, fp, tn, fn = counts_at(labels, scores, point.threshold)
    assert (tp, fp, tn, fn) == (point.tp, point.fp, point.tn, point.fn)
    assert point.reachable and tp / (tp + fn) >= target
    # Thresholds just above a flagged score flag fewer items; none of them may meet the target.
    higher = [np.nextafter(s, np.float32(2)) for s in np.unique(scores) if s >= point.threshold]
    assert all(counts_at(labels, scores, s)[0] / (tp + fn) < target for s in higher)


@settings(max_examples=300, deadline=None)
@given(scored_labels(), st.floats(0.0, 0.99))
def test_target_fpr_is_met_at_the_lowest_threshold_that_meets_it(data, target):
    labels, scores = data
    negatives = int((labels == 0).sum())
    if not negatives:
        return
    point = threshold_for_fpr(labels, scores, target)
    tp, fp, tn, fn = counts_at(labels, scores, point.threshold)
    assert (tp, fp, tn, fn) == (point.tp, point.fp, point.tn, point.fn)
    assert point.reachable and fp / negatives <= target
    lower = [s for s in np.unique(scores) if s < point.threshold]
    assert all(counts_at(labels, scores, s)[1] / negatives > target for s in lower)


@settings(max_examples=200, deadline=None)
@given(scored_labels(), st.sampled_from(["precision", "recall", "fpr"]), st.floats(0.05, 0.95))
def test_threshold_decides_the_same_in_float32_and_float64(data, kind, target):
    labels, scores = data
    try:
        point = fit_operating_point(labels, scores, kind, target)
    except ValueError:  # a class the target needs is absent
        return
    assert ((scores >= point.threshold) == (scores.astype(np.float64) >= point.threshold)).all()
    assert ((scores >= np.float32(point.threshold)) == (scores >= point.threshold)).all()


def test_threshold_sits_between_scores_not_on_them():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.6, 0.9], dtype=np.float32)
    point = threshold_for_fpr(labels, scores, 0.0)
    assert 0.4 < point.threshold < 0.6
    assert (point.tp, point.fp) == (2, 0)


def test_unreachable_precision_is_reported_not_faked():
    labels = np.array([1, 0, 0])
    scores = np.array([0.2, 0.9, 0.8], dtype=np.float32)  # the top scores are all genuine
    point = threshold_for_precision(labels, scores, 0.9)
    assert not point.reachable
    assert point.achieved < 0.9


@pytest.mark.parametrize(
    "kind, labels", [("precision", [0, 0]), ("recall", [0, 0]), ("fpr", [1, 1])]
)
def test_target_without_the_class_it_needs_is_an_error(kind, labels):
    with pytest.raises(ValueError, match="at least one"):
        fit_operating_point(np.array(labels), np.array([0.2, 0.7]), kind, 0.5)


@settings(max_examples=200, deadline=None)
@given(scored_labels(), st.floats(0.05, 0.95), st.floats(0.05, 0.95))
def test_uncertain_band_brackets_the_threshold_and_holds_about_the_fraction(data, t, fraction):
    _, scores = data
    low, high = uncertain_band_around(scores, t, fraction)
    assert low <= t <= high
    inside = np.unique(scores[(scores >= low) & (scores < high)])
    half = int(round(fraction * scores.size / 2))
    assert len(inside) <= 2 * half  # at most `half` distinct scores on each side


def test_band_counts_split_uncertain_and_decided():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.45, 0.55, 0.6, 0.9])
    counts = band_counts(labels, scores, 0.5, (0.4, 0.58))
    assert counts["n_uncertain"] == 2
    assert counts["coverage"] == pytest.approx(3 / 5)
    assert counts["accuracy_decided"] == 1.0
