"""The pieces every command shares: preprocessing, card, checkpoints, architectures, engines."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cfimg.card import ModelCard
from cfimg.checkpoint import load_checkpoint, load_model, save_checkpoint
from cfimg.engines import load_engine, onnx_providers, resolve_torch_device
from cfimg.errors import ModelFileError, UsageError
from cfimg.models import ClassifierWithPreprocessing, create_model, get_arch
from cfimg.preprocess import Preprocessing, preprocess_image, resized_size


def test_resize_rule_scales_shorter_side_and_rounds_half_up():
    assert resized_size(1600, 1200, 256) == (341, 256)
    assert resized_size(1200, 1600, 256) == (256, 341)
    assert resized_size(300, 300, 224) == (224, 224)
    assert resized_size(3, 2, 4) == (6, 4)


def test_preprocess_image_gives_centre_crop_of_model_size():
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, 100:] = 255  # right half white
    out = preprocess_image(Image.fromarray(pixels), Preprocessing(img_size_px=32, resize_px=40))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255  # crop is centred on the boundary


def test_preprocessing_with_size_keeps_crop_fraction():
    prep = Preprocessing(img_size_px=224, resize_px=256).with_size(448)
    assert (prep.img_size_px, prep.resize_px) == (448, 512)


def test_card_round_trips_through_dict_and_onnx_metadata():
    card = ModelCard(
        arch="resnet18",
        preprocessing=Preprocessing(img_size_px=64, resize_px=72),
        threshold=0.37,
        uncertain_band=(0.2, 0.6),
        temperature=1.7,
        metrics={"roc_auc": 0.91},
    )
    assert ModelCard.from_dict(card.to_dict()) == card
    metadata = card.to_onnx_metadata()
    assert all(isinstance(v, str) for v in metadata.values())
    assert ModelCard.from_onnx_metadata(metadata) == card


def test_verdict_uses_threshold_and_uncertain_band():
    card = ModelCard(
        arch="resnet18", preprocessing=Preprocessing(), threshold=0.5, uncertain_band=(0.3, 0.7)
    )
    assert card.verdict(0.9) == "counterfeit"
    assert card.verdict(0.5) == "uncertain"
    assert card.verdict(0.1) == "genuine"
    assert card.verdict(0.5, threshold=0.6) == "genuine"  # an explicit threshold overrides


def test_card_round_trips_its_item_rule_and_threshold_and_writes_them_for_embedders():
    card = ModelCard(
        arch="resnet18", preprocessing=Preprocessing(), item_rule="noisy_or", item_threshold=0.61
    )
    assert ModelCard.from_dict(card.to_dict()) == card
    metadata = card.to_onnx_metadata()
    assert metadata["item_rule"] == "noisy_or" and float(metadata["item_threshold"]) == 0.61
    assert ModelCard.from_onnx_metadata(metadata) == card
    assert ModelCard(arch="resnet18", preprocessing=Preprocessing()).to_onnx_metadata()[
        "item_threshold"
    ] == "null"  # fmt: skip


def test_card_written_before_items_existed_judges_an_item_by_its_most_suspicious_photo():
    values = ModelCard(arch="resnet18", preprocessing=Preprocessing(), threshold=0.4).to_dict()
    del values["item_rule"], values["item_threshold"]
    card = ModelCard.from_dict(values)
    assert (card.item_rule, card.item_threshold) == ("max", None)
    assert card.item_verdict(0.4) == "counterfeit" and card.item_verdict(0.39) == "genuine"


def test_item_verdict_uses_the_item_threshold_else_the_photo_rule_with_its_band():
    card = ModelCard(
        arch="resnet18", preprocessing=Preprocessing(), threshold=0.5, uncertain_band=(0.3, 0.7)
    )
    assert card.item_verdict(0.5) == "uncertain"  # no item threshold: judged as a photo
    fitted = card.updated(item_threshold=0.8)
    assert fitted.item_verdict(0.5) == "genuine" and fitted.item_verdict(0.8) == "counterfeit"
    assert fitted.item_verdict(0.5, threshold=0.45) == "counterfeit"  # explicit overrides


def _tiny_card() -> ModelCard:
    return ModelCard(
        arch="mobilenet_v3_small", preprocessing=Preprocessing(img_size_px=32, resize_px=32)
    )


def test_checkpoint_round_trip_restores_identical_outputs(tmp_path):
    model = create_model("mobilenet_v3_small", pretrained=False).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, card=_tiny_card(), model_state=model.state_dict(), epoch=3)
    loaded, card = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert card.arch == "mobilenet_v3_small" and card.preprocessing.img_size_px == 32
    assert load_checkpoint(path)["epoch"] == 3


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"not a zip at all", "not a loadable cfimg checkpoint .not a PyTorch file"),
        (b"PK\x03\x04" + b"x" * 100, "truncated or damaged zip archive"),
    ],
)
def test_damaged_checkpoint_gives_model_file_error(tmp_path, content, reason):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=reason):
        load_checkpoint(path)


def test_truncated_checkpoint_gives_model_file_error(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        card=_tiny_card(),
        model_state=create_model("mobilenet_v3_small", pretrained=False).state_dict(),
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated or damaged zip archive"):
        load_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this code ran while loading",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "cfimg.checkpoint/1", "payload": _RunsCode()},
        path,
        pickle_protocol=pickle.HIGHEST_PROTOCOL,
    )
    with pytest.raises(ModelFileError, match="refused, as they could run code"):
        load_checkpoint(path)
    assert "this code ran" not in capsys.readouterr().out


def test_foreign_torch_file_is_not_a_cfimg_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not a cfimg checkpoint"):
        load_checkpoint(path)


def test_efficientnet_lite0_loads_packaged_imagenet_weights():
    model = create_model("efficientnet_lite0", pretrained=True)
    from cfimg.models import imagenet_state_dict

    reference = imagenet_state_dict("efficientnet_lite0")
    torch.testing.assert_close(
        model.state_dict()["conv_stem.weight"], reference["conv_stem.weight"]
    )
    assert model.classifier.out_features == 2


def test_unknown_architecture_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown architecture"):
        get_arch("alexnet9000")


def test_torchvision_weights_offline_and_uncached_say_which_file_to_put_where(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelFileError, match=r"resnet18-f37072fd\.pth"):
        create_model("resnet18", pretrained=True)


def test_weights_path_that_fits_nothing_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"foo": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="tensors fit"):
        create_model("mobilenet_v3_small", pretrained=False, weights_path=path)


def test_classifier_wrapper_normalises_like_the_preprocessing_says():
    prep = Preprocessing(img_size_px=8, resize_px=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    wrapper = ClassifierWithPreprocessing(torch.nn.Identity(), prep)
    images = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    torch.testing.assert_close(wrapper.normalize(images), torch.full((1, 3, 8, 8), 2.0))


def test_torch_engine_returns_probabilities_that_sum_to_one(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        card=_tiny_card(),
        model_state=create_model("mobilenet_v3_small", pretrained=False).state_dict(),
    )
    engine = load_engine(path, device="cpu")
    probabilities, logits = engine.predict(
        np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    )
    assert probabilities.shape == (3, 2) and logits.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_missing_gpu_is_reported_not_silently_replaced():
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            resolve_torch_device("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        resolve_torch_device("tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UsageError, match="CUDAExecutionProvider"):
            onnx_providers("cuda")


def test_missing_model_file_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="file not found"):
        load_engine(tmp_path / "nope.onnx")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "data", "--no-such-flag"], "cfimg train: No such option: --no-such-flag"),
        (["train", "data", "--epochs", "many"], "'--epochs'"),
        (["predict", "m.onnx", "photos"], "Missing option '--out'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_parser_errors_are_one_line_with_exit_2(run_cli, argv, message):
    code, stdout, stderr = run_cli(argv)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_command_without_arguments_prints_its_help(run_cli):
    code, stdout, _ = run_cli(["predict"])
    assert code in (0, 2) and "--out" in stdout


def test_onnx_engines_and_model_cards_import_no_torch():
    """`cfimg predict` on an .onnx file stays far from torch's start-up time and memory."""
    import subprocess
    import sys

    probe = (
        "import sys, cfimg.engines, cfimg.card, cfimg.export.contract; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
