"""`cfimg review`: the self-contained HTML page of the most suspicious photos."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfimg.card import ModelCard
from cfimg.checkpoint import save_checkpoint
from cfimg.errors import EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
from cfimg.items import write_items_file
from cfimg.models import create_model
from cfimg.preprocess import Preprocessing
from cfimg.results import CSV_HEADER, PredictionRow, encode_rows
from cfimg.review import write_review

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = create_model("mobilenet_v3_small", pretrained=False)
    card = ModelCard(
        arch="mobilenet_v3_small",
        preprocessing=Preprocessing(img_size_px=64, resize_px=64),
        model_id="tiny@0",
    )
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, card=card, model_state=network.state_dict())
    return path


def _results(tmp_path: Path, n: int = 8, fmt: str = "csv") -> tuple[Path, list[PredictionRow]]:
    """A predict result file over n small photos with distinct scores, plus one error row."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        size = (96, 64) if i % 2 else (64, 80)
        photo = tmp_path / "photos" / f"item {i}.jpg"
        photo.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photo)
        p = (i + 0.5) / n
        verdict = "counterfeit" if p >= 0.5 else "genuine"
        rows.append(PredictionRow(str(photo), verdict, p, 0.5, "tiny@0", *size))
    rows.append(
        PredictionRow(
            str(tmp_path / "bad.jpg"), "error", None, 0.5, "tiny@0", None, None, "not an image file"
        )
    )
    path = tmp_path / f"results.{fmt}"
    header = CSV_HEADER if fmt == "csv" else ""
    path.write_bytes(header.encode() + encode_rows(rows, fmt))
    return path, rows


def _listing_results(tmp_path: Path) -> tuple[Path, Path]:
    """Results over three listings (bag0: 3 views, bag1: 2, bag2: 1 plus a failed view) and
    their items file; bag1 holds the most suspicious photo, bag0 the most photos."""
    scores = {"bag0": [0.6, 0.1, 0.3], "bag1": [0.2, 0.9], "bag2": [0.4, None]}
    rows = []
    for item, views in scores.items():
        for view, p in enumerate(views, start=1):
            photo = tmp_path / "listings" / f"{item}_{view}.jpg"
            photo.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((48, 64, 3), 40 * view, dtype=np.uint8)).save(photo)
            if p is None:
                rows.append(PredictionRow(str(photo), "error", None, 0.5, "tiny@0", None, None,
                                          "truncated file"))  # fmt: skip
            else:
                verdict = "counterfeit" if p >= 0.5 else "genuine"
                rows.append(PredictionRow(str(photo), verdict, p, 0.5, "tiny@0", 64, 48))
    results = tmp_path / "results.csv"
    results.write_bytes(CSV_HEADER.encode() + encode_rows(rows, "csv"))
    items = tmp_path / "results.items.csv"
    write_items_file(results, items, 0.5, "max")
    return results, items


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.rows: list[dict] = []
        self.photos: list[list[str]] = []  # per row, the photos shown in it (items page)

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.links += [values[k] for k in ("src", "href") if values.get(k)]
        if tag == "tr" and "row" in (values.get("class") or "").split():
            self.rows.append(values)
            self.photos.append([])
        if tag == "figure" and values.get("data-photo"):
            self.photos[-1].append(values["data-photo"])


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


def test_review_page_references_only_files_it_wrote(checkpoint, tmp_path):
    results, _rows = _results(tmp_path)
    out = tmp_path / "review"
    page = write_review(results, out, model_path=checkpoint, top_k=5)
    text = page.read_text()
    links = _parse(page).links
    assert len(links) == 10  # a photo and a heatmap per row
    for link in links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", link), link  # no scheme: no URL, no file://
        target = (out / link).resolve()
        assert target.is_relative_to(out.resolve()) and target.is_file(), link
    assert "http://" not in text and "https://" not in text and "@import" not in text


def test_review_shows_the_top_k_scored_rows_most_suspicious_first(checkpoint, tmp_path):
    results, rows = _results(tmp_path, fmt="jsonl")
    page = write_review(results, tmp_path / "review", model_path=checkpoint, top_k=3)
    shown = _parse(page).rows
    expected = sorted(
        (r for r in rows if r.p_counterfeit is not None), key=lambda r: -r.p_counterfeit
    )
    assert [row["data-path"] for row in shown] == [r.path for r in expected[:3]]
    heatmap = Image.open(tmp_path / "review" / "images" / "0001-item_7.gradcam.jpg")
    assert max(heatmap.size) == 480  # small photos are enlarged for legibility


def test_review_without_model_shows_photos_without_heatmaps(tmp_path, run_cli):
    results, _rows = _results(tmp_path, n=4)
    code, out, err = run_cli(["review", results, "--out", tmp_path / "r", "--top", "4"])
    assert code == 0, err
    parsed = _parse(tmp_path / "r" / "index.html")
    assert len(parsed.rows) == 4
    assert all(".photo." in link for link in parsed.links)
    assert "without heatmaps" in (tmp_path / "r" / "index.html").read_text()


def test_review_keeps_the_row_of_a_vanished_photo_warns_once_and_exits_3(
    checkpoint, tmp_path, run_cli
):
    results, rows = _results(tmp_path, n=4)
    os.unlink(rows[3].path)  # the most suspicious photo was moved away after predict
    code, _out, err = run_cli(
        ["review", results, "-m", checkpoint, "-o", tmp_path / "r", "-k", "2"]
    )
    assert code == EXIT_SOME_INPUTS_FAILED
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "item 3.jpg" in warnings[0] and "file not found" in warnings[0]
    text = (tmp_path / "r" / "index.html").read_text()
    assert "photo not shown: file not found" in text
    assert len(_parse(tmp_path / "r" / "index.html").rows) == 2


def test_review_of_a_missing_results_file_is_a_one_line_error(tmp_path, run_cli):
    code, _out, err = run_cli(["review", tmp_path / "none.csv", "--out", tmp_path / "r"])
    assert code == EXIT_USAGE and "none.csv" in err and len(err.strip().splitlines()) == 1


def test_items_review_shows_the_top_items_with_their_photos_and_heatmaps(checkpoint, tmp_path):
    results, items = _listing_results(tmp_path)
    out = tmp_path / "review"
    page = write_review(results, out, model_path=checkpoint, top_k=2, items_path=items)
    parsed = _parse(page)
    listings = tmp_path / "listings"
    assert [row["data-p"] for row in parsed.rows] == ["0.900000", "0.600000"]
    assert parsed.photos == [
        [f"{listings}/bag1_2.jpg", f"{listings}/bag1_1.jpg"],  # most suspicious first
        [f"{listings}/bag0_1.jpg", f"{listings}/bag0_3.jpg", f"{listings}/bag0_2.jpg"],
    ]
    assert len(parsed.links) == 2 * 5  # a photo and a heatmap for each photo shown
    for link in parsed.links:
        assert (out / link).resolve().is_file() and (out / link).resolve().is_relative_to(
            out.resolve()
        )
    text = page.read_text()
    assert "results.items.csv" in text and f"{listings}/bag1" in text


def test_items_review_from_the_cli_counts_an_items_failed_photos(tmp_path, run_cli):
    results, items = _listing_results(tmp_path)
    code, _out, err = run_cli(["review", results, "--items", items, "-o", tmp_path / "r"])
    assert code == 0, err
    text = (tmp_path / "r" / "index.html").read_text()
    assert len(_parse(tmp_path / "r" / "index.html").rows) == 3
    assert "1 photos could not be scored" in text and "without heatmaps" in text


def test_items_review_of_a_missing_items_file_is_a_one_line_error(tmp_path, run_cli):
    results, _items = _results(tmp_path, n=2)
    missing = tmp_path / "no.items.csv"
    code, _out, err = run_cli(["review", results, "--items", missing, "-o", tmp_path / "r"])
    assert code == EXIT_USAGE and "no.items.csv: items file not found" in err
    assert len(err.strip().splitlines()) == 1


def _chromium_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_review_page_renders_sorts_and_filters_in_headless_chromium(checkpoint, tmp_path):
    if CHROMIUM is None:
        message = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it, so CI must open the page in it")
        pytest.skip(message)
    results, rows = _results(tmp_path, n=6)
    page = write_review(results, tmp_path / "review", model_path=checkpoint, top_k=5)
    url = page.resolve().as_uri()

    dom = _chromium_dom(url)
    assert 'data-ready="1"' in dom  # the page's script ran to the end
    ranks = re.findall(r'<tr class="row[^"]*" data-rank="(\d+)"', dom)
    assert ranks == ["1", "2", "3", "4", "5"]
    assert "5 of 5 shown" in dom

    dom = _chromium_dom(url + "#sort=p_counterfeit:asc&verdict=counterfeit")
    scores = [
        float(p)
        for p in re.findall(r'<tr class="row[^"]*" data-rank="\d+" data-p="([0-9.]+)"', dom)
    ]
    assert scores == sorted(scores) and len(scores) == 5
    visible = re.findall(r'<tr class="row[^"]*"[^>]*data-verdict="(\w+)"[^>]*?(hidden[^>]*)?>', dom)
    assert [verdict for verdict, hidden in visible if not hidden] == ["counterfeit"] * 3
    assert "3 of 5 shown" in dom

    results, items = _listing_results(tmp_path / "listing")
    page = write_review(results, tmp_path / "items", model_path=None, top_k=5, items_path=items)
    dom = _chromium_dom(page.resolve().as_uri() + "#sort=p_counterfeit:asc&q=bag0")
    assert 'data-ready="1"' in dom and "1 of 3 shown" in dom
