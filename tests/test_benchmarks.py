"""The benchmark suite keeps working: its smoke mode runs every section and writes the report.

Speed itself is measured by scripts/benchmark.py, never asserted in a test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
HEADINGS = (
    "## Inference engines: PyTorch eager vs ONNX fp32 vs ONNX int8",
    "## `cfimg predict` end to end",
    "## Training speed: `cfimg train` vs a bare PyTorch loop",
    "## `cfimg synth` speed",
    "## Grad-CAM localisation (`cfimg explain`)",
    "## GPU",
)


@pytest.mark.slow
def test_benchmark_suite_smoke_mode_writes_every_section(tmp_path):
    out, figures = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    command = [
        sys.executable,
        "scripts/benchmark.py",
        "--smoke",
        "--out",
        str(out),
        "--json",
        str(figures),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    for heading in HEADINGS:
        assert heading in report
    assert "**Failed**" not in report
    sections = json.loads(figures.read_text())["sections"]
    assert all(section["ok"] for section in sections.values())
    ratio = sections["train"]["result"]["ratio"]
    assert math.isfinite(ratio) and ratio > 0  # both loops measured (no bar: smoke sizes)
    export = sections["export"]["results"][0]
    assert set(export["latency_ms"]) == {"pytorch eager", "onnx fp32", "onnx int8"}
    assert export["gflops_per_image"] > 0


def test_benchmark_rejects_an_unknown_section():
    command = [sys.executable, "scripts/benchmark.py", "--only", "export,nonsense"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "unknown section nonsense" in done.stderr


def _script(filename: str):
    """A script of scripts/ imported as a module, so its functions can be called."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(filename).stem, REPO / "scripts" / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ablation_script():
    return _script("ablate_recipe.py")


def test_every_ablation_recipe_is_a_valid_training_config():
    """A typo in a recipe's overrides would otherwise surface hours into an ablation."""
    from dataclasses import replace

    from cfimg.train import TrainConfig, validate_config

    ablate = _ablation_script()
    recipes = ablate.recipes(frame_px=384, crop_px=224)
    assert {"baseline", "default", "default_freeze5", "default_lite1"} <= set(recipes)
    for name, (_what, overrides) in recipes.items():
        config = replace(TrainConfig(data="photos"), **{**ablate.BASELINE, **overrides})
        validate_config(config)
        resolved = config.resolved()
        assert resolved.freeze_stages is not None, name
    default = replace(TrainConfig(data="photos"), **{**ablate.BASELINE, **recipes["default"][1]})
    # the script's default is the shipped recipe, in fp32, only the epochs and early stop pinned
    shipped = replace(TrainConfig(data="photos"), epochs=default.epochs, early_stop_patience=0)
    assert default.resolved() == shipped.resolved()


def test_an_ablation_run_is_scored_on_its_test_split_and_on_the_fixed_holdout_set(tmp_path):
    from tests.conftest import make_image_tree

    ablate = _ablation_script()
    make_image_tree(tmp_path / "photos", items=4, views=2, size_px=40)
    make_image_tree(tmp_path / "holdout", items=3, views=1, size_px=40)
    tiny = dict(arch="mobilenet_v3_small", pretrained=False, img_size_px=32, batch_size=4)
    table = {"tiny": ("a tiny network", {**tiny, "workers": 0, "epochs": 1})}
    threads = torch.get_num_threads()
    try:
        row = ablate.run_one(
            tmp_path / "photos", tmp_path / "work", "tiny", 0, None, table, tmp_path / "holdout", 1
        )
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs in this process
    config = json.loads((tmp_path / "work/runs/tiny-s0/config.json").read_text())
    assert config["config"]["threads"] == 1
    assert 0 <= row["holdout_roc_auc"] <= 1 and 0 <= row["test_roc_auc"] <= 1
    report = json.loads((tmp_path / "work/runs/tiny-s0/eval-holdout/report.json").read_text())
    assert report["metrics"]["n"] == 12  # every holdout photo (3 items x 2 labels x 2 kinds)
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(row) + "\n")
    assert f"| {row['holdout_roc_auc']:.3f} (±0.000) |" in ablate.table(results, table)
    assert row["holdout_types"] == {} and ablate.type_table(results, table) == ""  # no types


def test_the_type_table_averages_each_recipe_over_its_seeds(tmp_path):
    ablate = _ablation_script()
    table = {"a": ("recipe a", {}), "b": ("recipe b", {})}
    runs = [
        {"recipe": "a", "seed": 0, "holdout_types": {"soft_print": 0.9, "hue_shift": 0.5}},
        {"recipe": "a", "seed": 1, "holdout_types": {"soft_print": 0.8, "hue_shift": None}},
        {"recipe": "b", "seed": 0, "holdout_types": {"soft_print": 0.6}},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(run) + "\n" for run in runs))
    lines = ablate.type_table(results, table).splitlines()
    assert lines[0] == "| counterfeit type (alone) | a | b |"
    assert "| hue_shift | 0.50 | — |" in lines and "| soft_print | 0.85 | 0.60 |" in lines


def test_an_ablation_with_a_missing_holdout_set_stops_before_training(tmp_path, capsys):
    ablate = _ablation_script()
    with pytest.raises(SystemExit) as stopped:
        ablate.main(["--work", str(tmp_path), "--holdout", str(tmp_path / "nowhere")])
    assert stopped.value.code == 2
    assert "--holdout: " in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "med2000").exists()


def test_defect_directions_scores_each_way_a_defect_departs_and_checks_the_seed(tmp_path, capsys):
    import csv

    from cfimg.synth import generate_dataset

    directions = _script("defect_directions.py")
    manifest = generate_dataset(
        tmp_path / "set", n_images=36, seed=3, size_px=64, workers=0, progress=False
    )
    rows = list(csv.DictReader(manifest.open()))
    for name, fake_score in (("caught.csv", 0.9), ("missed.csv", 0.1)):
        with (tmp_path / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, ["path", "label", "p_counterfeit", "item_id"])
            writer.writeheader()
            for row in rows:
                score = fake_score if row["label"] == "counterfeit" else 0.5
                writer.writerow(
                    {**{k: row[k] for k in ("path", "label", "item_id")}, "p_counterfeit": score}
                )
    args = ["--data", str(tmp_path / "set"), "--n", "36", "--seed", "3"]
    assert directions.main([*args, str(tmp_path / "caught.csv"), str(tmp_path / "missed.csv")]) == 0
    table = capsys.readouterr().out.splitlines()[2:]
    kinds = {line.split(" | ")[0].lstrip("| ") for line in table}
    assert kinds == {k for row in rows for k in row["defects"].split(";") if k}
    assert all("| 1.00 (" in line and "| 0.00 (" in line for line in table)
    assert any(" | + | " in line or " | - | " in line for line in table)  # signs are told apart
    with pytest.raises(SystemExit, match="does not match --n 36 --seed 4"):
        directions.main([*args[:-1], "4", str(tmp_path / "caught.csv")])
    with pytest.raises(SystemExit, match="manifest.csv: cannot read it"):
        directions.main(["--data", str(tmp_path), "--n", "36", "--seed", "3", "x.csv"])
    with pytest.raises(SystemExit, match="nowhere.csv: cannot read it"):
        directions.main([*args, str(tmp_path / "nowhere.csv")])
    (tmp_path / "other.csv").write_text("path,label,p_counterfeit,item_id\nx.jpg,genuine,0.2,w-9\n")
    with pytest.raises(SystemExit, match="item w-9 is not in the set given by --data"):
        directions.main([*args, str(tmp_path / "other.csv")])


def test_score_tiles_scores_one_run_on_the_frame_as_eval_does_and_on_tiles(
    tmp_path, capsys, monkeypatch
):
    from cfimg.augment import AugmentConfig
    from cfimg.evaluate import evaluate
    from cfimg.train import TrainConfig, train
    from tests.conftest import make_image_tree

    make_image_tree(tmp_path / "photos", items=5, views=2, size_px=40)
    make_image_tree(tmp_path / "holdout", items=3, views=1, size_px=40)
    config = TrainConfig(
        data=str(tmp_path / "photos"),
        out=str(tmp_path / "run"),
        arch="mobilenet_v3_small",
        pretrained=False,
        img_size_px=32,
        augment=AugmentConfig(native_crop_px=24),
        batch_size=4,
        epochs=1,
        workers=0,
    )
    threads = torch.get_num_threads()
    try:
        train(config, progress=False, log=lambda line: None)
        held = evaluate(
            tmp_path / "run",
            tmp_path / "holdout",
            out_dir=tmp_path / "eval",
            n_bootstrap=0,
            write_plots=False,
        ).report["metrics"]
        argv = ["score_tiles.py", str(tmp_path / "run"), "--data", str(tmp_path / "holdout")]
        monkeypatch.setattr("sys.argv", [*argv, "--tiles", "1,2", "--threads", "1"])
        assert _script("score_tiles.py").main() == 0
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs in this process
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()]
    holdout = {int(r[2]): float(r[3]) for r in rows if len(r) == 6 and "holdout" in r[0]}
    assert set(holdout) == {1, 2} and 0 <= holdout[2] <= 1
    assert holdout[1] == pytest.approx(held["roc_auc"], abs=1e-3)  # the frame: as cfimg eval


def test_score_tiles_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["score_tiles.py", str(tmp_path)])
    assert _script("score_tiles.py").main() == 2
    err = capsys.readouterr().err
    assert err.startswith("score_tiles: error:") and "not a cfimg run folder" in err
    assert len(err.strip().splitlines()) == 1


def test_learning_curve_shares_are_nested_stratified_and_keep_every_val_and_test_photo(tmp_path):
    from cfimg.data import load_samples
    from cfimg.data.splits import assign_splits
    from tests.conftest import make_image_tree

    curve = _script("learning_curve.py")
    make_image_tree(tmp_path / "photos", items=8, views=2, size_px=24, brands=("a", "b"))
    samples = assign_splits(load_samples(tmp_path / "photos"), seed=0)
    shares = curve.nested_shares(samples, [0.25, 0.5, 1.0], seed=0)
    held_out = {s.path for s in samples if s.split != "train"}
    training = {
        share: {s.path for s in chosen if s.split == "train"} for share, chosen in shares.items()
    }
    for chosen in shares.values():
        assert held_out <= {s.path for s in chosen}
    assert training[0.25] < training[0.5] < training[1.0]
    assert training[1.0] == {s.path for s in samples if s.split == "train"}
    # each (label, category, brand) stratum keeps its share of items, photos of an item together
    by_path = {s.path: s for s in samples}
    quarter = [by_path[p] for p in training[0.25]]
    strata = {(s.label, s.category, s.brand) for s in samples if s.split == "train"}
    assert {(s.label, s.category, s.brand) for s in quarter} == strata
    items = {s.item_key for s in quarter}
    assert {s.path for s in samples if s.item_key in items} == set(training[0.25])


def test_learning_curve_gain_per_doubling_is_the_slope_against_log2_photos():
    curve = _script("learning_curve.py")
    rows = [
        {"train_photos": 250, "test_roc_auc": 0.60},
        {"train_photos": 500, "test_roc_auc": 0.65},
        {"train_photos": 1000, "test_roc_auc": 0.70},
    ]
    assert curve.gain_per_doubling(rows, "test_roc_auc") == pytest.approx(0.05)
    assert math.isnan(curve.gain_per_doubling(rows[:1], "test_roc_auc"))


def test_learning_curve_trains_each_share_on_the_same_test_split(tmp_path, capsys):
    from cfimg.data import load_samples
    from tests.conftest import make_image_tree

    curve = _script("learning_curve.py")
    make_image_tree(tmp_path / "photos", items=6, views=2, size_px=32)
    work = tmp_path / "work"
    argv = [str(tmp_path / "photos"), "--work", str(work), "--shares", "0.5,1", "--epochs", "1"]
    threads = torch.get_num_threads()
    try:
        assert curve.main([*argv, "--threads", "1", "--workers", "0"]) == 0
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs in this process
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    assert [(r["share"], r["epochs"]) for r in rows] == [(0.5, 2), (1.0, 1)]  # the same views
    assert rows[0]["train_photos"] < rows[1]["train_photos"]
    splits = [load_samples(work / f"share-{share}" / "run" / "split.csv") for share in ("0.5", "1")]
    tests = [{s.path for s in samples if s.split == "test"} for samples in splits]
    assert tests[0] == tests[1] and tests[0]
    out = capsys.readouterr().out
    assert "| 0.5 |" in out and "Gain per doubling of the training photos" in out


def test_learning_curve_on_a_missing_folder_is_one_line(tmp_path, capsys):
    curve = _script("learning_curve.py")
    assert curve.main([str(tmp_path / "nowhere"), "--work", str(tmp_path / "w")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("learning_curve: error:") and "nowhere" in err
    assert len(err.strip().splitlines()) == 1
