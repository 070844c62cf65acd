"""Inference engines: a model file in, probabilities for uint8 RGB NHWC batches out.

`.onnx` files run on onnxruntime; `.pt` checkpoints and run folders run on PyTorch. Both read the
model card (class names, preprocessing, temperature, thresholds) from the file itself; an ONNX
file's input format and tensor names follow cfimg.export.contract, the exporter's own definition.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from cfimg.card import ModelCard
from cfimg.errors import ModelFileError, UsageError
from cfimg.export.contract import (
    ANY_SIZE,
    FLOAT_NCHW,
    OUTPUT_NAMES,
    declared_input_format,
    model_feed,
)

ONNX_SUFFIXES = (".onnx",)


class Engine(Protocol):
    card: ModelCard
    device: str  # what actually runs it, e.g. "cpu", "cuda:0", "CUDAExecutionProvider"

    def predict(self, images_uint8_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, raw logits), each [N, len(card.class_names)] float32, for a
        batch of model-sized images."""
        ...


def is_onnx_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ONNX_SUFFIXES


def load_engine(
    model_path: str | Path, *, device: str = "auto", threads: int | None = None
) -> Engine:
    """Open a `.onnx` model with onnxruntime or a checkpoint/run folder with PyTorch."""
    if not Path(model_path).exists():
        raise ModelFileError(model_path, "file not found")
    if is_onnx_path(model_path):
        return OnnxEngine(model_path, device=device, threads=threads)
    return TorchEngine(model_path, device=device, threads=threads)


def resolve_torch_device(device: str) -> str:
    """'auto' picks the first CUDA device when there is one; 'cuda' without CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} was asked for, but PyTorch sees no CUDA GPU")
        return device
    raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


class TorchEngine:
    def __init__(self, model_path: str | Path, *, device: str = "auto", threads: int | None = None):
        import torch

        from cfimg.checkpoint import load_model
        from cfimg.models import ClassifierWithPreprocessing

        if threads:
            torch.set_num_threads(threads)
        network, self.card = load_model(model_path)
        self.device = resolve_torch_device(device)
        self.model = ClassifierWithPreprocessing(
            network, self.card.preprocessing, self.card.temperature
        ).to(self.device)
        self.model.eval()

    def predict(self, images_uint8_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            # writeable and contiguous: torch.from_numpy warns on read-only arrays
            writeable = np.require(images_uint8_nhwc, np.uint8, requirements=["C", "W"])
            batch = torch.from_numpy(writeable).to(self.device)
            probabilities, logits = self.model(batch)
        return probabilities.float().cpu().numpy(), logits.float().cpu().numpy()


def onnx_session_options(threads: int | None = None):
    """Threads that sleep instead of spinning: spinning starves decode workers on shared cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def onnx_providers(device: str) -> list:
    """Execution providers for `device`; asking for a missing GPU provider is an error, not a
    silent fall-back to CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    kind, _, index = device.partition(":")
    options = {"device_id": int(index)} if index else {}
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "auto":
        gpu = "CUDAExecutionProvider" in available
        return (
            [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
            if gpu
            else ["CPUExecutionProvider"]
        )
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(kind)
    if wanted is None:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda[:N] or tensorrt[:N]")
    if wanted not in available:
        raise UsageError(
            f"--device {device} needs onnxruntime's {wanted}, which this install lacks "
            f"(available: {', '.join(available)}); install cfimg[gpu] on a machine with CUDA"
        )
    chain = [(wanted, options)]
    if wanted == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        chain.append(("CUDAExecutionProvider", options))
    return [*chain, "CPUExecutionProvider"]


def read_onnx_card(model_path: str | Path, metadata: dict[str, str]) -> ModelCard:
    if "cfimg_card" not in metadata:
        raise ModelFileError(
            model_path, "an ONNX model, but not one exported by cfimg (no cfimg_card metadata)"
        )
    try:
        return ModelCard.from_onnx_metadata(metadata)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(model_path, f"damaged cfimg metadata ({exc})") from None


def onnx_twin(engine: Engine, *, threads: int | None = None) -> Engine:
    """For a checkpoint on the CPU, the same network exported to ONNX in memory (fp32, no file)
    and run by onnxruntime, which runs these CNNs several times faster than PyTorch eager here
    (BENCHMARKS.md, "Inference engines"); its probabilities match PyTorch's within export's fp32
    parity limit (1e-4). Any other engine, or a network that cannot be exported, comes back as
    it is. For scoring many photos (cfimg eval), where the export's few seconds pay."""
    if not isinstance(engine, TorchEngine) or engine.device != "cpu":
        return engine
    twin = network_twin(engine.model.network, engine.card, threads=threads)
    if twin is None:  # an architecture the tracer cannot take: PyTorch scores it, slower
        return engine
    twin.card = engine.card  # the checkpoint's own card object, not a copy read back
    return twin


def network_twin(network, card: ModelCard, *, threads: int | None = None) -> OnnxEngine | None:
    """`network` (with `card`'s preprocessing) as an fp32 ONNX graph in memory on onnxruntime's
    CPU provider; None where the tracer cannot take the network. Used by `onnx_twin` and by
    training's validation pass (cfimg.train.loop.validate)."""
    from cfimg.export.contract import UINT8_NHWC, set_metadata
    from cfimg.export.graph import build_onnx_model, resolve_opset

    opset = resolve_opset(None)
    try:
        model = build_onnx_model(network, card, input_format=UINT8_NHWC, opset=opset)
    except Exception:
        return None
    set_metadata(model, card, input_format=UINT8_NHWC, precision="fp32", opset=opset)
    return OnnxEngine(model.SerializeToString(), device="cpu", threads=threads)


class OnnxEngine:
    def __init__(
        self, model_path: str | Path | bytes, *, device: str = "auto", threads: int | None = None
    ):
        """`model_path`: an .onnx file, or a serialised model in memory (onnx_twin)."""
        import onnxruntime as ort

        if isinstance(model_path, bytes):
            source, model_path = model_path, "<model in memory>"
        else:
            source = str(model_path)
        try:
            self.session = ort.InferenceSession(
                source,
                sess_options=onnx_session_options(threads),
                providers=onnx_providers(device),
            )
        except UsageError:
            raise
        except Exception as exc:  # truncated, not protobuf, unsupported ops...
            first_line = (
                str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            )
            raise ModelFileError(model_path, f"not a loadable ONNX model ({first_line})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.card = read_onnx_card(model_path, metadata)
        self.device = self.session.get_providers()[0]
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        try:
            self.input_format = declared_input_format(
                metadata, len(model_input.shape), model_input.type == "tensor(float)"
            )
        except ValueError as exc:
            raise ModelFileError(model_path, str(exc)) from None

    @property
    def float_input(self) -> bool:
        """Exported with --float-input: NCHW float32, normalised here before each run."""
        return self.input_format == FLOAT_NCHW

    def predict(self, images_uint8_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = list(OUTPUT_NAMES)
        if self.input_format == ANY_SIZE:  # the graph resizes; a model-sized crop passes as is
            rows = [
                self.session.run(outputs, {self.input_name: image}) for image in images_uint8_nhwc
            ]
            probabilities = np.concatenate([row[0] for row in rows])
            logits = np.concatenate([row[1] for row in rows])
        else:
            feed = model_feed(self.input_format, self.card.preprocessing, images_uint8_nhwc)
            probabilities, logits = self.session.run(outputs, {self.input_name: feed})
        return probabilities.astype(np.float32), logits.astype(np.float32)
