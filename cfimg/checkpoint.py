"""Checkpoints: a dict of tensors and plain values, written atomically, read with weights_only."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from cfimg.card import ModelCard
from cfimg.errors import ModelFileError
from cfimg.fileio import atomic_write_bytes

CHECKPOINT_FORMAT = "cfimg.checkpoint/1"


def save_checkpoint(path: str | Path, *, card: ModelCard, model_state: dict, **extra) -> None:
    """Write `model_state` (the weights to use for inference), the card, and any training state.

    `extra` values must be tensors, numbers, strings, lists or dicts of those, so that the file
    loads with `weights_only=True`.
    """
    payload = {"format": CHECKPOINT_FORMAT, "card": card.to_dict(), "model": model_state, **extra}
    _write_payload(path, payload)


def _write_payload(path: str | Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run folder means its best.pt (or last.pt when training never validated)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ModelFileError(path, "run folder holds neither best.pt nor last.pt")
    return path


def _load_failure(path: Path, exc: Exception) -> str:
    """torch.load's error in a few words a user can act on (its own messages are long or bare
    numbers)."""
    message = str(exc).strip()
    code_refused = "Unsupported global" in message or "Unsupported operand" in message
    with open(path, "rb") as handle:
        head = handle.read(2)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        if code_refused:
            return "it holds pickled objects other than tensors; refused, as they could run code"
        if "central directory" in message or "zip archive" in message:
            return "truncated or damaged zip archive"
        return message.splitlines()[0][:160] if message else type(exc).__name__
    if head == b"PK":
        return "truncated or damaged zip archive"
    return "not a PyTorch file: damaged, or another kind of file"


def load_checkpoint(path: str | Path) -> dict:
    path = resolve_checkpoint_path(path)
    if not path.exists():
        raise ModelFileError(path, "file not found")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "empty file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols a user can't fix
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code in it, random bytes...
        raise ModelFileError(
            path, f"not a loadable cfimg checkpoint ({_load_failure(path, exc)})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(path, "not a cfimg checkpoint (no cfimg format marker)")
    return payload


def card_from_checkpoint(payload: dict, path: str | Path = "checkpoint") -> ModelCard:
    try:
        return ModelCard.from_dict(payload["card"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"checkpoint has a damaged model card ({exc})") from None


def load_model(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """The network (eval mode, on CPU) and its card, from a checkpoint file or run folder."""
    from cfimg.models import create_model

    payload = load_checkpoint(path)
    card = card_from_checkpoint(payload, path)
    model = create_model(card.arch, head=card.head, pretrained=False)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0][:160]
        raise ModelFileError(path, f"weights do not fit {card.arch} ({first_line})") from None
    return model.eval(), card


def update_checkpoint_card(path: str | Path, card: ModelCard) -> None:
    """Replace the card stored in a checkpoint (threshold, temperature...), atomically."""
    path = resolve_checkpoint_path(path)
    payload = load_checkpoint(path)
    payload["card"] = card.to_dict()
    _write_payload(path, payload)
