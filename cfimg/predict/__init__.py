"""Batch classification for `cfimg predict`, by concept:

- decode_pool: decoding in worker processes (crash and hang isolation), in input order;
- classify: decoded images -> result rows through an engine (`classify_images`, the seam a
  distributed engine calls), and `classify`/`classify_batches` over paths;
- ray_engine: the same rows from Ray, decode tasks and classifier actors on a cluster
  (`RayClassifier`; `predict_paths(..., engine="ray")`);
- job: the whole `cfimg predict` run (`predict_paths`): inputs, shard, resume, file, sort, for
  either engine.

Result files themselves are cfimg.results. Nothing here imports torch (or Ray, until the Ray
engine runs): decode workers and ONNX runs stay light.
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
from cfimg.predict.job import ENGINES, PredictSummary, predict_paths
from cfimg.predict.ray_engine import RayClassifier, RayOptions

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DECODE_TIMEOUT_S",
    "DecodePool",
    "ENGINES",
    "InlineDecoder",
    "PredictSummary",
    "RayClassifier",
    "RayOptions",
    "classify",
    "classify_batches",
    "classify_images",
    "decode_for_rows",
    "default_split",
    "default_workers",
    "predict_paths",
    "runs_on_gpu",
]
