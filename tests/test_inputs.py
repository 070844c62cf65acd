"""INPUT arguments of `cfimg predict`: files, folders, globs, @lists, stdin, and shards."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import pytest

from cfimg.errors import UsageError
from cfimg.inputs import Shard, iter_input_paths, parse_shard, path_key, shard_of


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{b.JPG, a.png, notes.txt, sub/{c.jpeg, d.Webp, .hidden/e.jpg, raw.cr2}, z/f.tif}"""
    root = tmp_path / "root"
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.jpeg", "sub/d.Webp", "sub/raw.cr2"):
        touch(root / name)
    touch(root / "sub/.hidden/e.jpg")
    touch(root / "z/f.tif")
    return root


def relative(paths, root: Path) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


def test_folder_is_walked_recursively_in_name_order_keeping_only_image_extensions(tree):
    found = relative(iter_input_paths([str(tree)]), tree)
    assert found == ["a.png", "b.JPG", "sub/c.jpeg", "sub/d.Webp", "z/f.tif"]


def test_hidden_files_and_folders_are_skipped_in_folders(tree):
    touch(tree / "._b.JPG")  # a macOS resource fork, not a photo
    assert not any("/." in path for path in iter_input_paths([str(tree)]))


def test_folder_enumeration_is_the_same_every_time(tree):
    assert list(iter_input_paths([str(tree)])) == list(iter_input_paths([str(tree)]))


def test_explicit_file_is_taken_as_given_even_without_an_image_extension(tree):
    assert list(iter_input_paths([str(tree / "notes.txt")])) == [str(tree / "notes.txt")]


def test_missing_file_is_passed_on_so_its_row_can_say_why(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    assert list(iter_input_paths([missing])) == [missing]


def test_symlinked_folders_are_not_followed_but_dangling_image_links_are_listed(tmp_path):
    root = tmp_path / "root"
    touch(root / "real/a.jpg")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    assert relative(iter_input_paths([str(root)]), root) == ["gone.jpg", "real/a.jpg"]


def test_glob_pattern_matches_image_files_recursively_with_double_star(tree):
    found = relative(iter_input_paths([str(tree / "**" / "*.jp*g")]), tree)
    assert found == ["sub/c.jpeg"]  # .JPG does not match the lower-case pattern; .hidden skipped


def test_glob_pattern_keeps_only_images_and_expands_matching_folders(tree):
    found = relative(iter_input_paths([str(tree / "*")]), tree)
    assert found == ["a.png", "b.JPG", "sub/c.jpeg", "sub/d.Webp", "z/f.tif"]


def test_glob_relative_to_the_current_folder(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert list(iter_input_paths(["sub/*.?ebp", "*.png"])) == ["sub/d.Webp", "a.png"]


def test_glob_without_matches_yields_nothing(tree):
    assert list(iter_input_paths([str(tree / "*.gif")])) == []


def test_list_file_yields_its_lines_skipping_blanks_and_comments(tmp_path):
    listing = touch(tmp_path / "list.txt", "# photos\nx/a.jpg\n\n  \ny/b c.png\r\nz.txt\n")
    assert list(iter_input_paths([f"@{listing}"])) == ["x/a.jpg", "y/b c.png", "z.txt"]


def test_unreadable_list_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read the list of paths"):
        list(iter_input_paths([f"@{tmp_path / 'missing.txt'}"]))


def test_dash_reads_paths_from_stdin(tmp_path):
    stdin = io.StringIO("one.jpg\ntwo.jpg\n")
    assert list(iter_input_paths(["-"], stdin=stdin)) == ["one.jpg", "two.jpg"]


def test_inputs_are_expanded_in_argument_order(tree, tmp_path):
    listing = touch(tmp_path / "l.txt", "listed.jpg\n")
    found = list(iter_input_paths([str(tree / "z"), f"@{listing}", str(tree / "a.png")]))
    assert found == [str(tree / "z" / "f.tif"), "listed.jpg", str(tree / "a.png")]


class CountingLines:
    """A stdin stand-in that counts how many lines were read from it."""

    def __init__(self, count: int):
        self.count = count
        self.read = 0

    def __iter__(self):
        for index in range(self.count):
            self.read += 1
            yield f"photos/{index:07d}.jpg\n"


def test_first_path_comes_before_the_rest_of_a_long_list_is_read():
    stdin = CountingLines(100_000)
    paths = iter_input_paths(["-"], stdin=stdin)
    assert next(paths) == "photos/0000000.jpg"
    assert stdin.read == 1


def test_a_100000_line_list_file_is_streamed_not_loaded(tmp_path):
    listing = tmp_path / "big.txt"
    listing.write_text("".join(f"/data/listing-photos/{i:07d}.jpg\n" for i in range(100_000)))
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_input_paths([f"@{listing}"]))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    # a list of these paths alone would take ~8 MB; streaming holds a few lines at a time
    assert peak_bytes < 1_000_000


def test_shards_partition_the_inputs_without_overlap():
    paths = [f"shots/{i}.jpg" for i in range(1000)]
    shares = [{p for p in paths if Shard(k, 4).holds(p)} for k in range(1, 5)]
    assert set().union(*shares) == set(paths)
    assert sum(len(share) for share in shares) == len(paths)
    assert all(150 < len(share) < 350 for share in shares)  # roughly even


def test_shard_of_a_path_is_stable_across_runs_and_machines():
    # blake2b of the UTF-8 path, not Python's salted hash(): pinned so a change is noticed
    assert [shard_of(f"photos/{i}.jpg", 7) for i in range(8)] == [7, 5, 2, 1, 4, 7, 7, 5]
    assert path_key("photos/0.jpg").hex() == "7fdfc6460218e9585b87f6865cc95931"


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "2", "a/b", "1/2/3"])
def test_bad_shard_specs_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_shard(text)


def test_shard_spec_parses_k_of_n():
    assert parse_shard(" 2/4 ") == Shard(2, 4)
    assert str(Shard(2, 4)) == "2/4"
