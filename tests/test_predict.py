"""`cfimg predict` end to end with a tiny model: inputs, bad files, crashes, resume, shards."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfimg.card import ModelCard
from cfimg.errors import EXIT_SOME_INPUTS_FAILED
from cfimg.preprocess import Preprocessing
from cfimg.results import CSV_HEADER, read_results

IMG_PX = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """{'pt': checkpoint, 'onnx': same weights exported, 'band': onnx with an uncertain band}."""
    import onnx
    import torch

    from cfimg.checkpoint import save_checkpoint
    from cfimg.models import ClassifierWithPreprocessing, create_model

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    network = create_model("mobilenet_v3_small", pretrained=False)
    # Freshly initialised, its activations vanish and every p is 0.5: set the batch-norm
    # statistics from a few random batches and widen the head, so p spreads over (0, 1).
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        for _ in range(3):
            network(torch.rand(16, 3, IMG_PX, IMG_PX) * 4 - 2)
    network.eval()
    torch.nn.init.normal_(network.classifier[-1].weight, std=1.0)
    prep = Preprocessing(img_size_px=IMG_PX, resize_px=IMG_PX)
    card = ModelCard(arch="mobilenet_v3_small", preprocessing=prep, model_id="tiny@1")
    save_checkpoint(root / "tiny.pt", card=card, model_state=network.state_dict())
    wrapped = ClassifierWithPreprocessing(network, prep, card.temperature).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (torch.zeros(2, IMG_PX, IMG_PX, 3, dtype=torch.uint8),),
            str(root / "tiny.onnx"),
            input_names=["image"],
            output_names=["probabilities", "logits"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
        )
    paths = {"pt": root / "tiny.pt", "onnx": root / "tiny.onnx", "band": root / "band.onnx"}
    for key, model_card in (("onnx", card), ("band", card.updated(uncertain_band=(0.0, 1.0)))):
        proto = onnx.load(str(root / "tiny.onnx"))
        for name, value in model_card.to_onnx_metadata().items():
            proto.metadata_props.add(key=name, value=value)
        onnx.save(proto, str(paths[key]))
    return paths


@pytest.fixture
def photos(tmp_path, write_image) -> Path:
    """12 good photos in photos/ and photos/sub/, plus a text file to be ignored."""
    root = tmp_path / "photos"
    for index in range(12):
        folder = root / "sub" if index % 3 == 0 else root
        suffix = ".JPG" if index % 4 == 0 else ".png"
        write_image(folder / f"p{index:02d}{suffix}", size_px=(48, 40), seed=index)
    (root / "notes.txt").write_text("not a photo")
    return root


def image_paths(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png")}


def rows_by_path(out: Path) -> dict:
    rows = list(read_results(out))
    assert len(rows) == len({row.path for row in rows}), "duplicate rows"
    return {row.path: row for row in rows}


@pytest.fixture
def crash_hooks(tmp_path, monkeypatch) -> None:
    """Decode workers (fresh interpreters) load this sitecustomize: a path containing
    'crash-me' segfaults the worker, 'hang-me' hangs it, 'slow' takes 50 ms."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os, signal, time
            import cfimg.imageio as imageio

            _load_rgb = imageio.load_rgb

            def load_rgb(path, **options):
                if "crash-me" in str(path):
                    os.kill(os.getpid(), signal.SIGSEGV)
                if "hang-me" in str(path):
                    time.sleep(600)
                if "slow" in str(path):
                    time.sleep(0.05)
                return _load_rgb(path, **options)

            imageio.load_rgb = load_rgb
            """
        )
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])
    )


# -- inputs ---------------------------------------------------------------------------------------


def test_folder_input_classifies_every_image_and_exits_0(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.csv"
    code, stdout, _ = run_cli(["predict", models["onnx"], photos, "--out", out, "--no-progress"])
    assert code == 0
    rows = rows_by_path(out)
    assert set(rows) == image_paths(photos)
    for row in rows.values():
        assert row.verdict == ("counterfeit" if row.p_counterfeit >= 0.5 else "genuine")
        assert (row.width, row.height, row.threshold, row.model_id) == (48, 40, 0.5, "tiny@1")
        assert row.error == ""
    assert len({round(row.p_counterfeit, 3) for row in rows.values()}) > 3  # a real model
    assert "12 rows written" in stdout


def test_rows_follow_input_order(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.csv"
    run_cli(["predict", models["onnx"], photos, "-o", out, "-b", "2", "--no-progress"])
    from cfimg.inputs import iter_input_paths

    assert [row.path for row in read_results(out)] == list(iter_input_paths([str(photos)]))


@pytest.mark.parametrize("form", ["file", "glob", "list", "stdin"])
def test_each_input_form_reaches_the_same_images(
    run_cli, models, photos, tmp_path, monkeypatch, form
):
    wanted = sorted(image_paths(photos))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(wanted) + "\n")
    arguments = {
        "file": wanted,
        "glob": [str(photos / "**" / "*.*")],
        "list": [f"@{listing}"],
        "stdin": ["-"],
    }[form]
    monkeypatch.setattr(sys, "stdin", io.StringIO(listing.read_text()))
    out = tmp_path / "out.jsonl"
    code, _, _ = run_cli(["predict", models["onnx"], *arguments, "-o", out, "--no-progress"])
    assert code == 0
    assert sorted(rows_by_path(out)) == wanted


# -- bad inputs ---------------------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path, write_image) -> tuple[Path, set[str], set[str]]:
    """A folder of awkward-but-good photos and broken files: (root, good names, bad names)."""
    root = tmp_path / "mixed"
    root.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (40, 48))).astype(np.uint16)).save(root / "deep.png")
    Image.fromarray(pixels).convert("P").save(root / "palette.png")
    Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(root / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the row reports the upright size
    Image.fromarray(pixels).save(root / "rotated.jpg", exif=exif)
    good = write_image(root / "plain.jpg", size_px=(48, 40))
    (root / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "corrupt.jpg").write_bytes(rng.integers(0, 255, 2000, dtype=np.uint8).tobytes())
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("hello, I am not a photo\n")
    (root / "dangling.jpg").symlink_to(tmp_path / "vanished.jpg")
    write_image(root / "bomb.png", size_px=(200, 200))  # over the --max-pixels given below
    good_names = {"cmyk.jpg", "deep.png", "palette.png", "alpha.png", "rotated.jpg", "plain.jpg"}
    bad_names = {
        "truncated.jpg",
        "corrupt.jpg",
        "empty.png",
        "text.jpg",
        "dangling.jpg",
        "bomb.png",
    }
    return root, good_names, bad_names


def test_bad_files_become_error_rows_and_every_good_one_is_classified(
    run_cli, models, mixed_folder, tmp_path
):
    root, good_names, bad_names = mixed_folder
    out = tmp_path / "out.csv"
    code, stdout, stderr = run_cli(
        ["predict", models["onnx"], root, "-o", out, "--max-pixels", "20000", "--no-progress"]
    )
    assert code == EXIT_SOME_INPUTS_FAILED
    rows = {Path(path).name: row for path, row in rows_by_path(out).items()}
    assert set(rows) == good_names | bad_names
    assert {name for name, row in rows.items() if not row.failed} == good_names
    reasons = {name: rows[name].error for name in bad_names}
    assert reasons["empty.png"] == "empty file"
    assert reasons["dangling.jpg"] == "dangling symlink"
    assert reasons["text.jpg"] == "not an image file"
    assert reasons["truncated.jpg"] == "truncated image data"
    assert reasons["bomb.png"].startswith("image too large (40000 pixels")
    assert all(rows[name].p_counterfeit is None for name in bad_names)
    assert (rows["rotated.jpg"].width, rows["rotated.jpg"].height) == (40, 48)
    assert (rows["bomb.png"].width, rows["bomb.png"].height) == (200, 200)
    assert "errors by reason" in stdout and "Traceback" not in stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_an_error_row(run_cli, models, photos, tmp_path):
    locked = photos / "p01.png"
    locked.chmod(0)
    out = tmp_path / "out.csv"
    code, _, _ = run_cli(["predict", models["onnx"], photos, "-o", out, "--no-progress"])
    assert code == EXIT_SOME_INPUTS_FAILED
    assert rows_by_path(out)[str(locked)].error == "permission denied"


def test_a_crashing_decoder_costs_only_its_file(models, photos, crash_hooks, tmp_path, write_image):
    from cfimg.predict import predict_paths

    write_image(photos / "crash-me.png", size_px=(48, 40))
    summary = predict_paths(
        models["onnx"], [str(photos)], tmp_path / "out.csv", workers=2, progress=False
    )
    rows = rows_by_path(tmp_path / "out.csv")
    assert set(rows) == image_paths(photos)
    crashed = rows[str(photos / "crash-me.png")]
    assert crashed.failed and crashed.error == "decoder process crashed (SIGSEGV)"
    assert sum(row.failed for row in rows.values()) == 1
    assert summary.exit_code == EXIT_SOME_INPUTS_FAILED


def test_a_hanging_decoder_is_stopped_after_the_timeout(models, photos, crash_hooks, write_image):
    from cfimg.engines import load_engine
    from cfimg.predict import classify

    hanging = str(write_image(photos / "hang-me.png", size_px=(48, 40)))
    paths = [str(photos / "p01.png"), hanging, str(photos / "p02.png")]
    engine = load_engine(models["onnx"], device="cpu")
    rows = list(classify(engine, paths, workers=1, decode_timeout_s=1.0))
    assert [row.path for row in rows] == paths
    assert [row.failed for row in rows] == [False, True, False]
    assert rows[1].error == "decoding took longer than 1 s (stopped)"


def test_decode_workers_that_cannot_start_end_the_run_with_one_line(
    run_cli, models, photos, tmp_path, monkeypatch
):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("import os\nos._exit(7)\n")
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    out = tmp_path / "out.csv"
    code, _, stderr = run_cli(["predict", models["onnx"], photos, "-o", out, "--no-progress"])
    assert code == 1
    assert stderr.strip() == "error: decode worker processes fail to start (exit status 7)"
    assert list(read_results(out)) == []  # no file was blamed for it


def test_paths_are_pulled_lazily_as_room_frees_up(tmp_path):
    from cfimg.predict import DecodePool

    pulled = 0

    def paths():
        nonlocal pulled
        for index in range(100_000):
            pulled += 1
            yield str(tmp_path / f"missing{index}.jpg")

    prep = Preprocessing(img_size_px=IMG_PX, resize_px=IMG_PX)
    with DecodePool(paths(), prep, workers=2, max_in_flight=8) as pool:
        first = [pool.get(timeout=30) for _ in range(3)]
        time.sleep(0.5)  # the workers could race ahead now, if nothing held them back
        assert [image.error for image in first] == ["file not found"] * 3
        assert pulled <= 3 + 8 + 8 + 1  # taken + in flight + ordered queue + one look-ahead


def test_classify_images_runs_the_engine_once_on_the_decoded_and_keeps_order():
    from cfimg.model_input import ModelInput
    from cfimg.predict import classify_images

    class HalfSure:  # p_counterfeit 0.75 for every image, counting its calls
        card = ModelCard(arch="x", preprocessing=Preprocessing(), model_id="card@1")
        batches: list[int] = []

        def predict(self, pixels):
            self.batches.append(len(pixels))
            return np.tile([0.25, 0.75], (len(pixels), 1)), None

    pixels = np.zeros((2, 2, 3), np.uint8)
    images = [
        ModelInput("a.jpg", pixels, "", 4, 3),
        ModelInput("bad.jpg", None, "empty file"),
        ModelInput("b.jpg", pixels, "", 5, 6),
    ]
    engine = HalfSure()
    rows = classify_images(engine, images, threshold=0.8)
    assert engine.batches == [2]
    assert [(r.path, r.verdict, r.p_counterfeit) for r in rows] == [
        ("a.jpg", "genuine", 0.75),
        ("bad.jpg", "error", None),
        ("b.jpg", "genuine", 0.75),
    ]
    assert (rows[1].error, rows[2].width, rows[2].height) == ("empty file", 5, 6)
    assert {(r.threshold, r.model_id) for r in rows} == {(0.8, "card@1")}


def test_decode_workers_never_import_torch_or_onnxruntime():
    # A worker runs `from cfimg.predict.decode_pool import _worker_entry` in a fresh interpreter.
    probe = "import sys, cfimg.predict; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


# -- resume, shards, merge ----------------------------------------------------------------------


def test_resume_after_a_kill_loses_and_duplicates_nothing(
    models, tmp_path, write_image, crash_hooks
):
    root = tmp_path / "slow"
    for index in range(40):
        write_image(root / f"slow{index:02d}.png", size_px=(48, 40), seed=index)
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "cfimg", "predict", str(models["onnx"]), str(root), "-o",
               str(out), "-b", "2", "--workers", "1", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = out.read_bytes()
    done_before = len(list(read_results(out)))
    assert 4 <= done_before < 40, "the kill must land mid-run for this test to mean anything"
    with open(out, "ab") as handle:  # as if killed in the middle of writing a row
        handle.write(f"{root}/slow39.png,genu".encode())

    from cfimg.predict import predict_paths

    summary = predict_paths(models["onnx"], [str(root)], out, resume=True, progress=False)
    rows = rows_by_path(out)
    assert set(rows) == image_paths(root)
    assert out.read_bytes().startswith(before)  # the rows written before the kill are kept
    assert summary.skipped_done == done_before
    assert summary.rows_written == 40 - done_before
    assert summary.total_rows == 40 and summary.exit_code == 0


def test_resume_classifies_only_the_missing_paths(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.jsonl"
    run_cli(["predict", models["onnx"], photos, "-o", out, "--no-progress"])
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]))
    code, stdout, _ = run_cli(["predict", models["onnx"], photos, "-o", out, "--resume"])
    assert code == 0
    assert set(rows_by_path(out)) == image_paths(photos)
    assert "7 rows written" in stdout and "(5 already there)" in stdout


def test_union_of_shards_is_the_whole_input_without_overlap(run_cli, models, photos, tmp_path):
    whole = tmp_path / "whole.csv"
    run_cli(["predict", models["onnx"], photos, "-o", whole, "--no-progress"])
    parts = []
    for k in (1, 2, 3):
        parts.append(tmp_path / f"part-{k}.csv")
        code, _, _ = run_cli(
            ["predict", models["onnx"], photos, "-o", parts[-1], "--shard", f"{k}/3",
             "--no-progress"]
        )  # fmt: skip
        assert code == 0
    shares = [set(rows_by_path(part)) for part in parts]
    assert sum(len(share) for share in shares) == len(image_paths(photos))
    assert set().union(*shares) == image_paths(photos)
    code, stdout, _ = run_cli(["merge", tmp_path / "merged.csv", *parts])
    assert code == 0 and "merged 12 rows from 3 files" in stdout
    merged, reference = rows_by_path(tmp_path / "merged.csv"), rows_by_path(whole)
    assert merged.keys() == reference.keys()
    assert all(merged[p].p_counterfeit == pytest.approx(reference[p].p_counterfeit) for p in merged)


def test_sort_rewrites_the_output_most_suspicious_first(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.csv"
    run_cli(["predict", models["onnx"], photos, "-o", out, "--sort", "--no-progress"])
    scores = [row.p_counterfeit for row in read_results(out)]
    assert len(scores) == 12 and scores == sorted(scores, reverse=True)


# -- engines and verdicts -----------------------------------------------------------------------


def test_onnx_and_pt_engines_agree(run_cli, models, photos, tmp_path):
    for kind in ("onnx", "pt"):
        run_cli(["predict", models[kind], photos, "-o", tmp_path / f"{kind}.csv", "--no-progress"])
    onnx_rows, pt_rows = rows_by_path(tmp_path / "onnx.csv"), rows_by_path(tmp_path / "pt.csv")
    assert onnx_rows.keys() == pt_rows.keys()
    for path, row in onnx_rows.items():
        assert abs(row.p_counterfeit - pt_rows[path].p_counterfeit) < 1e-4


def test_decoding_in_the_main_process_gives_the_same_rows(models, photos, tmp_path):
    from cfimg.predict import predict_paths

    for workers in (0, 2):
        predict_paths(
            models["onnx"], [str(photos)], tmp_path / f"w{workers}.csv", workers=workers,
            batch_size=5, progress=False,
        )  # fmt: skip
    assert (tmp_path / "w0.csv").read_text() == (tmp_path / "w2.csv").read_text()


def test_threshold_flag_overrides_the_models_threshold(run_cli, models, photos, tmp_path):
    for threshold in ("0", "1"):
        out = tmp_path / f"t{threshold}.csv"
        run_cli(["predict", models["onnx"], photos, "-o", out, "--threshold", threshold])
        verdicts = {row.verdict for row in read_results(out)}
        assert verdicts == ({"counterfeit"} if threshold == "0" else {"genuine"})
        assert {row.threshold for row in read_results(out)} == {float(threshold)}


def test_the_models_uncertain_band_gives_uncertain_verdicts(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.csv"
    code, stdout, _ = run_cli(["predict", models["band"], photos, "-o", out, "--no-progress"])
    assert code == 0
    assert {row.verdict for row in read_results(out)} == {"uncertain"}
    assert "uncertain" in stdout


# -- exit statuses ------------------------------------------------------------------------------


def test_existing_output_is_kept_and_the_run_refused(run_cli, models, photos, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    code, _, stderr = run_cli(["predict", models["onnx"], photos, "-o", out])
    assert code == 2 and "already exists" in stderr
    assert out.read_text() == "precious\n"
    code, _, _ = run_cli(["predict", models["onnx"], photos, "-o", out, "--overwrite"])
    assert code == 0 and out.read_text().startswith(CSV_HEADER)


def test_no_images_found_is_a_usage_error(run_cli, models, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli(
        ["predict", models["onnx"], tmp_path / "empty", "-o", tmp_path / "o.csv"]
    )
    assert code == 2 and "no images found" in stderr
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-o", "out.txt"], ".csv or .jsonl"),
        (["-o", "out.csv", "--shard", "4/3"], "--shard"),
        (["-o", "out.csv", "--threshold", "1.5"], "--threshold"),
        (["-o", "out.csv", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_cli, models, photos, tmp_path, monkeypatch, flags, message
):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(["predict", models["onnx"], photos, *flags])
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_damaged_model_file_exits_5(run_cli, photos, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage" * 100)
    code, _, stderr = run_cli(["predict", broken, photos, "-o", tmp_path / "o.csv"])
    assert code == 5 and "broken.onnx" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_cuda_without_a_gpu_is_one_clear_line(run_cli, models, photos, tmp_path, kind):
    import onnxruntime
    import torch

    if (
        torch.cuda.is_available()
        or "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ):
        pytest.skip("this machine has CUDA")
    code, _, stderr = run_cli(
        ["predict", models[kind], photos, "-o", tmp_path / "o.csv", "--device", "cuda"]
    )
    assert code == 2
    assert "cuda" in stderr.lower() and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()


# -- review page ----------------------------------------------------------------------------------


def test_review_flag_writes_a_page_of_the_top_photos_with_heatmaps(
    run_cli, models, photos, tmp_path
):
    out, review = tmp_path / "out.csv", tmp_path / "review"
    code, stdout, _ = run_cli(
        ["predict", models["onnx"], photos, "-o", out, "--no-progress"]
        + ["--review", review, "--top", "3", "--review-model", models["pt"]]
    )
    assert code == 0 and f"review page: {review / 'index.html'}" in stdout
    page = (review / "index.html").read_text()
    top3 = sorted(read_results(out), key=lambda row: -row.p_counterfeit)[:3]
    for row in top3:
        assert Path(row.path).name in page
    overlays = [p for p in (review / "images").iterdir() if p.name.endswith(".gradcam.jpg")]
    assert len(overlays) == 3


def test_review_from_an_onnx_model_alone_warns_that_heatmaps_need_the_checkpoint(
    run_cli, models, photos, tmp_path
):
    review = tmp_path / "review"
    code, _, stderr = run_cli(
        ["predict", models["onnx"], photos, "-o", tmp_path / "out.csv", "--no-progress"]
        + ["--review", review, "--top", "2"]
    )
    assert code == 0 and "--review-model" in stderr
    assert (review / "index.html").is_file()


def test_building_the_cli_does_not_import_torch():
    # predict on ONNX must stay light: torch alone costs ~500 MB of resident memory.
    code = "import sys, cfimg.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_cli_architecture_list_matches_the_models_module():
    from cfimg.cli.train import ARCH_NAMES, DEFAULT_ARCH, DEFAULT_FREEZE_STAGES
    from cfimg.models import ARCHITECTURES
    from cfimg.models import DEFAULT_ARCH as MODELS_DEFAULT_ARCH
    from cfimg.train.config import DEFAULT_FREEZE_STAGES as CONFIG_FREEZE_STAGES

    assert ARCH_NAMES == tuple(ARCHITECTURES) and DEFAULT_ARCH == MODELS_DEFAULT_ARCH
    assert DEFAULT_FREEZE_STAGES == CONFIG_FREEZE_STAGES  # the --freeze-stages help states it


def test_missing_review_model_is_refused_before_any_photo_is_classified(
    run_cli, models, photos, tmp_path
):
    out = tmp_path / "out.csv"
    code, _, stderr = run_cli(
        ["predict", models["onnx"], photos, "-o", out, "--no-progress"]
        + ["--review", tmp_path / "review", "--review-model", tmp_path / "missing.pt"]
    )
    assert code == 5 and "missing.pt: file not found" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


def test_items_flag_writes_one_verdict_per_listing_beside_the_rows(
    run_cli, models, tmp_path, write_image
):
    photos = tmp_path / "listings"
    for item in ("bagA", "bagB"):
        for view in (1, 2, 3):
            write_image(photos / f"{item}_{view}.png", size_px=(48, 40), seed=view)
    out = tmp_path / "rows.csv"
    code, stdout, _ = run_cli(["predict", models["onnx"], photos, "-o", out, "--items"])
    assert code == 0 and "2 items" in stdout
    items = list(csv.DictReader(open(tmp_path / "rows.items.csv")))
    assert sorted(row["n_photos"] for row in items) == ["3", "3"]
    p_rows = {row.path: row.p_counterfeit for row in read_results(out)}
    for row in items:  # the card's rule for a default card: the most suspicious photo decides
        mine = [
            p for path, p in p_rows.items() if Path(path).stem.startswith(Path(row["item_id"]).name)
        ]
        assert float(row["p_counterfeit"]) == pytest.approx(max(mine), abs=1e-6)


def test_item_options_without_items_are_refused_before_any_work(run_cli, models, photos, tmp_path):
    out = tmp_path / "rows.csv"
    code, _, stderr = run_cli(["predict", models["onnx"], photos, "-o", out, "--item-rule", "max"])
    assert code == 2 and "go with --items" in stderr and not out.exists()
