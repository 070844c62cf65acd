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


class RelationPool(nn.Module):
    """Average pooling plus what one self-attention layer over the cells adds: each cell is
    compared with every other, so a part that differs from the item's other parts (one stitch
    line sparser than the rest, one panel's hue) can tell, not only what each cell shows alone.

    No position encoding, so the layer works on any number of cells (224 px crops in training,
    the whole frame at inference). The output projection starts at zero: the head begins as
    average pooling and learns only what the comparison adds.
    """

    def __init__(self, channels: int, dim: int = 192, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.down = nn.Linear(channels, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.up = nn.Linear(dim, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def _attention(self, z: torch.Tensor) -> torch.Tensor:
        # Written out with plain matmuls and a softmax: ops every ONNX runtime has, traced as is.
        n, cells, dim = z.shape
        q, k, v = self.qkv(z).view(n, cells, 3, self.heads, dim // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [N, heads, cells, d]
        weights = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.attn_out((weights @ v).transpose(1, 2).reshape(n, cells, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cells = features.flatten(2).transpose(1, 2)  # [N, H*W, C]
        z = self.down(cells)
        z = z + self._attention(self.norm_attn(z))
        z = z + self.mlp(self.norm_mlp(z))
        return cells.mean(dim=1) + self.up(z.mean(dim=1))


class CovariancePool(nn.Module):
    """Average pooling plus the second-order statistics of the cells (bilinear pooling, Lin et
    al. 2015): which features occur together across the photo, not only how strongly each one
    does. Texture-level cues live there: a stitch pitch against the thread's own width, a
    lettering's weight against its spacing.

    The cells are projected to `dim` features, centred over the cells, and their covariance's
    upper triangle is signed-square-rooted and L2-normalised (the usual bilinear normalisation,
    which keeps a few strong features from dominating). Any number of cells works, and the
    output projection starts at zero, so the head begins as average pooling.
    """

    def __init__(self, channels: int, dim: int = 32, eps: float = 1e-4):
        super().__init__()
        self.down = nn.Linear(channels, dim)
        self.up = nn.Linear(dim * (dim + 1) // 2, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        rows, cols = torch.triu_indices(dim, dim)
        self.register_buffer("upper", rows * dim + cols, persistent=False)
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cells = features.flatten(2).transpose(1, 2)  # [N, H*W, C]
        z = self.down(cells).float()
        z = z - z.mean(dim=1, keepdim=True)
        # float32 under any autocast: a covariance is a mean of many small products
        with torch.autocast(device_type=z.device.type, enabled=False):
            covariance = z.transpose(1, 2) @ z / z.shape[1]  # [N, dim, dim]
        second = covariance.flatten(1).index_select(1, self.upper)
        # signed square root, continuous at 0 so that cells all alike (covariance ~0, its signs
        # rounding noise) give ~0, not a unit vector of noise after the normalisation
        second = torch.sign(second) * (torch.sqrt(second.abs() + self.eps) - self.eps**0.5)
        second = second / second.norm(dim=1, keepdim=True).clamp(min=self.eps)
        return cells.mean(dim=1) + self.up(second.to(cells.dtype))


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
    if pooling == "relate":
        return RelationPool(channels)
    if pooling == "cov":
        return CovariancePool(channels)
    raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")


class Keep4d(nn.Module):
    """Wraps a [N, C] pool for torchvision networks whose forward flattens [N, C, 1, 1] itself."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(features)[:, :, None, None]
