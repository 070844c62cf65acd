"""`cfimg eval` end to end: tiny random-init models on tiny generated image trees."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfimg.checkpoint import card_from_checkpoint, load_checkpoint, save_checkpoint
from cfimg.data import assign_splits, load_samples, write_split_csv
from cfimg.evaluate import evaluate

REPORT_KEYS = {
    "schema", "cfimg_version", "created_utc", "model", "data", "threshold", "metrics",
    "operating_point", "uncertain_band", "calibration", "breakdown", "counterfeit_types", "items",
    "misclassified", "failed", "notes", "timing", "saved", "files",
}  # fmt: skip
FAST = ["--bootstrap", "30", "--no-plots"]


def make_run(root: Path, make_image_tree) -> Path:
    """A run folder (best.pt + split.csv) holding a random-init resnet18 at 32 px whose head is
    scaled up so that its scores spread over (0, 1)."""
    import torch

    from cfimg.card import ModelCard
    from cfimg.models import create_model
    from cfimg.preprocess import Preprocessing

    make_image_tree(root / "data", brands=("brand-a", "brand-b"), items=3, views=2, size_px=40)
    torch.manual_seed(0)
    network = create_model("resnet18", pretrained=False)
    with torch.no_grad():
        network.fc.weight.mul_(20)
    card = ModelCard(
        arch="resnet18",
        preprocessing=Preprocessing(img_size_px=32, resize_px=32),
        model_id="tiny@1",
    )
    run = root / "run"
    save_checkpoint(run / "best.pt", card=card, model_state=network.state_dict())
    # Seed 1: since splits are stratified by brand, seed 0's validation items are ones on which
    # one aggregation rule of this random network beats no threshold, so that rule's item
    # threshold fell back to the photo threshold instead of being fitted (that fallback has a
    # test of its own: ..._falls_back_to_the_photo_threshold_when_no_threshold_beats_chance).
    samples = assign_splits(load_samples(root / "data"), val_frac=0.3, test_frac=0.3, seed=1)
    write_split_csv(samples, run / "split.csv")
    return run


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory) -> Path:
    """A run that tests only read (tests that write into a checkpoint copy it first)."""
    from conftest import make_image_tree

    return make_run(tmp_path_factory.mktemp("eval"), make_image_tree)


@pytest.fixture
def own_run(shared_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(shared_run, run)
    # split.csv paths point at the shared data folder, which stays where it is
    return run


def read_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def read_predictions(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def card_of(run: Path):
    return card_from_checkpoint(load_checkpoint(run))


def test_eval_of_a_run_reports_on_its_test_split_with_all_files(shared_run, run_cli, tmp_path):
    out = tmp_path / "report"
    code, stdout, stderr = run_cli(["eval", shared_run, "--out", out, "--bootstrap", "50"])
    assert code == 0, stderr
    report = read_report(out)
    assert set(report) == REPORT_KEYS
    assert report["schema"] == "cfimg.eval/1"
    assert report["data"]["split"] == "test" and report["data"]["fit_split"] == "val"
    for name in ("report.md", "predictions.csv", "roc.png", "pr.png", "confusion.png",
                 "reliability.png", "histogram.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "reliability.png").format == "PNG"
    assert set(report["breakdown"]["category"]) == {"bag", "watch"}
    assert set(report["breakdown"]["brand"]) == {"brand-a", "brand-b"}
    assert report["counterfeit_types"] == {}  # a folder tree names no types
    assert "By counterfeit type" not in (out / "report.md").read_text()
    assert "roc_auc" in stdout and str(out / "report.md") in stdout


def test_default_output_folder_is_inside_the_run(own_run, run_cli):
    code, _, stderr = run_cli(["eval", own_run, "--split", "val", *FAST])
    assert code == 0, stderr
    assert read_report(own_run / "eval-val")["data"]["split"] == "val"


def test_reported_metrics_agree_with_an_independent_count_of_the_predictions(shared_run, tmp_path):
    result = evaluate(shared_run, split="all", out_dir=tmp_path, n_bootstrap=0, write_plots=False)
    rows = read_predictions(tmp_path)
    labels = np.array([row["label"] == "counterfeit" for row in rows], dtype=int)
    p = np.array([float(row["p_counterfeit"]) for row in rows])
    m = result.report["metrics"]
    t = result.report["threshold"]["value"]
    assert len(rows) == m["n"] == 48
    assert m["tp"] == sum(1 for y, s in zip(labels, p, strict=True) if y == 1 and s >= t)
    assert m["fp"] == sum(1 for y, s in zip(labels, p, strict=True) if y == 0 and s >= t)
    pos, neg = p[labels == 1], p[labels == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    assert m["roc_auc"] == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-3)
    wrong = [row for row in rows if (row["predicted"] != row["label"])]
    assert len(result.report["misclassified"]) == len(wrong)
    errors = [row["error"] for row in result.report["misclassified"]]
    assert errors == sorted(errors, reverse=True)  # worst first


@pytest.fixture(scope="module")
def shared_onnx(shared_run: Path) -> Path:
    from cfimg.export import export_onnx

    onnx_path = shared_run.parent / "model.onnx"
    export_onnx(shared_run, onnx_path, check=False)
    return onnx_path


def test_pt_and_onnx_evaluations_agree(shared_run, shared_onnx, run_cli, tmp_path):
    onnx_path = shared_onnx
    data = shared_run / "split.csv"
    args = ["--split", "all", "--bootstrap", "0", "--no-plots", "--device", "cpu"]
    assert run_cli(["eval", shared_run, data, "--out", tmp_path / "pt", *args])[0] == 0
    assert run_cli(["eval", onnx_path, data, "--out", tmp_path / "onnx", *args])[0] == 0
    pt, ox = read_report(tmp_path / "pt"), read_report(tmp_path / "onnx")
    assert ox["model"]["kind"] == "onnx" and pt["model"]["kind"] == "checkpoint"
    p_pt = [float(r["p_counterfeit"]) for r in read_predictions(tmp_path / "pt")]
    p_onnx = [float(r["p_counterfeit"]) for r in read_predictions(tmp_path / "onnx")]
    assert np.allclose(p_pt, p_onnx, atol=1e-4)
    for key in ("accuracy", "roc_auc", "pr_auc", "tp", "fp"):
        assert ox["metrics"][key] == pytest.approx(pt["metrics"][key], abs=1e-3)


def test_a_checkpoint_on_the_cpu_is_scored_by_onnxruntime_as_pytorch_scores_it(
    shared_run, tmp_path
):
    quick = {"split": "all", "n_bootstrap": 0, "write_plots": False, "device": "cpu"}
    eager = evaluate(shared_run, out_dir=tmp_path / "pt", onnx_on_cpu=False, **quick).report
    twin = evaluate(shared_run, out_dir=tmp_path / "twin", **quick).report
    assert eager["model"]["device"] == "cpu"
    assert twin["model"]["device"] == "CPUExecutionProvider"
    assert twin["model"]["kind"] == "checkpoint" and twin["model"]["model_id"] == "tiny@1"
    p_pt = [float(r["p_counterfeit"]) for r in read_predictions(tmp_path / "pt")]
    p_twin = [float(r["p_counterfeit"]) for r in read_predictions(tmp_path / "twin")]
    assert len(p_pt) == 48 and np.allclose(p_pt, p_twin, atol=1e-4)
    assert twin["metrics"]["roc_auc"] == pytest.approx(eager["metrics"]["roc_auc"], abs=1e-3)


def test_the_eval_benchmark_times_both_engines_and_says_how_far_apart_they_are(shared_run):
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "bench_eval.py"
    command = [sys.executable, str(script), str(shared_run), "--rounds", "1", "--bootstrap", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        "| pytorch eager |" in done.stdout and "| onnxruntime (in-memory export) |" in done.stdout
    )
    max_dp = float(done.stdout.rsplit("max |Δp| between the two:", 1)[1])
    assert max_dp <= 1e-4


def test_saved_operating_point_meets_its_target_when_the_model_is_reloaded(own_run, run_cli):
    code, _, stderr = run_cli(["eval", own_run, "--target-fpr", "0.2", "--save-threshold", *FAST])
    assert code == 0, stderr
    report = read_report(own_run / "eval-test")
    point = report["operating_point"]
    assert point["fitted_on"] == "val" and point["fit"]["fpr"] <= 0.2
    assert report["saved"]["threshold"] is True
    card = card_of(own_run)
    assert card.threshold == pytest.approx(point["threshold"])
    # A fresh engine recomputes the validation scores and the stored threshold still holds.
    code, _, stderr = run_cli(["eval", own_run, "--split", "val", "--out", own_run / "v", *FAST])
    again = read_report(own_run / "v")
    assert code == 0, stderr
    assert again["threshold"]["source"] == "model card"
    assert again["metrics"]["fpr"] <= 0.2
    assert again["metrics"]["fp"] == point["fit"]["fp"]


def test_items_section_measures_every_rule_on_the_evaluated_items(shared_run, tmp_path):
    result = evaluate(shared_run, out_dir=tmp_path, n_bootstrap=20, write_plots=False)
    items = result.report["items"]
    test_items = {s.item_id for s in result.scored.samples}
    assert items["split"] == "test" and items["fit_split"] == "val" and items["unit"] == "item_id"
    assert items["n_items"] == len(test_items) == items["n_genuine"] + items["n_counterfeit"]
    assert items["photos_per_item"] == {"2": len(test_items)}  # two views per generated item
    assert set(items["rules"]) == {"max", "mean_logit", "noisy_or"} and items["rule"] == "max"
    for rule in items["rules"].values():
        assert rule["n"] == len(test_items) and rule["threshold_source"] == "max balanced accuracy"
        assert 0.0 <= rule["roc_auc"] <= 1.0 and 0.0 <= rule["balanced_accuracy"] <= 1.0
        assert rule["tp"] + rule["fp"] + rule["tn"] + rule["fn"] == len(test_items)
    text = (tmp_path / "report.md").read_text()
    assert (
        "## Items (listings)" in text and "| **max** |" in text and "photos (for reference)" in text
    )


def test_item_threshold_falls_back_to_the_photo_threshold_when_no_threshold_beats_chance():
    from cfimg.evaluate.items import ItemScores, fit_item_threshold, threshold_max_balanced_accuracy

    labels = np.array([0, 1, 0, 1])
    reversed_scores = np.array([0.9, 0.1, 0.8, 0.2])  # every threshold does worse than none
    assert threshold_max_balanced_accuracy(labels, reversed_scores) is None
    photos = np.ones(4, dtype=int)
    fit = ItemScores(labels, reversed_scores, photos)
    assert fit_item_threshold(fit, None, None, 0.37) == (0.37, "photo threshold", True)
    separable = np.array([0.2, 0.7, 0.1, 0.9])
    fit = ItemScores(labels, separable, photos)
    threshold, source, _ = fit_item_threshold(fit, None, None, 0.37)
    assert source == "max balanced accuracy" and 0.2 < threshold <= 0.7


def test_item_threshold_maximises_balanced_accuracy_on_the_validation_items(shared_run, tmp_path):
    from cfimg.evaluate.items import item_scores
    from cfimg.metrics import evaluation_metrics

    result = evaluate(shared_run, split="val", out_dir=tmp_path, n_bootstrap=0, write_plots=False)
    fitted = result.report["items"]["rules"]["mean_logit"]
    val = item_scores(result.scored.samples, result.scored.p_counterfeit, "mean_logit")
    best = max(
        evaluation_metrics(val.labels, val.p_counterfeit, t)["balanced_accuracy"]
        for t in [*val.p_counterfeit, 1.1]
    )
    assert fitted["fit"]["balanced_accuracy"] == pytest.approx(best)


def test_save_threshold_stores_the_item_rule_and_its_fitted_threshold(own_run, run_cli):
    args = ["--target-fpr", "0.25", "--item-rule", "noisy_or", "--save-threshold", *FAST]
    code, stdout, stderr = run_cli(["eval", own_run, *args])
    assert code == 0, stderr
    items = read_report(own_run / "eval-test")["items"]
    fitted = items["rules"]["noisy_or"]
    assert fitted["threshold_source"] == "target FPR <= 0.25"
    card = card_of(own_run)
    assert card.item_rule == "noisy_or" and card.item_threshold == pytest.approx(
        fitted["threshold"]
    )
    assert "item_threshold" in stdout and "items by noisy_or" in stdout
    code, _, stderr = run_cli(["eval", own_run, "--split", "val", "--out", own_run / "v", *FAST])
    again = read_report(own_run / "v")
    assert code == 0, stderr
    assert again["model"]["card_item_rule"] == "noisy_or" and again["items"]["rule"] == "noisy_or"
    stored = again["items"]["rules"]["noisy_or"]
    assert stored["threshold_source"] == "model card"
    assert stored["fp"] / (stored["fp"] + stored["tn"]) <= 0.25  # the target holds on reload


def test_target_precision_and_recall_are_met_on_the_fitting_split(shared_run, tmp_path):
    for option, value in (("target_precision", 0.6), ("target_recall", 0.75)):
        result = evaluate(
            shared_run, out_dir=tmp_path / option, n_bootstrap=0, write_plots=False,
            **{option: value},
        )  # fmt: skip
        point = result.report["operating_point"]
        kind = option.removeprefix("target_")
        if point["reachable"]:
            assert point["fit"][kind] >= value
        assert point["eval"]["split"] == "test" and point["fit"]["split"] == "val"


def test_calibrate_stores_the_fitted_temperature_and_keeps_the_decisions(own_run, run_cli):
    assert run_cli(["eval", own_run, "--out", own_run / "before", *FAST])[0] == 0
    code, _, stderr = run_cli(["eval", own_run, "--calibrate", "--out", own_run / "after", *FAST])
    assert code == 0, stderr
    report = read_report(own_run / "after")
    calibration = report["calibration"]
    assert calibration["fitted_on"] == "val" and calibration["stored"] is True
    assert card_of(own_run).temperature == pytest.approx(calibration["temperature_fitted"])
    for key in ("ece_before", "ece_after", "ece_raw"):
        assert 0.0 <= calibration[key] <= 1.0
    before = [r["predicted"] for r in read_predictions(own_run / "before")]
    after = [r["predicted"] for r in read_predictions(own_run / "after")]
    assert before == after


def test_uncertain_band_makes_three_way_verdicts(shared_run, run_cli, tmp_path):
    code, _, stderr = run_cli(
        ["eval", shared_run, "--uncertain-band", "0.3,0.7", "--out", tmp_path, *FAST]
    )
    assert code == 0, stderr
    for row in read_predictions(tmp_path):
        in_band = 0.3 <= float(row["p_counterfeit"]) < 0.7
        assert (row["verdict"] == "uncertain") == in_band
    band = read_report(tmp_path)["uncertain_band"]
    assert band["eval"]["n_uncertain"] == sum(
        r["verdict"] == "uncertain" for r in read_predictions(tmp_path)
    )


def test_uncertain_frac_band_is_fitted_and_saved_with_the_threshold(own_run, run_cli):
    args = ["--target-recall", "0.8", "--uncertain-frac", "0.3", "--save-threshold", *FAST]
    code, _, stderr = run_cli(["eval", own_run, *args])
    assert code == 0, stderr
    band = read_report(own_run / "eval-test")["uncertain_band"]
    assert card_of(own_run).uncertain_band == pytest.approx((band["low"], band["high"]))
    assert 0 < band["fit"]["n_uncertain"] <= 0.3 * band["fit"]["n"] + 2


def test_unreachable_target_is_reported_and_not_saved(own_run, run_cli, tmp_path):
    """A manifest whose highest-scored image is genuine: no threshold reaches precision 1."""
    result = evaluate(own_run, split="all", out_dir=tmp_path / "scores", n_bootstrap=0,
                      write_plots=False)  # fmt: skip
    rows = sorted(read_predictions(tmp_path / "scores"), key=lambda r: -float(r["p_counterfeit"]))
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i, row in enumerate(rows):
            writer.writerow([row["path"], "genuine" if i % 2 == 0 else "counterfeit", "val"])
    threshold_before = card_of(own_run).threshold
    args = ["--target-precision", "1.0", "--save-threshold", "--out", tmp_path / "r", *FAST]
    code, _, stderr = run_cli(["eval", own_run, manifest, *args])
    assert code == 2
    assert "not reachable" in stderr and "NOT saved" in stderr
    assert read_report(tmp_path / "r")["operating_point"]["reachable"] is False
    assert card_of(own_run).threshold == threshold_before
    assert result.report["data"]["n_scored"] == 48


def test_unreadable_image_is_listed_and_the_run_goes_on(shared_run, run_cli, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shared_run.parent / "data", data)
    broken = next(data.rglob("*.jpg"))
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, stdout, _ = run_cli(["eval", shared_run, data, "--out", tmp_path / "r", *FAST])
    assert code == 3
    report = read_report(tmp_path / "r")
    assert [row["path"] for row in report["failed"]] == [str(broken)]
    assert report["data"]["n_scored"] == 47
    assert "could not be read" in stdout


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"], ids=str
)
def test_damaged_checkpoint_exits_5_with_one_line(content, shared_run, run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    code, _, stderr = run_cli(["eval", bad, shared_run / "split.csv"])
    assert code == 5
    assert str(bad) in stderr and len(stderr.strip().splitlines()) == 1


def test_damaged_onnx_and_missing_model_exit_5(shared_run, run_cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    for model in (bad, tmp_path / "missing.pt"):
        code, _, stderr = run_cli(["eval", model, shared_run / "split.csv"])
        assert code == 5 and str(model) in stderr
        assert len(stderr.strip().splitlines()) == 1


def test_empty_dataset_exits_4(shared_run, run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = run_cli(["eval", shared_run, empty])
    assert code == 4 and str(empty) in stderr


def test_missing_split_exits_4_and_names_the_splits_present(shared_run, run_cli):
    code, _, stderr = run_cli(["eval", shared_run, shared_run.parent / "data", "--split", "test"])
    assert code == 4 and "no splits" in stderr


def test_onnx_without_data_says_data_is_needed(shared_run, shared_onnx, run_cli):
    onnx_path = shared_onnx
    code, _, stderr = run_cli(["eval", onnx_path])
    assert code == 2 and "give DATA" in stderr
    code, _, stderr = run_cli(["eval", onnx_path, shared_run / "split.csv", "--calibrate"])
    assert code == 2 and "cfimg export" in stderr
    code, _, stderr = run_cli(
        ["eval", onnx_path, shared_run / "split.csv", "--target-fpr", "0.1", "--save-threshold"]
    )
    assert code == 2 and "checkpoint" in stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-fpr", "0.1", "--target-recall", "0.9"], "choose one"),
        (["--target-fpr", "1.5"], "out of range"),
        (["--uncertain-band", "0.7,0.3"], "LOW < HIGH"),
        (["--uncertain-band", "half"], "LOW,HIGH"),
        (["--save-threshold"], "needs an operating point"),
        (["--split", "holdout"], "--split"),
        (["--item-rule", "mean"], "unknown item rule 'mean'"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(args, message, shared_run, run_cli):
    code, _, stderr = run_cli(["eval", shared_run, *args])
    assert code == 2 and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_manifest_with_defects_gets_a_section_per_counterfeit_type(shared_run, tmp_path):
    from cfimg.synth import generate_dataset
    from cfimg.synth.defects import DEFECT_KINDS

    data = tmp_path / "synth"
    generate_dataset(data, n_images=24, seed=3, difficulty="easy", size_px=64, workers=0,
                     progress=False)  # fmt: skip
    result = evaluate(shared_run, data, out_dir=tmp_path / "out", n_bootstrap=0, write_plots=False)
    table = result.report["counterfeit_types"]
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    written = {kind for row in rows for kind in row["defects"].split(";") if kind}
    assert set(table) == written and written <= set(DEFECT_KINDS)
    n_counterfeit = sum(row["label"] == "counterfeit" for row in rows)
    assert sum(m["n_alone"] for m in table.values()) <= n_counterfeit
    assert sum(m["n"] for m in table.values()) >= n_counterfeit
    assert all(0 <= m["recall"] <= 1 and 0 <= m["roc_auc"] <= 1 for m in table.values())
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "## By counterfeit type" in report_md
    assert all(f"| {kind} |" in report_md for kind in written)
