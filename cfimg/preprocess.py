"""The one definition of evaluation preprocessing, shared by eval, export, predict and embedders.

Rule: resize so the shorter side is `resize_px` (Pillow, antialiased), centre-crop a square of
`img_size_px`, feed uint8 RGB. Converting to float and normalising with mean/std happens inside
the model (cfimg.models.ClassifierWithPreprocessing), so it travels with the exported ONNX graph.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN_STD = (0.5, 0.5, 0.5)  # TensorFlow-trained weights (EfficientNet-Lite) expect [-1, 1]

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass(frozen=True)
class Preprocessing:
    """What a photo goes through before the network sees it."""

    img_size_px: int = 224  # side of the square crop the network sees
    resize_px: int = 224  # the shorter side is resized to this before the centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # Pillow filter, antialiased when shrinking

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {sorted(_PIL_FILTERS)}"
            )
        if self.resize_px < self.img_size_px:
            raise ValueError(
                f"resize_px {self.resize_px} is smaller than img_size_px {self.img_size_px}"
            )

    @property
    def pil_filter(self) -> Image.Resampling:
        return _PIL_FILTERS[self.interpolation]

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        return cls(
            img_size_px=int(values["img_size_px"]),
            resize_px=int(values["resize_px"]),
            mean=tuple(float(v) for v in values["mean"]),
            std=tuple(float(v) for v in values["std"]),
            interpolation=str(values.get("interpolation", "bilinear")),
        )

    def with_size(self, img_size_px: int) -> Preprocessing:
        """The same rule at another input size, keeping the crop fraction."""
        resize_px = max(img_size_px, round(img_size_px * self.resize_px / self.img_size_px))
        return Preprocessing(img_size_px, resize_px, self.mean, self.std, self.interpolation)

    def describe(self) -> str:
        """The rule in words, for metadata read by people writing embedders."""
        return (
            f"decode to 8-bit RGB with EXIF orientation applied; resize so the shorter side is "
            f"{self.resize_px} px (other side floor(x*{self.resize_px}/shorter+0.5)) with Pillow "
            f"{self.interpolation} (antialiased); centre-crop {self.img_size_px}x{self.img_size_px}"
            " "
            f"at left=(w-{self.img_size_px})//2, top=(h-{self.img_size_px})//2; JPEGs may be "
            f"decoded at reduced scale first with Pillow draft('RGB', ({self.resize_px}, "
            f"{self.resize_px}))"
        )


def resized_size(width: int, height: int, shorter_side_px: int) -> tuple[int, int]:
    """Size after scaling the shorter side to `shorter_side_px`; round half up, as embedders do."""
    shorter = min(width, height)
    new_width = max(shorter_side_px, math.floor(width * shorter_side_px / shorter + 0.5))
    new_height = max(shorter_side_px, math.floor(height * shorter_side_px / shorter + 0.5))
    if width <= height:
        new_width = shorter_side_px
    if height <= width:
        new_height = shorter_side_px
    return new_width, new_height


def center_crop_box(width: int, height: int, size_px: int) -> tuple[int, int, int, int]:
    left = (width - size_px) // 2
    top = (height - size_px) // 2
    return left, top, left + size_px, top + size_px


def preprocess_image(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """RGB PIL image -> uint8 array [img_size_px, img_size_px, 3], the model's input."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = resized_size(image.width, image.height, prep.resize_px)
    if size != image.size:
        image = image.resize(size, prep.pil_filter)
    image = image.crop(center_crop_box(image.width, image.height, prep.img_size_px))
    return np.asarray(image, dtype=np.uint8)


def normalize_nchw(pixels_uint8_nhwc: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW (x/255 - mean)/std: the input of a --float-input model.

    The network's own copy of this step is ClassifierWithPreprocessing.normalize (in the graph).
    """
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(1, 3, 1, 1)
    chw = pixels_uint8_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return np.ascontiguousarray((chw - mean) / std)
