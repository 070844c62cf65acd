"""`cfimg export` and `cfimg info`: the exported file matches PyTorch, describes itself, and bad
model files get one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cfimg.card import ModelCard
from cfimg.checkpoint import save_checkpoint
from cfimg.data import assign_splits, load_samples, write_split_csv
from cfimg.engines import load_engine
from cfimg.errors import ModelFileError, UsageError
from cfimg.export import (
    FP32_MAX_ABS_DP,
    ExportError,
    export_onnx,
)
from cfimg.export.report import Check
from cfimg.imageio import load_rgb
from cfimg.modelinfo import model_info, validate_onnx_file
from cfimg.models import create_model, get_arch
from cfimg.preprocess import preprocess_image

REPO = Path(__file__).resolve().parents[1]
EMBED_SCRIPT = REPO / "scripts" / "embed_example.py"
ARCH = "efficientnet_lite0"  # the default arch: its TF-'same' padding is rewritten at export
SIZE_PX = 64


def _network(photos: list[Path], prep) -> torch.nn.Module:
    """ImageNet features (packaged weights, no download) and a head rescaled on the test photos
    themselves so that their probabilities spread over (0, 1) instead of sitting at 0.5."""
    torch.manual_seed(0)
    network = create_model(ARCH, pretrained=True).eval()
    crops = np.stack(
        [preprocess_image(load_rgb(p, min_side_px=prep.resize_px), prep) for p in photos]
    )
    probe = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        features = network.forward_head(network.forward_features(probe), pre_logits=True)
        logits = network.classifier(features)
        margin = logits[:, 1] - logits[:, 0]
        network.classifier.weight *= 4.0 / float(margin.std())
        network.classifier.bias[1] -= float(margin.median()) * 4.0 / float(margin.std())
    return network


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from conftest import make_image_tree

    root = tmp_path_factory.mktemp("export")
    make_image_tree(root / "data", items=4, views=2, size_px=80)
    samples = assign_splits(load_samples(root / "data"), val_frac=0.3, test_frac=0.1, seed=0)
    run = root / "run"
    run.mkdir()
    write_split_csv(samples, run / "split.csv")
    prep = get_arch(ARCH).preprocessing.with_size(SIZE_PX)
    card = ModelCard(
        arch=ARCH,
        preprocessing=prep,
        threshold=0.45,
        uncertain_band=(0.3, 0.4),
        temperature=1.5,
        metrics={"roc_auc": 0.5},
        data_fingerprint="abc123",
        model_id="run@3",
    )
    network = _network([s.path for s in samples], prep)
    save_checkpoint(run / "best.pt", card=card, model_state=network.state_dict(), epoch=3)
    return run


@pytest.fixture(scope="module")
def exported(run_dir: Path):
    return export_onnx(run_dir)


def _val_crops(run_dir: Path, card: ModelCard) -> np.ndarray:
    prep = card.preprocessing
    samples = [s for s in load_samples(run_dir / "split.csv") if s.split == "val"]
    return np.stack(
        [preprocess_image(load_rgb(s.path, min_side_px=prep.resize_px), prep) for s in samples]
    )


def test_export_writes_run_model_onnx_with_the_card_in_its_metadata(run_dir, exported):
    path = run_dir / "model.onnx"
    assert exported.ok and exported.models[0].path == path and path.is_file()
    metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    card = ModelCard.from_onnx_metadata(metadata)
    assert card.threshold == 0.45 and card.temperature == 1.5 and card.model_id == "run@3"
    assert card.uncertain_band == (0.3, 0.4) and card.metrics == {"roc_auc": 0.5}
    assert json.loads(metadata["class_names"]) == ["genuine", "counterfeit"]
    assert json.loads(metadata["input_size"]) == [SIZE_PX, SIZE_PX]
    assert metadata["input_format"] == "uint8_nhwc" and metadata["precision"] == "fp32"
    assert metadata["opset"] == "18" and metadata["export_date_utc"].startswith("20")
    assert "validation split" in exported.check_source


def test_exported_model_matches_pytorch_within_1e4_on_validation_images(run_dir, exported):
    onnx_engine = load_engine(run_dir / "model.onnx", device="cpu")
    torch_engine = load_engine(run_dir / "best.pt", device="cpu")
    crops = _val_crops(run_dir, torch_engine.card)
    p_onnx, logits_onnx = onnx_engine.predict(crops)
    p_torch, logits_torch = torch_engine.predict(crops)
    assert np.abs(p_onnx - p_torch).max() <= FP32_MAX_ABS_DP
    assert np.abs(logits_onnx - logits_torch).max() <= 1e-3
    assert p_torch[:, 1].std() > 0.05  # the check means something: outputs differ per image
    assert exported.models[0].max_abs_dp <= FP32_MAX_ABS_DP


def test_exported_model_runs_at_batch_1_and_an_odd_batch(run_dir, exported):
    engine = load_engine(run_dir / "model.onnx", device="cpu")
    crops = _val_crops(run_dir, engine.card)
    batch = np.resize(crops, (7, *crops.shape[1:]))
    one, _ = engine.predict(batch[:1])
    seven, _ = engine.predict(batch)
    assert one.shape == (1, 2) and seven.shape == (7, 2)
    np.testing.assert_allclose(seven[:1], one, atol=1e-6)
    names = [check.name for check in exported.models[0].checks]
    assert names == ["onnx.checker", "batch 1", "batch 5", "parity vs PyTorch"]


def test_float_input_variant_agrees_with_pytorch(run_dir, tmp_path):
    out = tmp_path / "float.onnx"
    report = export_onnx(run_dir, out, float_input=True)
    engine = load_engine(out, device="cpu")
    assert engine.float_input and report.models[0].input_format == "float_nchw"
    crops = _val_crops(run_dir, engine.card)
    p_torch, _ = load_engine(run_dir / "best.pt", device="cpu").predict(crops)
    assert np.abs(engine.predict(crops)[0] - p_torch).max() <= FP32_MAX_ABS_DP


def test_any_size_variant_resizes_photos_of_any_shape_in_the_graph(run_dir, tmp_path):
    out = tmp_path / "any.onnx"
    report = export_onnx(run_dir, out, any_size=True)
    assert report.models[0].max_abs_dp <= FP32_MAX_ABS_DP
    engine = load_engine(out, device="cpu")
    reference = load_engine(run_dir / "best.pt", device="cpu")
    prep = engine.card.preprocessing
    rng = np.random.default_rng(0)
    # landscape, tall (Pillow resizes vertically first), model-sized, smaller than the model
    for width, height in ((300, 200), (150, 410), (SIZE_PX, SIZE_PX), (40, 50)):
        coarse = rng.integers(0, 256, (height // 10 + 2, width // 10 + 2, 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        (p_graph,) = engine.session.run(["probabilities"], {"image": np.asarray(photo)})[:1]
        p_torch, _ = reference.predict(np.array(preprocess_image(photo, prep)[None]))
        assert p_graph.shape == (1, 2)
        assert np.abs(p_graph - p_torch).max() <= FP32_MAX_ABS_DP, (width, height)


def test_int8_export_writes_quantized_model_and_reports_accuracy_and_speed(run_dir, tmp_path):
    out = tmp_path / "model.onnx"
    report = export_onnx(run_dir, out, int8=True, check=False)
    int8 = report.models[-1]
    assert int8.precision == "int8" and int8.path == tmp_path / "model.int8.onnx"
    assert int8.path.is_file() and int8.written and int8.size_bytes < report.models[0].size_bytes
    assert int8.accuracy is not None and int8.accuracy_change_points >= -1.0
    assert int8.speedup_batch1 > 0 and int8.speedup_batch32 > 0
    assert "training split" in report.calib_source
    assert validate_onnx_file(int8.path).threshold == 0.45
    ops = {node.op_type for node in onnx.load(int8.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Softmax" in ops


def test_fp16_export_keeps_uint8_input_and_float32_outputs(run_dir, tmp_path):
    report = export_onnx(run_dir, tmp_path / "model.onnx", fp16=True, check=False)
    fp16 = report.models[-1]
    assert fp16.path == tmp_path / "model.fp16.onnx" and fp16.path.is_file() and fp16.ok
    assert fp16.max_abs_dp < 0.05 and fp16.accuracy_change_points is not None
    engine = load_engine(fp16.path, device="cpu")
    crops = _val_crops(run_dir, engine.card)
    probabilities, logits = engine.predict(crops)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(crops), 2)
    inputs = engine.session.get_inputs()
    assert inputs[0].type == "tensor(uint8)"
    assert {o.type for o in engine.session.get_outputs()} == {"tensor(float)"}


def test_no_check_writes_without_loading_any_image(run_dir, tmp_path):
    report = export_onnx(run_dir, tmp_path / "fast.onnx", check=False)
    assert report.check_images == 0 and (tmp_path / "fast.onnx").is_file()
    assert [check.name for check in report.models[0].checks] == ["onnx.checker"]


def test_int8_losing_accuracy_is_refused_and_keeps_the_fp32_file(run_dir, tmp_path, monkeypatch):
    import cfimg.metrics

    # before / after pairs: every convolution in int8, then the high-resolution ones in float,
    # then the --force export (which keeps its first copy)
    accuracies = iter([0.90, 0.85, 0.90, 0.86, 0.90, 0.85])
    monkeypatch.setattr(
        cfimg.metrics, "classification_metrics", lambda *a, **k: {"accuracy": next(accuracies)}
    )
    out = tmp_path / "model.onnx"
    small = {"int8": True, "check": False, "max_check_images": 6, "max_calib_images": 4}
    with pytest.raises(ExportError, match="loses more than 1 point") as refused:
        export_onnx(run_dir, out, **small)
    assert f"wrote only {out}" in str(refused.value)
    assert any(
        "stride 4 or less were kept in float: -4.0 points" in note
        for note in refused.value.report.notes
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # the fp32 file passed
    fp32, int8 = refused.value.report.models
    assert fp32.written and not int8.written and int8.accuracy_change_points == pytest.approx(-4)
    load_engine(out, device="cpu")  # a whole, loadable file
    report = export_onnx(run_dir, out, force=True, **small)
    assert report.models[-1].accuracy_change_points == pytest.approx(-5.0)
    assert (tmp_path / "model.int8.onnx").is_file()


def test_int8_refused_keeps_the_high_resolution_layers_in_float_and_passes(
    run_dir, tmp_path, monkeypatch
):
    import cfimg.metrics

    accuracies = iter([0.90, 0.85, 0.90, 0.895])  # the fully quantized copy loses 5 points
    monkeypatch.setattr(
        cfimg.metrics, "classification_metrics", lambda *a, **k: {"accuracy": next(accuracies)}
    )
    out = tmp_path / "model.onnx"
    report = export_onnx(run_dir, out, int8=True, check=False, max_check_images=6)
    fp32, int8 = report.models
    assert int8.written and int8.ok and int8.accuracy_change_points == pytest.approx(-0.5)
    assert any("lost 5.0 points" in note and "kept in float" in note for note in report.notes)
    graph = onnx.load(int8.path).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    stem = next(node for node in convs if "conv_stem" in node.name)
    assert stem.input[1] not in dequantized  # float weights (its input: the exact uint8 pixels)
    assert any(node.input[1] in dequantized for node in convs)  # the rest is still int8
    load_engine(int8.path, device="cpu")


def test_a_failed_fp32_check_writes_nothing(run_dir, tmp_path, monkeypatch):
    import cfimg.export.exporter

    def failing_checks(model, base, limit, **kwargs):
        model.checks.append(Check("parity vs PyTorch", False, "max |dp| 0.5 > 1e-4"))

    monkeypatch.setattr(cfimg.export.exporter, "runtime_checks", failing_checks)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="parity vs PyTorch check failed.*nothing was written"):
        export_onnx(run_dir, out, int8=True, max_check_images=6, max_calib_images=4)
    assert list(tmp_path.iterdir()) == []


def test_int8_without_calibration_images_is_a_usage_error(run_dir, tmp_path):
    bare = tmp_path / "bare.pt"
    bare.write_bytes((run_dir / "best.pt").read_bytes())
    with pytest.raises(UsageError, match="--calib"):
        export_onnx(bare, int8=True, check=False)
    assert not (tmp_path / "bare.onnx").exists()


def test_checkpoint_outside_a_run_is_checked_on_random_images_and_says_so(run_dir, tmp_path):
    bare = tmp_path / "bare.pt"
    bare.write_bytes((run_dir / "best.pt").read_bytes())
    report = export_onnx(bare)
    assert report.models[0].path == tmp_path / "bare.onnx" and report.ok
    assert "random images" in report.check_source and report.notes


def test_int8_without_labelled_check_images_is_refused_once_without_a_retry(run_dir, tmp_path):
    bare = tmp_path / "bare.pt"
    bare.write_bytes((run_dir / "best.pt").read_bytes())
    calib = run_dir.parent / "data"
    with pytest.raises(ExportError, match="without labelled images") as refused:
        export_onnx(bare, int8=True, check=False, calib_source=calib, max_calib_images=4)
    fp32, int8 = refused.value.report.models
    assert fp32.written and not int8.written and int8.accuracy_change_points is None
    assert not any("kept in float" in note for note in refused.value.report.notes)


def test_cli_export_prints_check_table(run_cli, run_dir, tmp_path):
    code, out, _ = run_cli(["export", run_dir, "--out", tmp_path / "m.onnx", "--check-images", 4])
    assert code == 0
    assert "parity vs PyTorch" in out and "onnx.checker" in out and "m.onnx" in out


@pytest.mark.parametrize(
    "flags",
    [["--any-size", "--float-input"], ["--opset", "9"], ["--out", "model.txt"]],
)
def test_cli_export_rejects_bad_flags_with_exit_2(run_cli, run_dir, flags):
    code, _, err = run_cli(["export", run_dir, *flags])
    assert code == 2 and err.count("\n") == 1


def test_cli_export_of_an_onnx_file_is_a_usage_error(run_cli, run_dir, exported):
    code, _, err = run_cli(["export", run_dir / "model.onnx"])
    assert code == 2 and "already an ONNX model" in err


def _foreign_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "foreign", "empty"])
def test_damaged_or_foreign_onnx_gets_one_line_and_exit_5(
    run_cli, run_dir, exported, tmp_path, kind
):
    path = tmp_path / "bad.onnx"
    valid = (run_dir / "model.onnx").read_bytes()
    if kind == "truncated":
        path.write_bytes(valid[: len(valid) // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "foreign":
        _foreign_onnx(path)
    else:
        path.write_bytes(b"")
    code, _, err = run_cli(["info", path])
    assert code == 5 and err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    with pytest.raises(ModelFileError):
        load_engine(path, device="cpu")
    if kind == "foreign":
        assert "not one exported by cfimg" in err


def test_info_describes_an_onnx_model(run_cli, run_dir, exported):
    code, out, _ = run_cli(["info", run_dir / "model.onnx"])
    assert code == 0
    for text in (ARCH, "0.45", "1.5", "uint8_nhwc", "probabilities", "[batch, 64, 64, 3]"):
        assert text in out
    assert "pooling; the whole frame at once" in out  # the head, and how it covers the frame
    code, out, _ = run_cli(["info", run_dir / "model.onnx", "--json"])
    details = json.loads(out)
    assert details["opset"] == 18 and details["inputs"][0]["shape"] == ["batch", 64, 64, 3]
    assert [o["name"] for o in details["outputs"]] == ["probabilities", "logits"]
    assert details["card"]["threshold"] == 0.45 and details["export"]["precision"] == "fp32"


def test_info_describes_a_checkpoint_and_a_run_folder(run_cli, run_dir, exported):
    code, out, _ = run_cli(["info", run_dir / "best.pt"])
    assert code == 0 and "epoch" in out and "3" in out and "roc_auc" in out
    details = model_info(run_dir)
    assert details["epoch"] == 3 and details["kind"] == "checkpoint"
    assert "model.onnx" in details["exports"] and details["parameters"] > 1_000_000


def _embed_photos(folder: Path) -> list[Path]:
    """A large JPEG (draft decode), an EXIF-rotated JPEG, a PNG with alpha, a small PNG."""
    rng = np.random.default_rng(3)

    def photo(width: int, height: int) -> Image.Image:
        coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
        return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)

    folder.mkdir()
    paths = [folder / n for n in ("large.jpg", "rotated.jpg", "alpha.png", "small.png")]
    photo(640, 480).save(paths[0], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo(300, 200).save(paths[1], quality=90, exif=exif)
    rgba = photo(120, 90).convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (90, 120), dtype=np.uint8)))
    rgba.save(paths[2])
    photo(50, 70).save(paths[3])
    return paths


def test_embed_example_matches_the_cfimg_engine_within_1e4(run_dir, exported, tmp_path):
    assert "import cfimg" not in EMBED_SCRIPT.read_text()
    assert "from cfimg" not in EMBED_SCRIPT.read_text()
    model = run_dir / "model.onnx"
    paths = _embed_photos(tmp_path / "photos")
    result = subprocess.run(
        [sys.executable, str(EMBED_SCRIPT), str(model), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    engine = load_engine(model, device="cpu")
    prep = engine.card.preprocessing
    crops = np.stack(
        [preprocess_image(load_rgb(p, min_side_px=prep.resize_px), prep) for p in paths]
    )
    p_engine = engine.predict(crops)[0][:, engine.card.counterfeit_index]
    assert [line["path"] for line in lines] == list(map(str, paths))
    for line, p in zip(lines, p_engine, strict=True):
        assert abs(line["p_counterfeit"] - float(p)) <= 1e-4
        assert line["verdict"] == engine.card.verdict(float(p))
