"""--any-size: the graph takes one photo of any size and does cfimg's resize and centre crop
itself, bit-exact with Pillow (see prepend_resize_and_crop for why not ONNX Resize)."""

from __future__ import annotations

import numpy as np

from cfimg.errors import UsageError
from cfimg.export.contract import INPUT_NAME
from cfimg.preprocess import Preprocessing


def prepend_resize_and_crop(model, prep: Preprocessing) -> None:
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
