"""Batch classification for `cfimg predict`, by concept:

- decode_pool: decoding in worker processes (crash and hang isolation), in input order;
- classify: decoded images -> result rows through an engine (`classify_images`, the seam a
  distributed engine calls), and `classify`/`classify_batches` over paths;
- job: the whole `cfimg predict` run (`predict_paths`): inputs, shard, resume, file, sort.

Result files themselves are cfimg.results. Nothing here imports torch: decode workers and ONNX
runs stay light.
"""

from __future__ import annotations

from cfimg.predict.classify import (
    DEFAULT_BATCH_SIZE,
    classify,
    classify_batches,
    classify_images,
    default_split,
    default_workers,
    runs_on_gpu,
)
from cfimg.predict.decode_pool import (
    DEFAULT_DECODE_TIMEOUT_S,
    DecodePool,
    InlineDecoder,
    decode_for_rows,
)
from cfimg.predict.job import PredictSummary, predict_paths

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DECODE_TIMEOUT_S",
    "DecodePool",
    "InlineDecoder",
    "PredictSummary",
    "classify",
    "classify_batches",
    "classify_images",
    "decode_for_rows",
    "default_split",
    "default_workers",
    "predict_paths",
    "runs_on_gpu",
]
