"""Result files of `cfimg predict`: round trips, partial lines after a kill, sort, merge; the
Parquet format's journal, kill and resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

from cfimg.errors import UsageError
from cfimg.results import (
    CSV_HEADER,
    FIELD_NAMES,
    CsvFormat,
    JsonlFormat,
    ParquetFormat,
    PredictionRow,
    check_output_path,
    encode_rows,
    iter_records,
    merge_results,
    open_result_writer,
    read_results,
    result_format,
    scan_results,
    sort_results,
)


def row(path: str, p: float | None, error: str = "") -> PredictionRow:
    if p is None:
        return PredictionRow(path, "error", None, 0.5, "m@1", None, None, error or "empty file")
    verdict = "counterfeit" if p >= 0.5 else "genuine"
    return PredictionRow(path, verdict, p, 0.5, "m@1", 640, 480, "")


needs_pyarrow = pytest.mark.skipif(
    find_spec("pyarrow") is None, reason="Parquet needs pyarrow: pip install -e '.[parquet]'"
)
PARQUET = pytest.param(".parquet", marks=needs_pyarrow)
ODD_PATHS = ["plain.jpg", "with,comma.jpg", 'with "quotes".jpg', "new\nline.jpg", "caf\udce9.jpg"]


def write(path: Path, rows: list[PredictionRow]) -> Path:
    with open_result_writer(path, resume=False) as writer:
        writer.write(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", PARQUET])
def test_rows_read_back_exactly_as_written_even_with_odd_file_names(tmp_path, suffix):
    rows = [row(p, 0.25 + i / 10) for i, p in enumerate(ODD_PATHS)] + [row("bad.jpg", None)]
    out = write(tmp_path / f"r{suffix}", rows)
    assert list(read_results(out)) == rows


def test_csv_file_has_a_header_and_one_line_per_ordinary_row(tmp_path):
    out = write(tmp_path / "r.csv", [row("a.jpg", 0.75), row("b.jpg", None)])
    lines = out.read_text().splitlines()
    assert lines[0] + "\n" == CSV_HEADER
    assert lines[1:] == [
        "a.jpg,counterfeit,0.75,0.5,m@1,640,480,",
        "b.jpg,error,,0.5,m@1,,,empty file",
    ]


def test_jsonl_rows_are_one_json_object_a_line(tmp_path):
    out = write(tmp_path / "r.jsonl", [row("a.jpg", 0.75)])
    assert json.loads(out.read_text()) == {
        "path": "a.jpg",
        "verdict": "counterfeit",
        "p_counterfeit": 0.75,
        "threshold": 0.5,
        "model_id": "m@1",
        "width": 640,
        "height": 480,
        "error": "",
    }


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_partial_last_line_from_a_kill_is_ignored_and_cut_off_on_resume(tmp_path, suffix):
    out = write(tmp_path / f"r{suffix}", [row("a.jpg", 0.1), row("b.jpg", 0.9)])
    complete = out.stat().st_size
    with open(out, "ab") as handle:
        handle.write(b"c.jpg,genuine,0.1" if suffix == ".csv" else b'{"path": "c.jpg", "verd')
    assert [r.path for r in read_results(out)] == ["a.jpg", "b.jpg"]
    scan = scan_results(out)
    assert (scan.rows, scan.complete_bytes) == (2, complete)
    with open_result_writer(out, resume=True) as writer:
        writer.write([row("c.jpg", 0.2)])
    assert [r.path for r in read_results(out)] == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_damaged_row_before_other_rows_is_an_error_not_a_truncation(tmp_path, suffix):
    out = write(tmp_path / f"r{suffix}", [row("a.jpg", 0.1)])
    damage = b"garbage,,\n" if suffix == ".csv" else b"{not json\n"
    with open(out, "ab") as handle:
        handle.write(damage + encode_rows([row("b.jpg", 0.2)], suffix[1:]))
    before = out.read_bytes()
    with pytest.raises(UsageError, match="damaged row at byte"):
        open_result_writer(out, resume=True)
    assert out.read_bytes() == before  # nothing cut off


def test_csv_row_cut_inside_a_quoted_multiline_path_is_not_a_row(tmp_path):
    out = write(tmp_path / "r.csv", [row("a.jpg", 0.1)])
    with open(out, "ab") as handle:
        handle.write(b'"new\n')  # killed after the first line of a quoted path
    assert [r.path for r in read_results(out)] == ["a.jpg"]


def test_csv_killed_while_writing_its_header_restarts_cleanly(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text(CSV_HEADER[:10])
    with open_result_writer(out, resume=True) as writer:
        writer.write([row("a.jpg", 0.1)])
    assert out.read_text().startswith(CSV_HEADER)
    assert [r.path for r in read_results(out)] == ["a.jpg"]


def test_scan_counts_verdicts_and_error_kinds(tmp_path):
    rows = [row("a", 0.9), row("b", 0.1), row("c", None, "image too large (9 > 4)")]
    scan = scan_results(write(tmp_path / "r.csv", rows))
    assert scan.verdict_counts == {"counterfeit": 1, "genuine": 1, "error": 1}
    assert scan.error_counts == {"image too large": 1}


def test_foreign_csv_is_refused_not_appended_to(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("name,score\nx,1\n")
    with pytest.raises(UsageError, match="not a cfimg predict result file"):
        open_result_writer(out, resume=True)
    assert out.read_text() == "name,score\nx,1\n"


@pytest.mark.parametrize("name", ["r.txt", "r", "r.json"])
def test_output_must_be_csv_or_jsonl(tmp_path, name):
    with pytest.raises(UsageError, match=r"\.csv or \.jsonl"):
        check_output_path(tmp_path / name, resume=False, overwrite=False)


def test_existing_output_is_refused_without_resume_or_overwrite(tmp_path):
    out = write(tmp_path / "r.csv", [row("a", 0.1)])
    with pytest.raises(UsageError, match="already exists"):
        check_output_path(out, resume=False, overwrite=False)
    assert check_output_path(out, resume=True, overwrite=False) == "csv"


@pytest.mark.parametrize("suffix", [".csv", PARQUET])
def test_sort_puts_most_suspicious_first_and_errors_last(tmp_path, suffix):
    rows = [row("a", 0.2), row("e", None), row("b", 0.9), row("c", 0.5), row("d", 0.9)]
    out = write(tmp_path / f"r{suffix}", rows)
    assert sort_results(out) == 5
    assert [r.path for r in read_results(out)] == ["b", "d", "c", "a", "e"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_merge_joins_shards_once_per_path_preferring_classified_rows(tmp_path):
    one = write(tmp_path / "1.csv", [row("a", 0.1), row("b", None), row("c", 0.3)])
    two = write(tmp_path / "2.jsonl", [row("b", 0.8), row("a", 0.7), row("d", None)])
    written, dropped = merge_results(tmp_path / "all.csv", [one, two])
    merged = {r.path: r for r in read_results(tmp_path / "all.csv")}
    assert (written, dropped) == (4, 2)
    assert set(merged) == {"a", "b", "c", "d"}
    assert merged["a"].p_counterfeit == 0.1  # first seen wins between classified rows
    assert merged["b"].p_counterfeit == 0.8  # a classified row beats an error row
    assert merged["d"].failed


def test_merge_can_sort_and_write_jsonl(tmp_path):
    one = write(tmp_path / "1.csv", [row("a", 0.1), row("x", None)])
    two = write(tmp_path / "2.csv", [row("b", 0.8)])
    merge_results(tmp_path / "all.jsonl", [one, two], sort=True)
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["b", "a", "x"]


def test_merge_refuses_to_clobber_or_read_its_own_output(tmp_path):
    one = write(tmp_path / "1.csv", [row("a", 0.1)])
    with pytest.raises(UsageError, match="already exists"):
        merge_results(one, [write(tmp_path / "2.csv", [row("b", 0.1)])])
    with pytest.raises(UsageError, match="cannot also be an input"):
        merge_results(one, [one], overwrite=True)
    with pytest.raises(UsageError, match="no such result file"):
        merge_results(tmp_path / "all.csv", [tmp_path / "missing.csv"])


def test_merge_ignores_a_partial_last_line_of_a_killed_shard(tmp_path):
    one = write(tmp_path / "1.csv", [row("a", 0.1)])
    with open(one, "a") as handle:
        handle.write("b,genu")
    merge_results(tmp_path / "all.csv", [one])
    with open(tmp_path / "all.csv", newline="") as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == ["a"]


def test_record_spans_cover_the_file_exactly(tmp_path):
    out = write(tmp_path / "r.csv", [row(p, 0.5) for p in ODD_PATHS])
    spans = [(start, end) for _, start, end in iter_records(out)]
    assert spans[0][0] == len(CSV_HEADER)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] == out.stat().st_size


@pytest.mark.parametrize("fmt", [CsvFormat(), JsonlFormat()], ids=lambda fmt: fmt.name)
def test_every_text_format_decodes_each_record_span_back_to_its_row(tmp_path, fmt):
    rows = [row(p, 0.25 + i / 10) for i, p in enumerate(ODD_PATHS)] + [row("bad.jpg", None)]
    out = tmp_path / f"r{fmt.suffix}"
    out.write_bytes(fmt.header + fmt.encode(rows[:2]) + fmt.encode(rows[2:]))
    data = out.read_bytes()
    records = list(iter_records(out))
    assert [record_row for record_row, _, _ in records] == rows
    assert [fmt.decode(data[start:end]) for _, start, end in records] == rows


def test_the_format_is_chosen_by_suffix_in_any_case(tmp_path):
    assert result_format(tmp_path / "R.CSV").name == "csv"
    assert result_format(tmp_path / "r.JsonL").name == "jsonl"


def test_the_parquet_format_is_chosen_by_suffix_and_named_in_the_suffix_error(tmp_path):
    with pytest.raises(UsageError, match=r"\.csv or \.jsonl or \.parquet"):
        result_format(tmp_path / "r.txt")
    if find_spec("pyarrow") is not None:
        assert result_format(tmp_path / "R.Parquet").name == "parquet"


# -- Parquet ----------------------------------------------------------------------------------


def test_parquet_without_pyarrow_is_a_usage_error_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[parquet\]'"):
        check_output_path(tmp_path / "r.parquet", resume=False, overwrite=False)


@needs_pyarrow
def test_parquet_rows_go_to_a_journal_until_the_writer_closes(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "r.parquet"
    with open_result_writer(out, resume=False) as writer:
        writer.write([row("a.jpg", 0.75), row("b.jpg", None)])
        assert not out.exists()
        assert ParquetFormat.journal_path(out).exists()
        assert [r.path for r in read_results(out)] == ["a.jpg", "b.jpg"]  # the journal's rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]
    table = pq.read_table(out)
    assert table.column_names == [*FIELD_NAMES, "path_bytes"]
    assert table.column("p_counterfeit").to_pylist() == [0.75, None]


@needs_pyarrow
def test_a_non_utf8_name_shows_replaced_in_path_and_exact_in_path_bytes(tmp_path):
    import pyarrow.parquet as pq

    out = write(tmp_path / "r.parquet", [row("caf\udce9.jpg", 0.5)])
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == ["caf\ufffd.jpg"]
    assert table.column("path_bytes").to_pylist() == [b"caf\xe9.jpg"]
    assert [r.path for r in read_results(out)] == ["caf\udce9.jpg"]


@needs_pyarrow
def test_a_killed_parquet_writer_leaves_no_corrupt_file_and_resume_finishes_it(tmp_path):
    out = tmp_path / "r.parquet"
    killed_writer = textwrap.dedent(
        f"""
        import os
        from cfimg.results import PredictionRow, open_result_writer
        writer = open_result_writer({str(out)!r}, resume=False)
        for index in range(3):
            writer.write([PredictionRow(f"{{index}}.jpg", "genuine", 0.25, 0.5, "m@1", 4, 3)])
        os._exit(9)
        """
    )
    subprocess.run([sys.executable, "-c", killed_writer], check=False)
    assert not out.exists()  # the killed run never made a footerless file the result
    assert [r.path for r in read_results(out)] == ["0.jpg", "1.jpg", "2.jpg"]
    assert check_output_path(out, resume=True, overwrite=False) == "parquet"
    with pytest.raises(UsageError, match="already exists"):
        check_output_path(out, resume=False, overwrite=False)
    with open_result_writer(out, resume=True, scan=scan_results(out)) as writer:
        writer.write([row("3.jpg", 0.9)])
    assert [r.path for r in read_results(out)] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]


@needs_pyarrow
def test_resume_appends_to_a_closed_parquet_file(tmp_path):
    out = write(tmp_path / "r.parquet", [row("a.jpg", 0.1)])
    with open_result_writer(out, resume=True) as writer:
        writer.write([row("b.jpg", 0.2)])
    assert [r.path for r in read_results(out)] == ["a.jpg", "b.jpg"]


@needs_pyarrow
def test_a_parquet_writer_left_by_an_error_keeps_the_journal_for_resume(tmp_path):
    out = tmp_path / "r.parquet"
    with pytest.raises(KeyboardInterrupt), open_result_writer(out, resume=False) as writer:
        writer.write([row("a.jpg", 0.1)])
        raise KeyboardInterrupt
    assert not out.exists() and not ParquetFormat.partial_path(out).exists()
    assert [r.path for r in read_results(out)] == ["a.jpg"]


@needs_pyarrow
def test_foreign_or_damaged_parquet_files_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"name": ["x"], "score": [1.0]}), foreign)
    with pytest.raises(UsageError, match="not a cfimg predict result file"):
        list(read_results(foreign))
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1 and then nothing")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        list(read_results(damaged))


@needs_pyarrow
def test_merge_reads_and_writes_parquet_beside_text_formats(tmp_path):
    one = write(tmp_path / "1.parquet", [row("a", 0.1), row("b", None)])
    two = write(tmp_path / "2.csv", [row("b", 0.8), row("c", 0.5)])
    written, dropped = merge_results(tmp_path / "all.parquet", [one, two], sort=True)
    assert (written, dropped) == (3, 1)
    assert [r.path for r in read_results(tmp_path / "all.parquet")] == ["b", "c", "a"]
