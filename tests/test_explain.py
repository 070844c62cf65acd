"""`cfimg explain` and the Grad-CAM library: heatmaps, overlays, peaks, failures, localisation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cfimg.card import ModelCard
from cfimg.checkpoint import save_checkpoint
from cfimg.errors import EXIT_BAD_MODEL, EXIT_SOME_INPUTS_FAILED
from cfimg.explain import (
    boxes_area_fraction,
    display_size,
    gradcam,
    heatmap_peak,
    occlusion_map,
    point_in_boxes,
    view_box_in_original,
)
from cfimg.models import create_model
from cfimg.preprocess import HALF_MEAN_STD, Preprocessing, preprocess_image

RED_BANNER = (178, 34, 34)  # the counterfeit banner colour


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple:
    """An untrained mobilenet_v3_small at 64 px whose threshold flags everything."""
    torch.manual_seed(0)
    network = create_model("mobilenet_v3_small", pretrained=False)
    card = ModelCard(
        arch="mobilenet_v3_small",
        preprocessing=Preprocessing(img_size_px=64, resize_px=64),
        threshold=0.0,
        model_id="tiny@0",
    )
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, card=card, model_state=network.state_dict())
    return path, network.eval(), card


def _photo(path, size=(200, 120), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_gradcam_heatmap_has_model_input_size_and_unit_range(tiny_checkpoint):
    _path, network, card = tiny_checkpoint
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    heatmap = gradcam(network, card, image)
    assert heatmap.shape == (64, 64)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_peak_maps_back_through_resize_and_centre_crop():
    prep = Preprocessing(img_size_px=32, resize_px=40)
    # 200x100 photo -> resized 80x40 -> crop left=24, top=4; one view pixel = 2.5 photo pixels
    assert view_box_in_original(200, 100, prep) == (60.0, 10.0, 140.0, 90.0)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[5, 20] = 1.0  # row 5, column 20: view point (20.5, 5.5)
    assert heatmap_peak(heatmap, 200, 100, prep) == pytest.approx((60 + 20.5 * 2.5, 10 + 5.5 * 2.5))
    assert heatmap_peak(np.zeros((32, 32), np.float32), 200, 100, prep) is None


def test_peak_of_a_flat_top_is_its_middle_not_its_first_pixel():
    prep = Preprocessing(img_size_px=32, resize_px=32)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[0:9, 0:9] = 1.0  # a hot corner cell upsampled from a coarse map
    assert heatmap_peak(heatmap, 32, 32, prep) == pytest.approx((4.5, 4.5))


def test_point_in_boxes_and_area_fraction_respect_the_margin():
    boxes = [(10.0, 10.0, 20.0, 20.0)]
    assert point_in_boxes((15, 15), boxes)
    assert not point_in_boxes((22, 15), boxes)
    assert point_in_boxes((22, 15), boxes, margin_px=2)
    assert not point_in_boxes(None, boxes)
    assert boxes_area_fraction(boxes, (0, 0, 100, 100)) == pytest.approx(0.01)
    assert boxes_area_fraction(boxes, (0, 0, 100, 100), margin_px=5) == pytest.approx(0.04)


def test_explain_writes_photo_and_overlay_panel_under_a_verdict_banner(
    tiny_checkpoint, tmp_path, run_cli
):
    model_path, _network, _card = tiny_checkpoint
    photo = _photo(tmp_path / "bag.jpg", size=(200, 120))
    code, out, err = run_cli(["explain", model_path, photo, "--out", tmp_path / "out"])
    assert code == 0, err
    overlay = Image.open(tmp_path / "out" / "bag.gradcam.png")
    panel_w, panel_h = display_size((200, 120), 1024)  # small photos are enlarged to 480 px
    assert (panel_w, panel_h) == (480, 288)
    assert overlay.width == 2 * panel_w + 8  # original, gap, overlay
    assert panel_h + 30 < overlay.height < panel_h + 120  # plus the banner
    assert overlay.convert("RGB").getpixel((2, 2)) == RED_BANNER
    assert "counterfeit" in out
    rows = list(csv.DictReader(open(tmp_path / "out" / "explain.csv")))
    assert rows[0]["verdict"] == "counterfeit" and rows[0]["overlay"] == "bag.gradcam.png"
    assert 0 <= float(rows[0]["peak_x"]) <= 200 and 0 <= float(rows[0]["peak_y"]) <= 120


def test_explain_overlay_only_is_capped_at_max_side(tiny_checkpoint, tmp_path, run_cli):
    model_path, _network, _card = tiny_checkpoint
    photo = _photo(tmp_path / "big.png", size=(900, 600))
    code, _out, err = run_cli(
        ["explain", model_path, photo, "-o", tmp_path / "o", "--overlay-only", "--max-side", "300"]
        + ["--save-heatmap"]
    )
    assert code == 0, err
    overlay = Image.open(tmp_path / "o" / "big.gradcam.png")
    assert overlay.width == 360  # the banner needs at least 360 px; the 300x200 panel is centred
    heatmap = np.load(tmp_path / "o" / "big.gradcam.npy")
    assert heatmap.shape == (64, 64)


def test_explain_bad_image_gives_one_line_keeps_going_and_exits_3(
    tiny_checkpoint, tmp_path, run_cli
):
    model_path, _network, _card = tiny_checkpoint
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = _photo(tmp_path / "good.jpg")
    code, _out, err = run_cli(["explain", model_path, bad, good, "--out", tmp_path / "out"])
    assert code == EXIT_SOME_INPUTS_FAILED
    error_lines = [line for line in err.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "broken.jpg" in error_lines[0]
    assert "Traceback" not in err
    assert (tmp_path / "out" / "good.gradcam.png").is_file()


def test_explain_with_onnx_model_uses_occlusion_and_agrees_on_the_score(
    tiny_checkpoint, tmp_path, run_cli
):
    from cfimg.export import export_onnx

    model_path, _network, _card = tiny_checkpoint
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model_path, onnx_path, check=False)
    photo = _photo(tmp_path / "a.jpg")
    code, _out, err = run_cli(["explain", onnx_path, photo, "-o", tmp_path / "onnx"])
    assert code == 0, err
    code, _out, err = run_cli(["explain", model_path, photo, "-o", tmp_path / "pt"])
    assert code == 0, err
    onnx_row = next(csv.DictReader(open(tmp_path / "onnx" / "explain.csv")))
    pt_row = next(csv.DictReader(open(tmp_path / "pt" / "explain.csv")))
    assert float(onnx_row["p_counterfeit"]) == pytest.approx(
        float(pt_row["p_counterfeit"]), abs=1e-4
    )
    assert (
        Image.open(tmp_path / "onnx" / "a.occlusion.png").size
        == Image.open(tmp_path / "pt" / "a.gradcam.png").size
    )


def test_explain_with_damaged_model_file_is_a_one_line_error(tmp_path, run_cli):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    code, _out, err = run_cli(["explain", model, _photo(tmp_path / "a.jpg"), "-o", tmp_path])
    assert code == EXIT_BAD_MODEL
    assert len(err.strip().splitlines()) == 1 and "model.onnx" in err


def test_occlusion_heat_is_where_covering_the_image_lowers_the_score():
    card = ModelCard(arch="any", preprocessing=Preprocessing(img_size_px=32, resize_px=32))

    def predict(batch):  # counterfeit log-odds = brightness of the patch at rows 4-12, cols 20-28
        evidence = batch[:, 4:12, 20:28].reshape(len(batch), -1).mean(axis=1) / 255.0
        logits = np.stack([np.zeros_like(evidence), 4 * evidence], axis=1).astype(np.float32)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probabilities, logits

    view = np.full((32, 32, 3), 40, np.uint8)
    view[4:12, 20:28] = 250
    heatmap, p_counterfeit = occlusion_map(predict, card, view)
    assert heatmap.shape == (32, 32) and heatmap.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert 4 <= row < 12 and 20 <= col < 28
    assert heatmap[28, 4] == 0.0  # covering a far corner changes nothing
    assert p_counterfeit == pytest.approx(predict(view[None])[0][0, 1])


# ---------------------------------------------------- localisation on a model that learned


def _patch_images(n: int, rng: np.random.Generator, counterfeit: bool):
    """80x64 noisy photos with a blue distractor square; counterfeits also hold a white square,
    the only class evidence, inside the part the 64 px centre crop keeps. Returns photos and
    the white square's box in photo pixels."""
    photos, boxes = [], []
    for _ in range(n):
        pixels = rng.integers(20, 150, (64, 80, 3)).astype(np.uint8)
        bx, by = rng.integers(8, 62), rng.integers(0, 54)
        pixels[by : by + 10, bx : bx + 10] = (30, 30, 220)
        box = None
        if counterfeit:
            while True:
                x, y = int(rng.integers(8, 62)), int(rng.integers(0, 54))
                if abs(x - bx) > 10 or abs(y - by) > 10:
                    break
            pixels[y : y + 10, x : x + 10] = 245
            box = (float(x), float(y), float(x + 10), float(y + 10))
        photos.append(Image.fromarray(pixels))
        boxes.append(box)
    return photos, boxes


def _tiny_cnn() -> nn.Module:
    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU()]

    from cfimg.models import HeadLayout

    network = nn.Sequential(
        *block(3, 16, 1),
        *block(16, 32, 2),
        *block(32, 32, 2),
        *block(32, 32, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )
    # Where its head's parts sit, as cfimg.models attaches to every network it builds.
    network.cfimg_layout = HeadLayout(features="7", pool="8", classifier="10")
    return network


@pytest.mark.slow
def test_gradcam_peak_hits_the_evidence_far_more_often_than_a_random_point():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    prep = Preprocessing(img_size_px=64, resize_px=64, mean=HALF_MEAN_STD, std=HALF_MEAN_STD)
    card = ModelCard(arch="test_tiny_cnn", preprocessing=prep)
    fakes, _ = _patch_images(128, rng, counterfeit=True)
    reals, _ = _patch_images(128, rng, counterfeit=False)
    views = np.stack([preprocess_image(p, prep) for p in fakes + reals])
    x = (torch.from_numpy(views).permute(0, 3, 1, 2).float() / 127.5) - 1.0
    y = torch.tensor([1] * len(fakes) + [0] * len(reals))
    network = _tiny_cnn()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _step in range(80):
        batch = torch.randint(0, len(y), (32,))
        loss = nn.functional.cross_entropy(network(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()

    test_photos, test_boxes = _patch_images(40, rng, counterfeit=True)
    hits, chance, flagged = [], [], 0
    for photo, box in zip(test_photos, test_boxes, strict=True):
        view = preprocess_image(photo, prep)
        with torch.no_grad():
            p = torch.softmax(
                network(torch.from_numpy(view[None].copy()).permute(0, 3, 1, 2) / 127.5 - 1), 1
            )
        if p[0, 1] < 0.5:
            continue  # like the benchmark: only correctly flagged counterfeits
        flagged += 1
        peak = heatmap_peak(gradcam(network, card, view), photo.width, photo.height, prep)
        hits.append(point_in_boxes(peak, [box]))
        chance.append(boxes_area_fraction([box], (0, 0, photo.width, photo.height)))
    assert flagged >= 30, "the tiny model did not learn the white-square cue"
    hit_rate, random_rate = float(np.mean(hits)), float(np.mean(chance))
    assert random_rate < 0.03
    assert hit_rate > 0.6, f"hit rate {hit_rate:.2f} vs random {random_rate:.3f}"
