"""The fp16 and int8 files beside the fp32 one: converted, checked like it, and refused when they
lose accuracy.

Each variant is run at batch 1 and an odd batch, its |Δp| vs PyTorch is reported (no limit), the
accuracy gate decides (at most MAX_ACCURACY_DROP_POINTS lost unless --force), and the speed-up
over fp32 ONNX of a copy that passed is measured (int8 on CPU; fp16 on a CUDA GPU only). An int8
copy that fails the gate is made again once with its high-resolution convolutions in float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cfimg.export.contract import set_metadata
from cfimg.export.images import CheckImages
from cfimg.export.report import ExportedModel, ExportReport
from cfimg.export.verify import (
    Baseline,
    accuracy_check,
    checker,
    feeds,
    ort_session,
    runtime_checks,
    speedups,
)


def variant_path(out_path: Path, precision: str) -> Path:
    """model.onnx -> model.int8.onnx / model.fp16.onnx."""
    return out_path.with_name(f"{out_path.stem}.{precision}{out_path.suffix}")


def fp16_variant(report: ExportReport, base: Baseline, *, force: bool) -> dict[Path, bytes]:
    from cfimg.export.quantize import convert_to_fp16

    return _reduced_precision_variant(report, base, "fp16", convert_to_fp16(base.fp32), force)


def int8_variant(
    report: ExportReport, base: Baseline, calibration: CheckImages, *, force: bool
) -> dict[Path, bytes]:
    """Every convolution in int8; when that copy fails the accuracy gate, a second one with the
    high-resolution convolutions (stride 4 or less) kept in float, whose rounding error the whole
    network carries. The report keeps the copy that was judged last, and a note on the first."""
    from cfimg.export.quantize import QuantizationError, quantize_int8

    input_format = report.models[0].input_format
    folder = tempfile.TemporaryDirectory(prefix="cfimg-calibration-")
    ranges = Path(folder.name) / "ranges.json"  # calibrated once for both copies

    def quantized(float_high_res: bool):
        batches = feeds(input_format, base.card.preprocessing, calibration, batch=16)
        return quantize_int8(
            base.fp32, batches, float_high_res=float_high_res, calibration_cache=ranges
        )

    with folder:
        outputs = _reduced_precision_variant(report, base, "int8", quantized(False), force)
        first = report.models[-1]
        if first.ok or force or not _lost_accuracy_only(first):
            return outputs
        try:
            fallback = quantized(True)
        except QuantizationError:  # no shapes to tell the high-resolution layers by
            return outputs
    report.models.pop()
    outputs = _reduced_precision_variant(report, base, "int8", fallback, force)
    second = report.models[-1]
    report.notes.append(
        f"int8 with every convolution quantized lost {-first.accuracy_change_points:.1f} "
        "points of accuracy; the convolutions at stride 4 or less were kept in float: "
        f"{second.accuracy_change_points:+.1f} points"
        + (f", {second.speedup_batch32:.2f}x fp32 at batch 32" if second.speedup_batch32 else "")
    )
    return outputs


def _lost_accuracy_only(model: ExportedModel) -> bool:
    """Refused for lost accuracy alone (not for a failed run, nor unmeasurable accuracy)."""
    measured = model.accuracy_change_points is not None
    return measured and all(check.ok or check.name == "accuracy" for check in model.checks)


def _reduced_precision_variant(
    report: ExportReport, base: Baseline, precision: str, model, force: bool
) -> dict[Path, bytes]:
    """Add `model`'s checks to `report`; returns the file to write."""
    input_format, opset = report.models[0].input_format, report.models[0].opset
    set_metadata(model, base.card, input_format=input_format, precision=precision, opset=opset)
    data = model.SerializeToString()
    path = variant_path(report.models[0].path, precision)
    result = ExportedModel(path, precision, input_format, opset, len(data))
    result.checks.append(checker(model))
    report.models.append(result)
    session = ort_session(data)
    probabilities = runtime_checks(result, base, None, session=session)
    fp32_session = ort_session(base.fp32_bytes)
    result.checks.append(accuracy_check(result, probabilities, fp32_session, base, force))
    if not result.ok:  # refused: its speed would not be used
        return {path: data}
    if precision == "int8":
        result.speedup_batch1, result.speedup_batch32 = speedups(
            session, fp32_session, input_format, base.card.preprocessing, base.images
        )
    else:
        _gpu_speedup(result, data, base, report)
    return {path: data}


def _gpu_speedup(result: ExportedModel, data: bytes, base: Baseline, report: ExportReport) -> None:
    """fp16 is for GPUs; on CPU onnxruntime runs most fp16 nodes through casts, so only a GPU
    speed-up means anything."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        report.notes.append("fp16 speed not measured: no CUDA GPU (on CPU fp16 only gets slower)")
        return
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fast = ort_session(data, providers=providers)
    slow = ort_session(base.fp32_bytes, providers=providers)
    result.speedup_batch1, result.speedup_batch32 = speedups(
        fast, slow, result.input_format, base.card.preprocessing, base.images
    )
