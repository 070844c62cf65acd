"""`cfimg demo`: every step runs and leaves its artefact; the CLI refuses to clobber a folder."""

import csv

import pytest

from cfimg.demo import DemoSettings, run_demo

TINY = DemoSettings(
    n_images=60,
    n_incoming=12,
    size_px=96,
    difficulty="easy",
    img_size_px=64,
    epochs=1,
    target_fpr=0.1,
)


@pytest.mark.slow
def test_demo_runs_every_step_and_leaves_each_artefact(tmp_path):
    summary = run_demo(tmp_path / "demo", settings=TINY, progress=False, log=lambda line: None)
    for name in ("dataset", "run", "eval report", "onnx fp32", "predictions", "review page"):
        assert summary.artefacts[name].exists(), name
    rows = list(csv.DictReader(open(summary.artefacts["predictions"])))
    assert len(rows) == TINY.n_incoming and all(row["error"] == "" for row in rows)
    assert (summary.artefacts["run"] / "best.pt").is_file()
    assert 0.0 <= summary.numbers["test balanced accuracy"] <= 1.0
    assert set(summary.steps_s) >= {"train", "evaluate", "predict"}


def test_demo_refuses_a_non_empty_output_folder(tmp_path, run_cli):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_cli(["demo", "--out", tmp_path, "--quick"])
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / "keep.txt").read_text() == "mine"
