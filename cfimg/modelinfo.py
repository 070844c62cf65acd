"""`cfimg info`: what a model file is, read from the file alone.

Also the cheap validation every command can run on an ONNX file before handing it to
onnxruntime, so that a damaged, truncated or foreign file gets one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfimg.card import ModelCard
from cfimg.errors import ModelFileError

_ONNX_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    10: "float16",
    11: "float64",
}
# Flat metadata keys repeated from the card; the card itself is shown once.
_EXPORT_KEYS = ("input_format", "precision", "opset", "export_date_utc", "input_shape")


def load_onnx_model(path: str | Path):
    """Parse and sanity-check an ONNX file (no weights in external files); ModelFileError with
    the reason when it is missing, empty, truncated, not ONNX, or fails onnx.checker."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "empty file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, or anything protobuf makes of random bytes
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "parse error"
        raise ModelFileError(path, f"not a readable ONNX model, or truncated ({reason})") from None
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        raise ModelFileError(path, "not an ONNX model (no graph), or truncated")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "invalid"
        raise ModelFileError(path, f"damaged ONNX model ({reason})") from None
    return model


def onnx_metadata(model) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def validate_onnx_file(path: str | Path) -> ModelCard:
    """The card of a cfimg-exported ONNX file; ModelFileError if damaged or foreign."""
    from cfimg.engines import read_onnx_card

    return read_onnx_card(path, onnx_metadata(load_onnx_model(path)))


def model_info(path: str | Path) -> dict:
    """A JSON-able description of a .onnx file, a .pt checkpoint or a run folder."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return onnx_info(path)
    info = checkpoint_info(path)
    if path.is_dir():
        info["run_folder"] = str(path)
        info["exports"] = sorted(p.name for p in path.glob("*.onnx"))
    return info


def onnx_info(path: str | Path) -> dict:
    from cfimg.engines import read_onnx_card

    path = Path(path)
    model = load_onnx_model(path)
    metadata = onnx_metadata(model)
    card = read_onnx_card(path, metadata)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "kind": "onnx",
        "size_bytes": path.stat().st_size,
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_tensor_info(value) for value in model.graph.input],
        "outputs": [_tensor_info(value) for value in model.graph.output],
        "export": {key: metadata[key] for key in _EXPORT_KEYS if key in metadata},
        "card": card.to_dict(),
        "preprocessing": card.preprocessing.describe(),
    }


def checkpoint_info(path: str | Path) -> dict:
    from cfimg.checkpoint import card_from_checkpoint, load_checkpoint, resolve_checkpoint_path

    checkpoint = resolve_checkpoint_path(path)
    payload = load_checkpoint(checkpoint)
    card = card_from_checkpoint(payload, checkpoint)
    state = payload.get("model") if isinstance(payload.get("model"), dict) else {}
    parameters = sum(
        int(tensor.numel())
        for name, tensor in state.items()
        if hasattr(tensor, "numel") and not name.endswith(_BUFFER_SUFFIXES)
    )
    return {
        "path": str(checkpoint),
        "kind": "checkpoint",
        "size_bytes": checkpoint.stat().st_size,
        "format": payload.get("format"),
        "epoch": _plain(payload.get("epoch")),
        "parameters": parameters,
        "training_state": sorted(k for k in payload if k not in ("format", "card", "model")),
        "card": card.to_dict(),
        "preprocessing": card.preprocessing.describe(),
    }


_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _plain(value):
    """A JSON-able version of a checkpoint value (tensors become numbers or lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _tensor_info(value) -> dict:
    tensor = value.type.tensor_type
    shape = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
    return {
        "name": value.name,
        "type": _ONNX_TYPES.get(tensor.elem_type, str(tensor.elem_type)),
        "shape": shape,
    }
