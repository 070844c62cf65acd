"""`cfimg predict --engine ray` against the local engine, kills and resumes, crashes on the
cluster, bad flags; Parquet results end to end. One local Ray (2 CPUs) serves the module."""

# ruff: noqa: F811 - the fixtures imported from test_predict are redefined as test arguments

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

# The tiny ONNX model and photo folders of the local engine's tests.
from test_predict import image_paths, mixed_folder, models, photos, rows_by_path  # noqa: F401

from cfimg.errors import EXIT_SOME_INPUTS_FAILED
from cfimg.predict import predict_paths
from cfimg.results import ParquetFormat, encode_rows, read_results

# Loaded by every Python process of the module's Ray (its PYTHONPATH): a photo named 'crash-me'
# kills its decoder, 'slow' takes 50 ms to decode, and the first classify call after the test
# creates the marker file kills its actor.
RAY_WORKER_HOOKS = """
import os, signal, time
import cfimg.imageio as imageio

_load_rgb = imageio.load_rgb

def load_rgb(path, **options):
    if "crash-me" in str(path):
        os.kill(os.getpid(), signal.SIGSEGV)
    if "slow" in str(path):
        time.sleep(0.05)
    return _load_rgb(path, **options)

imageio.load_rgb = load_rgb  # before cfimg.model_input imports it

import cfimg.predict.ray_engine as ray_engine

_classify_images = ray_engine.classify_images

def classify_images(engine, images, **options):
    try:
        os.remove(os.environ["CFIMG_TEST_ACTOR_DIES"])
    except (KeyError, FileNotFoundError):
        return _classify_images(engine, images, **options)
    os._exit(1)

ray_engine.classify_images = classify_images  # what the actors call
"""


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray with 2 CPUs and 1 logical GPU (none is real), the worker hooks above."""
    ray = pytest.importorskip("ray", reason="the Ray engine needs: pip install -e '.[ray]'")
    hooks = tmp_path_factory.mktemp("ray-hooks")
    (hooks / "sitecustomize.py").write_text(RAY_WORKER_HOOKS)
    marker = hooks / "actor-dies"
    with pytest.MonkeyPatch.context() as patch:
        path = os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])
        patch.setenv("PYTHONPATH", path)
        patch.setenv("CFIMG_TEST_ACTOR_DIES", str(marker))
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            yield SimpleNamespace(address=ray.get_runtime_context().gcs_address, marker=marker)
        finally:
            ray.shutdown()


def one_error_line(stderr: str) -> bool:
    return len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


# -- the same rows as the local engine ------------------------------------------------------------


def test_ray_engine_gives_the_local_engines_rows_for_good_and_broken_files(
    run_cli, ray_cluster, models, mixed_folder, tmp_path
):
    root, good_names, bad_names = mixed_folder
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / f"{engine}.csv"
        code, _, stderr = run_cli(
            ["predict", models["onnx"], root, "-o", outputs[engine], "--max-pixels", "20000",
             "-b", "3", "--engine", engine, "--no-progress"]
        )  # fmt: skip
        assert code == EXIT_SOME_INPUTS_FAILED, stderr
    local, on_ray = list(read_results(outputs["local"])), list(read_results(outputs["ray"]))
    assert [row.path for row in on_ray] == [row.path for row in local]  # input order, once each
    assert {Path(row.path).name for row in on_ray if row.failed} == bad_names
    for ray_row, local_row in zip(on_ray, local, strict=True):
        assert ray_row.p_counterfeit == pytest.approx(local_row.p_counterfeit, abs=1e-6)
        same = ("verdict", "threshold", "model_id", "width", "height", "error")
        assert [getattr(ray_row, key) for key in same] == [getattr(local_row, key) for key in same]


def test_ray_engine_writes_parquet_and_sorts_it(ray_cluster, models, photos, tmp_path):
    out = tmp_path / "out.parquet"
    summary = predict_paths(models["onnx"], [str(photos)], out, engine="ray", sort=True,
                            batch_size=4, progress=False)  # fmt: skip
    scores = [row.p_counterfeit for row in read_results(out)]
    assert summary.exit_code == 0 and summary.device.startswith("Ray, 1 actor on CPU")
    assert len(scores) == 12 and scores == sorted(scores, reverse=True)
    assert sorted(os.listdir(tmp_path)) == ["out.parquet", "photos"]  # no journal left


# -- failures on the cluster --------------------------------------------------------------------


def test_kill_then_resume_on_ray_loses_and_doubles_nothing(
    ray_cluster, models, tmp_path, write_image
):
    root = tmp_path / "slow"
    for index in range(48):
        write_image(root / f"slow{index:02d}.png", size_px=(48, 40), seed=index)
    out = tmp_path / "out.parquet"
    journal = ParquetFormat.journal_path(out)
    command = [sys.executable, "-m", "cfimg", "predict", str(models["onnx"]), str(root), "-o",
               str(out), "-b", "2", "--engine", "ray", "--ray-address", ray_cluster.address,
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:  # flushed batches
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    before = list(read_results(out))  # the journal's rows: the file was never closed
    assert not out.exists() and 3 <= len(before) < 48, stderr.decode()

    summary = predict_paths(models["onnx"], [str(root)], out, resume=True, engine="ray",
                            progress=False)  # fmt: skip
    rows = rows_by_path(out)
    assert set(rows) == image_paths(root)
    assert all(rows[row.path] == row for row in before)  # the rows from before the kill are kept
    assert (summary.skipped_done, summary.rows_written) == (len(before), 48 - len(before))
    assert summary.exit_code == 0 and not journal.exists()


def test_a_photo_that_kills_its_decoder_costs_only_its_own_row(
    ray_cluster, models, photos, tmp_path, write_image
):
    write_image(photos / "crash-me.png", size_px=(48, 40))
    out = tmp_path / "out.csv"
    summary = predict_paths(models["onnx"], [str(photos)], out, engine="ray", batch_size=4,
                            progress=False)  # fmt: skip
    rows = rows_by_path(out)
    assert set(rows) == image_paths(photos)
    assert rows[str(photos / "crash-me.png")].error == "decoder process crashed (worker died)"
    assert sum(row.failed for row in rows.values()) == 1
    assert summary.exit_code == EXIT_SOME_INPUTS_FAILED


def test_a_classifier_actor_that_dies_is_restarted_and_its_batch_retried(
    ray_cluster, models, photos, tmp_path
):
    ray_cluster.marker.touch()
    out = tmp_path / "out.csv"
    summary = predict_paths(models["onnx"], [str(photos)], out, engine="ray", batch_size=4,
                            progress=False)  # fmt: skip
    assert not ray_cluster.marker.exists(), "no actor died: the test proved nothing"
    rows = rows_by_path(out)  # and none twice
    assert set(rows) == image_paths(photos) and not any(row.failed for row in rows.values())
    assert summary.exit_code == 0


def test_gpus_per_actor_without_onnxruntimes_cuda_provider_is_one_line(
    run_cli, ray_cluster, models, photos, tmp_path
):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    out = tmp_path / "out.csv"
    code, _, stderr = run_cli(
        ["predict", models["onnx"], photos, "-o", out, "--engine", "ray", "--gpus-per-actor", "1"]
    )
    assert code == 2 and "CUDAExecutionProvider" in stderr and one_error_line(stderr)
    assert not out.exists()


def test_ray_workers_import_no_torch(ray_cluster, models, photos, tmp_path):
    import ray

    predict_paths(models["onnx"], [str(photos)], tmp_path / "o.csv", engine="ray", progress=False)

    def torch_loaded() -> bool:  # runs in a worker that has just decoded photos
        import cfimg.predict.ray_engine  # noqa: F401

        return "torch" in sys.modules

    assert ray.get(ray.remote(torch_loaded).remote()) is False
    probe = "import sys, ray, cfimg.predict.ray_engine; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# -- bad flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "foo"], "--engine 'foo' is not one of local, ray"),
        (["--engine", "ray", "--actors", "0"], "--actors must be at least 1"),
        (["--actors", "2"], "--actors: only with --engine ray"),
        (["--engine", "ray", "--workers", "2"], "--workers: only with --engine local"),
        (["--engine", "ray", "--device", "cuda"], "needs --gpus-per-actor above 0"),
        (["--engine", "ray", "--gpus-per-actor", "2"], "the Ray cluster has 1"),
        (["--engine", "ray", "--actors", "2"], "take all 2 CPUs of the Ray cluster"),
    ],
)
def test_bad_ray_flags_exit_2_with_one_line(
    run_cli, ray_cluster, models, photos, tmp_path, flags, message
):
    out = tmp_path / "out.csv"
    code, _, stderr = run_cli(["predict", models["onnx"], photos, "-o", out, *flags])
    assert code == 2 and message in stderr and one_error_line(stderr)
    assert not out.exists()


def test_an_unreachable_ray_address_is_one_line_and_leaves_no_file(models, photos, tmp_path):
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "cfimg", "predict", str(models["onnx"]), str(photos), "-o",
               str(out), "--engine", "ray", "--ray-address", "127.0.0.1:1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and one_error_line(done.stderr)
    assert "cannot join the Ray cluster at 127.0.0.1:1" in done.stderr and not out.exists()


def test_a_pytorch_checkpoint_on_ray_is_refused_with_how_to_export(
    run_cli, models, photos, tmp_path
):
    out = tmp_path / "out.csv"
    code, _, stderr = run_cli(["predict", models["pt"], photos, "-o", out, "--engine", "ray"])
    assert code == 2 and "export it first" in stderr and one_error_line(stderr)
    assert not out.exists()


@pytest.mark.parametrize(
    ("modules", "flags", "message"),
    [
        (["ray"], ["-o", "out.csv", "--engine", "ray"], "pip install -e '.[ray]'"),
        (["pyarrow", "pyarrow.parquet"], ["-o", "out.parquet"], "pip install -e '.[parquet]'"),
    ],
)
def test_a_missing_extra_is_one_line_saying_how_to_install_it(
    run_cli, models, photos, tmp_path, monkeypatch, modules, flags, message
):
    monkeypatch.chdir(tmp_path)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    code, _, stderr = run_cli(["predict", models["onnx"], photos, *flags])
    assert code == 2 and message in stderr and one_error_line(stderr)


# -- Parquet with the local engine ----------------------------------------------------------------


def test_local_engine_parquet_output_reads_back_as_the_csv_rows(run_cli, models, photos, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    for name in ("out.csv", "out.parquet"):
        code, _, _ = run_cli(["predict", models["onnx"], photos, "-o", tmp_path / name])
        assert code == 0
    assert list(read_results(tmp_path / "out.parquet")) == list(read_results(tmp_path / "out.csv"))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 12 and table.column_names[:3] == ["path", "verdict", "p_counterfeit"]


def test_local_engine_resumes_a_killed_parquet_run_from_its_journal(
    run_cli, models, photos, tmp_path
):
    pytest.importorskip("pyarrow")
    whole = tmp_path / "whole.parquet"
    run_cli(["predict", models["onnx"], photos, "-o", whole, "--no-progress"])
    rows = list(read_results(whole))
    killed = tmp_path / "killed.parquet"  # what a kill after 5 rows leaves: journal, no footer
    journal_bytes = encode_rows(rows[:5], "jsonl") + b'{"path": "half a ro'
    ParquetFormat.journal_path(killed).write_bytes(journal_bytes)
    ParquetFormat.partial_path(killed).write_bytes(b"PAR1 row groups without a footer")
    code, stdout, _ = run_cli(["predict", models["onnx"], photos, "-o", killed, "--resume"])
    assert code == 0 and "7 rows written" in stdout and "(5 already there)" in stdout
    assert list(read_results(killed)) == rows
    assert sorted(os.listdir(tmp_path)) == ["killed.parquet", "photos", "whole.parquet"]


def test_local_engine_parquet_shards_merge_and_sort(run_cli, models, photos, tmp_path):
    pytest.importorskip("pyarrow")
    parts = [tmp_path / f"part-{k}.parquet" for k in (1, 2)]
    for k, part in enumerate(parts, start=1):
        run_cli(["predict", models["onnx"], photos, "-o", part, "--shard", f"{k}/2", "--sort"])
        scores = [row.p_counterfeit for row in read_results(part)]
        assert scores == sorted(scores, reverse=True)
    code, stdout, _ = run_cli(["merge", tmp_path / "all.parquet", *parts, "--sort"])
    assert code == 0 and "merged 12 rows from 2 files" in stdout
    merged = list(read_results(tmp_path / "all.parquet"))
    assert {row.path for row in merged} == image_paths(photos)
    assert [row.p_counterfeit for row in merged] == sorted(
        (row.p_counterfeit for row in merged), reverse=True
    )
