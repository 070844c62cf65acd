"""`cfimg export`: one self-describing ONNX file, proven against PyTorch before it is written.

The graph is traced from cfimg.models.ClassifierWithPreprocessing with the TorchScript exporter
(`dynamo=False`: the most predictable with a dynamic batch axis for timm and torchvision CNNs), so
the uint8 -> float conversion, normalisation, layout change and temperature travel inside the
file. Everything a program needs to reproduce the CLI's answer (class names, resize rule,
threshold...) goes into `metadata_props` (ModelCard.to_onnx_metadata plus the export keys below).

Nothing is written until every check has passed: a refused int8 model or a failed parity check
leaves no file behind, and each file is written atomically.
"""

from __future__ import annotations

import copy
import io
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cfimg import __version__
from cfimg.card import ModelCard
from cfimg.labels import CLASS_NAMES
from cfimg.errors import CfimgError, UsageError
from cfimg.fileio import atomic_write_bytes
from cfimg.preprocess import Preprocessing

INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits")

UINT8_NHWC = "uint8_nhwc"  # [batch, size, size, 3] uint8 RGB, the default
ANY_SIZE = "uint8_hwc_any_size"  # [height, width, 3] uint8 RGB: resize and crop in the graph
FLOAT_NCHW = "float_nchw"  # [batch, 3, size, size] float32, already normalised with mean/std
INPUT_FORMATS = (UINT8_NHWC, ANY_SIZE, FLOAT_NCHW)

DEFAULT_OPSET = 18  # onnxruntime >= 1.14; its optimiser and quantizer handle it fully
MIN_OPSET = 13  # per-channel QDQ quantization; ReduceSum/Unsqueeze with axes as inputs
MAX_OPSET = 20  # the TorchScript exporter's highest

# Largest |p - p_pytorch| accepted on the check images for fp32, --any-size included (its
# in-graph resize reproduces Pillow's bit for bit). fp16 and int8 are judged by accuracy instead
# (at most MAX_ACCURACY_DROP_POINTS lost); their |Δp| is reported.
FP32_MAX_ABS_DP = 1e-4
MAX_ACCURACY_DROP_POINTS = 1.0

DEFAULT_CHECK_IMAGES = 256
DEFAULT_CALIB_IMAGES = 200
CHECK_BATCH = 32
ODD_BATCH = 5


class ExportError(CfimgError):
    """An export that failed a check; nothing was written."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ExportedModel:
    """One written file (fp32, fp16 or int8) and what was measured on it."""

    path: Path
    precision: str
    input_format: str
    opset: int
    size_bytes: int = 0
    checks: list[Check] = field(default_factory=list)
    max_abs_dp: float | None = None  # vs PyTorch fp32 on the check images
    accuracy: float | None = None  # on labelled check images, with the card's threshold
    accuracy_change_points: float | None = None  # vs the fp32 ONNX model, in percentage points
    speedup_batch1: float | None = None  # latency of fp32 ONNX / latency of this model
    speedup_batch32: float | None = None
    written: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass
class ExportReport:
    source: Path  # the checkpoint exported
    check_source: str  # where the check images came from, in words
    check_images: int
    calib_source: str = ""
    models: list[ExportedModel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(model.ok for model in self.models)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["source"] = str(self.source)
        for model in values["models"]:
            model["path"] = str(model["path"])
        return values


@dataclass
class CheckImages:
    """Images to check and calibrate with: model-sized crops, and (for --any-size) the decoded
    photos they came from."""

    crops: np.ndarray  # [N, S, S, 3] uint8
    decoded: list[np.ndarray]  # [H, W, 3] uint8 each; empty unless kept
    labels: np.ndarray | None  # [N] class indices, None when unlabelled
    source: str


# ---------------------------------------------------------------------------------------------
# The public entry point


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
    when they lose more than 1 point of accuracy, unless `force`. Raises ExportError, writing
    nothing, when a check fails.
    """
    from cfimg.checkpoint import load_model, resolve_checkpoint_path

    say = progress or (lambda message: None)
    input_format = _input_format(any_size=any_size, float_input=float_input)
    opset = _resolve_opset(opset)
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
    _set_metadata(fp32, card, input_format=input_format, precision="fp32", opset=opset)
    fp32_bytes = fp32.SerializeToString()
    fp32_result = ExportedModel(out_path, "fp32", input_format, opset, len(fp32_bytes))
    fp32_result.checks.append(_checker(fp32))
    outputs = {out_path: fp32_bytes}
    if not (check or fp16 or int8):
        report = ExportReport(checkpoint, "none (--no-check)", 0, models=[fp32_result])
        return _write(report, outputs)

    images = _check_images(
        run_dir, check_data, card.preprocessing, max_check_images, keep_decoded=any_size
    )
    report = ExportReport(checkpoint, images.source, len(images.crops), models=[fp32_result])
    if images.labels is None:
        report.notes.append(f"checks ran on {images.source}: no accuracy could be measured")
    say(f"checking on {len(images.crops)} images ({images.source})")
    base = _Baseline(card, fp32, fp32_bytes, images, _pytorch_probabilities(network, card, images))
    if check:
        _runtime_checks(fp32_result, base, FP32_MAX_ABS_DP)
    if fp16:
        say("converting to fp16")
        outputs.update(_fp16_variant(report, base, force=force))
    if int8:
        say("quantizing to int8 (static QDQ)")
        calibration = calibration_images(
            run_dir, calib_source, card.preprocessing, max_calib_images, keep_decoded=any_size
        )
        report.calib_source = calibration.source
        outputs.update(_int8_variant(report, base, calibration, force=force))
    _raise_if_failed(report)
    return _write(report, outputs)


def _write(report: ExportReport, outputs: dict[Path, bytes]) -> ExportReport:
    for path, data in outputs.items():
        atomic_write_bytes(path, data)
    for model in report.models:
        model.written = True
    return report


@dataclass
class _Baseline:
    """The fp32 export and what every variant is compared with."""

    card: ModelCard
    fp32: object  # onnx.ModelProto
    fp32_bytes: bytes
    images: CheckImages
    reference: np.ndarray  # PyTorch probabilities on images.crops


def default_output_path(source: str | Path) -> Path:
    """RUN/model.onnx for a run folder; the checkpoint's name with .onnx otherwise."""
    source = Path(source)
    return source / "model.onnx" if source.is_dir() else source.with_suffix(".onnx")


def variant_path(out_path: Path, precision: str) -> Path:
    """model.onnx -> model.int8.onnx / model.fp16.onnx."""
    return out_path.with_name(f"{out_path.stem}.{precision}{out_path.suffix}")


def _input_format(*, any_size: bool, float_input: bool) -> str:
    if any_size and float_input:
        raise UsageError("--any-size and --float-input cannot be combined")
    return ANY_SIZE if any_size else FLOAT_NCHW if float_input else UINT8_NHWC


def _resolve_opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset}: choose between {MIN_OPSET} and {MAX_OPSET}")
    return opset


def _run_dir(source: Path, checkpoint: Path) -> Path | None:
    """The run folder the checkpoint belongs to (it holds split.csv), if any."""
    folder = source if source.is_dir() else checkpoint.parent
    return folder if (folder / "split.csv").is_file() else None


def _raise_if_failed(report: ExportReport) -> None:
    for model in report.models:
        for check in model.checks:
            if check.ok:
                continue
            hint = " (use --force to write it anyway)" if check.name == "accuracy" else ""
            raise ExportError(
                f"{model.path}: {model.precision} {check.name} check failed: {check.detail}; "
                f"nothing was written{hint}"
            )


# ---------------------------------------------------------------------------------------------
# Building the graph


def build_onnx_model(network, card: ModelCard, *, input_format: str, opset: int):
    """The ONNX graph (onnx.ModelProto, no metadata yet) for `network` with `card`'s
    preprocessing and temperature, in one of INPUT_FORMATS."""
    import torch

    from cfimg.models import ClassifierWithPreprocessing

    size = card.preprocessing.img_size_px
    network = _with_static_same_padding(copy.deepcopy(network).eval(), size)
    if input_format == FLOAT_NCHW:
        module = _float_input_classifier(network, card.temperature)
        example = torch.zeros(2, 3, size, size)
    else:
        module = ClassifierWithPreprocessing(network, card.preprocessing, card.temperature)
        example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    model = _trace(module.eval(), example, opset, card.arch)
    if input_format == ANY_SIZE:
        _prepend_resize_and_crop(model, card.preprocessing)
    model.producer_name = "cfimg"
    model.producer_version = __version__
    model.graph.name = f"cfimg_{card.arch}"
    return model


def _float_input_classifier(network, temperature: float):
    """NCHW normalised float in, (probabilities, logits) out: the --float-input graph."""
    import torch

    class FloatInputClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network
            self.temperature = float(temperature)

        def forward(self, images):
            logits = self.network(images)
            return torch.softmax(logits / self.temperature, dim=1), logits

    return FloatInputClassifier()


def _trace(module, example, opset: int, arch: str):
    import onnx
    import torch

    buffer = io.BytesIO()
    batch = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation note
            torch.onnx.export(
                module,
                (example,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: batch for name in (INPUT_NAME, *OUTPUT_NAMES)},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export {arch}: {_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def _with_static_same_padding(network, img_size_px: int):
    """Replace timm's dynamic TF-'same' padding convs (tf_efficientnet_*) by a constant Pad and a
    plain Conv for the fixed input size.

    Traced as is, each Conv2dSame computes its padding from the input shape at run time
    (Shape/Ceil/Sub/Pad nodes): onnxruntime can then neither fold the pad into the conv nor keep
    the blocked NCHWc layout, which costs about half of the fp32 time and more in int8.
    Outputs are identical at the exported size.
    """
    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import get_same_padding
    except ImportError:  # no timm, no such layers
        return network
    import torch

    input_hw: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, name=name: input_hw.__setitem__(name, tuple(args[0].shape[-2:]))
        )
        for name, module in network.named_modules()
        if isinstance(module, Conv2dSame)
    ]
    if not hooks:
        return network
    with torch.no_grad():
        network(torch.zeros(1, 3, img_size_px, img_size_px))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in input_hw.items():
        conv = network.get_submodule(name)
        pad_h = get_same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        parent_name, _, attr = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, attr, _static_pad_conv(conv, pads))
    return network


def _static_pad_conv(conv, pads: tuple[int, int, int, int]):
    """A module computing conv(pad(x, pads)) whose pad exports as one ONNX Pad with constant
    pads (torch's own F.pad lowering adds a dozen shape nodes)."""
    import torch
    import torch.nn.functional as F

    class ConstantPad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return F.pad(x, pads)

        @staticmethod
        def symbolic(g, x):
            left, right, top, bottom = pads
            onnx_pads = g.op(
                "Constant", value_t=torch.tensor([0, 0, top, left, 0, 0, bottom, right])
            )
            return g.op("Pad", x, onnx_pads, mode_s="constant")

    class StaticPadConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                0,
                conv.dilation,
                conv.groups,
                conv.bias is not None,
            )
            self.conv.weight = conv.weight
            self.conv.bias = conv.bias

        def forward(self, x):
            return self.conv(ConstantPad.apply(x))

    return StaticPadConv()


def _prepend_resize_and_crop(model, prep: Preprocessing) -> None:
    """Make the graph take one [height, width, 3] uint8 photo of any size and do cfimg's resize
    (shorter side to resize_px) and centre crop inside it, bit-exact with Pillow.

    ONNX Resize (antialias=1) is not Pillow: it differs by a few grey levels on ~1% of pixels,
    which moved p by up to 0.1 on a sharp fine-tuned model. So the graph does what Pillow's
    Resample.c does: per-axis filter coefficients computed in double exactly as
    precompute_coeffs, rounded to 22-bit fixed point, integer sums with rounding, two passes in
    Pillow's order, each rounded to 8 bits. Matches Pillow >= 13 exactly (older Pillow always
    resizes horizontally first and differs by a grey level on some tall photos).
    """
    from onnx import TensorProto, helper

    if prep.interpolation != "bilinear":
        raise UsageError(
            f"--any-size reproduces Pillow's bilinear resize only; this model uses "
            f"{prep.interpolation}"
        )
    g = _GraphBuilder("cfimg_any_size/")
    shape = g.op("Shape", INPUT_NAME)
    height = g.op("Slice", shape, g.const([0], np.int64), g.const([1], np.int64))
    width = g.op("Slice", shape, g.const([1], np.int64), g.const([2], np.int64))
    hw = g.op("Cast", g.op("Concat", height, width, axis=0), to=TensorProto.DOUBLE)
    shorter = g.op("ReduceMin", hw, keepdims=1)
    resize_px = g.const([float(prep.resize_px)], np.float64)
    # cfimg's rule (preprocess.resized_size): max(resize, floor(side * resize / shorter + 0.5))
    scaled = g.op("Add", g.op("Div", g.op("Mul", hw, resize_px), shorter), g.const([0.5]))
    new_hw = g.op("Cast", g.op("Max", g.op("Floor", scaled), resize_px), to=TensorProto.INT64)
    new_height = g.op("Slice", new_hw, g.const([0], np.int64), g.const([1], np.int64))
    new_width = g.op("Slice", new_hw, g.const([1], np.int64), g.const([2], np.int64))
    resized = _pillow_resize(g, height, width, new_height, new_width)
    size = g.const([prep.img_size_px, prep.img_size_px], np.int64)
    starts = g.op("Div", g.op("Sub", new_hw, size), g.const([2, 2], np.int64))
    ends = g.op("Add", starts, size)
    crop = g.op("Slice", resized, starts, ends, g.const([0, 1], np.int64))
    batch = g.op("Unsqueeze", crop, g.const([0], np.int64))

    graph = model.graph
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[index] = batch
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(g.nodes + body)
    graph.input.remove(graph.input[0])
    graph.input.insert(
        0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["height", "width", 3])
    )


def _pillow_resize(g: _GraphBuilder, height: str, width: str, new_height: str, new_width: str):
    """Both passes, in Pillow's order: horizontal then vertical, except (Pillow >= 13, #9549)
    vertical first when the height shrinks by more than twice what the width shrinks."""
    from onnx import TensorProto, helper

    height_drop = g.op("Sub", height, new_height)
    width_drop = g.op("Mul", g.op("Sub", width, new_width), g.const([2], np.int64))
    vertical_first = g.op(
        "And", g.op("Less", new_height, height), g.op("Greater", height_drop, width_drop)
    )
    branches = {}
    for name, axes in (("vertical_first", (0, 1)), ("horizontal_first", (1, 0))):
        branch = _GraphBuilder(f"{g.prefix}{name}/")
        sizes = {0: (height, new_height), 1: (width, new_width)}
        first = _pillow_bilinear_pass(branch, INPUT_NAME, axes[0], *sizes[axes[0]])
        result = _pillow_bilinear_pass(branch, first, axes[1], *sizes[axes[1]])
        output = helper.make_tensor_value_info(result, TensorProto.UINT8, ["rh", "rw", 3])
        branches[name] = helper.make_graph(branch.nodes, name, [], [output])
    return g.op(
        "If",
        vertical_first,
        then_branch=branches["vertical_first"],
        else_branch=branches["horizontal_first"],
    )


def _pillow_bilinear_pass(g: _GraphBuilder, image: str, axis: int, in_size: str, out_size: str):
    """One pass of Pillow's 8-bit antialiased bilinear resample along `axis` (0: rows, 1:
    columns) of an [H, W, 3] uint8 tensor; in/out sizes are int64 [1] tensors."""
    from onnx import TensorProto

    precision_bits = 22  # Resample.c: 32 - 8 - 2
    in_d = g.op("Cast", in_size, to=TensorProto.DOUBLE)
    out_d = g.op("Cast", out_size, to=TensorProto.DOUBLE)
    scale = g.op("Div", in_d, out_d)
    filterscale = g.op("Max", scale, g.const([1.0]))
    support = filterscale  # bilinear support 1.0 * filterscale
    inverse = g.op("Div", g.const([1.0]), filterscale)
    taps = g.op("Add", g.op("Mul", g.op("Ceil", support), g.const([2.0])), g.const([1.0]))
    zero, one = g.const(0.0, shape=()), g.const(1.0, shape=())
    scalar = g.const([], np.int64)
    outputs = g.op("Range", zero, g.op("Reshape", out_d, scalar), one)  # [out]
    tap = g.op("Range", zero, g.op("Reshape", taps, scalar), one)  # [K]
    center = g.op("Mul", g.op("Add", outputs, g.const([0.5])), scale)
    # (int)(center -/+ support + 0.5), clamped to the image
    xmin = g.op(
        "Max", g.op("Floor", g.op("Add", g.op("Sub", center, support), g.const([0.5]))), zero
    )
    xend = g.op("Floor", g.op("Add", g.op("Add", center, support), g.const([0.5])))
    count = g.op("Sub", g.op("Min", xend, in_d), xmin)
    column = g.const([1], np.int64)
    x = g.op("Add", g.op("Unsqueeze", xmin, column), tap)  # [out, K] input positions
    # bilinear_filter((x + xmin - center + 0.5) * ss), zero past the window
    offset = g.op("Add", g.op("Sub", x, g.op("Unsqueeze", center, column)), g.const([0.5]))
    distance = g.op("Mul", offset, inverse)
    weight = g.op("Max", g.op("Sub", one, g.op("Abs", distance)), zero)
    inside = g.op("Less", tap, g.op("Unsqueeze", count, column))
    weight = g.op("Where", inside, weight, zero)
    total = g.op("ReduceSum", weight, column, keepdims=1)
    normalized = g.op("Div", weight, total)
    fixed = g.op(
        "Add", g.op("Mul", normalized, g.const([float(1 << precision_bits)])), g.const([0.5])
    )
    coefficients = g.op("Cast", g.op("Floor", fixed), to=TensorProto.INT32)  # [out, K]
    last = g.op("Sub", in_d, one)
    index = g.op("Cast", g.op("Min", x, last), to=TensorProto.INT64)
    gathered = g.op("Gather", image, g.op("Reshape", index, g.const([-1], np.int64)), axis=axis)
    pixels = g.op("Cast", gathered, to=TensorProto.INT32)
    taps_i = g.op("Cast", taps, to=TensorProto.INT64)
    if axis == 1:  # [H, out*K, 3] -> [H, out, K, 3]
        keep_rows, channels = g.const([0], np.int64), g.const([3], np.int64)
        split = g.op("Concat", keep_rows, out_size, taps_i, channels, axis=0)
        kernel = g.op("Unsqueeze", coefficients, g.const([0, 3], np.int64))
    else:  # [out*K, W, 3] -> [out, K, W, 3]
        split = g.op("Concat", out_size, taps_i, g.const([-1, 3], np.int64), axis=0)
        kernel = g.op("Unsqueeze", coefficients, g.const([2, 3], np.int64))
    products = g.op("Mul", g.op("Reshape", pixels, split), kernel)
    sums = g.op("ReduceSum", products, g.const([axis + 1], np.int64), keepdims=0)
    rounded = g.op("Add", sums, g.const([1 << (precision_bits - 1)], np.int32))
    shifted = g.op("Div", rounded, g.const([1 << precision_bits], np.int32))  # sums are >= 0
    clipped = g.op("Min", shifted, g.const([255], np.int32))
    return g.op("Cast", clipped, to=TensorProto.UINT8)


class _GraphBuilder:
    """Appends ONNX nodes with unique output names; `op` returns the output's name."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list = []

    def _name(self) -> str:
        return f"{self.prefix}{len(self.nodes)}"

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        from onnx import helper

        name = self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def const(self, values, dtype=np.float64, shape=None) -> str:
        from onnx import numpy_helper

        array = np.asarray(values, dtype=dtype)
        if shape is not None:
            array = array.reshape(shape)
        return self.op("Constant", value=numpy_helper.from_array(array))


def _set_metadata(model, card: ModelCard, *, input_format: str, precision: str, opset: int):
    """The card's metadata plus how this file was exported."""
    shape = {
        UINT8_NHWC: ["batch", card.preprocessing.img_size_px, card.preprocessing.img_size_px, 3],
        ANY_SIZE: ["height", "width", 3],
        FLOAT_NCHW: ["batch", 3, card.preprocessing.img_size_px, card.preprocessing.img_size_px],
    }[input_format]
    values = {
        **card.to_onnx_metadata(),
        "export_date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_format": input_format,
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(shape),
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


# ---------------------------------------------------------------------------------------------
# Check and calibration images


def _check_images(
    run_dir: Path | None,
    check_data: str | Path | None,
    prep: Preprocessing,
    limit: int,
    *,
    keep_decoded: bool,
) -> CheckImages:
    """Real labelled images: --check-data, else the run's validation split; random otherwise."""
    from cfimg.data import load_samples

    if check_data is not None:
        samples = load_samples(check_data)
        return load_images(
            _spread(samples, limit), prep, f"--check-data {check_data}", keep_decoded
        )
    if run_dir is not None:
        try:
            samples = [s for s in load_samples(run_dir / "split.csv") if s.split == "val"]
        except CfimgError:
            samples = []
        if samples:
            images = load_images(
                _spread(samples, limit), prep, f"validation split of {run_dir}", keep_decoded
            )
            if len(images.crops):
                return images
    return _random_images(prep, min(limit, 16), keep_decoded)


def _spread(samples: Sequence, limit: int) -> list:
    """At most `limit` samples taken evenly over the (path-sorted) list: every class and brand."""
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


def load_images(samples: Sequence, prep: Preprocessing, source: str, keep_decoded: bool):
    """Decode exactly as cfimg predicts: load_rgb (draft decode, EXIF) + preprocess_image."""
    from cfimg.errors import ImageLoadError
    from cfimg.imageio import load_rgb
    from cfimg.preprocess import preprocess_image

    crops, decoded, labels = [], [], []
    for sample in samples:
        try:
            image = load_rgb(sample.path, min_side_px=prep.resize_px)
        except ImageLoadError:
            continue  # a bad file is a dataset problem, not an export problem
        crops.append(preprocess_image(image, prep))
        if keep_decoded:
            decoded.append(np.asarray(image, dtype=np.uint8))
        labels.append(int(getattr(sample, "label", -1)))
    has_labels = bool(labels) and all(label >= 0 for label in labels)
    size = prep.img_size_px
    return CheckImages(
        np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        decoded,
        np.asarray(labels) if has_labels else None,
        f"{source} ({len(crops)} images)",
    )


def _random_images(prep: Preprocessing, count: int, keep_decoded: bool) -> CheckImages:
    """Smooth random photos of assorted sizes: a weak stand-in for real images, said so."""
    from PIL import Image

    from cfimg.preprocess import preprocess_image

    rng = np.random.default_rng(0)
    crops, decoded = [], []
    for index in range(count):
        scale = 1.0 + 1.5 * rng.random()
        width = int(prep.resize_px * (scale if index % 2 else 1.0 + 0.3 * rng.random()))
        height = int(prep.resize_px * (1.0 + 0.3 * rng.random() if index % 2 else scale))
        coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        crops.append(preprocess_image(image, prep))
        if keep_decoded:
            decoded.append(np.asarray(image, dtype=np.uint8))
    return CheckImages(
        np.stack(crops),
        decoded,
        None,
        f"random images ({count}; no run split or --check-data was available)",
    )


def calibration_images(
    run_dir: Path | None,
    calib_source: str | Path | None,
    prep: Preprocessing,
    limit: int,
    *,
    keep_decoded: bool,
) -> CheckImages:
    """--calib DATA (a dataset or any folder of images), else the run's training split."""
    from cfimg.data import load_samples
    from cfimg.errors import DatasetError

    if calib_source is not None:
        try:
            samples = load_samples(calib_source)
        except DatasetError:
            samples = unlabelled_images(Path(calib_source))
        source = f"--calib {calib_source}"
    elif run_dir is not None:
        samples = [s for s in load_samples(run_dir / "split.csv") if s.split == "train"]
        source = f"training split of {run_dir}"
    else:
        raise UsageError("--int8 needs calibration images: give --calib DATA (a folder of photos)")
    images = load_images(_spread(samples, limit), prep, source, keep_decoded)
    if not len(images.crops):
        raise UsageError(f"{source}: no readable images to calibrate int8 with")
    return images


def unlabelled_images(folder: Path) -> list:
    from types import SimpleNamespace

    from cfimg.imageio import is_image_path

    if not folder.is_dir():
        raise UsageError(f"--calib {folder}: not a dataset or a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))
    return [SimpleNamespace(path=str(p), label=-1) for p in paths]


# ---------------------------------------------------------------------------------------------
# Running and measuring


def _pytorch_probabilities(network, card: ModelCard, images: CheckImages) -> np.ndarray:
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


def model_feed(input_format: str, prep: Preprocessing, crops: np.ndarray) -> np.ndarray:
    """The input tensor for a batch of crops (not for ANY_SIZE, which takes decoded photos)."""
    if input_format != FLOAT_NCHW:
        return np.ascontiguousarray(crops, dtype=np.uint8)
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
    chw = crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return np.ascontiguousarray((chw - mean) / std)


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


def _run_all(session, input_format: str, prep: Preprocessing, images: CheckImages):
    rows = [session.run([OUTPUT_NAMES[0]], feed)[0] for feed in feeds(input_format, prep, images)]
    return np.concatenate(rows).astype(np.float32)


def _runtime_checks(
    result: ExportedModel, base: _Baseline, tolerance: float | None, session=None
) -> np.ndarray | None:
    """Batch 1 and odd batch runs (or three photo shapes for --any-size), then parity with
    PyTorch (no limit when `tolerance` is None). Returns the probabilities on the images."""
    prep, images = base.card.preprocessing, base.images
    try:
        session = session or ort_session(base.fp32_bytes)
    except Exception as exc:
        result.checks.append(Check("onnxruntime load", False, _first_line(exc)))
        return None
    if result.input_format == ANY_SIZE:
        result.checks.extend(_any_size_runs(session, prep))
    else:
        result.checks.extend(_batch_runs(session, result.input_format, prep, images.crops))
    probabilities = _run_all(session, result.input_format, prep, images)
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
        ok = all(shape == (n, 2) for shape in shapes) and _are_probabilities(outputs[0])
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
            checks.append(Check(name, False, f"{shape[1]}x{shape[0]}: {_first_line(exc)}"))
            continue
        ok = tuple(outputs[0].shape) == (1, 2) and _are_probabilities(outputs[0])
        checks.append(Check(name, ok, f"{shape[1]}x{shape[0]} -> {tuple(outputs[0].shape)}"))
    return checks


def _are_probabilities(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def _checker(model) -> Check:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        return Check("onnx.checker", False, _first_line(exc))
    return Check("onnx.checker", True, "full check passed")


def median_latency_s(session, feed: dict[str, np.ndarray], repeats: int) -> float:
    """Median wall time of `repeats` runs after two warm-up runs."""
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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


def _speedups(fast, slow, input_format: str, prep: Preprocessing, images: CheckImages):
    """(batch-1, batch-32) speed-up of session `fast` over `slow`; batch 32 is None for
    --any-size (one photo per run)."""
    if input_format == ANY_SIZE:
        return _speed_ratio(fast, slow, {INPUT_NAME: images.decoded[0]}, 15), None
    one = {INPUT_NAME: model_feed(input_format, prep, images.crops[:1])}
    many = np.resize(images.crops, (32, *images.crops.shape[1:]))
    full = {INPUT_NAME: model_feed(input_format, prep, many)}
    return _speed_ratio(fast, slow, one, 15), _speed_ratio(fast, slow, full, 3)


# ---------------------------------------------------------------------------------------------
# fp16 and int8


def _fp16_variant(report: ExportReport, base: _Baseline, *, force: bool) -> dict:
    from cfimg.quantize import convert_to_fp16

    return _reduced_precision_variant(report, base, "fp16", convert_to_fp16(base.fp32), force)


def _int8_variant(
    report: ExportReport, base: _Baseline, calibration: CheckImages, *, force: bool
) -> dict:
    from cfimg.quantize import quantize_int8

    input_format = report.models[0].input_format
    batches = feeds(input_format, base.card.preprocessing, calibration, batch=16)
    return _reduced_precision_variant(
        report, base, "int8", quantize_int8(base.fp32, batches), force
    )


def _reduced_precision_variant(
    report: ExportReport, base: _Baseline, precision: str, model, force: bool
) -> dict:
    """Checks for fp16/int8: runs, |Δp| vs PyTorch (reported), speed-up vs fp32 ONNX (int8 on
    CPU, fp16 on a GPU only), and the accuracy gate (at most 1 point lost unless `force`)."""
    input_format, opset = report.models[0].input_format, report.models[0].opset
    _set_metadata(model, base.card, input_format=input_format, precision=precision, opset=opset)
    data = model.SerializeToString()
    path = variant_path(report.models[0].path, precision)
    result = ExportedModel(path, precision, input_format, opset, len(data))
    result.checks.append(_checker(model))
    report.models.append(result)
    session = ort_session(data)
    probabilities = _runtime_checks(result, base, None, session=session)
    fp32_session = ort_session(base.fp32_bytes)
    if precision == "int8":
        result.speedup_batch1, result.speedup_batch32 = _speedups(
            session, fp32_session, input_format, base.card.preprocessing, base.images
        )
    else:
        _gpu_speedup(result, data, base, report)
    result.checks.append(_accuracy_check(result, probabilities, fp32_session, base, force))
    return {path: data}


def _gpu_speedup(result: ExportedModel, data: bytes, base: _Baseline, report) -> None:
    """fp16 is for GPUs; on CPU onnxruntime runs most fp16 nodes through casts, so only a GPU
    speed-up means anything."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        report.notes.append("fp16 speed not measured: no CUDA GPU (on CPU fp16 only gets slower)")
        return
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fast = ort_session(data, providers=providers)
    slow = ort_session(base.fp32_bytes, providers=providers)
    result.speedup_batch1, result.speedup_batch32 = _speedups(
        fast, slow, result.input_format, base.card.preprocessing, base.images
    )


def _accuracy_check(result, probabilities, fp32_session, base: _Baseline, force) -> Check:
    """Accuracy with the card's threshold on labelled check images, this model vs fp32 ONNX."""
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
    index = card.counterfeit_index
    fp32_p = _run_all(fp32_session, result.input_format, card.preprocessing, images)
    labels = np.asarray([CLASS_NAMES[label] == "counterfeit" for label in images.labels], int)
    before = classification_metrics(labels, fp32_p[:, index], card.threshold)["accuracy"]
    after = classification_metrics(labels, probabilities[:, index], card.threshold)["accuracy"]
    result.accuracy = after
    result.accuracy_change_points = 100.0 * (after - before)
    drop = -result.accuracy_change_points
    same = int(
        np.sum((fp32_p[:, index] >= card.threshold) == (probabilities[:, index] >= card.threshold))
    )
    detail = (
        f"{100 * before:.1f}% -> {100 * after:.1f}% ({result.accuracy_change_points:+.1f} points) "
        f"on {len(labels)} images; same verdict as fp32 on {same}"
    )
    if drop > MAX_ACCURACY_DROP_POINTS and force:
        return Check("accuracy", True, detail + "; over the 1-point limit, written (--force)")
    ok = drop <= MAX_ACCURACY_DROP_POINTS
    return Check("accuracy", ok, detail if ok else f"{detail} loses more than 1 point of accuracy")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
