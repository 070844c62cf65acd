"""Reduced-precision copies of an exported fp32 graph: static int8 (QDQ) and fp16 (checked and
gated by cfimg.export.variants).

int8 is static QDQ quantization with onnxruntime.quantization: per-channel int8 weights, uint8
activations, ranges from MinMax calibration over real images fed exactly as the model will see
them. Dynamic quantization is not offered: it does not quantize convolutions and is several
times slower than fp32 on CPU here.

What stays in float, and why:
- the input stage before the normalisation (uint8 -> float, layout change, the --any-size
  resize): quantizing it costs more than it saves;
- everything after the last convolution (pooling, classifier, softmax): it is cheap, and a
  quantized softmax would round every probability to a multiple of 1/255;
- with `float_high_res`, also the convolutions whose output is at stride 4 or less (the stem and
  the first stages): their rounding error is carried through every later layer. Export tries
  this copy only when the fully quantized one fails its accuracy gate (cfimg.export.variants):
  on the demo's relation-pooling model it halved the mean |dp| against fp32 (0.013 to 0.007)
  and cut the changed verdicts from 6 to 2 of 256, for some of the int8 speed-up.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cfimg.errors import CfimgError

CONV_OPS = ("Conv", "ConvTranspose")
NORMALIZE_NODE = "cfimg_normalize"  # the input normalisation as a Conv (normalization_as_conv)


class QuantizationError(CfimgError):
    """onnxruntime could not quantize or convert the graph."""


def quantize_int8(
    model,
    calibration_feeds: Iterable[dict[str, np.ndarray]],
    *,
    float_high_res: bool = False,
    calibration_cache: Path | None = None,
):
    """A static QDQ int8 copy of `model` (onnx.ModelProto), calibrated on `calibration_feeds`
    (input dicts, e.g. batches of preprocessed images). Metadata is carried over.
    `float_high_res`: keep the convolutions at stride 4 or less in float as well (raises
    QuantizationError when the graph's shapes do not say which they are).
    `calibration_cache`: a file for the activation ranges: written by the first call, read (and
    the feeds left unread) by the next one on the same model (onnxruntime versions without the
    option calibrate again)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration_feeds)

        def get_next(self):
            return next(self.feeds, None)

    ort.set_default_logger_severity(3)  # the quantizer's sessions warn about unused initializers
    with tempfile.TemporaryDirectory(prefix="cfimg-quantize-") as folder:
        source, prepared, target = (Path(folder) / n for n in ("in.onnx", "pre.onnx", "q.onnx"))
        onnx.save(normalization_as_conv(model), source)
        prepared = _pre_process(source, prepared)
        graph = onnx.load(prepared).graph
        excluded = float_nodes(graph)
        if float_high_res:
            high_res = high_resolution_convs(graph)
            if not high_res:
                raise QuantizationError("no convolution at stride 4 or less to keep in float")
            excluded += high_res
        cache = {}
        if calibration_cache is not None and _has_calibration_cache(quantize_static):
            cache = {"calibration_cache_path": str(calibration_cache)}
        try:
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,  # VNNI / AVX-512 have no 7-bit saturation problem
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
                **cache,
            )
        except Exception as exc:
            raise QuantizationError(f"onnxruntime could not quantize the model: {exc}") from None
        quantized = onnx.load(target)
    _copy_metadata(model, quantized)
    return quantized


def _has_calibration_cache(quantize_static) -> bool:
    import inspect

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _pre_process(source: Path, target: Path) -> Path:
    """Shape inference and onnxruntime's basic graph optimisations (constant folding, Pad and
    BatchNorm fusion) before quantizing, as onnxruntime recommends; skipped when it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
    except Exception:
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        except Exception:
            return source
    return target


def normalization_as_conv(model):
    """A copy of `model` whose input normalisation, `x * scale - shift` with per-channel [1,C,1,1]
    constants (cfimg.models.ClassifierWithPreprocessing), is one 1x1 depthwise Conv.

    Same arithmetic, but the quantized graph runs in NHWC, where onnxruntime broadcasts a
    [1,1,1,3] Mul/Sub element by element (a quarter of int8 batch-1 time for
    efficientnet_lite0); as a Conv it is quantized losslessly (its input is 0..255) and fused.
    Graphs without the pattern (--float-input) come back unchanged.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    nodes = list(graph.node)
    constants = _constant_values(graph)
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type in CONV_OPS), len(nodes))
    consumers = _consumers(graph)
    for mul in nodes[:first_conv]:
        if mul.op_type != "Mul" or mul.input[1] not in constants:
            continue
        subs = consumers.get(mul.output[0], [])
        if len(subs) != 1 or subs[0].op_type != "Sub" or subs[0].input[1] not in constants:
            continue
        sub = subs[0]
        scale, shift = constants[mul.input[1]], constants[sub.input[1]]
        channels = scale.size
        if scale.shape != (1, channels, 1, 1) or shift.shape != scale.shape:
            continue
        weight = numpy_helper.from_array(
            scale.reshape(channels, 1, 1, 1).astype(np.float32), "cfimg_normalize_weight"
        )
        bias = numpy_helper.from_array(
            (-shift).reshape(channels).astype(np.float32), "cfimg_normalize_bias"
        )
        graph.initializer.extend([weight, bias])
        conv = helper.make_node(
            "Conv",
            [mul.input[0], weight.name, bias.name],
            [sub.output[0]],
            name=NORMALIZE_NODE,
            group=channels,
            kernel_shape=[1, 1],
        )
        position = nodes.index(mul)
        graph.node.remove(sub)
        graph.node.remove(mul)
        graph.node.insert(position, conv)
        onnx.checker.check_model(model)
        break
    return model


def _constant_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _consumers(graph) -> dict[str, list]:
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def float_nodes(graph) -> list[str]:
    """Names of the nodes kept in float: those before the first and after the last convolution
    (the graph is topologically sorted)."""
    nodes = list(graph.node)
    conv_positions = [i for i, node in enumerate(nodes) if node.op_type in CONV_OPS]
    if not conv_positions:
        return []
    first, last = conv_positions[0], conv_positions[-1]
    return [node.name for i, node in enumerate(nodes) if (i < first or i > last) and node.name]


def high_resolution_convs(graph, max_stride: int = 4) -> list[str]:
    """Names of the convolutions whose output is at `max_stride` or less of the network's input
    side (shapes from the graph's shape inference), the cfimg normalisation excepted (it is
    exact in int8). Empty when the shapes are not known (e.g. a dynamic input size)."""
    shapes = {
        info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim]
        for info in (*graph.value_info, *graph.input, *graph.output)
    }
    convs = [node for node in graph.node if node.op_type in CONV_OPS]
    if not convs:
        return []
    # NCHW at the first convolution: after the layout change of the uint8 NHWC contract
    input_side = max(shapes.get(convs[0].input[0], [0, 0, 0, 0])[2:] or [0])
    if not input_side:
        return []
    names = []
    for node in convs:
        side = max(shapes.get(node.output[0], [0, 0, 0, 0])[2:] or [0])
        if node.name != NORMALIZE_NODE and side and side * max_stride >= input_side:
            names.append(node.name)
    return names


def convert_to_fp16(model):
    """An fp16 copy with the same uint8 (or float32) input and float32 outputs: casts are
    inserted at the edges, so callers feed and read exactly what the fp32 model takes."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise QuantizationError(f"could not convert the model to fp16: {exc}") from None
    _copy_metadata(model, converted)
    return converted


def _copy_metadata(source, target) -> None:
    del target.metadata_props[:]
    for entry in source.metadata_props:
        target.metadata_props.add(key=entry.key, value=entry.value)
    target.producer_name = source.producer_name
    target.producer_version = source.producer_version
    target.doc_string = source.doc_string
