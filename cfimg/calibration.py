"""Temperature scaling: one scalar T that divides the logits so probabilities mean what they say.

The fit minimises the negative log-likelihood of held-out (validation) labels over T. With
beta = 1/T the NLL is convex in beta (a log-sum-exp minus a linear term), so a bracketing grid
search followed by golden-section refinement on log T finds the global minimum without
scipy or torch. T is clamped to [MIN_TEMPERATURE, MAX_TEMPERATURE]: on a tiny or perfectly
separable validation set the unconstrained optimum runs off to 0 (infinitely sharp) and the
clamp keeps the stored model usable.

Pure numpy on purpose: it is called at the end of training (torch) and by `cfimg eval` on
models of either engine (PyTorch or onnxruntime).
"""

from __future__ import annotations

import math

import numpy as np

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
_GRID_POINTS = 121
_GOLDEN_STEPS = 60


def softmax_with_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) along the last axis, in float64, numerically stable."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of integer `labels` under softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    picked = scaled[np.arange(len(scaled)), np.asarray(labels, dtype=np.int64)]
    return float(np.mean(log_norm - picked))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL, clamped to [0.05, 20].

    `logits` are the raw network outputs [N, C] (not divided by any stored temperature);
    `labels` are class indices [N]. Returns 1.0 (no change) when the fit is meaningless: no
    samples, or only one class present (any T < 1 would just sharpen every prediction).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits must be [N, C] with one label per row; got {logits.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {logits.shape[1] - 1}]")
    if labels.size == 0 or len(np.unique(labels)) < 2 or not np.isfinite(logits).all():
        return 1.0

    def nll_at(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, math.exp(log_t))

    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    grid = np.linspace(lo, hi, _GRID_POINTS)
    values = [nll_at(x) for x in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    # Golden-section search inside the bracket around the best grid point (NLL is unimodal in
    # log T because it is convex in 1/T, a monotone reparametrisation).
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll_at(c), nll_at(d)
    for _ in range(_GOLDEN_STEPS):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll_at(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll_at(d)
    candidates = {grid[best]: values[best], c: fc, d: fd}
    log_t = min(candidates, key=candidates.get)
    return float(min(max(math.exp(log_t), MIN_TEMPERATURE), MAX_TEMPERATURE))


def remap_threshold(threshold: float, old_temperature: float, new_temperature: float) -> float:
    """The p_counterfeit threshold under `new_temperature` that takes the same decisions as
    `threshold` under `old_temperature` (two classes: p = sigmoid(logit margin / T))."""
    if threshold <= 0.0 or threshold >= 1.0:
        return float(threshold)
    margin = math.log(threshold / (1.0 - threshold)) * old_temperature
    return float(1.0 / (1.0 + math.exp(-margin / new_temperature)))
