"""The ONNX graph of a trained network: traced with its preprocessing and temperature inside.

The graph is traced from cfimg.models.ClassifierWithPreprocessing with the TorchScript exporter
(`dynamo=False`: the most predictable with a dynamic batch axis for timm and torchvision CNNs), so
the uint8 -> float conversion, normalisation, layout change and temperature travel inside the
file. timm's dynamic TF-'same' padding is made static for the exported size first, and
--any-size prepends the in-graph Pillow resize (cfimg.export.pillow_resize).

torch is imported inside the functions only: see cfimg.export.contract.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import TYPE_CHECKING

from cfimg import __version__
from cfimg.errors import UsageError
from cfimg.export.contract import ANY_SIZE, FLOAT_NCHW, INPUT_NAME, OUTPUT_NAMES
from cfimg.export.pillow_resize import prepend_resize_and_crop
from cfimg.export.report import ExportError, first_line

if TYPE_CHECKING:
    from cfimg.card import ModelCard

DEFAULT_OPSET = 18  # onnxruntime >= 1.14; its optimiser and quantizer handle it fully
MIN_OPSET = 13  # per-channel QDQ quantization; ReduceSum/Unsqueeze with axes as inputs
MAX_OPSET = 20  # the TorchScript exporter's highest


def resolve_opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset}: choose between {MIN_OPSET} and {MAX_OPSET}")
    return opset


def build_onnx_model(network, card: ModelCard, *, input_format: str, opset: int):
    """The ONNX graph (onnx.ModelProto, no metadata yet) for `network` with `card`'s
    preprocessing and temperature, in one of cfimg.export.contract.INPUT_FORMATS."""
    import torch

    from cfimg.models import ClassifierWithPreprocessing, network_input_px

    size = card.preprocessing.img_size_px
    network = copy.deepcopy(network).eval()
    # padding made static for what the network itself runs on: the frame, or one tile of it
    network = _with_static_same_padding(network, network_input_px(network, size))
    if input_format == FLOAT_NCHW:
        module = _float_input_classifier(network, card)
        example = torch.zeros(2, 3, size, size)
    else:
        module = ClassifierWithPreprocessing(network, card.preprocessing, card.temperature)
        example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    model = _trace(module.eval(), example, opset, card.arch)
    if input_format == ANY_SIZE:
        prepend_resize_and_crop(model, card.preprocessing)
    model.producer_name = "cfimg"
    model.producer_version = __version__
    model.graph.name = f"cfimg_{card.arch}"
    return model


def _float_input_classifier(network, card: ModelCard):
    """NCHW normalised float in, (probabilities, logits) out: the --float-input graph, which is
    ClassifierWithPreprocessing's own forward (softmax with the temperature) minus the
    normalisation, done by the caller."""
    from cfimg.models import ClassifierWithPreprocessing

    class FloatInputClassifier(ClassifierWithPreprocessing):
        def normalize(self, images_nchw):
            return images_nchw

    return FloatInputClassifier(network, card.preprocessing, card.temperature)


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
        raise ExportError(f"torch.onnx could not export {arch}: {first_line(exc)}") from None
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
