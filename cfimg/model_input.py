"""The one image path: file -> decoded, oriented, 8-bit RGB photo -> the network's uint8 input.

Train (through a `TrainView`), eval, export's check images and predict all call
`load_model_input`, so a photo reaches the network the same way whichever command reads it, with
the interpolation the model card names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cfimg.errors import ImageLoadError, one_line
from cfimg.imageio import DEFAULT_MAX_PIXELS, image_size, load_rgb
from cfimg.preprocess import Preprocessing, preprocess_image

if TYPE_CHECKING:  # training views need torch; predict's decode workers must not import it
    import torch

    from cfimg.augment import AugmentConfig


@dataclass(frozen=True)
class TrainView:
    """A random training view instead of the evaluation crop: the augmentation and its draws."""

    aug: AugmentConfig
    generator: torch.Generator


@dataclass(slots=True)
class ModelInput:
    """A path's model-sized pixels, or why there are none. `width`/`height` are the original
    photo's (EXIF rotation applied) when asked for and its header could be read; `image` is the
    decoded photo when asked for."""

    path: str
    pixels: np.ndarray | None
    error: str = ""
    width: int | None = None
    height: int | None = None
    image: Image.Image | None = None

    @property
    def ok(self) -> bool:
        return self.pixels is not None


def decode_side_px(prep: Preprocessing, view: TrainView | None = None) -> int:
    """Shorter side a JPEG may be draft-decoded down to without losing what the input needs."""
    if view is None:
        return prep.resize_px
    from cfimg.augment import decode_size_for_training

    return decode_size_for_training(prep, view.aug)


def load_model_input(
    path: str,
    prep: Preprocessing,
    *,
    view: TrainView | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    with_size: bool = False,
    keep_image: bool = False,
) -> ModelInput:
    """Decode `path` and make the network's uint8 [S, S, 3] input; never raises for a bad file.

    Every failure (unreadable, damaged, too large, an exotic codec error, out of memory) comes
    back as `ModelInput.error`, one line, so a batch job records it and goes on.
    """
    path = str(path)
    try:
        image = load_rgb(path, max_pixels=max_pixels, min_side_px=decode_side_px(prep, view))
        if view is None:
            pixels = preprocess_image(image, prep)
        else:
            from cfimg.augment import augment_image

            pixels = augment_image(image, prep, view.aug, view.generator)
    except ImageLoadError as exc:
        width, height = _header_size(path) if with_size else (None, None)
        return ModelInput(path, None, one_line(exc.reason), width, height)
    except MemoryError:
        return ModelInput(path, None, "out of memory while decoding")
    except Exception as exc:  # a bug or an exotic codec failure must cost one file, not the run
        return ModelInput(path, None, one_line(f"decode failed ({exc!r})"))
    width = height = None
    if with_size:
        try:
            width, height = image_size(path, max_pixels=None)
        except Exception:  # the file changed under us; the draft size is the best we know
            width, height = image.size
    return ModelInput(path, pixels, "", width, height, image if keep_image else None)


def _header_size(path: str) -> tuple[int | None, int | None]:
    """The size a damaged or oversized file declares, when its header says; else unknown."""
    try:
        return image_size(path, max_pixels=None)
    except Exception:
        return None, None
