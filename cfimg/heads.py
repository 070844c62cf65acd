"""Classifier heads: how the last feature map becomes two logits.

A head is pooling over the spatial cells of the backbone's last feature map, dropout, and a linear
layer. Pooling decides what survives of local evidence: average pooling dilutes a defect that
covers 2 of 49 cells, max pooling keeps the strongest cell, GeM sits between the two (a learned
power mean), and attention pooling (gated attention-based multiple-instance learning, Ilse et al.
2018) learns which cells to look at and says so: its weights are a heatmap of its own.

`HeadSpec` is stored in the model card, so loading a checkpoint or reading an ONNX file rebuilds
exactly the head that was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cfimg.labels import CLASS_NAMES

POOLINGS: tuple[str, ...] = ("avg", "max", "avgmax", "gem", "attn")


@dataclass(frozen=True)
class HeadSpec:
    pooling: str = "avg"  # one of POOLINGS
    dropout: float | None = None  # before the linear layer; None: the architecture's own default
    num_classes: int = len(CLASS_NAMES)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} is not in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> HeadSpec:
        """The head a card describes; cards written before heads were a choice mean the default."""
        if not values:
            return cls()
        dropout = values.get("dropout")
        return cls(
            pooling=str(values.get("pooling", "avg")),
            dropout=None if dropout is None else float(dropout),
            num_classes=int(values.get("num_classes", len(CLASS_NAMES))),
        )


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
