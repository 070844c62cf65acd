"""The one way cfimg turns an image file into 8-bit RGB pixels.

Training, evaluation, prediction and explanation all call `load_rgb`, so a photo looks the same
to the model whichever command reads it. Every failure becomes one `ImageLoadError` carrying the
path and a short reason; no Pillow exception escapes, so a batch job can record it and go on.

Colour policy: pixels are taken as stored (embedded ICC profiles are not applied), because the
embedded ONNX model is meant to give the same answer in programs that decode with other
libraries, and most of those ignore ICC profiles too.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from cfimg.errors import ImageLoadError

# Pillow's own default limit (about 89.5 megapixels, a 12k x 7k photo). A value <= 0 or None
# turns the guard off.
DEFAULT_MAX_PIXELS: int = 89_478_485

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".gif",
        ".heic",
        ".heif",
        ".avif",
    }
)
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})

# JPEG-coded formats whose decoder can scale down by 1/2, 1/4 or 1/8 while decoding.
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# cfimg enforces its own pixel limit (below), so Pillow's warning for large images is noise that
# would otherwise be printed once per large photo in a batch run; so are Pillow's UserWarnings
# about damaged metadata ("Corrupt EXIF data", "Truncated File Read"): the file either decodes or
# fails with an ImageLoadError. Filters, not catch_warnings(), because the latter is not
# thread-safe and decoding runs in worker threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
_PILLOW_LIMIT_LOCK = threading.Lock()
_T = TypeVar("_T")


class _Failure(Exception):
    """Internal: a reason to fail, turned into ImageLoadError with the path by `load_rgb`."""


def is_image_path(path: str | Path) -> bool:
    """True when the file name has an image extension cfimg reads (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


@functools.cache
def _register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF (phone photos) once, on first use; False if unavailable."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def load_rgb(
    path: str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side_px: int | None = None,
) -> Image.Image:
    """Read `path` as an 8-bit RGB image, EXIF orientation applied.

    `max_pixels` rejects images whose header declares more pixels before any decoding (<= 0 or
    None: no limit). `min_side_px` allows a JPEG to be decoded at 1/2, 1/4 or 1/8 scale while its
    shorter side stays >= min_side_px: several times faster when the model input is much smaller
    than the photo. Raises ImageLoadError(path, reason) for every failure.
    """
    return _guarded(path, max_pixels, lambda: _decode(path, max_pixels, min_side_px))


def image_size(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as `load_rgb` would return it, read from the header without decoding."""
    return _guarded(path, max_pixels, lambda: _header_size(path, max_pixels))


def _guarded(path: str | Path, max_pixels: int | None, read: Callable[[], _T]) -> _T:
    """Run `read` with every failure turned into ImageLoadError, and with Pillow's global
    decompression-bomb limit replaced by `max_pixels`."""
    _register_heif()
    try:
        _check_file(path)
        try:
            return read()
        except Image.DecompressionBombError as exc:
            if not _limit_exceeds_pillows(max_pixels):
                raise _Failure(_too_large_reason(exc, max_pixels)) from None
            # The caller allows more pixels than Pillow's global hard limit: lift it for this
            # one read; our own check (_check_pixels) still applies.
            with _PILLOW_LIMIT_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    return read()
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except _Failure as exc:
        raise ImageLoadError(path, str(exc)) from None
    except MemoryError:
        raise ImageLoadError(path, "out of memory while decoding") from None


def _header_size(path: str | Path, max_pixels: int | None) -> tuple[int, int]:
    try:
        with open(path, "rb") as handle, _open_image(handle) as image:
            _check_pixels(image.size, max_pixels)
            width, height = image.size
            if _orientation(image) in (5, 6, 7, 8):  # the ones that swap width and height
                width, height = height, width
            return width, height
    except (_Failure, Image.DecompressionBombError, MemoryError):
        raise
    except OSError as exc:
        raise _Failure(_os_error_reason(exc)) from None
    except Exception as exc:  # Pillow plugins raise many kinds on damaged headers
        raise _Failure(_decode_error_reason(exc)) from None


def _check_file(path: str | Path) -> None:
    """Fail early with a precise reason for paths that are not readable regular files."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _Failure("dangling symlink" if os.path.islink(path) else "file not found") from None
    except OSError as exc:
        raise _Failure(_os_error_reason(exc)) from None
    if stat.S_ISDIR(info.st_mode):
        raise _Failure("is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device could block a read forever
        raise _Failure("not a regular file")
    if info.st_size == 0:
        raise _Failure("empty file")


def _decode(path: str | Path, max_pixels: int | None, min_side_px: int | None) -> Image.Image:
    try:
        with open(path, "rb") as handle, _open_image(handle) as image:
            _check_pixels(image.size, max_pixels)
            orientation = _orientation(image)
            if min_side_px and image.format in _DRAFT_FORMATS:
                image.draft("RGB", (min_side_px, min_side_px))
            image.load()
            rgb = _to_rgb(image)
    except (_Failure, Image.DecompressionBombError, MemoryError):
        raise
    except OSError as exc:
        raise _Failure(_os_error_reason(exc)) from None
    except Exception as exc:  # Pillow plugins raise many kinds on damaged data
        raise _Failure(_decode_error_reason(exc)) from None
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return rgb.transpose(method) if method is not None else rgb


def _open_image(handle) -> Image.Image:
    try:
        return Image.open(handle)
    except UnidentifiedImageError:
        suffix = os.path.splitext(getattr(handle, "name", ""))[1].lower()
        if suffix in HEIF_EXTENSIONS and not _register_heif():
            raise _Failure("HEIC/HEIF support is not installed (pip install pillow-heif)") from None
        handle.seek(0)
        sniffed = _sniff_format(handle.read(16))
        if sniffed:  # the right signature but no readable header: cut off or damaged early
            raise _Failure(f"truncated or damaged {sniffed} header") from None
        raise _Failure("not an image file") from None


def _sniff_format(head: bytes) -> str | None:
    """The format a file's first bytes claim, so a damaged photo is not called 'not an image'."""
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        return "HEIF"
    return None


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    pixels = size[0] * size[1]
    if pixels <= 0:
        raise _Failure(f"invalid image size {size[0]}x{size[1]}")
    if max_pixels and max_pixels > 0 and pixels > max_pixels:
        raise _Failure(f"image too large ({pixels} pixels > limit {max_pixels})")


def _limit_exceeds_pillows(max_pixels: int | None) -> bool:
    """True when our limit lets through images that Pillow's global hard limit refuses."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is None:
        return False
    return not max_pixels or max_pixels <= 0 or max_pixels > 2 * pillow_limit


def _too_large_reason(exc: Exception, max_pixels: int | None) -> str:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = match.group(1) if match else "too many"
    return f"image too large ({pixels} pixels > limit {max_pixels})"


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # damaged EXIF must not make a readable photo unreadable
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, high bit depths scaled down."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(image), "L").convert("RGB")
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            return _composite_on_white(image.convert("RGBA"))
        return image.convert("RGB")
    except (ValueError, KeyError):
        raise _Failure(f"unsupported mode {mode}") from None


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """Product photos with transparency are cut-outs; white is the usual listing background."""
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _scale_to_uint8(image: Image.Image) -> np.ndarray:
    """Map one-channel high-bit-depth pixels to 0..255 by scaling, never by clipping.

    16-bit modes and 'I' holding 0..65535 (how Pillow reads 16-bit PNG/TIFF) are divided by 257,
    so 65535 becomes 255. 'F' in 0..1 is multiplied by 255; 'F' in 0..255 is kept. Anything
    else (negative or larger values) is stretched from its minimum to its maximum.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif image.mode != "F" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _os_error_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    message = str(exc)
    if "truncated" in message.lower() or "broken data stream" in message:
        return "truncated image data"
    if exc.strerror:
        return exc.strerror.lower()
    return f"damaged image data ({message})" if message else "damaged image data"


def _decode_error_reason(exc: Exception) -> str:
    message = str(exc).strip()
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return "truncated image data"
    detail = message.splitlines()[0][:120] if message else type(exc).__name__
    return f"damaged image data ({detail})"
