"""Specification of the dataset layer (`cfimg.data`) and of `cfimg data check`."""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfimg.data import (
    Sample,
    assign_splits,
    check_dataset,
    dataset_fingerprint,
    detect_layout,
    find_duplicates,
    find_item_leaks,
    item_id_rule,
    load_samples,
    training_blockers,
    write_split_csv,
)
from cfimg.errors import EXIT_BAD_DATASET, EXIT_USAGE, DatasetError, UsageError
from cfimg.labels import CLASS_NAMES

GENUINE, COUNTERFEIT = CLASS_NAMES.index("genuine"), CLASS_NAMES.index("counterfeit")


def relative_paths(samples: list[Sample], root: Path) -> list[str]:
    return [Path(sample.path).relative_to(root).as_posix() for sample in samples]


def splits_of_items(samples: list[Sample]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        found[sample.item_id].add(sample.split)
    return found


# ---------------------------------------------------------------------------------- sources


def test_folder_tree_gives_labels_categories_brands_and_items(tmp_path, make_image_tree):
    make_image_tree(tmp_path, categories=("watch",), brands=("brand-x",), items=2, views=2)
    samples = load_samples(tmp_path)
    assert relative_paths(samples, tmp_path) == sorted(relative_paths(samples, tmp_path))
    assert len(samples) == 8
    first = samples[0]
    assert os.path.isabs(first.path)
    assert (first.label, first.category, first.brand, first.split) == (
        COUNTERFEIT,
        "watch",
        "brand-x",
        "",
    )
    assert first.item_id == "counterfeit/watch/brand-x/counterfeit-watch-brand-x-item0"
    assert len({sample.item_id for sample in samples}) == 4
    assert detect_layout(tmp_path) == "folders"


def test_label_aliases_are_accepted_in_any_case(tmp_path, write_image):
    for seed, folder in enumerate(["Authentic", "real", "FAKE", "replica"]):
        write_image(tmp_path / folder / f"photo{seed}.png", seed=seed)
    labels = {Path(s.path).parent.name: s.label for s in load_samples(tmp_path)}
    assert labels == {
        "Authentic": GENUINE,
        "real": GENUINE,
        "FAKE": COUNTERFEIT,
        "replica": COUNTERFEIT,
    }


def test_a_third_folder_level_names_the_item(tmp_path, write_image):
    for view in (1, 2, 3):
        write_image(tmp_path / "fake" / "watch" / "brand-x" / "item42" / f"{view}.jpg", seed=view)
    samples = load_samples(tmp_path)
    assert {sample.item_id for sample in samples} == {"fake/watch/brand-x/item42"}


def test_hidden_files_os_litter_and_non_images_are_skipped(tmp_path, write_image):
    write_image(tmp_path / "genuine" / "bag" / "a.jpg")
    (tmp_path / "genuine" / "bag" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "genuine" / "notes.txt").write_text("x")
    write_image(tmp_path / "genuine" / ".cache" / "b.jpg")
    write_image(tmp_path / "__MACOSX" / "genuine" / "c.jpg")
    assert relative_paths(load_samples(tmp_path), tmp_path) == ["genuine/bag/a.jpg"]


def test_split_folders_give_splits_and_items_independent_of_the_split(tmp_path, write_image):
    write_image(tmp_path / "train" / "genuine" / "bag" / "item1_1.jpg", seed=1)
    write_image(tmp_path / "valid" / "counterfeit" / "bag" / "item2_1.jpg", seed=2)
    write_image(tmp_path / "test" / "genuine" / "bag" / "item1_2.jpg", seed=3)
    samples = load_samples(tmp_path)
    assert detect_layout(tmp_path) == "split-folders"
    assert [sample.split for sample in samples] == ["test", "train", "val"]
    assert assign_splits(samples) == samples  # given splits are kept
    assert find_item_leaks(samples) == {"genuine/bag/item1": ("train", "test")}


def test_csv_manifest_paths_are_relative_to_the_csv(tmp_path, write_image):
    write_image(tmp_path / "imgs" / "a_1.jpg", seed=1)
    write_image(tmp_path / "imgs" / "b.jpg", seed=2)
    manifest = tmp_path / "lists" / "data.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "Path,Label,category,brand,item_id,split,view\n"
        "../imgs/a_1.jpg,Fake,bag,lv,,train,front\n"
        "../imgs/b.jpg,authentic,watch,,w9,test,\n"
    )
    first, second = load_samples(manifest)
    assert first == Sample(
        str(tmp_path / "imgs" / "a_1.jpg"), COUNTERFEIT, "bag", "lv", "../imgs/a", "train"
    )
    assert first.extra == {"view": "front"}
    assert (second.label, second.category, second.item_id, second.split) == (
        GENUINE,
        "watch",
        "w9",
        "test",
    )


def test_folder_with_manifest_is_read_through_it_keeping_extra_columns(tmp_path, write_image):
    write_image(tmp_path / "genuine" / "bag" / "lv" / "g1_1.jpg", seed=1)
    write_image(tmp_path / "counterfeit" / "bag" / "lv" / "c1_1.jpg", seed=2)
    write_image(tmp_path / "counterfeit" / "bag" / "lv" / "unlisted.jpg", seed=3)
    (tmp_path / "manifest.csv").write_text(
        "path,label,category,brand,item_id,view,difficulty,defects,defect_boxes\n"
        "genuine/bag/lv/g1_1.jpg,genuine,bag,lv,g1,front,0.2,,\n"
        'counterfeit/bag/lv/c1_1.jpg,counterfeit,bag,lv,c1,side,0.7,"stitch;logo","[[1,2,3,4]]"\n'
    )
    samples = load_samples(tmp_path)
    assert detect_layout(tmp_path) == "manifest"
    assert relative_paths(samples, tmp_path) == [
        "counterfeit/bag/lv/c1_1.jpg",
        "genuine/bag/lv/g1_1.jpg",
    ]
    assert samples[0].extra == {
        "view": "side",
        "difficulty": "0.7",
        "defects": "stitch;logo",
        "defect_boxes": "[[1,2,3,4]]",
    }


def test_split_csv_reads_back_as_the_same_samples(tmp_path, make_image_tree):
    make_image_tree(tmp_path / "data", items=3)
    samples = assign_splits(load_samples(tmp_path / "data"), seed=3)
    samples = [
        Sample(s.path, s.label, s.category, s.brand, s.item_id, s.split, {"view": "front"})
        for s in samples
    ]
    split_csv = tmp_path / "runs" / "run1" / "split.csv"
    write_split_csv(samples, split_csv)
    again = load_samples(split_csv)
    assert again == samples
    assert [s.extra for s in again] == [s.extra for s in samples]
    assert split_csv.read_text().splitlines()[0] == ("path,label,category,brand,item_id,split,view")


def test_split_csv_writes_paths_below_its_folder_relative(tmp_path, make_image_tree):
    make_image_tree(tmp_path, items=1, views=1, categories=("bag",))
    samples = load_samples(tmp_path)
    write_split_csv(samples, tmp_path / "split.csv")
    rows = (tmp_path / "split.csv").read_text().splitlines()[1:]
    assert rows[0].startswith("counterfeit/bag/brand-a/")
    assert load_samples(tmp_path / "split.csv") == samples


# ----------------------------------------------------------------------------- bad sources


def dataset_error(source, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        load_samples(source, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_source_is_a_dataset_error(tmp_path):
    assert dataset_error(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such file or folder"


def test_folder_without_images_is_a_dataset_error(tmp_path):
    (tmp_path / "genuine").mkdir()
    (tmp_path / "genuine" / "readme.txt").write_text("x")
    assert dataset_error(tmp_path).startswith(f"{tmp_path}: no images found")


def test_unknown_label_folder_is_named(tmp_path, write_image):
    write_image(tmp_path / "genuine" / "a.jpg")
    write_image(tmp_path / "unsure" / "b.jpg")
    message = dataset_error(tmp_path)
    assert message.startswith(f"{tmp_path / 'unsure'}: folder is not a label")
    assert "genuine, authentic, real, counterfeit, fake, replica" in message


def test_label_folders_beside_split_folders_are_refused(tmp_path, write_image):
    write_image(tmp_path / "train" / "genuine" / "a.jpg")
    write_image(tmp_path / "genuine" / "b.jpg")
    assert "beside split folders" in dataset_error(tmp_path)


def test_csv_unknown_label_names_the_line_and_the_allowed_labels(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.jpg,genuine\nb.jpg,maybe\n")
    assert dataset_error(manifest) == (
        f"{manifest}: line 3: unknown label 'maybe' "
        "(allowed: genuine, authentic, real, counterfeit, fake, replica)"
    )


def test_csv_missing_columns_are_named(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\na.jpg,genuine\n")
    assert (
        dataset_error(manifest) == f"{manifest}: missing column(s) path, label (found: file, class)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty manifest"),
        ("path,label\na.jpg,genuine,\n,genuine\n", "line 3: empty path"),
        ("path,label,split\na.jpg,fake,holdout\n", "line 2: unknown split 'holdout'"),
        ("path,label\na.jpg,fake\na.jpg,real\n", "listed again with a different label"),
    ],
)
def test_csv_problems_are_one_line_errors(tmp_path, text, expected):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    assert expected in dataset_error(manifest)


def test_a_file_that_is_not_a_csv_is_refused(tmp_path, write_image):
    path = write_image(tmp_path / "a.jpg")
    assert dataset_error(path) == f"{path}: not a folder or a .csv manifest"


# ------------------------------------------------------------------------------ item rule


@pytest.mark.parametrize(
    ("name", "item"),
    [
        ("bag7_1.jpg", "bag7"),
        ("bag7-12.JPG", "bag7"),
        ("bag7 (3).png", "bag7"),
        ("bag7.jpg", "bag7"),
        ("IMG_0042.jpg", "IMG_0042"),
        ("DSC-1234.jpg", "DSC-1234"),
        ("_1.jpg", "_1"),
    ],
)
def test_default_item_rule_strips_a_view_suffix(name, item):
    assert item_id_rule()(name) == item


def test_group_regex_first_group_is_the_item(tmp_path, write_image):
    for seed, name in enumerate(["SKU12-front.jpg", "SKU12-back.jpg", "SKU13-front.jpg"]):
        write_image(tmp_path / "genuine" / name, seed=seed)
    default_items = {s.item_id for s in load_samples(tmp_path)}
    regex_items = {s.item_id for s in load_samples(tmp_path, group_regex=r"^(SKU\d+)-")}
    assert len(default_items) == 3
    assert regex_items == {"genuine/SKU12", "genuine/SKU13"}


@pytest.mark.parametrize("regex", ["(unclosed", "no-group"])
def test_bad_group_regex_is_a_usage_error(regex):
    with pytest.raises(UsageError, match="--group-regex"):
        item_id_rule(regex)


# --------------------------------------------------------------------------------- splits


def synthetic_samples(items_per_stratum: dict[tuple[int, str], int], views: int = 2):
    return [
        Sample(
            f"/d/{label}/{category}/i{item}_{view}.jpg",
            label,
            category,
            "",
            f"{label}-{category}-{item}",
        )
        for (label, category), count in items_per_stratum.items()
        for item in range(count)
        for view in range(views)
    ]


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    samples = synthetic_samples({(0, "bag"): 30, (1, "bag"): 30})
    first = assign_splits(samples, seed=1)
    assert assign_splits(samples, seed=1) == first
    assert assign_splits(samples, seed=2) != first


def test_split_is_stratified_by_label_and_category():
    samples = synthetic_samples(
        {(0, "bag"): 100, (0, "watch"): 40, (1, "bag"): 60, (1, "watch"): 20}
    )
    split = assign_splits(samples, val_frac=0.2, test_frac=0.1, seed=0)
    items = {(s.item_id, s.label, s.category, s.split) for s in split}
    for stratum, total in {
        (0, "bag"): 100,
        (0, "watch"): 40,
        (1, "bag"): 60,
        (1, "watch"): 20,
    }.items():
        counts = Counter(split for _, label, cat, split in items if (label, cat) == stratum)
        assert abs(counts["val"] - 0.2 * total) <= 1
        assert abs(counts["test"] - 0.1 * total) <= 1


def test_split_gives_each_brand_its_share_of_val_and_test_in_each_class():
    # per (label, brand): genuine and counterfeit items of three brands in unequal numbers
    items = {(0, "alba"): 60, (0, "brio"): 20, (0, "cora"): 40, (1, "alba"): 30, (1, "brio"): 50}
    samples = [
        Sample(
            f"/d/{label}/{brand}/{item}_{view}.jpg", label, "bag", brand, f"{label}{brand}{item}"
        )
        for (label, brand), count in items.items()
        for item in range(count)
        for view in range(2)
    ]
    for seed in range(5):
        split = assign_splits(samples, val_frac=0.2, test_frac=0.1, seed=seed)
        item_rows = {(s.item_id, s.label, s.brand, s.split) for s in split}
        for stratum, total in items.items():
            counts = Counter(sp for _, label, brand, sp in item_rows if (label, brand) == stratum)
            assert abs(counts["val"] - 0.2 * total) <= 1, (seed, stratum, counts)
            assert abs(counts["test"] - 0.1 * total) <= 1, (seed, stratum, counts)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (1, {"train": 1}),
        (2, {"train": 1, "val": 1}),
        (3, {"train": 1, "val": 1, "test": 1}),
    ],
)
def test_small_classes_still_reach_train_val_and_test(items, expected):
    samples = synthetic_samples({(0, "bag"): 40, (1, "bag"): items}, views=3)
    for seed in range(10):
        split = assign_splits(samples, seed=seed)
        per_split = Counter({s.item_id: s.split for s in split if s.label == 1}.values())
        assert per_split == expected, seed


def test_zero_fractions_put_everything_in_train():
    split = assign_splits(synthetic_samples({(0, ""): 5, (1, ""): 5}), val_frac=0, test_frac=0)
    assert {s.split for s in split} == {"train"}


def test_partial_splits_are_kept_and_followed_by_the_rest_of_the_item():
    samples = synthetic_samples({(0, "bag"): 20, (1, "bag"): 20})
    given = [replace(s, split="test") if s.path.endswith("i0_0.jpg") else s for s in samples]
    split = assign_splits(given, seed=0)
    for label in (0, 1):
        assert {s.split for s in split if s.item_id == f"{label}-bag-0"} == {"test"}


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_impossible_fractions_are_a_usage_error(val, test):
    with pytest.raises(UsageError):
        assign_splits(synthetic_samples({(0, ""): 3}), val_frac=val, test_frac=test)


item_structures = st.lists(
    st.tuples(
        st.integers(0, 1),  # label
        st.sampled_from(["", "bag", "watch", "belt"]),  # category
        st.integers(1, 5),  # photos of the item
        st.sampled_from(["", "", "", "train", "val", "test"]),  # a split given for one photo
    ),
    min_size=1,
    max_size=40,
)


def structured_samples(items) -> list[Sample]:
    samples = []
    for index, (label, category, photos, given_split) in enumerate(items):
        for view in range(photos):
            split = given_split if view == 0 else ""
            path = f"/d/{category}/item{index}_{view}.jpg"
            samples.append(Sample(path, label, category, "", f"item{index}", split))
    return samples


@settings(max_examples=150, deadline=None)
@given(
    items=item_structures,
    val_frac=st.floats(0.0, 0.45),
    test_frac=st.floats(0.0, 0.45),
    seed=st.integers(0, 2**31),
)
def test_grouped_split_never_puts_one_item_in_two_splits(items, val_frac, test_frac, seed):
    samples = structured_samples(items)
    split = assign_splits(samples, val_frac=val_frac, test_frac=test_frac, seed=seed)
    assert [s.path for s in split] == [s.path for s in samples]
    assert all(s.split in ("train", "val", "test") for s in split)
    assert all(
        after.split == before.split
        for before, after in zip(samples, split, strict=True)
        if before.split
    )
    assert all(len(found) == 1 for found in splits_of_items(split).values())
    assert find_item_leaks(split) == {}


@settings(max_examples=150, deadline=None)
@given(
    items=item_structures,
    val_frac=st.floats(0.01, 0.45),
    test_frac=st.floats(0.01, 0.45),
    seed=st.integers(0, 2**31),
)
def test_every_class_reaches_train_then_val_then_test(items, val_frac, test_frac, seed):
    free = [(label, category, photos, "") for label, category, photos, _ in items]
    split = assign_splits(
        structured_samples(free), val_frac=val_frac, test_frac=test_frac, seed=seed
    )
    for label in (0, 1):
        item_splits = {s.item_id: s.split for s in split if s.label == label}
        counts = Counter(item_splits.values())
        if len(item_splits) >= 1:
            assert counts["train"] >= 1
        if len(item_splits) >= 2:
            assert counts["val"] >= 1
        if len(item_splits) >= 3:
            assert counts["test"] >= 1


# ------------------------------------------------------------ fingerprints and duplicates


def test_fingerprint_survives_a_move_but_not_a_relabel_or_resplit(tmp_path, make_image_tree):
    make_image_tree(tmp_path / "a", items=2)
    samples = assign_splits(load_samples(tmp_path / "a"))
    fingerprint = dataset_fingerprint(samples)
    assert len(fingerprint) == 16
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert dataset_fingerprint(assign_splits(load_samples(tmp_path / "b"))) == fingerprint
    first = samples[0]
    relabelled = [replace(first, label=1 - first.label), *samples[1:]]
    assert dataset_fingerprint(relabelled) != fingerprint
    resplit = [replace(first, split="test" if first.split != "test" else "val"), *samples[1:]]
    assert dataset_fingerprint(resplit) != fingerprint


def test_identical_files_across_splits_are_found(tmp_path, write_image):
    original = write_image(tmp_path / "train" / "genuine" / "a.jpg", seed=1)
    write_image(tmp_path / "test" / "counterfeit" / "other.jpg", seed=2)
    (tmp_path / "test" / "genuine").mkdir()
    shutil.copy(original, tmp_path / "test" / "genuine" / "copy.jpg")
    (group,) = find_duplicates(load_samples(tmp_path))
    assert sorted(group.splits) == ["test", "train"]
    assert group.crosses_splits and not group.conflicting_labels


def test_files_of_equal_size_but_different_bytes_are_not_duplicates(tmp_path):
    for name, content in (("a.jpg", b"\xff\xd8" + b"a" * 100), ("b.jpg", b"\xff\xd8" + b"b" * 100)):
        (tmp_path / name).write_bytes(content)
    samples = [Sample(str(tmp_path / name), 0) for name in ("a.jpg", "b.jpg")]
    assert find_duplicates(samples) == []


# ------------------------------------------------------------------------- trainability


def test_blockers_name_missing_classes_and_empty_splits():
    genuine_only = [Sample(f"/d/{i}.jpg", GENUINE, split="train") for i in range(3)]
    assert training_blockers(genuine_only) == ["no counterfeit images"]
    no_val = genuine_only + [Sample("/d/c.jpg", COUNTERFEIT, split="train")]
    assert training_blockers(no_val) == ["the val split is empty"]
    one_class_val = no_val + [Sample("/d/v.jpg", GENUINE, split="val")]
    assert training_blockers(one_class_val) == ["the val split has no counterfeit images"]


def test_unreadable_files_do_not_count_towards_trainability():
    samples = [
        Sample("/d/g.jpg", GENUINE, split="train"),
        Sample("/d/gv.jpg", GENUINE, split="val"),
        Sample("/d/c.jpg", COUNTERFEIT, split="train"),
        Sample("/d/cv.jpg", COUNTERFEIT, split="val"),
    ]
    assert training_blockers(samples) == []
    assert training_blockers(samples, unreadable={"/d/cv.jpg"}) == [
        "the val split has no counterfeit images"
    ]


def test_check_dataset_reports_unreadable_files_with_reasons(tmp_path, make_image_tree):
    make_image_tree(tmp_path, items=3)
    (tmp_path / "genuine" / "bag" / "broken.jpg").write_text("not a photo")
    (tmp_path / "genuine" / "bag" / "empty.png").write_bytes(b"")
    report = check_dataset(tmp_path)
    relative = {Path(p).name: reason for p, reason in report.unreadable.items()}
    assert relative == {"broken.jpg": "not an image file", "empty.png": "empty file"}
    assert report.trainable
    assert "2 unreadable file(s) will be skipped" in report.warnings


def test_check_dataset_warns_about_a_category_seen_in_one_class(tmp_path, make_image_tree):
    make_image_tree(tmp_path, labels=("genuine", "counterfeit"), categories=("bag",), items=3)
    make_image_tree(tmp_path, labels=("counterfeit",), categories=("watch",), items=3)
    report = check_dataset(tmp_path, verify=False)
    assert any("category 'watch' has only counterfeit images" in line for line in report.warnings)


# ------------------------------------------------------------------------------------ CLI


def test_cli_check_prints_counts_and_exits_zero_for_a_good_dataset(
    tmp_path, make_image_tree, run_cli
):
    make_image_tree(tmp_path, items=4, views=2)
    code, out, err = run_cli(["data", "check", tmp_path])
    assert code == 0, err
    assert "32 images, 16 items" in out
    assert "train" in out and "val" in out and "test" in out
    assert "Category" in out and "watch" in out and "Brand" in out and "brand-a" in out
    assert "ready to train" in out


def test_cli_check_exits_bad_dataset_when_a_class_is_missing(tmp_path, make_image_tree, run_cli):
    make_image_tree(tmp_path, labels=("genuine",), items=3)
    code, out, err = run_cli(["data", "check", tmp_path])
    assert code == EXIT_BAD_DATASET
    assert err.strip() == f"error: {tmp_path}: cannot train on this dataset: no counterfeit images"


def test_cli_check_exits_bad_dataset_when_a_split_is_empty(tmp_path, write_image, run_cli):
    write_image(tmp_path / "train" / "genuine" / "g.jpg", seed=1)
    write_image(tmp_path / "train" / "counterfeit" / "c.jpg", seed=2)
    code, _, err = run_cli(["data", "check", tmp_path])
    assert code == EXIT_BAD_DATASET
    assert "the val split is empty" in err


def test_cli_check_exits_bad_dataset_for_a_missing_folder(tmp_path, run_cli):
    code, out, err = run_cli(["data", "check", tmp_path / "nope"])
    assert code == EXIT_BAD_DATASET
    assert err.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"


def test_cli_check_rejects_impossible_fractions(tmp_path, make_image_tree, run_cli):
    make_image_tree(tmp_path, items=2)
    code, _, err = run_cli(["data", "check", tmp_path, "--val-frac", "0.6", "--test-frac", "0.6"])
    assert code == EXIT_USAGE
    assert "--val-frac 0.6 and --test-frac 0.6" in err


def test_cli_check_lists_unreadable_files_duplicates_and_leaks(tmp_path, write_image, run_cli):
    for split in ("train", "val", "test"):
        for label in ("genuine", "counterfeit"):
            write_image(tmp_path / split / label / f"{split}-{label}.jpg", seed=len(split + label))
    shutil.copy(
        tmp_path / "train" / "genuine" / "train-genuine.jpg",
        tmp_path / "test" / "genuine" / "copy.jpg",
    )
    write_image(tmp_path / "val" / "genuine" / "bag9_1.jpg", seed=11)
    write_image(tmp_path / "test" / "genuine" / "bag9_2.jpg", seed=12)
    (tmp_path / "train" / "counterfeit" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    code, out, err = run_cli(["data", "check", tmp_path])
    assert code == 0, err
    assert "cut.jpg" in out and "truncated or damaged JPEG header" in out
    assert "leak across splits" in out
    assert "genuine/bag9" in out and "val, test" in out
    assert "1 item(s) have photos in more than one split" in out


def test_cli_max_pixels_makes_large_images_unreadable(tmp_path, make_image_tree, run_cli):
    make_image_tree(tmp_path, items=2, size_px=40)
    code, out, _ = run_cli(["data", "check", tmp_path, "--max-pixels", "1000"])
    assert code == EXIT_BAD_DATASET
    assert "image too large (1600 pixels > limit 1000)" in out


def test_cli_group_regex_changes_the_items(tmp_path, make_image_tree, run_cli):
    make_image_tree(tmp_path, items=2, views=2)
    regex_flags = ["--group-regex", r"^([a-z]+)-", "--test-frac", "0", "--no-verify"]
    code, out, err = run_cli(["data", "check", tmp_path, *regex_flags])
    assert code == 0, err
    assert "16 images, 4 items" in out  # one item per label/category folder
