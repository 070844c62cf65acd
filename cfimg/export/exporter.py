"""export_onnx: checkpoint in; fp32 (and fp16/int8) ONNX files out, proven before written.

Nothing is written until the checks have run, and each file is written atomically. A failed fp32
check writes nothing; a refused fp16 or int8 copy (it lost accuracy, or did not run) is left out
while the fp32 file and any copy that passed are still written, so a refusal costs no rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cfimg.errors import UsageError
from cfimg.export.contract import ANY_SIZE, FLOAT_NCHW, UINT8_NHWC, set_metadata
from cfimg.export.graph import build_onnx_model, resolve_opset
from cfimg.export.images import (
    DEFAULT_CALIB_IMAGES,
    DEFAULT_CHECK_IMAGES,
    calibration_images,
    check_images,
)
from cfimg.export.report import ExportedModel, ExportReport, raise_if_failed
from cfimg.export.variants import fp16_variant, int8_variant
from cfimg.export.verify import (
    FP32_MAX_ABS_DP,
    Baseline,
    checker,
    pytorch_probabilities,
    runtime_checks,
)
from cfimg.fileio import atomic_write_bytes


def export_onnx(
    checkpoint_or_run: str | Path,
    out_path: str | Path | None = None,
    *,
    opset: int | None = None,
    fp16: bool = False,
    int8: bool = False,
    calib_source: str | Path | None = None,
    any_size: bool = False,
    float_input: bool = False,
    force: bool = False,
    check: bool = True,
    check_data: str | Path | None = None,
    max_check_images: int = DEFAULT_CHECK_IMAGES,
    max_calib_images: int = DEFAULT_CALIB_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a checkpoint (or a run folder's best.pt) to ONNX, check it, then write it.

    Writes `out_path` (default RUN/model.onnx, or <checkpoint>.onnx) in fp32, plus
    <out>.fp16.onnx and/or <out>.int8.onnx when asked. `check=False` skips the runtime checks of
    the fp32 file (onnx.checker still runs); fp16 and int8 files are always checked and refused
    when they lose more than 1 point of accuracy, unless `force`. Raises ExportError when a
    check fails: after writing nothing if the fp32 file failed, else after writing the files
    that passed (the error's `report` says which).
    """
    from cfimg.checkpoint import load_model, resolve_checkpoint_path

    say = progress or (lambda message: None)
    input_format = _input_format(any_size=any_size, float_input=float_input)
    opset = resolve_opset(opset)
    if max_check_images < 1 or max_calib_images < 1:
        raise UsageError("--check-images and --calib-images must be at least 1")
    source = Path(checkpoint_or_run)
    if source.suffix.lower() == ".onnx":
        raise UsageError(
            f"{source} is already an ONNX model; export takes a checkpoint (.pt) or a run folder"
        )
    checkpoint = resolve_checkpoint_path(source)
    out_path = Path(out_path) if out_path is not None else default_output_path(source)
    if out_path.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out_path}: the file name must end in .onnx")
    network, card = load_model(checkpoint)
    run_dir = _run_dir(source, checkpoint)

    say(f"exporting {card.arch} ({input_format}, opset {opset})")
    fp32 = build_onnx_model(network, card, input_format=input_format, opset=opset)
    set_metadata(fp32, card, input_format=input_format, precision="fp32", opset=opset)
    fp32_bytes = fp32.SerializeToString()
    fp32_result = ExportedModel(out_path, "fp32", input_format, opset, len(fp32_bytes))
    fp32_result.checks.append(checker(fp32))
    outputs = {out_path: fp32_bytes}
    if not (check or fp16 or int8):
        report = ExportReport(checkpoint, "none (--no-check)", 0, models=[fp32_result])
        return _write(report, outputs)

    images = check_images(
        run_dir, check_data, card.preprocessing, max_check_images, keep_decoded=any_size
    )
    report = ExportReport(checkpoint, images.source, len(images.crops), models=[fp32_result])
    if images.labels is None:
        report.notes.append(f"checks ran on {images.source}: no accuracy could be measured")
    say(f"checking on {len(images.crops)} images ({images.source})")
    base = Baseline(card, fp32, fp32_bytes, images, pytorch_probabilities(network, card, images))
    if check:
        base.fp32_probabilities = runtime_checks(fp32_result, base, FP32_MAX_ABS_DP)
    if fp16:
        say("converting to fp16")
        outputs.update(fp16_variant(report, base, force=force))
    if int8:
        say("quantizing to int8 (static QDQ)")
        calibration = calibration_images(
            run_dir, calib_source, card.preprocessing, max_calib_images, keep_decoded=any_size
        )
        report.calib_source = calibration.source
        outputs.update(int8_variant(report, base, calibration, force=force))
    if report.models[0].ok:  # the fp32 file passed: keep it, and every copy that passed
        refused = {model.path for model in report.models if not model.ok}
        _write(report, {path: data for path, data in outputs.items() if path not in refused})
    raise_if_failed(report)
    return report


def default_output_path(source: str | Path) -> Path:
    """RUN/model.onnx for a run folder; the checkpoint's name with .onnx otherwise."""
    source = Path(source)
    return source / "model.onnx" if source.is_dir() else source.with_suffix(".onnx")


def _write(report: ExportReport, outputs: dict[Path, bytes]) -> ExportReport:
    for path, data in outputs.items():
        atomic_write_bytes(path, data)
    for model in report.models:
        model.written = model.path in outputs
    return report


def _input_format(*, any_size: bool, float_input: bool) -> str:
    if any_size and float_input:
        raise UsageError("--any-size and --float-input cannot be combined")
    return ANY_SIZE if any_size else FLOAT_NCHW if float_input else UINT8_NHWC


def _run_dir(source: Path, checkpoint: Path) -> Path | None:
    """The run folder the checkpoint belongs to (it holds split.csv), if any."""
    folder = source if source.is_dir() else checkpoint.parent
    return folder if (folder / "split.csv").is_file() else None
