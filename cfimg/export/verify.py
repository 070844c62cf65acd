"""Proving an exported file before it is written: it loads, runs at batch 1 and an odd batch (or
on photos of three shapes for --any-size), gives PyTorch's probabilities, keeps accuracy, and
how much faster it runs than fp32.

fp32 is held to |p - p_pytorch| <= FP32_MAX_ABS_DP on the check images, --any-size included (its
in-graph resize reproduces Pillow's bit for bit). fp16 and int8 are judged by accuracy instead (at
most MAX_ACCURACY_DROP_POINTS lost); their |Δp| is reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cfimg.export.contract import ANY_SIZE, INPUT_NAME, OUTPUT_NAMES, model_feed
from cfimg.export.images import CheckImages
from cfimg.export.report import Check, ExportedModel, first_line
from cfimg.labels import CLASS_NAMES, COUNTERFEIT_INDEX
from cfimg.preprocess import Preprocessing

if TYPE_CHECKING:
    from cfimg.card import ModelCard

FP32_MAX_ABS_DP = 1e-4
MAX_ACCURACY_DROP_POINTS = 1.0

CHECK_BATCH = 32
ODD_BATCH = 5


@dataclass
class Baseline:
    """The fp32 export and what every variant is compared with."""

    card: ModelCard
    fp32: object  # onnx.ModelProto
    fp32_bytes: bytes
    images: CheckImages
    reference: np.ndarray  # PyTorch probabilities on images.crops
    fp32_probabilities: np.ndarray | None = None  # the fp32 ONNX file's, once it has been run

    def fp32_onnx_probabilities(self, fp32_session, input_format: str) -> np.ndarray:
        """The fp32 file's probabilities on the check images: run once, then shared by the fp32
        checks and every variant's accuracy gate (int8 may be judged twice)."""
        if self.fp32_probabilities is None:
            self.fp32_probabilities = run_all(
                fp32_session, input_format, self.card.preprocessing, self.images
            )
        return self.fp32_probabilities


def pytorch_probabilities(network, card: ModelCard, images: CheckImages) -> np.ndarray:
    """The reference: the unmodified network as TorchEngine runs it."""
    crops = images.crops
    import torch

    from cfimg.models import ClassifierWithPreprocessing

    model = ClassifierWithPreprocessing(network, card.preprocessing, card.temperature).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(crops), CHECK_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + CHECK_BATCH]))
            rows.append(model(batch)[0].float().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, len(card.class_names)), np.float32)


def ort_session(model_bytes: bytes, *, threads: int | None = None, providers=None):
    import onnxruntime as ort

    from cfimg.engines import onnx_session_options

    options = onnx_session_options(threads)
    options.log_severity_level = 3  # no warnings on stderr about fp16 casts and the like
    return ort.InferenceSession(
        model_bytes, sess_options=options, providers=providers or ["CPUExecutionProvider"]
    )


def feeds(
    input_format: str, prep: Preprocessing, images: CheckImages, batch: int = CHECK_BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """Input dicts covering all images: batches of crops, or one decoded photo at a time."""
    if input_format == ANY_SIZE:
        for photo in images.decoded:
            yield {INPUT_NAME: photo}
        return
    for start in range(0, len(images.crops), batch):
        yield {INPUT_NAME: model_feed(input_format, prep, images.crops[start : start + batch])}


def run_all(session, input_format: str, prep: Preprocessing, images: CheckImages) -> np.ndarray:
    rows = [session.run([OUTPUT_NAMES[0]], feed)[0] for feed in feeds(input_format, prep, images)]
    return np.concatenate(rows).astype(np.float32)


def checker(model) -> Check:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        return Check("onnx.checker", False, first_line(exc))
    return Check("onnx.checker", True, "full check passed")


def runtime_checks(
    result: ExportedModel, base: Baseline, tolerance: float | None, session=None
) -> np.ndarray | None:
    """Batch 1 and odd batch runs (or three photo shapes for --any-size), then parity with
    PyTorch (no limit when `tolerance` is None). Returns the probabilities on the images."""
    prep, images = base.card.preprocessing, base.images
    try:
        session = session or ort_session(base.fp32_bytes)
    except Exception as exc:
        result.checks.append(Check("onnxruntime load", False, first_line(exc)))
        return None
    if result.input_format == ANY_SIZE:
        result.checks.extend(_any_size_runs(session, prep))
    else:
        result.checks.extend(_batch_runs(session, result.input_format, prep, images.crops))
    probabilities = run_all(session, result.input_format, prep, images)
    result.max_abs_dp = float(np.abs(probabilities - base.reference).max())
    limit = "no limit: accuracy is the gate" if tolerance is None else f"limit {tolerance:.0e}"
    where = ", resize in graph" if result.input_format == ANY_SIZE else ""
    result.checks.append(
        Check(
            "parity vs PyTorch",
            tolerance is None or result.max_abs_dp <= tolerance,
            f"max |Δp| {result.max_abs_dp:.2e} ({limit}) on {len(images.crops)} images{where}",
        )
    )
    return probabilities


def _batch_runs(session, input_format: str, prep: Preprocessing, crops: np.ndarray) -> list:
    odd = np.resize(crops, (ODD_BATCH, *crops.shape[1:]))
    single = session.run(list(OUTPUT_NAMES), {INPUT_NAME: model_feed(input_format, prep, odd[:1])})
    several = session.run(list(OUTPUT_NAMES), {INPUT_NAME: model_feed(input_format, prep, odd)})
    checks = []
    for name, outputs, n in (("batch 1", single, 1), (f"batch {ODD_BATCH}", several, ODD_BATCH)):
        shapes = [tuple(output.shape) for output in outputs]
        right_shape = all(shape == (n, len(CLASS_NAMES)) for shape in shapes)
        ok = right_shape and _are_probabilities(outputs[0])
        checks.append(Check(name, ok, f"outputs {shapes[0]} and {shapes[1]}"))
    drift = float(np.abs(several[0][:1] - single[0]).max())
    checks[-1].ok = checks[-1].ok and drift <= 1e-5
    checks[-1].detail += f"; row 0 vs batch 1: |Δp| {drift:.1e}"
    return checks


def _any_size_runs(session, prep: Preprocessing) -> list:
    rng = np.random.default_rng(1)
    checks = []
    short, long = prep.resize_px, prep.resize_px * 2 + 7
    small = prep.img_size_px // 2
    shapes = {
        "landscape photo": (short + 3, long, 3),
        "portrait photo": (long, short, 3),
        "small photo": (small, small + 1, 3),
    }
    for name, shape in shapes.items():
        photo = rng.integers(0, 256, shape, dtype=np.uint8)
        try:
            outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: photo})
        except Exception as exc:
            checks.append(Check(name, False, f"{shape[1]}x{shape[0]}: {first_line(exc)}"))
            continue
        ok = tuple(outputs[0].shape) == (1, len(CLASS_NAMES)) and _are_probabilities(outputs[0])
        checks.append(Check(name, ok, f"{shape[1]}x{shape[0]} -> {tuple(outputs[0].shape)}"))
    return checks


def _are_probabilities(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def accuracy_check(
    result: ExportedModel, probabilities, fp32_session, base: Baseline, force: bool
) -> Check:
    """Accuracy with the card's threshold on labelled check images, this model vs fp32 ONNX: at
    most MAX_ACCURACY_DROP_POINTS lost, unless `force`."""
    from cfimg.card import is_counterfeit  # cfimg.card imports torch (through cfimg.heads)
    from cfimg.metrics import classification_metrics

    card, images = base.card, base.images
    if images.labels is None or probabilities is None:
        if force:
            return Check("accuracy", True, "not measured (no labelled images; --force)")
        return Check(
            "accuracy",
            False,
            "cannot be measured without labelled images (give --check-data DATA)",
        )
    fp32_p = base.fp32_onnx_probabilities(fp32_session, result.input_format)
    before_p = fp32_p[:, card.counterfeit_index]
    after_p = probabilities[:, card.counterfeit_index]
    labels = (images.labels == COUNTERFEIT_INDEX).astype(int)
    before = classification_metrics(labels, before_p, card.threshold)["accuracy"]
    after = classification_metrics(labels, after_p, card.threshold)["accuracy"]
    result.accuracy = after
    result.accuracy_change_points = 100.0 * (after - before)
    drop = -result.accuracy_change_points
    same = int(
        np.sum(is_counterfeit(before_p, card.threshold) == is_counterfeit(after_p, card.threshold))
    )
    detail = (
        f"{100 * before:.1f}% -> {100 * after:.1f}% ({result.accuracy_change_points:+.1f} points) "
        f"on {len(labels)} images; same verdict as fp32 on {same}"
    )
    limit = f"{MAX_ACCURACY_DROP_POINTS:g}"
    if drop > MAX_ACCURACY_DROP_POINTS and force:
        return Check("accuracy", True, f"{detail}; over the {limit}-point limit, written (--force)")
    ok = drop <= MAX_ACCURACY_DROP_POINTS
    return Check(
        "accuracy", ok, detail if ok else f"{detail} loses more than {limit} point of accuracy"
    )


def speedups(fast, slow, input_format: str, prep: Preprocessing, images: CheckImages):
    """(batch-1, batch-32) speed-up of session `fast` over `slow`; batch 32 is None for
    --any-size (one photo per run)."""
    if input_format == ANY_SIZE:
        return _speed_ratio(fast, slow, {INPUT_NAME: images.decoded[0]}, 15), None
    one = {INPUT_NAME: model_feed(input_format, prep, images.crops[:1])}
    many = np.resize(images.crops, (32, *images.crops.shape[1:]))
    full = {INPUT_NAME: model_feed(input_format, prep, many)}
    return _speed_ratio(fast, slow, one, 15), _speed_ratio(fast, slow, full, 3)


def _speed_ratio(fast, slow, feed: dict[str, np.ndarray], repeats: int) -> float:
    """Median of per-round time ratios, the two sessions taking turns, so that load from other
    processes on shared cores hits both alike."""
    for session in (fast, slow, fast, slow):  # warm-up: arenas, caches
        session.run(None, feed)
    ratios = [_run_time_s(slow, feed) / _run_time_s(fast, feed) for _ in range(repeats)]
    return float(np.median(ratios))


def _run_time_s(session, feed: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feed)
    return time.perf_counter() - start
