"""Specification of `cfimg.imageio.load_rgb`: every file kind becomes 8-bit RGB, every bad file
becomes one ImageLoadError with a reason."""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cfimg.errors import ImageLoadError
from cfimg.imageio import DEFAULT_MAX_PIXELS, image_size, is_image_path, load_rgb

RED = (200, 30, 40)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> None:
    assert image.mode == "RGB"
    assert image.size == size


def assert_colour(image: Image.Image, colour: tuple[int, int, int], tolerance: int) -> None:
    mean = pixels(image).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.array(colour)).max() <= tolerance, mean


def opened_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def solid(colour=RED, size=(48, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def two_halves(size=(60, 40)) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("suffix", "save_args", "tolerance"),
    [
        (".jpg", {"quality": 95}, 4),
        (".png", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".bmp", {}, 0),
        (".tiff", {}, 0),
    ],
)
def test_common_formats_load_as_rgb_with_their_colours(tmp_path, suffix, save_args, tolerance):
    path = tmp_path / f"photo{suffix}"
    solid().save(path, **save_args)
    image = load_rgb(path)
    assert_rgb(image, (48, 32))
    assert_colour(image, RED, tolerance)


def test_uppercase_extension_is_an_image_path_and_loads(tmp_path):
    path = tmp_path / "PHOTO.JPG"
    solid().save(path, format="JPEG")
    assert is_image_path(path)
    assert not is_image_path(tmp_path / "notes.txt")
    assert_rgb(load_rgb(path), (48, 32))


def test_heic_from_phones_loads(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    solid().save(path, quality=95)
    image = load_rgb(path)
    assert_rgb(image, (48, 32))
    assert_colour(image, RED, 8)


def test_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = load_rgb(path)
    assert_rgb(image, (48, 32))
    assert_colour(image, (255, 0, 0), 2)


def test_cmyk_jpeg_becomes_rgb_with_the_same_colour(tmp_path):
    path = tmp_path / "print.jpg"
    solid().convert("CMYK").save(path, quality=95)
    assert opened_mode(path) == "CMYK"
    image = load_rgb(path)
    assert_rgb(image, (48, 32))
    assert_colour(image, RED, 6)


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "grey.jpg"
    solid(90, mode="L").save(path, quality=95)
    values = pixels(load_rgb(path))
    assert np.abs(values - 90).max() <= 3
    assert (values[..., 0] == values[..., 2]).all()


def gradient16() -> np.ndarray:
    """0 .. 65535 across the width, so scaling (not clipping) is visible."""
    return np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))


def expected_from16(values: np.ndarray) -> np.ndarray:
    return np.rint(values / 257.0).astype(int)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(gradient16()).save(path)
    assert opened_mode(path) == "I;16"
    values = pixels(load_rgb(path))
    assert values.shape == (8, 64, 3)
    assert (values[..., 1] == expected_from16(gradient16())).all()
    assert values.max() == 255 and values.min() == 0


def test_32_bit_integer_tiff_holding_16_bit_values_is_scaled(tmp_path):
    path = tmp_path / "int.tif"
    Image.fromarray(gradient16().astype(np.int32), "I").save(path)
    assert opened_mode(path) == "I"
    values = pixels(load_rgb(path))
    assert (values[..., 0] == expected_from16(gradient16())).all()


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    path = tmp_path / "float.tif"
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (8, 1))
    Image.fromarray(ramp, "F").save(path)
    assert opened_mode(path) == "F"
    values = pixels(load_rgb(path))
    assert (values[..., 2] == np.rint(ramp * 255)).all()


def test_float_tiff_outside_known_ranges_is_stretched(tmp_path):
    path = tmp_path / "float-wide.tif"
    ramp = np.tile(np.linspace(-1000.0, 3000.0, 64, dtype=np.float32), (8, 1))
    Image.fromarray(ramp, "F").save(path)
    values = pixels(load_rgb(path))
    assert values[0, 0, 0] == 0 and values[0, -1, 0] == 255
    assert (np.diff(values[0, :, 0]) >= 0).all()


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "cutout.png"
    image = Image.new("RGBA", (40, 10), (*RED, 255))
    image.paste((0, 0, 0, 0), (0, 0, 10, 10))  # transparent black: must turn white
    image.paste((0, 0, 0, 128), (10, 0, 20, 10))  # half-transparent black: mid grey
    image.save(path)
    values = pixels(load_rgb(path))
    assert (values[:, :10] == 255).all()
    assert np.abs(values[:, 10:20] - 127).max() <= 1
    assert (values[:, 20:] == RED).all()


def test_palette_image_with_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (20, 10), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    image.paste(0, (0, 0, 10, 10))
    image.save(path, transparency=0)
    values = pixels(load_rgb(path))
    assert (values[:, :10] == 255).all()
    assert (values[:, 10:] == RED).all()


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    image = Image.new("LA", (20, 10), (100, 255))
    image.paste((100, 0), (0, 0, 10, 10))
    image.save(path)
    values = pixels(load_rgb(path))
    assert (values[:, :10] == 255).all()
    assert (values[:, 10:] == 100).all()


def test_bilevel_image_becomes_black_and_white_rgb(tmp_path):
    path = tmp_path / "bilevel.png"
    image = Image.new("1", (20, 10), 0)
    image.paste(1, (10, 0, 20, 10))
    image.save(path)
    values = pixels(load_rgb(path))
    assert (values[:, :10] == 0).all() and (values[:, 10:] == 255).all()


def save_with_orientation(image: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, quality=95, exif=exif.tobytes())


def assert_red_on_top(image: Image.Image) -> None:
    """Orientation 6 means 'turn 90 degrees clockwise to view': the red left half goes on top."""
    values = pixels(image)
    height = values.shape[0]
    assert (
        values[: height // 2 - 2, :, 0].mean() > 200 and values[: height // 2 - 2, :, 2].mean() < 50
    )
    assert values[height // 2 + 2 :, :, 2].mean() > 200


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    save_with_orientation(two_halves((60, 40)), path, 6)
    image = load_rgb(path)
    assert_rgb(image, (40, 60))
    assert_red_on_top(image)
    assert image_size(path) == (40, 60)


def test_exif_orientation_is_applied_after_a_reduced_scale_decode(tmp_path):
    path = tmp_path / "rotated-large.jpg"
    save_with_orientation(two_halves((800, 600)), path, 6)
    image = load_rgb(path, min_side_px=100)
    assert image.size == (150, 200)  # decoded at 1/4 scale, then turned upright
    assert_red_on_top(image)


def photo_like(size=(1600, 1200), seed=0) -> Image.Image:
    """Smooth shading plus fine texture and edges, like a product photo."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([xs / size[0] * 200, ys / size[1] * 200, (xs + ys) % 256], axis=-1)
    stripes = ((xs // 40 + ys // 40) % 2)[..., None] * 40
    noise = rng.normal(0, 12, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(base + stripes + noise, 0, 255).astype(np.uint8))


def resize_shorter_side(image: Image.Image, side_px: int) -> Image.Image:
    scale = side_px / min(image.size)
    target = (round(image.size[0] * scale), round(image.size[1] * scale))
    return image.resize(target, Image.Resampling.BILINEAR, reducing_gap=None)


def test_jpeg_fast_path_decodes_smaller_and_matches_a_full_decode(tmp_path):
    path = tmp_path / "big.jpg"
    photo_like().save(path, quality=90)
    fast = load_rgb(path, min_side_px=256)
    full = load_rgb(path)
    assert full.size == (1600, 1200)
    assert min(fast.size) >= 256 and fast.size[0] < 1600  # 1/4 scale: 400 x 300
    difference = np.abs(
        pixels(resize_shorter_side(fast, 256)) - pixels(resize_shorter_side(full, 256))
    )
    assert difference.mean() < 3.0


def test_fast_path_never_decodes_below_the_requested_side(tmp_path):
    path = tmp_path / "medium.jpg"
    photo_like((500, 300)).save(path)
    assert load_rgb(path, min_side_px=160).size == (500, 300)  # 1/2 would give 150 < 160
    assert load_rgb(path, min_side_px=150).size == (250, 150)


def test_fast_path_is_ignored_for_formats_without_it(tmp_path):
    path = tmp_path / "big.png"
    solid(size=(800, 600)).save(path)
    assert load_rgb(path, min_side_px=100).size == (800, 600)


def load_error(path: Path, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(path, **kwargs)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_truncated_jpeg_is_reported_as_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    photo_like((200, 150)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert load_error(path).reason == "truncated image data"


def test_truncated_jpeg_is_caught_by_the_reduced_scale_decode_too(tmp_path):
    path = tmp_path / "cut-large.jpg"
    buffer = io.BytesIO()
    photo_like((800, 600)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 9 // 10])
    assert load_error(path, min_side_px=64).reason == "truncated image data"


def test_truncated_png_is_reported_as_truncated(tmp_path):
    path = tmp_path / "cut.png"
    buffer = io.BytesIO()
    photo_like((200, 150)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert load_error(path).reason == "truncated image data"


def test_jpeg_cut_inside_its_header_is_not_called_a_non_image(tmp_path):
    path = tmp_path / "stub.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0")
    assert load_error(path).reason == "truncated or damaged JPEG header"


def test_empty_file_is_reported_as_empty(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert load_error(path).reason == "empty file"


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    assert load_error(path).reason == "not an image file"


def test_missing_file_is_reported(tmp_path):
    assert load_error(tmp_path / "absent.jpg").reason == "file not found"


def test_dangling_symlink_is_reported(tmp_path):
    path = tmp_path / "link.jpg"
    path.symlink_to(tmp_path / "gone.jpg")
    assert load_error(path).reason == "dangling symlink"


def test_directory_is_not_an_image(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    assert "directory" in load_error(path).reason


def test_fifo_is_refused_instead_of_blocking(tmp_path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    assert load_error(path).reason == "not a regular file"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root can read a chmod 000 file; see the monkeypatched variant below",
)
def test_unreadable_file_is_reported_as_permission_denied(tmp_path):
    path = tmp_path / "locked.jpg"
    solid().save(path)
    path.chmod(0)
    assert load_error(path).reason == "permission denied"


def test_permission_error_on_open_is_reported_as_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    solid().save(path)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    assert load_error(path).reason == "permission denied"


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(100_000, 100_000))
    reason = load_error(path).reason
    assert reason == f"image too large (10000000000 pixels > limit {DEFAULT_MAX_PIXELS})"


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "photo.png"
    solid(size=(48, 32)).save(path)
    assert load_error(path, max_pixels=1000).reason == "image too large (1536 pixels > limit 1000)"
    assert load_rgb(path, max_pixels=1536).size == (48, 32)


def test_pixel_limit_does_not_depend_on_pillows_global_limit(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    solid(size=(48, 32)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this image
    assert load_rgb(path, max_pixels=2000).size == (48, 32)
    assert load_rgb(path, max_pixels=None).size == (48, 32)
    assert Image.MAX_IMAGE_PIXELS == 100  # and the global is left as it was


def test_image_size_reads_the_header_under_the_same_rules(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    solid(size=(48, 32)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert image_size(path, max_pixels=None) == (48, 32)
    with pytest.raises(ImageLoadError, match="image too large"):
        image_size(path, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="not an image file"):
        (tmp_path / "notes.png").write_text("text")
        image_size(tmp_path / "notes.png")


def test_bomb_is_refused_even_when_pillows_global_limit_is_off(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(50_000, 50_000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_error(path).reason.startswith("image too large (2500000000 pixels")


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    photo_like((64, 48), seed=1).save(buffer, format=fmt)
    return buffer.getvalue()


VALID_FILES = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(sorted(VALID_FILES)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def test_damaged_files_either_load_as_rgb_or_raise_image_load_error(tmp_path, fmt, cut, flips):
    data = bytearray(VALID_FILES[fmt][: max(1, int(len(VALID_FILES[fmt]) * cut))])
    for position, value in flips:
        data[min(len(data) - 1, int(position * len(data)))] = value
    path = tmp_path / f"damaged.{fmt.lower()}"
    path.write_bytes(bytes(data))
    try:
        image = load_rgb(path)
    except ImageLoadError as exc:
        assert exc.reason
    else:
        assert image.mode == "RGB"
