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


def test_demo_goes_on_with_the_fp32_file_when_int8_is_refused(tmp_path, monkeypatch):
    import cfimg.export
    from cfimg.demo import DemoSummary, _export
    from cfimg.export.report import ExportedModel, ExportError, ExportReport

    fp32_written = True

    def refuse_int8(run_dir, out, int8):
        fp32 = ExportedModel(out, "fp32", "uint8_nhwc", 17, written=fp32_written)
        int8 = ExportedModel(out.with_suffix(".int8.onnx"), "int8", "uint8_nhwc", 17)
        int8.accuracy_change_points = -1.2
        report = ExportReport(run_dir / "best.pt", "validation split", 10, models=[fp32, int8])
        raise ExportError("model.int8.onnx: int8 accuracy check failed", report)

    monkeypatch.setattr(cfimg.export, "export_onnx", refuse_int8)
    run = type("Run", (), {"run_dir": tmp_path})()
    summary = DemoSummary(tmp_path, TINY)
    assert _export(run, summary) == tmp_path / "model.onnx"
    assert "onnx int8" not in summary.artefacts
    assert summary.numbers["int8 accuracy change (points)"] == -1.2
    assert any("int8 export refused, fp32 only" in note for note in summary.notes)
    fp32_written = False  # the fp32 file failed too: the demo stops, naming why
    with pytest.raises(ExportError):
        _export(run, DemoSummary(tmp_path, TINY))
