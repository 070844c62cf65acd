"""Items (listings): photos grouped into items, one p_counterfeit and verdict per item."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from cfimg.card import ModelCard
from cfimg.data import load_samples
from cfimg.errors import UsageError
from cfimg.items import aggregate, items_path_for, read_items, write_items_file
from cfimg.preprocess import Preprocessing
from cfimg.results import CSV_HEADER, PredictionRow, encode_rows

CARD = ModelCard(arch="resnet18", preprocessing=Preprocessing(), threshold=0.5)


def write_results(path: Path, scores: dict[str, float | None]) -> Path:
    """A predict result file: one row per path, None for an error row."""
    rows = [
        PredictionRow(p, "error", None, 0.5, "m@1", None, None, "not an image file")
        if score is None
        else PredictionRow(p, CARD.verdict(score), score, 0.5, "m@1", 64, 64)
        for p, score in scores.items()
    ]
    fmt = path.suffix.lstrip(".")
    path.write_bytes((CSV_HEADER if fmt == "csv" else "").encode() + encode_rows(rows, fmt))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rules_combine_photo_scores_as_documented():
    assert aggregate([0.9, 0.1], "max") == pytest.approx(0.9)
    assert aggregate([0.9, 0.1], "mean_logit") == pytest.approx(0.5)  # log-odds cancel
    assert aggregate([0.5, 0.5], "noisy_or") == pytest.approx(0.75)
    assert aggregate([1.0, 0.0], "mean_logit") == pytest.approx(0.5)  # finite at the ends
    for rule in ("max", "mean_logit", "noisy_or"):
        assert aggregate([0.3], rule) == pytest.approx(0.3)  # one photo: its own score


def test_unknown_rule_is_a_usage_error_naming_the_allowed_ones(tmp_path):
    results = write_results(tmp_path / "r.csv", {"a_1.jpg": 0.2})
    with pytest.raises(UsageError, match="unknown item rule 'mean'.*max, mean_logit, noisy_or"):
        write_items_file(results, tmp_path / "r.items.csv", CARD, "mean")


def test_views_of_one_item_become_one_row_most_suspicious_first(tmp_path):
    shots = tmp_path / "shots"
    results = write_results(
        tmp_path / "results.csv",
        {
            f"{shots}/bag7_1.jpg": 0.2,
            f"{shots}/bag7_2.jpg": 0.8,
            f"{shots}/bag7-3.jpg": None,
            f"{shots}/IMG_0042.jpg": 0.4,
            f"{tmp_path}/other/bag7_1.jpg": 0.1,  # same name, other folder: another item
        },
    )
    summary = write_items_file(results, items_path_for(results), CARD, "max")
    rows = read_csv(tmp_path / "results.items.csv")
    assert list(rows[0])[:8] == [
        "item_id", "n_photos", "n_failed", "p_counterfeit", "verdict", "threshold", "rule",
        "most_suspicious_path",
    ]  # fmt: skip
    assert [(r["item_id"], r["n_photos"], r["n_failed"], r["verdict"]) for r in rows] == [
        (f"{shots}/bag7", "3", "1", "counterfeit"),
        (f"{shots}/IMG_0042", "1", "0", "genuine"),
        (f"{tmp_path}/other/bag7", "1", "0", "genuine"),
    ]
    assert float(rows[0]["p_counterfeit"]) == pytest.approx(0.8)
    assert rows[0]["most_suspicious_path"] == f"{shots}/bag7_2.jpg"
    assert json.loads(rows[0]["photo_paths"])[-1] == f"{shots}/bag7-3.jpg"  # failed last
    assert (summary.n_items, summary.n_photos, summary.n_failed_photos) == (3, 5, 1)
    assert summary.verdict_counts == {"counterfeit": 1, "genuine": 2}


def test_photo_grouping_is_the_dataset_layers_item_rule(tmp_path, make_image_tree):
    make_image_tree(tmp_path / "data", items=2, views=3)
    samples = load_samples(tmp_path / "data")
    results = write_results(tmp_path / "r.csv", {s.path: 0.5 for s in samples})
    write_items_file(results, tmp_path / "r.items.csv", CARD)
    by_items_file = {
        frozenset(json.loads(r["photo_paths"])) for r in read_csv(tmp_path / "r.items.csv")
    }
    by_dataset: dict[str, set] = {}
    for sample in samples:
        by_dataset.setdefault(sample.item_id, set()).add(sample.path)
    assert by_items_file == {frozenset(paths) for paths in by_dataset.values()}


def test_group_regex_captures_the_item_from_the_file_name(tmp_path):
    results = write_results(
        tmp_path / "r.csv", {"L12-front.jpg": 0.3, "L12-back.jpg": 0.6, "L13-front.jpg": 0.1}
    )
    summary = write_items_file(results, tmp_path / "r.items.csv", CARD, group_regex=r"^(L\d+)-")
    rows = read_csv(tmp_path / "r.items.csv")
    assert [(r["item_id"], r["n_photos"]) for r in rows] == [("L12", "2"), ("L13", "1")]
    assert summary.rule == "max"  # the card's default


def test_items_from_manifest_uses_its_item_id_and_falls_back_to_the_file_name(tmp_path):
    photos = tmp_path / "photos"
    results = write_results(
        tmp_path / "r.jsonl",
        {f"{photos}/a.jpg": 0.9, f"{photos}/b.jpg": 0.2, f"{photos}/c_1.jpg": 0.4},
    )
    manifest = tmp_path / "listings.csv"
    manifest.write_text("path,item_id\nphotos/a.jpg,listing-1\nphotos/b.jpg,listing-1\n")
    summary = write_items_file(
        results, tmp_path / "r.items.jsonl", CARD, "noisy_or", items_from=manifest
    )
    items = [json.loads(line) for line in (tmp_path / "r.items.jsonl").read_text().splitlines()]
    assert [(i["item_id"], i["n_photos"]) for i in items] == [
        ("listing-1", 2),
        (f"{photos}/c", 1),
    ]
    assert items[0]["p_counterfeit"] == pytest.approx(1 - 0.1 * 0.8)
    assert items[0]["photo_paths"] == [f"{photos}/a.jpg", f"{photos}/b.jpg"]
    assert summary.n_unlisted == 1
    assert [item.item_id for item in read_items(tmp_path / "r.items.jsonl")][0] == "listing-1"


def test_manifest_without_item_id_is_a_one_line_usage_error(tmp_path):
    results = write_results(tmp_path / "r.csv", {"a.jpg": 0.5})
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.jpg,genuine\n")
    with pytest.raises(UsageError, match="no item_id column") as caught:
        write_items_file(results, tmp_path / "r.items.csv", CARD, items_from=manifest)
    assert str(manifest) in str(caught.value) and "\n" not in str(caught.value)


def test_items_of_a_missing_results_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="none.csv: result file not found"):
        write_items_file(tmp_path / "none.csv", tmp_path / "none.items.csv", CARD)
    assert not (tmp_path / "none.items.csv").exists()


def test_an_item_with_no_scored_photo_has_verdict_error_and_comes_last(tmp_path):
    results = write_results(tmp_path / "r.csv", {"x_1.jpg": None, "x_2.jpg": None, "y.jpg": 0.1})
    write_items_file(results, tmp_path / "r.items.csv", CARD)
    rows = read_csv(tmp_path / "r.items.csv")
    assert [(r["item_id"], r["verdict"], r["p_counterfeit"]) for r in rows][-1] == (
        "x",
        "error",
        "",
    )
    assert rows[-1]["most_suspicious_path"] == "" and rows[-1]["n_failed"] == "2"


def test_verdicts_use_the_cards_item_threshold_for_its_own_rule_only(tmp_path):
    results = write_results(tmp_path / "r.csv", {"a_1.jpg": 0.3, "a_2.jpg": 0.35})
    card = CARD.updated(item_rule="noisy_or", item_threshold=0.5)
    write_items_file(results, tmp_path / "own.csv", card)  # noisy_or: 1 - 0.7 * 0.65 = 0.545
    write_items_file(results, tmp_path / "max.csv", card, "max")  # 0.35 at the photo threshold
    own, other = read_csv(tmp_path / "own.csv")[0], read_csv(tmp_path / "max.csv")[0]
    assert (own["rule"], own["verdict"], float(own["threshold"])) == (
        "noisy_or",
        "counterfeit",
        0.5,
    )
    assert (other["rule"], other["verdict"]) == ("max", "genuine")


def test_a_bare_threshold_judges_items_as_predict_threshold_does(tmp_path):
    results = write_results(tmp_path / "r.csv", {"a_1.jpg": 0.3, "a_2.jpg": 0.25})
    summary = write_items_file(results, tmp_path / "r.items.csv", 0.3, "mean_logit")
    row = read_csv(tmp_path / "r.items.csv")[0]
    assert row["verdict"] == "genuine" and summary.threshold == 0.3
    assert 0.25 < float(row["p_counterfeit"]) < 0.3 and not math.isnan(summary.threshold)
