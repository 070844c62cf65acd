"""Grad-CAM: where in a photo the model finds counterfeit evidence.

The heatmap is Grad-CAM (Selvaraju et al., 2017) on the last convolutional feature map, taken for
the counterfeit log-odds (logit_counterfeit - logit_genuine), the quantity that decides the
verdict. It is computed in the model's view (the resized, centre-cropped square of
cfimg.preprocess) and mapped back onto the original photo for overlays and peak locations; the
parts of the photo outside the model's crop are shown dimmed, because the model never saw them.
Implemented with one forward hook and torch.autograd.grad (about 30 lines), so no extra
dependency is needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cfimg.card import VERDICT_COUNTERFEIT, VERDICT_UNCERTAIN, ModelCard
from cfimg.errors import ImageLoadError
from cfimg.fileio import atomic_open, atomic_write_bytes
from cfimg.preprocess import Preprocessing, center_crop_box, preprocess_image, resized_size

DEFAULT_MAX_SIDE_PX = 1024
SUMMARY_NAME = "explain.csv"
_VERDICT_COLOURS = {
    VERDICT_COUNTERFEIT: (178, 34, 34),
    VERDICT_UNCERTAIN: (196, 120, 0),
}
_GENUINE_COLOUR = (31, 119, 60)


@dataclass(frozen=True)
class ExplainResult:
    """One explained image; `error` is set (and the rest empty) when the image failed."""

    path: str
    p_counterfeit: float | None = None
    verdict: str = ""
    overlay_path: str = ""
    heatmap_path: str = ""
    peak_x: float | None = None  # heatmap peak in original-photo pixels (None: no evidence)
    peak_y: float | None = None
    width: int | None = None
    height: int | None = None
    error: str = ""


# ---------------------------------------------------------------- Grad-CAM in the model's view


def gradcam_batch(
    network, card: ModelCard, images_uint8_nhwc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps [N, S, S] in [0, 1] (S = the model's input size) and p_counterfeit [N].

    Each heatmap is scaled so its maximum is 1; an all-zero heatmap means no position raises the
    counterfeit log-odds. The explained layer is the head API's feature map (models.feature_module);
    for a head that runs on tiles, each tile's map is laid where the tile sits in the frame and
    overlapping tiles are averaged.
    """
    import torch
    import torch.nn.functional as F

    from cfimg.models import (
        ClassifierWithPreprocessing,
        cut_tiles,
        feature_module,
        mean_over_tiles,
        network_input_px,
        tile_origins,
    )

    prep = card.preprocessing
    size = prep.img_size_px
    origins = tile_origins(network, size, size)  # [(0, 0)] unless the head runs on tiles
    tile_px = network_input_px(network, size)
    layer = feature_module(network)
    device = next(network.parameters()).device
    wrapper = ClassifierWithPreprocessing(network, prep, card.temperature).to(device)
    captured: list = []
    handle = layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        with torch.enable_grad():
            batch = torch.from_numpy(np.array(images_uint8_nhwc, dtype=np.uint8)).to(device)
            # requires_grad on the input keeps the graph alive even for a frozen network
            inputs = wrapper.normalize(batch).requires_grad_(True)
            tile_logits = network(cut_tiles(network, inputs))
            activation = captured[-1]
            positive = card.counterfeit_index
            log_odds = tile_logits[:, positive] - tile_logits[:, 1 - positive]
            (gradients,) = torch.autograd.grad(log_odds.sum(), activation)
    finally:
        handle.remove()
    with torch.no_grad():
        channel_weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((channel_weights * activation).sum(dim=1, keepdim=True)).float()
        cam = F.interpolate(cam, size=(tile_px,) * 2, mode="bilinear", align_corners=False)
        cam = _stitch_tiles(cam[:, 0], origins, size)
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        heatmaps = (cam / peak).clamp(0.0, 1.0)
        # the verdict's logits: the mean over the tiles, as ClassifierWithPreprocessing takes it
        logits = mean_over_tiles(tile_logits.detach().float(), len(origins))
        probabilities = torch.softmax(logits / card.temperature, dim=1)
        p_counterfeit = probabilities[:, positive]
    return heatmaps.cpu().numpy(), p_counterfeit.cpu().numpy()


def _stitch_tiles(tile_maps, origins: list[tuple[int, int]], size_px: int):
    """[N*K, t, t] maps of each image's K tiles -> [N, S, S] over the frame, the mean where
    tiles overlap (a head without tiles: the one map as it is)."""
    import torch

    if len(origins) == 1:
        return tile_maps
    tile_px = tile_maps.shape[-1]
    per_image = tile_maps.reshape(-1, len(origins), tile_px, tile_px)
    like = dict(dtype=tile_maps.dtype, device=tile_maps.device)
    frame = torch.zeros(per_image.shape[0], size_px, size_px, **like)
    covered = torch.zeros(size_px, size_px, **like)
    for index, (top, left) in enumerate(origins):
        frame[:, top : top + tile_px, left : left + tile_px] += per_image[:, index]
        covered[top : top + tile_px, left : left + tile_px] += 1
    return frame / covered.clamp_min(1)


def gradcam(network, card: ModelCard, image_uint8_hwc: np.ndarray) -> np.ndarray:
    """The Grad-CAM heatmap [S, S] in [0, 1] of one model-sized uint8 RGB image."""
    heatmaps, _p = gradcam_batch(network, card, image_uint8_hwc[None])
    return heatmaps[0]


# ------------------------------------------------------- from the model's view to the photo


def view_box_in_original(width: int, height: int, prep: Preprocessing) -> tuple[float, ...]:
    """(x0, y0, x1, y1) in original pixels of the square the model sees (resize, centre crop)."""
    resized_w, resized_h = resized_size(width, height, prep.resize_px)
    left, top, right, bottom = center_crop_box(resized_w, resized_h, prep.img_size_px)
    scale_x, scale_y = width / resized_w, height / resized_h
    return (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)


def view_to_original(
    x_view: float, y_view: float, width: int, height: int, prep: Preprocessing
) -> tuple[float, float]:
    """A point in the model's view (continuous pixel coordinates) in original-photo pixels."""
    x0, y0, x1, y1 = view_box_in_original(width, height, prep)
    size = prep.img_size_px
    return x0 + x_view * (x1 - x0) / size, y0 + y_view * (y1 - y0) / size


def heatmap_peak(
    heatmap: np.ndarray, width: int, height: int, prep: Preprocessing
) -> tuple[float, float] | None:
    """Centre of the hottest heatmap pixel in original-photo pixels; None for an empty heatmap."""
    pixel = peak_pixel(heatmap)
    if pixel is None:
        return None
    row, col = pixel
    x, y = view_to_original(col + 0.5, row + 0.5, width, height, prep)
    return float(x), float(y)


def peak_pixel(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the maximum; None when all zero. Upsampling a coarse map makes flat tops
    at the borders: of several maximal pixels take the one nearest their mean, not the first."""
    top = float(heatmap.max())
    if top <= 0:
        return None
    candidates = np.argwhere(heatmap >= top * (1 - 1e-6))
    nearest = np.argmin(((candidates - candidates.mean(axis=0)) ** 2).sum(axis=1))
    row, col = candidates[nearest]
    return int(row), int(col)


def heatmap_on_canvas(
    heatmap: np.ndarray, canvas_size: tuple[int, int], photo_size: tuple[int, int], prep
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The heatmap drawn onto a (w, h) canvas showing the whole photo, zero outside the model's
    view, and that view's box on the canvas."""
    canvas_w, canvas_h = canvas_size
    scale_x, scale_y = canvas_w / photo_size[0], canvas_h / photo_size[1]
    x0, y0, x1, y1 = view_box_in_original(*photo_size, prep)
    box = (round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y))
    box = (max(box[0], 0), max(box[1], 0), min(box[2], canvas_w), min(box[3], canvas_h))
    patch = Image.fromarray(heatmap.astype(np.float32), "F").resize(
        (max(box[2] - box[0], 1), max(box[3] - box[1], 1)), Image.Resampling.BILINEAR
    )
    full = np.zeros((canvas_h, canvas_w), dtype=np.float32)
    full[box[1] : box[1] + patch.height, box[0] : box[0] + patch.width] = np.asarray(patch)[
        : canvas_h - box[1], : canvas_w - box[0]
    ]
    return np.clip(full, 0.0, 1.0), box


# ------------------------------------------------------------------------------- drawing


def _colormap_lut() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


MIN_DISPLAY_SIDE_PX = 480  # small photos are enlarged to this, so the banner text stays legible


def display_size(size: tuple[int, int], max_side_px: int) -> tuple[int, int]:
    """`size` scaled so its longer side is min(max(longer side, 480), max_side_px)."""
    width, height = size
    longer = max(width, height)
    scale = min(max(longer, MIN_DISPLAY_SIDE_PX), max_side_px) / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def heat_overlay(
    photo: Image.Image,
    heatmap: np.ndarray,
    prep: Preprocessing,
    *,
    max_side_px: int = DEFAULT_MAX_SIDE_PX,
    peak_marker: bool = True,
) -> Image.Image:
    """The photo (scaled to max_side_px) with the heatmap blended in where it is hot, the parts
    the model never saw dimmed, and a ring around the peak."""
    size = display_size(photo.size, max_side_px)
    base = np.asarray(photo.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    heat, box = heatmap_on_canvas(heatmap, size, photo.size, prep)
    seen = np.zeros(heat.shape, dtype=bool)
    seen[box[1] : box[3], box[0] : box[2]] = True
    colours = _colormap_lut()[np.round(heat * 255).astype(np.uint8)].astype(np.float32)
    # alpha follows the heat, so cold regions keep the photo's own detail visible
    alpha = (0.65 * heat)[..., None]
    blended = base * (1 - alpha) + colours * alpha
    blended[~seen] = base[~seen] * 0.4
    image = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB")
    pixel = peak_pixel(heat) if peak_marker else None
    if pixel is not None:
        row, col = pixel
        radius = max(4, round(0.03 * max(size)))
        draw = ImageDraw.Draw(image)
        ring = (col - radius, row - radius, col + radius, row + radius)
        draw.ellipse(ring, outline=(0, 0, 0), width=max(2, radius // 3))
        draw.ellipse(ring, outline=(255, 255, 255), width=max(1, radius // 6))
    return image


def _font(size_px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_width: float) -> str:
    if draw.textlength(text, font=font) <= max_width:
        return text
    while len(text) > 4 and draw.textlength("…" + text, font=font) > max_width:
        text = text[1:]  # keep the end of a long path: the file name matters most
    return "…" + text


def annotate(
    panel: Image.Image,
    *,
    verdict: str,
    p_counterfeit: float,
    threshold: float,
    detail: str,
) -> Image.Image:
    """`panel` under a banner: verdict and score, then `detail` and the heat colour scale."""
    width = max(panel.width, 360)
    font_px = max(12, min(28, width // 40))
    big, small = _font(round(font_px * 1.3)), _font(font_px)
    pad = font_px // 2
    row2_y = pad + round(font_px * 1.8)
    banner_h = row2_y + font_px + pad
    out = Image.new("RGB", (width, panel.height + banner_h), (255, 255, 255))
    out.paste(panel, ((width - panel.width) // 2, banner_h))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, width, banner_h), fill=_VERDICT_COLOURS.get(verdict, _GENUINE_COLOUR))
    white = (255, 255, 255)
    headline = f"{verdict.upper()}   p_counterfeit {p_counterfeit:.3f}   threshold {threshold:.2f}"
    draw.text((pad, pad), _fit_text(draw, headline, big, width - 2 * pad), fill=white, font=big)
    # colour scale at the right of the second row: "low [jet bar] high"
    bar_w = min(120, width // 6)
    high_w = draw.textlength("high", font=small)
    low_w = draw.textlength("low", font=small)
    bar_x = round(width - pad - high_w - pad // 2 - bar_w)
    scale_x = round(bar_x - pad // 2 - low_w)
    bar = Image.fromarray(np.repeat(_colormap_lut()[None], 2, axis=0), "RGB").resize(
        (bar_w, max(4, font_px - 4))
    )
    out.paste(bar, (bar_x, row2_y + 2))
    draw.text((scale_x, row2_y), "low", fill=white, font=small)
    draw.text((bar_x + bar_w + pad // 2, row2_y), "high", fill=white, font=small)
    detail = _fit_text(draw, detail, small, scale_x - 2 * pad)
    draw.text((pad, row2_y), detail, fill=white, font=small)
    return out


def side_by_side(left: Image.Image, right: Image.Image, gap_px: int = 8) -> Image.Image:
    out = Image.new("RGB", (left.width + gap_px + right.width, max(left.height, right.height)))
    out.paste((255, 255, 255), (0, 0, out.width, out.height))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap_px, 0))
    return out


def encode_image(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------- whole images


def occlusion_map(
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    card: ModelCard,
    view_uint8_hwc: np.ndarray,
    *,
    patch_frac: float = 0.25,
    stride_frac: float = 0.125,
    batch_size: int = 32,
) -> tuple[np.ndarray, float]:
    """Occlusion sensitivity, for models without gradients (ONNX): grey out one square patch at a
    time and record how much the counterfeit log-odds fall. Returns (heatmap [S, S] in [0, 1],
    p_counterfeit). `predict` maps a uint8 NHWC batch to (probabilities, logits), as an Engine."""
    size = view_uint8_hwc.shape[0]
    patch = max(1, round(size * patch_frac))
    stride = max(1, round(size * stride_frac))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    corners = [(y, x) for y in starts for x in starts]
    fill = view_uint8_hwc.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    batch = np.repeat(view_uint8_hwc[None], len(corners) + 1, axis=0)
    for index, (y, x) in enumerate(corners, start=1):
        batch[index, y : y + patch, x : x + patch] = fill
    probabilities, logits = [], []
    for first in range(0, len(batch), batch_size):
        chunk_p, chunk_logits = predict(batch[first : first + batch_size])
        probabilities.append(chunk_p)
        logits.append(chunk_logits)
    probabilities, logits = np.concatenate(probabilities), np.concatenate(logits)
    positive = card.counterfeit_index
    log_odds = logits[:, positive] - logits[:, 1 - positive]
    drops = np.maximum(log_odds[0] - log_odds[1:], 0.0)
    heat = np.zeros((size, size), np.float32)
    covered = np.zeros((size, size), np.float32)
    for (y, x), drop in zip(corners, drops, strict=True):
        heat[y : y + patch, x : x + patch] += drop
        covered[y : y + patch, x : x + patch] += 1
    heat /= np.maximum(covered, 1)
    top = float(heat.max())
    heatmap = heat / top if top > 0 else heat
    return heatmap.astype(np.float32), float(probabilities[0, positive])


class Explainer:
    """A loaded model ready to explain photos: load once, call `explain(photo)` many times.

    Checkpoints get Grad-CAM; an .onnx file gets occlusion sensitivity (no gradients there, and
    about 50 model runs per photo instead of one forward and backward pass)."""

    def __init__(self, model_path: str | Path, *, device: str = "auto"):
        from cfimg.engines import is_onnx_path

        self.model_path = str(model_path)
        self.engine = None
        self.network = None
        if is_onnx_path(model_path):
            from cfimg.engines import load_engine

            self.engine = load_engine(model_path, device=device)
            self.card = self.engine.card
            self.device = self.engine.device
            return
        from cfimg.checkpoint import load_model
        from cfimg.engines import resolve_torch_device

        network, self.card = load_model(model_path)
        self.device = resolve_torch_device(device)
        self.network = network.to(self.device).eval()

    @property
    def method(self) -> str:
        """The method in a few words, for captions."""
        if self.engine is not None:
            return "occlusion"
        from cfimg.models import head_layout

        return f"Grad-CAM on {self.card.arch}.{head_layout(self.network).features}"

    @property
    def file_tag(self) -> str:
        """The method in output file names: photo.gradcam.png, photo.occlusion.png."""
        return "occlusion" if self.engine is not None else "gradcam"

    def explain(self, photo: Image.Image) -> tuple[np.ndarray, float]:
        """(heatmap [S, S] in the model's view, p_counterfeit) for one RGB photo."""
        view = preprocess_image(photo, self.card.preprocessing)
        if self.engine is not None:
            return occlusion_map(self.engine.predict, self.card, view)
        heatmaps, p_counterfeit = gradcam_batch(self.network, self.card, view[None])
        return heatmaps[0], float(p_counterfeit[0])


def _output_stem(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "image"
    if stem in used:  # same file name in two folders: keep both, told apart by a path hash
        stem = f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    used.add(stem)
    return stem


def explain_images(
    model_path: str | Path,
    image_paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    device: str = "auto",
    threshold: float | None = None,
    max_side_px: int = DEFAULT_MAX_SIDE_PX,
    with_original: bool = True,
    save_heatmaps: bool = False,
    on_result: Callable[[ExplainResult], None] | None = None,
) -> list[ExplainResult]:
    """Write OUT/<stem>.gradcam.png (.occlusion.png for an .onnx model) per image (the original
    beside the heatmap overlay, under a banner with verdict and score) and OUT/explain.csv; bad
    images are recorded, not raised."""
    from cfimg.imageio import load_rgb

    explainer = Explainer(model_path, device=device)
    card = explainer.card
    cut = card.threshold if threshold is None else threshold
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results = []
    for image_path in image_paths:
        path = str(image_path)
        try:
            photo = load_rgb(path)
        except ImageLoadError as exc:
            result = ExplainResult(path=path, error=exc.reason)
        else:
            heatmap, p_counterfeit = explainer.explain(photo)
            verdict = card.verdict(p_counterfeit, threshold)
            stem = _output_stem(path, used)
            overlay = heat_overlay(photo, heatmap, card.preprocessing, max_side_px=max_side_px)
            panel = overlay
            if with_original:
                panel = side_by_side(photo.resize(overlay.size, Image.Resampling.BILINEAR), overlay)
            model_name = card.model_id or Path(explainer.model_path).name
            detail = f"{path}  ·  {model_name}  ·  {explainer.method}"
            annotated = annotate(
                panel, verdict=verdict, p_counterfeit=p_counterfeit, threshold=cut, detail=detail
            )
            overlay_path = out_dir / f"{stem}.{explainer.file_tag}.png"
            atomic_write_bytes(overlay_path, encode_image(annotated))
            heatmap_path = ""
            if save_heatmaps:
                heatmap_path = str(out_dir / f"{stem}.{explainer.file_tag}.npy")
                with atomic_open(heatmap_path, "wb") as handle:
                    np.save(handle, heatmap.astype(np.float16))
            peak = heatmap_peak(heatmap, photo.width, photo.height, card.preprocessing)
            result = ExplainResult(
                path=path,
                p_counterfeit=p_counterfeit,
                verdict=verdict,
                overlay_path=str(overlay_path),
                heatmap_path=heatmap_path,
                peak_x=None if peak is None else round(peak[0], 1),
                peak_y=None if peak is None else round(peak[1], 1),
                width=photo.width,
                height=photo.height,
            )
        results.append(result)
        if on_result is not None:
            on_result(result)
    write_summary(results, out_dir / SUMMARY_NAME, threshold=cut, model_id=card.model_id)
    return results


SUMMARY_COLUMNS = (
    "path",
    "verdict",
    "p_counterfeit",
    "threshold",
    "model_id",
    "width",
    "height",
    "peak_x",
    "peak_y",
    "overlay",
    "heatmap",
    "error",
)


def write_summary(
    results: Sequence[ExplainResult], path: str | Path, *, threshold: float, model_id: str
) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        for r in results:
            ok = not r.error
            writer.writerow(
                [
                    r.path,
                    r.verdict,
                    f"{r.p_counterfeit:.6f}" if r.p_counterfeit is not None else "",
                    f"{threshold:.6f}" if ok else "",
                    model_id if ok else "",
                    r.width or "",
                    r.height or "",
                    "" if r.peak_x is None else r.peak_x,
                    "" if r.peak_y is None else r.peak_y,
                    Path(r.overlay_path).name if r.overlay_path else "",
                    Path(r.heatmap_path).name if r.heatmap_path else "",
                    r.error,
                ]
            )


# ------------------------------------------------------------------ localisation (hit rate)


Box = tuple[float, float, float, float]


def point_in_boxes(point: tuple[float, float] | None, boxes: Sequence[Box], margin_px=0.0) -> bool:
    """True when `point` lies in any box grown by `margin_px` on every side."""
    if point is None:
        return False
    x, y = point
    return any(
        x0 - margin_px <= x <= x1 + margin_px and y0 - margin_px <= y <= y1 + margin_px
        for x0, y0, x1, y1 in boxes
    )


def boxes_area_fraction(
    boxes: Sequence[Box], region: Box, margin_px: float = 0.0, *, grid_px: float = 1.0
) -> float:
    """Fraction of `region` covered by the union of the boxes (grown by margin_px): the chance
    that a uniformly random point in the region hits a box, computed on a `grid_px` raster."""
    rx0, ry0, rx1, ry1 = region
    cols = max(1, round((rx1 - rx0) / grid_px))
    rows = max(1, round((ry1 - ry0) / grid_px))
    xs = rx0 + (np.arange(cols) + 0.5) * (rx1 - rx0) / cols
    ys = ry0 + (np.arange(rows) + 0.5) * (ry1 - ry0) / rows
    covered = np.zeros((rows, cols), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        in_x = (xs >= x0 - margin_px) & (xs <= x1 + margin_px)
        in_y = (ys >= y0 - margin_px) & (ys <= y1 + margin_px)
        covered |= in_y[:, None] & in_x[None, :]
    return float(covered.mean())
