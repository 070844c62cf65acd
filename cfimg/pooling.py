"""Global pooling modules [N, C, H, W] -> [N, C] for the heads cfimg.heads describes."""

from __future__ import annotations

import torch
from torch import nn

from cfimg.heads import POOLINGS


class GeMPool(nn.Module):
    """Generalised mean pooling (Radenović et al.): (mean x^p)^(1/p), p learned, starting at 3."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(1.0, 8.0)
        return features.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class AvgMaxPool(nn.Module):
    """Mean of average and max pooling: the whole photo's texture plus its strongest cell."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return 0.5 * (features.mean(dim=(2, 3)) + features.amax(dim=(2, 3)))


class MaxPool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.amax(dim=(2, 3))


class AvgPool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


class AttentionPool(nn.Module):
    """Gated attention over spatial cells: weights a_i = softmax_i(w . (tanh(V h_i) * sigm(U h_i))),
    pooled = sum_i a_i h_i. The last forward's weights [N, H, W] are kept for explanations."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.value = nn.Conv2d(channels, hidden, 1)
        self.gate = nn.Conv2d(channels, hidden, 1)
        self.score = nn.Conv2d(hidden, 1, 1)
        # Start uniform (= average pooling): the new head must not begin by ignoring most cells.
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.last_weights: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.value(features)) * torch.sigmoid(self.gate(features)))
        weights = torch.softmax(scores.flatten(1), dim=1)  # [N, H*W]
        self.last_weights = weights.detach().view(features.shape[0], *features.shape[2:])
        return (features.flatten(2) * weights.unsqueeze(1)).sum(dim=2)


def make_pool(pooling: str, channels: int) -> nn.Module:
    """A module [N, C, H, W] -> [N, C] for `pooling`."""
    if pooling == "avg":
        return AvgPool()
    if pooling == "max":
        return MaxPool()
    if pooling == "avgmax":
        return AvgMaxPool()
    if pooling == "gem":
        return GeMPool()
    if pooling == "attn":
        return AttentionPool(channels)
    raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")


class Keep4d(nn.Module):
    """Wraps a [N, C] pool for torchvision networks whose forward flattens [N, C, 1, 1] itself."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(features)[:, :, None, None]
