"""Head descriptions: how the last feature map becomes two logits, as the model card stores it.

A head is pooling over the spatial cells of the backbone's last feature map, dropout, and a linear
layer. Pooling decides what survives of local evidence: average pooling dilutes a defect that
covers 2 of 49 cells, max pooling keeps the strongest cell, GeM sits between the two (a learned
power mean), and attention pooling (gated attention-based multiple-instance learning, Ilse et al.
2018) learns which cells to look at and says so: its weights are a heatmap of its own. Relation
pooling adds one self-attention layer over the cells to average pooling, so the head can compare
one part of the item with its other parts. Covariance pooling adds the cells' second-order
statistics (bilinear pooling, the classic fine-grained head): which features occur together.

A head can also cover the frame in tiles: with `tiles` N > 1, inference cuts the frame into an
N x N grid of overlapping squares of `tile_px` (the training crops' side, spread evenly from edge
to edge), runs the network on each, and averages their logits. The network then sees at
inference exactly what it saw in training, a crop at the inference scale, instead of a frame
larger than any view it was trained on. Training views, being one tile in size, pass in one piece.

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
    tiles: int = 1  # per side: N x N tiles of tile_px whose logits are averaged; 1: the whole frame
    tile_px: int = 0  # side of each tile (the training crops'); 0 with tiles == 1

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} is not in [0, 1)")
        if self.tiles < 1:
            raise ValueError(f"tiles {self.tiles} is not 1 (the whole frame) or more")
        if self.tiles > 1 and self.tile_px < 16:
            raise ValueError(f"{self.tiles} x {self.tiles} tiles need a tile side of 16 px or more")

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
            tiles=int(values.get("tiles", 1)),  # written before tiles were a choice: whole frame
            tile_px=int(values.get("tile_px", 0)),
        )
