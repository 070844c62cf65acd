"""`cfimg synth`: the synthetic genuine/counterfeit product-photo benchmark."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfimg.cli import main
from cfimg.errors import UsageError
from cfimg.synth import (
    DEFECTS_BY_CATEGORY,
    DIFFICULTIES,
    MAGNITUDES,
    MANIFEST_COLUMNS,
    generate_dataset,
    read_manifest,
    write_contact_sheet,
)
from cfimg.synth.brands import BRANDS_BY_CATEGORY
from cfimg.synth.generate import ItemPlan, SynthConfig, plan_items, render_item

SIZE = 64
# 12 items per balanced block; 120 images is about 60 items, i.e. at least 26 counterfeits of
# each category: every defect kind is the first defect of at least one of them.
SMALL_SET_IMAGES = 120


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("synth") / "set"
    manifest = generate_dataset(
        out,
        n_images=SMALL_SET_IMAGES,
        seed=3,
        difficulty="medium",
        size_px=SIZE,
        workers=0,
        progress=False,
    )
    return out, read_manifest(manifest)


def _tree_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_same_arguments_give_byte_identical_files_whatever_the_worker_count(tmp_path):
    args = dict(n_images=24, seed=11, difficulty="hard", size_px=96, progress=False)
    generate_dataset(tmp_path / "a", workers=0, **args)
    generate_dataset(tmp_path / "b", workers=2, **args)
    a, b = _tree_files(tmp_path / "a"), _tree_files(tmp_path / "b")
    assert len(a) == 25  # 24 JPEGs and the manifest
    assert a == b


def test_another_seed_gives_other_images(tmp_path):
    args = dict(n_images=6, difficulty="medium", size_px=SIZE, workers=0, progress=False)
    generate_dataset(tmp_path / "a", seed=1, **args)
    generate_dataset(tmp_path / "b", seed=2, **args)
    a, b = _tree_files(tmp_path / "a"), _tree_files(tmp_path / "b")
    common = [k for k in a.keys() & b.keys() if k.endswith(".jpg")]
    assert common  # the first item's first view exists in both
    assert all(a[k] != b[k] for k in common)


def test_manifest_and_tree_agree(small_set):
    root, rows = small_set
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.jpg")}
    assert on_disk == {row["path"] for row in rows}
    assert len(rows) == SMALL_SET_IMAGES
    assert list(rows[0].keys()) == list(MANIFEST_COLUMNS)
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)
    for row in rows:
        label, category, brand, name = row["path"].split("/")
        assert (label, category, brand) == (row["label"], row["category"], row["brand"])
        assert name.startswith(row["item_id"])
        assert row["difficulty"] == "medium"
        with Image.open(root / row["path"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIZE, SIZE)


def test_views_of_one_item_share_its_id_label_and_defects(small_set):
    _, rows = small_set
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], []).append(row)
    assert len(by_item) < len(rows)  # some items were photographed more than once
    for views in by_item.values():
        assert 1 <= len(views) <= 3
        assert sorted(int(v["view"]) for v in views) == list(range(len(views)))
        assert len({(v["label"], v["brand"], v["defects"]) for v in views}) == 1


def test_classes_categories_and_brands_are_balanced(small_set):
    """Items come in blocks of 12 (each category and brand once genuine, once counterfeit), and a
    counterfeit has as many views as its genuine twin: images are balanced to within 10%."""
    _, rows = small_set
    n = len(rows)
    labels = Counter(row["label"] for row in rows)
    assert set(labels) == {"genuine", "counterfeit"}
    assert all(abs(count - n / 2) <= 0.10 * n for count in labels.values())
    categories = Counter(row["category"] for row in rows)
    assert all(abs(count - n / 2) <= 0.10 * n for count in categories.values())
    for category, brands in BRANDS_BY_CATEGORY.items():
        in_category = [row for row in rows if row["category"] == category]
        counts = Counter(row["brand"] for row in in_category)
        assert set(counts) == {b.slug for b in brands}
        share = len(in_category) / len(brands)
        assert all(abs(count - share) <= 0.35 * share for count in counts.values())


def test_item_plan_is_exactly_balanced_over_whole_blocks():
    plans = plan_items(2000, seed=0)
    whole = plans[: len(plans) // 12 * 12]
    images = Counter((p.label, p.category, p.brand) for p in whole for _ in range(p.n_views))
    assert len(images) == 12
    by_label = Counter()
    for (label, _, _), count in images.items():
        by_label[label] += count
    assert by_label["genuine"] == by_label["counterfeit"]
    assert sum(p.n_views for p in plans) == 2000


def test_every_defect_kind_appears_in_a_small_set(small_set):
    _, rows = small_set
    for category, kinds in DEFECTS_BY_CATEGORY.items():
        seen = Counter(
            kind
            for row in rows
            if row["category"] == category and row["defects"]
            for kind in row["defects"].split(";")
        )
        assert set(seen) == set(kinds), f"{category}: missing {set(kinds) - set(seen)}"


def test_counterfeits_carry_one_to_three_defects_and_genuine_items_none(small_set):
    _, rows = small_set
    for row in rows:
        boxes = json.loads(row["defect_boxes"])
        kinds = row["defects"].split(";") if row["defects"] else []
        if row["label"] == "genuine":
            assert kinds == [] and boxes == []
        else:
            assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
            assert set(kinds) <= set(DEFECTS_BY_CATEGORY[row["category"]])
            assert {b["kind"] for b in boxes} == set(kinds)


def test_defect_boxes_lie_inside_the_image(small_set):
    _, rows = small_set
    boxes = [b for row in rows for b in json.loads(row["defect_boxes"])]
    assert boxes
    for b in boxes:
        if b["box"] is None:  # cropped out of the photo entirely
            assert b["visible"] is False
            continue
        x0, y0, x1, y1 = b["box"]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
    assert sum(b["visible"] for b in boxes) > 0.8 * len(boxes)


@pytest.mark.parametrize("category", ["bag", "watch"])
def test_a_counterfeit_differs_from_its_genuine_twin_only_inside_its_defect_boxes(category):
    """Same item index, same make and photo streams: the defects are the only difference, and they
    are local (this also shows that the label does not steer any other random draw)."""
    config = SynthConfig(out_dir=Path("unused"), seed=5, difficulty="easy", size_px=128)
    brand = BRANDS_BY_CATEGORY[category][1].slug
    for kind in DEFECTS_BY_CATEGORY[category]:
        genuine = render_item(ItemPlan(7, category, brand, "genuine", 1, ""), config)
        fake = render_item(ItemPlan(7, category, brand, "counterfeit", 1, kind), config)
        changed = (
            np.abs(np.asarray(genuine.image, np.int16) - np.asarray(fake.image, np.int16)).max(2)
            > 8
        )
        inside = np.zeros_like(changed)
        for _, (x0, y0, x1, y1) in fake.defect_boxes:
            inside[max(0, int(y0) - 2) : int(y1) + 3, max(0, int(x0) - 2) : int(x1) + 3] = True
        assert changed.any(), kind
        assert not (changed & ~inside).any(), f"{kind} changed pixels outside its boxes"


def test_defect_magnitudes_shrink_as_difficulty_rises():
    for kind, (easy, medium, hard) in MAGNITUDES.items():
        if kind == "engraving_shallow":  # contrast left: a deeper cut at hard
            assert easy < medium < hard
        else:
            assert abs(easy) >= abs(medium) >= abs(hard), kind
    assert DIFFICULTIES == ("easy", "medium", "hard")


def test_contact_sheet_shows_pairs_of_each_brand(small_set, tmp_path):
    _, rows = small_set
    root, _ = small_set
    out = write_contact_sheet(root / "manifest.csv", tmp_path / "sheet.png", tile_px=64, zooms=1)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width == 3 * 64
        assert sheet.height >= 6 * 64  # a row per brand at least


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["synth", str(out), "--n", "12", "--size", str(SIZE), "--workers", "0", "--preview"]
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--quiet"])
    assert exit_info.value.code == 0
    assert (out / "manifest.csv").is_file() and (out / "preview.png").is_file()
    assert len(list(out.rglob("*.jpg"))) == 12
    assert "wrote 12 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--difficulty", "extreme"], "--difficulty"),
        (["--size", "8"], "--size"),
        (["--n", "0"], "--n"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_cli_rejects_bad_flags_with_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "set"), "--quiet", *flags])
    assert exit_info.value.code == UsageError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "set").exists()


def test_refuses_to_overwrite_a_dataset_unless_asked(tmp_path):
    args = dict(n_images=4, seed=0, size_px=SIZE, workers=0, progress=False)
    generate_dataset(tmp_path, **args)
    stale = tmp_path / "genuine" / "stale.jpg"
    stale.write_bytes(b"old")
    with pytest.raises(UsageError, match="--overwrite"):
        generate_dataset(tmp_path, **args)
    generate_dataset(tmp_path, overwrite=True, **args)
    assert not stale.exists()
    assert len(read_manifest(tmp_path / "manifest.csv")) == 4


def test_out_path_that_is_a_file_is_a_usage_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        generate_dataset(target, n_images=2, size_px=SIZE, workers=0, progress=False)
