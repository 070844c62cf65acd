"""Temperature scaling: cfimg.calibration."""

from __future__ import annotations

import numpy as np
import pytest

from cfimg.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    fit_temperature,
    negative_log_likelihood,
    remap_threshold,
    softmax_with_temperature,
)


def sampled_labels(logits: np.ndarray, temperature: float, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits / temperature): data calibrated at that temperature."""
    p_counterfeit = softmax_with_temperature(logits, temperature)[:, 1]
    return (np.random.default_rng(seed).random(len(logits)) < p_counterfeit).astype(int)


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at():
    logits = np.random.default_rng(1).normal(0, 4, size=(20000, 2))
    for true_temperature in (0.5, 2.5):
        fitted = fit_temperature(logits, sampled_labels(logits, true_temperature))
        assert fitted == pytest.approx(true_temperature, rel=0.06)


def test_fitted_temperature_minimises_the_nll_over_a_fine_grid():
    logits = np.random.default_rng(2).normal(0, 3, size=(300, 2))
    labels = sampled_labels(logits, 1.7, seed=3)
    fitted = fit_temperature(logits, labels)
    best_on_grid = min(
        negative_log_likelihood(logits, labels, t) for t in np.geomspace(0.05, 20, 2000)
    )
    assert negative_log_likelihood(logits, labels, fitted) <= best_on_grid + 1e-9


def test_separable_validation_set_clamps_the_temperature_instead_of_running_off():
    logits = np.array([[3.0, -3.0], [-2.0, 2.0], [4.0, 0.0]])
    labels = np.array([0, 1, 0])
    assert fit_temperature(logits, labels) == pytest.approx(MIN_TEMPERATURE)


def test_all_wrong_validation_set_clamps_to_the_maximum_temperature():
    logits = np.array([[3.0, -3.0], [-2.0, 2.0]])
    assert fit_temperature(logits, np.array([1, 0])) == pytest.approx(MAX_TEMPERATURE)


@pytest.mark.parametrize(
    "logits, labels",
    [(np.zeros((0, 2)), np.zeros(0)), (np.array([[0.0, 1.0], [2.0, 0.0]]), np.array([1, 1]))],
    ids=["empty", "one-class"],
)
def test_fit_temperature_leaves_the_model_alone_when_the_fit_is_meaningless(logits, labels):
    assert fit_temperature(logits, labels) == 1.0


def test_fit_temperature_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one label per row"):
        fit_temperature(np.zeros((3, 2)), np.zeros(2))


def test_remapped_threshold_takes_the_same_decisions_at_the_new_temperature():
    logits = np.random.default_rng(4).normal(0, 3, size=(500, 2))
    old_t, new_t, threshold = 1.0, 2.7, 0.83
    before = softmax_with_temperature(logits, old_t)[:, 1] >= threshold
    after = softmax_with_temperature(logits, new_t)[:, 1] >= remap_threshold(
        threshold, old_t, new_t
    )
    assert (before == after).all()
