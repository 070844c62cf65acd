"""`cfimg train`: the run folder, safety of existing runs, resume, the recipe's pieces, DDP."""

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cfimg.augment import AugmentConfig, augment_image, sample_generator
from cfimg.checkpoint import load_checkpoint, load_model
from cfimg.preprocess import Preprocessing
from cfimg.train import TrainConfig, class_weights, learning_rate, train

TINY = dict(arch="mobilenet_v3_small", pretrained=False, img_size_px=32, batch_size=4, workers=0)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.conftest import make_image_tree

    root = tmp_path_factory.mktemp("photos")
    make_image_tree(root, items=3, views=2, size_px=40)
    return root


def _quiet_train(config: TrainConfig, **kwargs):
    return train(config, progress=False, log=lambda line: None, **kwargs)


@pytest.mark.slow
def test_run_folder_holds_config_split_checkpoints_metrics_and_curves(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = _quiet_train(TrainConfig(data=str(tiny_data), epochs=2, out=str(run), **TINY))
    for name in ("config.json", "split.csv", "last.pt", "best.pt", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["class_names"] == ["genuine", "counterfeit"]
    assert config["resolved"]["preprocessing"]["img_size_px"] == 32
    assert len(config["resolved"]["data_fingerprint"]) == 16
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {
        "train_loss",
        "val_loss",
        "balanced_accuracy",
        "roc_auc",
        "lr",
        "images_per_s",
        "data_wait_frac",
    } <= set(rows[0])
    torch.load(run / "best.pt", weights_only=True)  # a stranger's file must not run code
    model, card = load_model(run)
    assert card.model_id == f"run@{result.best_epoch}"
    assert card.preprocessing.img_size_px == 32 and card.temperature == pytest.approx(
        result.temperature
    )


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights_and_metrics_as_an_uninterrupted_one(
    tiny_data, tmp_path
):
    config = TrainConfig(data=str(tiny_data), epochs=2, **TINY)
    whole = _quiet_train(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "whole")}))
    killed_config = TrainConfig(
        **{**config.__dict__, "out": str(tmp_path / "resumed"), "stop_after_steps": 3}
    )
    killed = _quiet_train(killed_config)
    assert killed.interrupted and not (tmp_path / "resumed" / "best.pt").exists()
    resumed = _quiet_train(
        TrainConfig(**{**config.__dict__, "out": str(tmp_path / "resumed")}),
        resume_dir=str(tmp_path / "resumed"),
    )
    assert resumed.best_epoch == whole.best_epoch
    final_whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    final_resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for name, tensor in final_whole.items():
        assert torch.equal(tensor, final_resumed[name]), name
    columns = ("epoch", "train_loss", "val_loss", "accuracy", "balanced_accuracy", "roc_auc", "lr")

    def rows(run):
        return [
            {k: r[k] for k in columns} for r in csv.DictReader(open(tmp_path / run / "metrics.csv"))
        ]

    assert rows("whole") == rows("resumed")


def test_existing_run_is_not_overwritten_without_the_flag(tiny_data, tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"precious")
    code, _, err = run_cli(
        ["train", tiny_data, "--out", run, "--arch", "mobilenet_v3_small", "--no-pretrained"]
    )
    assert code == 2
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (run / "best.pt").read_bytes() == b"precious"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--arch", "alexnet9000"], "unknown architecture"),
        (["--balance", "sometimes"], "--balance"),
    ],
)
def test_bad_flags_are_usage_errors(tiny_data, tmp_path, run_cli, flags, message):
    code, _, err = run_cli(["train", tiny_data, "--out", tmp_path / "r", *flags])
    assert code == 2 and message in err


def test_empty_dataset_is_a_one_line_dataset_error(tmp_path, run_cli):
    (tmp_path / "empty" / "genuine").mkdir(parents=True)
    code, _, err = run_cli(
        ["train", tmp_path / "empty", "--out", tmp_path / "r", "--no-pretrained"]
    )
    assert code == 4 and len(err.strip().splitlines()) == 1


def test_resume_of_a_folder_that_is_not_a_run_is_refused(tmp_path, run_cli):
    code, _, err = run_cli(["train", "--resume", tmp_path])
    assert code == 2 and "config.json" in err


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{not json", "JSONDecodeError"),
        ('{"other": 1}', "KeyError"),
        ('{"config": {"data": "d", "freeze_stages": "x"}}', "TypeError"),
        ('{"config": {"data": "d", "freeze_stages": -3}}', "--freeze-stages must be 0 or more"),
    ],
)
def test_resume_of_a_damaged_config_json_is_one_line_naming_the_file(
    tmp_path, run_cli, text, reason
):
    (tmp_path / "config.json").write_text(text)
    code, _, err = run_cli(["train", "--resume", tmp_path])
    assert code == 2 and str(tmp_path / "config.json") in err and reason in err
    assert len(err.strip().splitlines()) == 1


def test_class_weights_only_when_classes_are_uneven():
    assert class_weights([0, 1, 0, 1], "auto") is None
    weights = class_weights([0] * 30 + [1] * 10, "auto")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert class_weights([0] * 30 + [1] * 10, "off") is None


def test_learning_rate_warms_up_then_decays_to_one_percent():
    assert learning_rate(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert learning_rate(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert learning_rate(100, 100, 10, 1.0) == pytest.approx(0.01)
    assert learning_rate(55, 100, 10, 1.0) < learning_rate(20, 100, 10, 1.0)


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8))
    prep, aug = Preprocessing(img_size_px=32, resize_px=32), AugmentConfig()
    first = augment_image(photo, prep, aug, sample_generator(0, 1, 5))
    again = augment_image(photo, prep, aug, sample_generator(0, 1, 5))
    other = augment_image(photo, prep, aug, sample_generator(0, 2, 5))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_no_horizontal_flip_by_default():
    """A photo whose left half is black and right half white keeps that layout in every view."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = 255
    photo = Image.fromarray(pixels)
    prep = Preprocessing(img_size_px=32, resize_px=32)
    aug = AugmentConfig(
        crop_scale=(0.9, 1.0), rotate_deg=0, perspective_p=0, noise_p=0, jpeg_p=0, blur_p=0
    )
    for index in range(40):
        view = augment_image(photo, prep, aug, sample_generator(0, 0, index)).astype(int)
        assert view[:, :8].mean() < view[:, -8:].mean()


@pytest.mark.slow
def test_two_process_ddp_on_gloo_trains_and_only_rank_zero_writes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cfimg", "train", str(tiny_data), "--out", str(run), "--arch", "mobilenet_v3_small",
        "--no-pretrained", "--img-size", "32", "--epochs", "2", "--batch-size", "4",
        "--workers", "0", "--threads", "1", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch   2") == 1  # only rank 0 prints
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 2 and all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    load_model(run)


@pytest.mark.slow
def test_unreadable_photos_are_skipped_and_listed_not_fatal(tmp_path):
    from tests.conftest import make_image_tree

    root = tmp_path / "photos"
    make_image_tree(root, items=3, views=2, size_px=40)
    broken = root / "counterfeit" / "bag" / "brand-a" / "broken_1.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = _quiet_train(TrainConfig(data=str(root), epochs=1, out=str(tmp_path / "run"), **TINY))
    rows = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert [row["path"] for row in rows] == [str(broken)] and rows[0]["reason"]
    assert str(broken) in result.skipped
    assert "broken_1" not in (tmp_path / "run" / "split.csv").read_text()


@pytest.mark.slow
def test_validation_logits_equal_what_the_inference_engine_computes(tiny_data, tmp_path):
    """Training validates with the exact eval preprocessing, so its numbers are eval's numbers."""
    from cfimg.data import load_samples
    from cfimg.engines import load_engine
    from cfimg.imageio import load_rgb
    from cfimg.preprocess import preprocess_image

    run = tmp_path / "run"
    _quiet_train(TrainConfig(data=str(tiny_data), epochs=1, out=str(run), **TINY))
    payload = load_checkpoint(run / "best.pt")
    engine = load_engine(run, device="cpu")
    prep = engine.card.preprocessing
    val = [s for s in load_samples(run / "split.csv") if s.split == "val"]
    batch = np.stack(
        [preprocess_image(load_rgb(s.path, min_side_px=prep.resize_px), prep) for s in val]
    )
    _, logits = engine.predict(batch)
    assert np.allclose(logits, payload["val_logits"].numpy(), atol=1e-4)
    assert payload["val_labels"].tolist() == [s.label for s in val]


@pytest.mark.slow
def test_validation_on_the_cpu_runs_on_onnxruntime_and_matches_pytorch(
    tiny_data, tmp_path, monkeypatch
):
    """Each epoch's validation is scored by an in-memory ONNX export (faster on the CPU), and
    its figures are PyTorch's: the same validation loss to 1e-5 and the same ROC-AUC."""
    import cfimg.train.loop as loop

    exports = []
    real_twin = loop.network_twin

    def counted_twin(*args, **kwargs):
        twin = real_twin(*args, **kwargs)
        exports.append(twin is not None)  # None: the tracer gave up and PyTorch scored it
        return twin

    monkeypatch.setattr(loop, "network_twin", counted_twin)
    rows = {}
    for on_onnx in (True, False):
        run = tmp_path / f"run-{on_onnx}"
        config = TrainConfig(
            data=str(tiny_data), epochs=1, out=str(run), onnx_validation=on_onnx, **TINY
        )
        _quiet_train(config)
        rows[on_onnx] = list(csv.DictReader((run / "metrics.csv").open()))
    assert exports == [True]  # one export an epoch, none with onnx_validation=False
    assert len(rows[True]) == len(rows[False]) == 1
    for onnx_row, torch_row in zip(rows[True], rows[False], strict=True):
        assert abs(float(onnx_row["val_loss"]) - float(torch_row["val_loss"])) < 1e-5
        assert onnx_row["roc_auc"] == torch_row["roc_auc"]


@pytest.mark.slow
def test_compiled_training_with_loader_workers_runs_on_the_cpu(tiny_data, tmp_path):
    """`--compile` with data-loading workers: the compiled graph had segfaulted on batches in
    the workers' shared memory, killing the run with no message (so a subprocess here). The
    crash needs EfficientNet (MobileNetV3 did not show it); the compile costs ~1.5 min."""
    run = tmp_path / "run"
    argv = [
        sys.executable, "-m", "cfimg", "train", str(tiny_data), "--out", str(run),
        "--arch", "efficientnet_lite0", "--no-pretrained", "--img-size", "64",
        "--batch-size", "4", "--epochs", "1", "--workers", "2", "--compile", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "best.pt").is_file()
    assert json.loads((run / "config.json").read_text())["config"]["compile"] is True


@pytest.mark.slow
def test_the_validation_benchmark_times_both_passes_and_says_how_far_apart_they_are(
    tiny_data, tmp_path
):
    run = tmp_path / "run"
    _quiet_train(TrainConfig(data=str(tiny_data), epochs=1, out=str(run), **TINY))
    script = Path(__file__).parent.parent / "scripts" / "bench_validate.py"
    command = [sys.executable, str(script), str(run), "--rounds", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| pytorch eager |" in done.stdout and "| onnxruntime (export included) |" in done.stdout
    max_dlogit = float(done.stdout.rsplit("max |Δ logit| between the two:", 1)[1].split(";")[0])
    assert max_dlogit <= 1e-4
    missing = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nothere")], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "not a cfimg run folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    (run / "config.json").write_text("{not json")
    damaged = subprocess.run(
        [sys.executable, str(script), str(run)], capture_output=True, text=True
    )
    assert damaged.returncode != 0 and "config.json: damaged" in damaged.stderr
    assert "Traceback" not in damaged.stderr and len(damaged.stderr.strip().splitlines()) == 1


def test_run_name_without_out_goes_under_models(tiny_data, tmp_path, monkeypatch):
    from cfimg.distributed import DistributedContext
    from cfimg.train import prepare_run_dir

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data=str(tiny_data), name="first", **TINY)
    named = prepare_run_dir(config, None, DistributedContext())
    assert named.resolve() == tmp_path / "models" / "first" and named.is_dir()
    generated = prepare_run_dir(
        TrainConfig(data=str(tiny_data), **TINY), None, DistributedContext()
    )
    assert generated.parent.resolve() == tmp_path / "models"
    assert generated.name.startswith("mobilenet_v3_small-32px-")


@pytest.mark.slow
def test_photos_that_break_during_training_do_not_end_the_run(
    tiny_data, tmp_path, monkeypatch, capsys
):
    import cfimg.model_input
    from cfimg.errors import ImageLoadError

    real_load_rgb = cfimg.model_input.load_rgb
    calls = []

    def flaky_load_rgb(path, **kwargs):  # every file was readable when checked; now some fail
        calls.append(path)
        if len(calls) % 3 == 0:
            raise ImageLoadError(path, "truncated image data")
        return real_load_rgb(path, **kwargs)

    monkeypatch.setattr(cfimg.model_input, "load_rgb", flaky_load_rgb)
    result = _quiet_train(
        TrainConfig(data=str(tiny_data), epochs=1, out=str(tmp_path / "r"), **TINY)
    )
    assert result.epochs_run == 1 and (tmp_path / "r" / "best.pt").is_file()
    assert "truncated image data (unreadable since the run started)" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_over(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), epochs=1, **TINY)
    whole = _quiet_train(replace(config, out=str(tmp_path / "whole")))
    _quiet_train(replace(config, out=str(tmp_path / "killed"), stop_after_steps=1))
    (tmp_path / "killed" / "last.pt").unlink()  # as if killed before the first save
    resumed = _quiet_train(
        replace(config, out=str(tmp_path / "killed")), resume_dir=str(tmp_path / "killed")
    )
    assert resumed.best_metrics["roc_auc"] == whole.best_metrics["roc_auc"]
    assert resumed.best_metrics["train_loss"] == whole.best_metrics["train_loss"]


def test_ctrl_c_says_how_to_resume_and_the_run_resumes(tiny_data, tmp_path, monkeypatch):
    import cfimg.train.optim as cfimg_train
    from cfimg.errors import EXIT_INTERRUPTED, TrainingInterrupted

    calls = {"n": 0}
    real_learning_rate = cfimg_train.learning_rate

    def interrupt_at_step_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_learning_rate(*args)

    run = tmp_path / "run"
    config = TrainConfig(data=str(tiny_data), epochs=1, out=str(run), save_every_steps=1, **TINY)
    monkeypatch.setattr(cfimg_train, "learning_rate", interrupt_at_step_3)
    with pytest.raises(TrainingInterrupted) as caught:
        _quiet_train(config)
    assert caught.value.exit_code == EXIT_INTERRUPTED
    assert f"cfimg train --resume {run}" in str(caught.value)
    assert load_checkpoint(run / "last.pt")["progress"]["global_step"] == 2
    monkeypatch.setattr(cfimg_train, "learning_rate", real_learning_rate)
    resumed = _quiet_train(config, resume_dir=str(run))
    assert resumed.epochs_run == 1 and (run / "best.pt").is_file()


class _TinyNet(torch.nn.Module):
    """Conv, BatchNorm, LayerNorm and a Linear head: every kind of parameter decay treats apart."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, images):
        features = self.bn(self.conv(images)).mean(dim=(2, 3))
        return None, self.head(self.norm(features))


def _decay_by_name(model, optimizer) -> dict[str, float]:
    decay = {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }
    return {name: decay[id(p)] for name, p in model.named_parameters()}


def test_norm_weights_and_biases_are_not_weight_decayed_conv_and_linear_weights_are():
    from cfimg.train import make_optimizer

    model = _TinyNet()
    optimizer = make_optimizer(model, TrainConfig(data="", weight_decay=0.05))
    assert _decay_by_name(model, optimizer) == {
        "conv.weight": 0.05,
        "conv.bias": 0.0,
        "bn.weight": 0.0,
        "bn.bias": 0.0,
        "norm.weight": 0.0,
        "norm.bias": 0.0,
        "head.weight": 0.05,
        "head.bias": 0.0,
    }


def test_weight_decay_groups_of_a_real_architecture_leave_every_norm_weight_undecayed():
    from cfimg.models import create_model
    from cfimg.train import make_optimizer

    network = create_model("mobilenet_v3_small", pretrained=False)
    decay = _decay_by_name(network, make_optimizer(network, TrainConfig(data="", weight_decay=0.1)))
    norms = (torch.nn.BatchNorm2d, torch.nn.LayerNorm)
    for module_name, module in network.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}"
            expected = 0.0 if name == "bias" or isinstance(module, norms) else 0.1
            assert decay[full] == expected, full


def test_frozen_backbone_step_changes_only_the_head_even_with_weight_decay():
    from cfimg.train.loop import train_step
    from cfimg.train.optim import TrainingParts, make_optimizer

    torch.manual_seed(0)
    model = _TinyNet()
    parts = TrainingParts(
        model=model,
        forward=model,
        ema=None,
        optimizer=make_optimizer(model, TrainConfig(data="", weight_decay=0.5)),
        scaler=None,
        criterion=torch.nn.CrossEntropyLoss(),
        amp_dtype=None,
        head_names={"head.weight", "head.bias"},
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    conv_backward = []
    model.conv.register_full_backward_hook(lambda *args: conv_backward.append(1))
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    train_step(parts, images, labels, lr=0.1, seed=0, frozen=True, clip_norm=1.0)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.weight", "head.bias"}
    assert not conv_backward  # the backbone's backward pass is not run at all
    assert all(p.requires_grad for p in model.parameters())  # and it trains again afterwards
    train_step(parts, images, labels, lr=0.1, seed=1, frozen=False, clip_norm=1.0)
    assert conv_backward and not torch.equal(model.conv.weight, before["conv.weight"])


def test_optimizer_state_from_before_the_decay_groups_resumes_into_them():
    """A last.pt written with one parameter group keeps each parameter's AdamW moments."""
    from cfimg.train.optim import load_optimizer_state, make_optimizer

    torch.manual_seed(0)
    model = _TinyNet()
    old = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    model(torch.randn(2, 3, 8, 8))[1].sum().backward()
    old.step()
    saved = old.state_dict()
    new = make_optimizer(model, TrainConfig(data="", weight_decay=0.05))
    load_optimizer_state(new, saved, model)
    for parameter in model.parameters():
        assert torch.equal(new.state[parameter]["exp_avg"], old.state[parameter]["exp_avg"])
    assert _decay_by_name(model, new)["bn.weight"] == 0.0


def test_config_json_names_what_weight_decay_leaves_out(tmp_path):
    from cfimg.distributed import DistributedContext
    from cfimg.train.run_files import write_config

    config = TrainConfig(data="photos", **TINY)
    write_config(tmp_path, config, config.preprocessing(), [], "0" * 16, {}, DistributedContext())
    resolved = json.loads((tmp_path / "config.json").read_text())["resolved"]
    assert resolved["no_weight_decay"] == "1-D parameters: norm weights and biases"


def test_the_default_recipe_resolves_to_a_384_px_frame_native_crops_five_frozen_stages_relate():
    config = TrainConfig(data="photos").resolved()
    assert (config.img_size_px, config.augment.native_crop_px, config.freeze_stages) == (
        384,
        224,
        5,
    )
    assert config.pooling == "relate" and config.head().pooling == "relate"
    assert config.preprocessing().img_size_px == 384
    # from scratch nothing is frozen; a frame no larger than the arch's side keeps resized crops
    scratch = TrainConfig(data="photos", pretrained=False, img_size_px=224).resolved()
    assert (scratch.freeze_stages, scratch.augment.native_crop_px) == (0, 0)
    lite2 = TrainConfig(data="photos", arch="efficientnet_lite2").resolved()
    assert lite2.augment.native_crop_px == 260  # the arch's own input side
    # explicit choices win, and resolving twice changes nothing
    mine = TrainConfig(data="photos", img_size_px=320, freeze_stages=0).resolved()
    assert (mine.img_size_px, mine.freeze_stages, mine.augment.native_crop_px) == (320, 0, 224)
    assert mine.resolved() == mine


def test_a_config_json_from_before_the_automatic_recipe_resumes_with_its_old_recipe():
    from cfimg.train.config import TrainConfig as Config

    old = TrainConfig(data="photos").to_dict()
    del old["freeze_stages"]
    old["img_size_px"] = None
    old["augment"]["native_crop_px"] = None
    del old["pooling"]
    config = Config.from_dict(old).resolved()
    assert (config.img_size_px, config.augment.native_crop_px, config.freeze_stages) == (224, 0, 0)
    assert config.pooling == "avg"  # what a run written before pooling was a choice used


def test_a_run_records_its_resolved_recipe_in_config_json(tiny_data, tmp_path):
    run = tmp_path / "run"
    _quiet_train(TrainConfig(data=str(tiny_data), epochs=1, out=str(run), **TINY))
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["freeze_stages"] == 0 and saved["augment"]["native_crop_px"] == 0


# --- the recipe's levers for fine local cues -----------------------------------------------------


def test_ema_warms_up_so_a_run_of_a_few_dozen_steps_is_not_the_random_head():
    from cfimg.train.optim import ema_decay_at, make_ema

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = make_ema(model, decay=0.99)
    for _step in range(45):  # 100 photos, 80 for training, batch 32, 15 epochs
        with torch.no_grad():
            model.weight.fill_(1.0)
        ema.update_parameters(model)
    # A fixed 0.99 would hold 1 - 0.99**44 = 0.36 of the trained weight; the warm-up ~0.97.
    assert float(ema.module.weight.detach()) > 0.9
    assert ema_decay_at(10_000, 0.99) == 0.99 and ema_decay_at(1, 0.99) < 0.5


def test_native_crops_keep_the_evaluation_scale_and_the_crop_side():
    prep = Preprocessing(img_size_px=64, resize_px=64)
    stripes = np.zeros((128, 128, 3), np.uint8)
    stripes[:, ::4] = 255  # a 4 px period at 128 px; 2 px at the evaluation scale (64)
    aug = replace(AugmentConfig(), native_crop_px=24, rotate_deg=0, perspective_p=0, blur_p=0)
    aug = replace(aug, jpeg_p=0, noise_p=0, brightness=0, contrast=0)
    view = augment_image(Image.fromarray(stripes), prep, aug, sample_generator(0, 0, 0))
    assert view.shape == (24, 24, 3)
    row = view[12, :, 0].astype(int)
    assert np.abs(np.diff(row)).mean() > 60  # still alternating every pixel: not resampled away


def test_native_zoom_varies_each_crops_scale_within_its_bounds_and_keeps_its_side():
    prep = Preprocessing(img_size_px=64, resize_px=64)
    # a horizontal ramp: the span of values across a crop's row says how wide a box it took
    ramp = np.repeat(np.linspace(0, 255, 256)[None, :, None], 256, axis=0).repeat(3, axis=2)
    photo = Image.fromarray(ramp.astype(np.uint8))
    plain = replace(AugmentConfig(), native_crop_px=24, rotate_deg=0, perspective_p=0, blur_p=0)
    plain = replace(plain, jpeg_p=0, noise_p=0, brightness=0, contrast=0)

    def spans(aug: AugmentConfig) -> list[float]:
        views = [augment_image(photo, prep, aug, sample_generator(0, 0, i)) for i in range(40)]
        assert all(view.shape == (24, 24, 3) for view in views)
        # 24 px at the evaluation scale (64 of 256) cover 96 source columns, ~95 levels
        return [float(view[12, -1, 0]) - float(view[12, 0, 0]) for view in views]

    assert max(spans(plain)) - min(spans(plain)) < 3  # no zoom: every crop the same scale
    zoomed = spans(replace(plain, native_zoom=1.25))
    nominal = 95.0 * 23 / 24  # first to last pixel centre
    assert min(zoomed) < 0.9 * nominal and max(zoomed) > 1.1 * nominal
    assert nominal / 1.25 - 3 < min(zoomed) and max(zoomed) < nominal * 1.25 + 3


def test_layer_decay_gives_the_head_the_full_rate_and_the_stem_the_least():
    from cfimg.heads import HeadSpec
    from cfimg.models import ClassifierWithPreprocessing, create_model, head_parameter_names
    from cfimg.train.optim import make_optimizer, set_learning_rate

    network = create_model("mobilenet_v3_small", head=HeadSpec("attn"), pretrained=False)
    model = ClassifierWithPreprocessing(network, Preprocessing())
    heads = {f"network.{n}" for n in head_parameter_names(network)}
    config = TrainConfig(data="unused", layer_decay=0.8)
    optimizer = make_optimizer(model, config, heads)
    set_learning_rate(optimizer, 1e-3)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["network.classifier.3.weight"])] == pytest.approx(1e-3)
    assert rate[id(named["network.avgpool.pool.score.weight"])] == pytest.approx(1e-3)
    stem = rate[id(named["network.features.0.0.weight"])]
    assert stem == min(rate.values()) and stem < 1e-4
    assert len(rate) == len(named)  # every parameter is trained, once


def test_frozen_stages_keep_their_weights_and_norm_statistics_and_the_rest_trains():
    from cfimg.heads import HeadSpec
    from cfimg.models import ClassifierWithPreprocessing, create_model, head_parameter_names
    from cfimg.train.loop import train_step
    from cfimg.train.optim import TrainingParts, freeze_stages, make_optimizer, network_stages

    torch.manual_seed(0)
    network = create_model("mobilenet_v3_small", head=HeadSpec(), pretrained=False)
    model = ClassifierWithPreprocessing(network, Preprocessing(img_size_px=64, resize_px=64))
    heads = {f"network.{n}" for n in head_parameter_names(network)}
    stages = network_stages(model)
    assert stages[0][0] == "network.features.0.0.weight"  # the stem first
    freeze_stages(model, 2, heads)
    parts = TrainingParts(
        model=model,
        forward=model,
        ema=None,
        optimizer=make_optimizer(model, TrainConfig(data="", weight_decay=0.05, freeze_stages=2)),
        scaler=None,
        criterion=nn.CrossEntropyLoss(),
        amp_dtype=None,
        head_names=heads,
    )
    frozen = {name for names in stages[:2] for name in names}
    in_optimizer = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert all(id(named[name]) not in in_optimizer for name in frozen)
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    parts.train_mode()
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    train_step(
        parts, images, torch.tensor([0, 1, 0, 1]), lr=1e-2, seed=0, frozen=False, clip_norm=1.0
    )
    after = model.state_dict()
    stem_norm = "network.features.0.1.running_mean"  # a frozen norm layer's statistics
    assert torch.equal(before[stem_norm], after[stem_norm])
    assert all(torch.equal(before[name], after[name]) for name in frozen)
    assert not torch.equal(
        before["network.features.3.block.0.0.weight"], after["network.features.3.block.0.0.weight"]
    )
    assert not torch.equal(
        before["network.classifier.3.weight"], after["network.classifier.3.weight"]
    )


@pytest.mark.slow
def test_head_and_native_crop_choices_reach_the_card_and_reload(tiny_data, tmp_path):
    run = tmp_path / "run"
    config = TrainConfig(
        data=str(tiny_data),
        epochs=1,
        out=str(run),
        pooling="attn",
        head_dropout=0.1,
        tiles=2,
        layer_decay=0.7,
        augment=AugmentConfig(native_crop_px=24),
        **TINY,
    )
    _quiet_train(config)
    _model, card = load_model(run)
    assert (card.head.pooling, card.head.dropout) == ("attn", 0.1)
    assert card.preprocessing.img_size_px == 32  # inference still covers the whole frame...
    assert (card.head.tiles, card.head.tile_px) == (2, 24)  # ...in 2 x 2 tiles of the crop side


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pooling", "median"], "--pooling must be one of"),
        (["--crop", "4096"], "--crop must be 0 (resized crops) or between"),
        (["--layer-decay", "1.5"], "--layer-decay must be in"),
        (["--freeze-stages", "-1"], "--freeze-stages must be"),
        (["--threads", "0"], "--threads must be 1 or more"),
        (["--mixup", "-1"], "--mixup must be 0 (off) or positive"),
        (["--tiles", "0"], "--tiles must be 1 (the whole frame) or more"),
        (["--tiles", "2", "--crop", "0"], "--tiles 2 needs native-scale training crops"),
        (["--zoom", "0.8"], "--zoom must be between 1 (off) and 4"),
        (["--zoom", "1.25", "--crop", "0"], "--zoom jitters native-scale crops"),
    ],
)
def test_bad_recipe_flags_are_one_line_usage_errors(tiny_data, tmp_path, run_cli, flags, message):
    code, _out, err = run_cli(["train", tiny_data, "--out", tmp_path / "r", *flags])
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_zoom_flag_trains_and_is_recorded_in_the_run_config(tiny_data, tmp_path, run_cli):
    run = tmp_path / "zoomed"
    flags = ["--arch", "mobilenet_v3_small", "--no-pretrained", "--img-size", "32", "--crop", "24"]
    flags += ["--zoom", "1.2", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--quiet"]
    code, _out, err = run_cli(["train", tiny_data, "--out", run, *flags])
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())["config"]["augment"]
    assert (saved["native_crop_px"], saved["native_zoom"]) == (24, 1.2)


def test_mixup_blends_each_photo_with_a_partner_of_the_batch_and_repeats_for_its_seed():
    from cfimg.augment import mixup_batch

    # photo i is a flat grey of level 20 * i, so every blended pixel says who was mixed with whom
    images = (torch.arange(8, dtype=torch.uint8) * 20).view(8, 1, 1, 1).expand(8, 4, 4, 3)
    blended, partner, lam = mixup_batch(images, 0.4, seed=3)
    assert blended.dtype == torch.uint8 and blended.shape == images.shape
    assert sorted(partner.tolist()) == list(range(8)) and 0.0 <= lam <= 1.0
    expected = (lam * images.float() + (1 - lam) * images[partner].float()).round()
    assert torch.equal(blended, expected.to(torch.uint8))
    again, partner_again, lam_again = mixup_batch(images, 0.4, seed=3)
    assert torch.equal(again, blended) and torch.equal(partner_again, partner)
    assert lam_again == lam
    draws = {mixup_batch(images, 0.4, seed=s)[2] for s in range(20)}
    assert len(draws) == 20  # a new blend every step


class _TinyUint8Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, images_uint8_nhwc):
        return None, self.head(images_uint8_nhwc.float().mean(dim=(1, 2)) / 255)


def test_a_mixup_step_trains_on_the_blend_of_both_photos_losses():
    from cfimg.augment import mixup_batch
    from cfimg.train.loop import train_step
    from cfimg.train.optim import TrainingParts, make_optimizer

    torch.manual_seed(0)
    model = _TinyUint8Net()
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    parts = TrainingParts(
        model=model,
        forward=model,
        ema=None,
        optimizer=make_optimizer(model, TrainConfig(data="")),
        scaler=None,
        criterion=criterion,
        amp_dtype=None,
        head_names={"head.weight", "head.bias"},
    )
    images = torch.randint(0, 256, (6, 5, 5, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    blended, partner, lam = mixup_batch(images, 0.4, seed=11)
    with torch.no_grad():
        logits = model(blended)[1]
        expected = lam * criterion(logits, labels) + (1 - lam) * criterion(logits, labels[partner])
        unmixed = criterion(model(images)[1], labels)
    step = dict(lr=0.0, seed=11, frozen=False, clip_norm=1.0)  # lr 0: the weights stay put
    assert train_step(parts, images, labels, mixup_alpha=0.4, **step) == pytest.approx(
        float(expected), abs=1e-6
    )
    assert train_step(parts, images, labels, **step) == pytest.approx(float(unmixed), abs=1e-6)
    assert abs(float(expected) - float(unmixed)) > 1e-4  # so the two checks tell them apart
