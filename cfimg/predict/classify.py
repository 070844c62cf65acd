"""Classification: decoded images -> result rows through an engine, a batch at a time.

`classify_images` is the seam: an engine and a batch of ModelInput in, one PredictionRow per
input out (error rows included, in order). `classify_batches` and `classify` feed it from a
decode pool over paths, for `cfimg predict` and any program that wants rows:

    for row in classify(load_engine("model.onnx"), paths): ...
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from cfimg.imageio import DEFAULT_MAX_PIXELS
from cfimg.model_input import ModelInput
from cfimg.predict.decode_pool import DEFAULT_DECODE_TIMEOUT_S, DecodePool, InlineDecoder
from cfimg.results import VERDICT_ERROR, PredictionRow

DEFAULT_BATCH_SIZE = 32
_PARTIAL_BATCH_WAIT_S = 1.0  # run a partial batch when no new image came for this long


def classify_images(
    engine,
    images: Sequence[ModelInput],
    *,
    threshold: float | None = None,
    model_id: str | None = None,
) -> list[PredictionRow]:
    """One row per image, in order: the engine runs once on the decoded ones; the others become
    error rows. `engine` is a cfimg.engines.Engine; `threshold` None means the card's own rule
    (with its uncertain band); `model_id` defaults to the card's."""
    card = engine.card
    model_id = card.model_id if model_id is None else model_id
    decoded = [image.pixels for image in images if image.ok]
    p_values = iter(())
    if decoded:
        probabilities, _ = engine.predict(np.stack(decoded))
        p_values = iter(probabilities[:, card.counterfeit_index].astype(np.float32))
    used_threshold = float(card.threshold if threshold is None else threshold)
    rows = []
    for image in images:
        if image.ok:
            # The shortest decimal that is still this float32: what the file shows is exactly
            # what the verdict was decided on.
            p = float(str(next(p_values)))
            verdict = card.verdict(p, threshold)
        else:
            verdict, p = VERDICT_ERROR, None
        rows.append(
            PredictionRow(
                path=image.path,
                verdict=verdict,
                p_counterfeit=p,
                threshold=used_threshold,
                model_id=model_id,
                width=image.width,
                height=image.height,
                error=image.error,
            )
        )
    return rows


# -- over paths: decode pool, batches, rows -----------------------------------------------------


def runs_on_gpu(engine) -> bool:
    device = str(getattr(engine, "device", "")).lower()
    return "cuda" in device or "tensorrt" in device


def default_split(cores: int | None = None, *, gpu: bool = False) -> tuple[int, int]:
    """(decode workers, inference threads) for this machine.

    On CPU the two share the cores and never oversubscribe them: measured on 2 cores with the
    default model (decode ~5.6 ms, inference ~5.9 ms CPU per image), 1 worker + 1 thread ran at
    88% of the 2-core bound, while 2 workers + 2 threads (4 busy threads on 2 cores) ran at 71%:
    a descheduled inference thread stalls the whole batch. On a GPU inference needs next to no
    CPU, so every core decodes. Heavier models want more threads: --workers/--threads."""
    cores = cores or os.cpu_count() or 1
    if gpu:
        return cores, 1
    workers = max(1, cores // 2)
    return workers, max(1, cores - workers)


def default_workers(engine=None) -> int:
    return default_split(gpu=engine is not None and runs_on_gpu(engine))[0]


def classify_batches(
    engine,
    paths: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_id: str | None = None,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> Iterator[list[PredictionRow]]:
    """Rows for `paths`, in input order, a batch at a time (error rows included in order).

    `engine` is a cfimg.engines.Engine. `workers` decode processes (default: half the cores on
    CPU, all of them when the engine runs on a GPU; 0 decodes in this process, no overlap)."""
    workers = default_workers(engine) if workers is None else workers
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    prep = engine.card.preprocessing
    if workers == 0:
        decoder = InlineDecoder(paths, prep, max_pixels)
    else:
        decoder = DecodePool(
            paths,
            prep,
            workers=workers,
            max_pixels=max_pixels,
            max_in_flight=2 * batch_size,
            decode_timeout_s=decode_timeout_s,
        )
    with decoder:
        for batch in _batches(decoder, batch_size):
            yield classify_images(engine, batch, threshold=threshold, model_id=model_id)


def classify(
    engine,
    paths: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_id: str | None = None,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> Iterator[PredictionRow]:
    """Rows for `paths`, one at a time, in input order; see classify_batches.

    >>> engine = load_engine("model.onnx")
    >>> for row in classify(engine, ["a.jpg", "b.png"]):
    ...     print(row.path, row.verdict, row.p_counterfeit, row.error)
    """
    for batch in classify_batches(
        engine,
        paths,
        batch_size=batch_size,
        workers=workers,
        threshold=threshold,
        max_pixels=max_pixels,
        model_id=model_id,
        decode_timeout_s=decode_timeout_s,
    ):
        yield from batch


def _batches(decoder: DecodePool | InlineDecoder, batch_size: int) -> Iterator[list[ModelInput]]:
    """Decoded images in input order, grouped for the engine: `batch_size` decoded ones (error
    images cost no inference but are held until the batch is written: at most 8x as many), or
    what has come when inputs trickle in (stdin) and nothing new came for a while."""
    batch, decoded = [], 0
    while True:
        try:
            image = decoder.get(timeout=_PARTIAL_BATCH_WAIT_S if batch else None)
        except queue.Empty:  # do not sit on what we have
            yield batch
            batch, decoded = [], 0
            continue
        if image is None:
            break
        batch.append(image)
        decoded += image.ok
        if decoded >= batch_size or len(batch) >= 8 * batch_size:
            yield batch
            batch, decoded = [], 0
    if batch:
        yield batch
