"""The ONNX contract of a cfimg model file: tensor names, input formats, and how a file says which
format it takes.

Defined once here; the exporter writes it, and cfimg.engines.OnnxEngine and
scripts/embed_example.py read it. Deliberately light (numpy only, no torch, no onnx, not even the
model card at import time): `cfimg predict` on an ONNX model imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from cfimg.preprocess import Preprocessing, normalize_nchw

if TYPE_CHECKING:
    from cfimg.card import ModelCard

INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits")

UINT8_NHWC = "uint8_nhwc"  # [batch, size, size, 3] uint8 RGB, the default
ANY_SIZE = "uint8_hwc_any_size"  # [height, width, 3] uint8 RGB: resize and crop in the graph
FLOAT_NCHW = "float_nchw"  # [batch, 3, size, size] float32, already normalised with mean/std
INPUT_FORMATS = (UINT8_NHWC, ANY_SIZE, FLOAT_NCHW)

INPUT_FORMAT_KEY = "input_format"  # the metadata key naming the file's input format


def input_shape(input_format: str, img_size_px: int) -> list:
    """The input tensor's shape in `input_format`, variable axes by name."""
    return {
        UINT8_NHWC: ["batch", img_size_px, img_size_px, 3],
        ANY_SIZE: ["height", "width", 3],
        FLOAT_NCHW: ["batch", 3, img_size_px, img_size_px],
    }[input_format]


def model_feed(input_format: str, prep: Preprocessing, crops: np.ndarray) -> np.ndarray:
    """The input tensor for a batch of model-sized uint8 NHWC crops (not for ANY_SIZE, which
    takes one decoded photo per run)."""
    if input_format == FLOAT_NCHW:
        return normalize_nchw(crops, prep)
    return np.ascontiguousarray(crops, dtype=np.uint8)


def set_metadata(model, card: ModelCard, *, input_format: str, precision: str, opset: int) -> None:
    """Write `metadata_props` of `model` (onnx.ModelProto): the card's metadata plus how this file
    was exported, its input format under INPUT_FORMAT_KEY."""
    values = {
        **card.to_onnx_metadata(),
        "export_date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        INPUT_FORMAT_KEY: input_format,
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(input_shape(input_format, card.preprocessing.img_size_px)),
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "precision": precision,
        "opset": str(opset),
    }
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (
        f"cfimg {card.arch} classifier ({', '.join(card.class_names)}); input {input_format}; "
        f"preprocessing: {card.preprocessing.describe()}"
    )


def declared_input_format(metadata: Mapping[str, str], input_rank: int, float_input: bool) -> str:
    """The input format a model file declares under INPUT_FORMAT_KEY.

    Files exported before cfimg wrote that key follow the rule they were made by: one HWC photo
    (rank 3) is ANY_SIZE, a float32 input is FLOAT_NCHW, anything else UINT8_NHWC. Raises
    ValueError for a format this version does not know.
    """
    declared = metadata.get(INPUT_FORMAT_KEY)
    if declared is None:
        return ANY_SIZE if input_rank == 3 else FLOAT_NCHW if float_input else UINT8_NHWC
    if declared not in INPUT_FORMATS:
        raise ValueError(
            f"unknown input format {declared!r}; this cfimg reads {', '.join(INPUT_FORMATS)}"
        )
    return declared
