"""Head descriptions: how the last feature map becomes two logits, as the model card stores it.

A head is pooling over the spatial cells of the backbone's last feature map, dropout, and a linear
layer. Pooling decides what survives of local evidence: average pooling dilutes a defect that
covers 2 of 49 cells, max pooling keeps the strongest cell, GeM sits between the two (a learned
power mean), and attention pooling (gated attention-based multiple-instance learning, Ilse et al.
2018) learns which cells to look at and says so: its weights are a heatmap of its own. Relation
pooling adds one self-attention layer over the cells to average pooling, so the head can compare
one part of the item with its other parts. Covariance pooling adds the cells' second-order
statistics (bilinear pooling, the classic fine-grained head): which features occur together.

`HeadSpec` is stored in the model card, so loading a checkpoint or reading an ONNX file rebuilds
exactly the head that was trained. The pooling modules themselves are in cfimg.pooling: this module
imports no torch, since the ONNX engines read cards too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cfimg.labels import CLASS_NAMES

POOLINGS: tuple[str, ...] = ("avg", "max", "avgmax", "gem", "attn", "relate", "cov")
# What `cfimg train` uses unless told (BENCHMARKS.md, rounds 6-7). HeadSpec keeps "avg" as its own
# default: that is what a model file or card written before pooling was a choice holds.
DEFAULT_POOLING = "relate"


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
