"""Result files of `cfimg predict`: one row per input path, CSV, JSONL or Parquet by suffix.

Each format is one class (CsvFormat, JsonlFormat, ParquetFormat: the ResultFormat interface) in
RESULT_FORMATS, by suffix; everything else here (scan, resume, write, sort, merge) works for any
of them.

CSV and JSONL rows are appended a batch at a time with one `write` call of whole lines, so a
killed run leaves complete rows plus at most one partial line at the end; reading a file back
(`--resume`, `merge`) ignores that partial line and `open_result_writer(..., resume=True)` cuts it
off before appending.

A Parquet file cannot be appended to: its footer, written last, is what makes it readable. So a
run writing OUT.parquet keeps a journal beside it, OUT.parquet.partial.jsonl (JSONL, appended and
flushed a batch at a time as above), and streams the same rows into OUT.parquet.partial with
pyarrow's ParquetWriter, a row group every 65,536 rows. Closing the writer writes the footer,
renames OUT.parquet.partial over OUT.parquet and deletes the journal. A kill leaves OUT.parquet as
it was (absent, or the previous complete file) and the journal: while a journal exists, reading
OUT.parquet reads the journal's rows (what a killed CSV run would hold), and `--resume` rebuilds
OUT.parquet.partial from the journal and goes on. Parquet needs pyarrow (the `parquet` extra).

Every writer and reader here uses UTF-8 with `surrogateescape`, so a file name that is not valid
UTF-8 survives the round trip byte for byte (in Parquet, through the `path_bytes` column).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import BinaryIO, Protocol

from cfimg.errors import UsageError
from cfimg.fileio import atomic_open
from cfimg.inputs import path_key

VERDICT_ERROR = "error"
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
_FSYNC_INTERVAL_S = 1.0  # rows reach the OS every batch; the disk at most once a second


@dataclass(frozen=True, slots=True)
class PredictionRow:
    """One input's outcome. For an error row verdict is "error", `error` says why, and
    p_counterfeit (and width/height when the header was unreadable) are None."""

    path: str
    verdict: str
    p_counterfeit: float | None
    threshold: float
    model_id: str
    width: int | None
    height: int | None
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == VERDICT_ERROR

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_strings(cls, values: dict) -> PredictionRow:
        """From a CSV row (all strings) or a JSONL object (typed values)."""
        return cls(
            path=str(values["path"]),
            verdict=str(values["verdict"]),
            p_counterfeit=_optional(float, values.get("p_counterfeit")),
            threshold=float(values["threshold"]),
            model_id=str(values.get("model_id") or ""),
            width=_optional(int, values.get("width")),
            height=_optional(int, values.get("height")),
            error=str(values.get("error") or ""),
        )


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PredictionRow))
CSV_HEADER = ",".join(FIELD_NAMES) + "\n"


def _optional(kind, value):
    return None if value is None or value == "" else kind(value)


# -- formats ------------------------------------------------------------------------------------


class RowReader(Protocol):
    """The complete rows of one result file, read in file order and re-read by where they lie."""

    def records(self) -> Iterator[tuple[PredictionRow, int, int]]:
        """(row, start, end) of each complete row, in file order: byte offsets in a text file,
        row numbers in Parquet. A damaged row with more after it is a UsageError."""
        ...

    def fetch(self, spans: Sequence[tuple[int, int]]) -> list[PredictionRow]:
        """The rows at `spans` (as `records` gave them), in that order."""
        ...

    def close(self) -> None: ...


class RowWriter(Protocol):
    """Appends batches of rows to a result file; use it in `with`."""

    path: Path

    def write(self, rows: Sequence[PredictionRow]) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> RowWriter: ...

    def __exit__(self, *exc_info) -> None: ...


class ResultFormat(Protocol):
    """How one kind of result file stores rows; RESULT_FORMATS maps a file suffix to one."""

    name: str  # as users say it: 'csv'
    suffix: str  # lower case, with the dot: '.csv'

    def require(self) -> None:
        """A UsageError saying what to install when a library the format needs is missing."""
        ...

    def holds_rows(self, path: Path) -> bool:
        """Whether `path` exists, or an interrupted run left rows for it."""
        ...

    def open_reader(self, path: Path) -> RowReader: ...

    def open_writer(self, path: Path, *, resume: bool, scan: ResultScan | None) -> RowWriter:
        """Append to a new file, or with `resume` after the rows `path` holds (`scan`: that
        path's scan_results, when the caller has made it already)."""
        ...

    def write_file(self, path: Path, batches: Iterable[Sequence[PredictionRow]]) -> None:
        """A whole new file of `batches` at `path`, atomically (sort, merge)."""
        ...


def _damaged(path, offset: int) -> UsageError:
    return UsageError(
        f"{path}: damaged row at byte {offset} with rows after it (not from an interrupted "
        "run); fix or remove that line"
    )


def _row_from_csv_values(values: list[str]) -> PredictionRow:
    return PredictionRow.from_strings(dict(zip(FIELD_NAMES, values, strict=True)))


class _AppendableFormat:
    """What CSV and JSONL share: a file is `header` followed by `encode`d batches appended as
    they come. Each record `encode` writes is whole, so a killed run leaves complete records
    plus at most one partial record at the end, which `records` skips and a resumed writer cuts
    off. A subclass defines `header`, `encode(rows) -> bytes`, `decode(record) -> row` and
    `records(handle, path, size)`: (row, start byte, end byte) of each complete record."""

    header = b""  # what a new file starts with

    def require(self) -> None:
        pass  # the standard library is enough

    def holds_rows(self, path: Path) -> bool:
        return path.exists()

    def open_reader(self, path: Path) -> _TextReader:
        return _TextReader(self, path)

    def open_writer(self, path: Path, *, resume: bool, scan: ResultScan | None) -> ResultWriter:
        if resume and path.exists():
            scan = scan if scan is not None else scan_results(path)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, scan.complete_bytes)  # a partial last line, from a kill
                os.close(fd)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                if scan.complete_bytes == 0:  # no rows: (re)write the header, it may be partial
                    _write_all(fd, self.header)
            except BaseException:
                os.close(fd)
                raise
            return ResultWriter(path, fd, self)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        _write_all(fd, self.header)
        return ResultWriter(path, fd, self)

    def write_file(self, path: Path, batches: Iterable[Sequence[PredictionRow]]) -> None:
        with atomic_open(path, "wb") as out:
            out.write(self.header)
            for rows in batches:
                out.write(self.encode(rows))


class _TextReader:
    """A CSV or JSONL file's records, and its rows re-read by byte span."""

    def __init__(self, fmt: _AppendableFormat, path: Path):
        self._format = fmt
        self._path = path
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()

    def records(self) -> Iterator[tuple[PredictionRow, int, int]]:
        self._handle.seek(0)
        size = os.fstat(self._handle.fileno()).st_size
        yield from self._format.records(self._handle, self._path, size)

    def fetch(self, spans: Sequence[tuple[int, int]]) -> list[PredictionRow]:
        rows = []
        for start, end in spans:
            self._handle.seek(start)
            rows.append(self._format.decode(self._handle.read(end - start)))
        return rows

    def close(self) -> None:
        self._handle.close()


class CsvFormat(_AppendableFormat):
    """A header line, then one CSV row per PredictionRow (None as an empty field). A path with a
    newline is quoted across lines, so records are read with a CSV reader, not by line."""

    name = "csv"
    suffix = ".csv"
    header = CSV_HEADER.encode()

    def encode(self, rows: Iterable[PredictionRow]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            writer.writerow(["" if value is None else value for value in astuple(row)])
        return buffer.getvalue().encode(_ENCODING, _ERRORS)

    def records(
        self, handle: BinaryIO, path, size: int
    ) -> Iterator[tuple[PredictionRow, int, int]]:
        header = handle.readline()
        if not header:
            return
        if header != self.header:
            if self.header.startswith(header) and not header.endswith(b"\n"):
                return  # killed while writing the header
            raise UsageError(
                f"{path}: not a cfimg predict result file "
                f"(its first line is not {CSV_HEADER.strip()!r})"
            )
        consumed = len(header)
        last_line_complete = True

        def lines() -> Iterator[str]:
            nonlocal consumed, last_line_complete
            for line in handle:
                consumed += len(line)
                last_line_complete = line.endswith(b"\n")
                yield line.decode(_ENCODING, _ERRORS)

        start = consumed
        reader = csv.reader(lines())  # reads one physical line at a time, as a row needs them
        while True:
            try:
                values = next(reader)
                row = None
                if last_line_complete and len(values) == len(FIELD_NAMES):
                    row = _row_from_csv_values(values)
            except StopIteration:
                return
            except (csv.Error, ValueError, KeyError):
                row = None
            if row is None:
                if consumed >= size:
                    return  # the last row, cut short by a kill
                raise _damaged(path, start)
            yield row, start, consumed
            start = consumed

    def decode(self, record: bytes) -> PredictionRow:
        return _row_from_csv_values(
            next(csv.reader(io.StringIO(record.decode(_ENCODING, _ERRORS))))
        )


class JsonlFormat(_AppendableFormat):
    """One JSON object per line, typed values (null for None), no header."""

    name = "jsonl"
    suffix = ".jsonl"

    def encode(self, rows: Iterable[PredictionRow]) -> bytes:
        lines = [json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in rows]
        return "".join(lines).encode(_ENCODING, _ERRORS)

    def records(
        self, handle: BinaryIO, path, size: int
    ) -> Iterator[tuple[PredictionRow, int, int]]:
        offset = 0
        for line in handle:
            end = offset + len(line)
            if not line.endswith(b"\n"):
                return  # cut short by a kill
            if line.strip():  # blank lines (a hand-edited file) are skipped
                try:
                    row = self.decode(line)
                except (ValueError, KeyError, TypeError, AttributeError):
                    if end >= size:
                        return  # the last row: treated like one cut short
                    raise _damaged(path, offset) from None
                yield row, offset, end
            offset = end

    def decode(self, record: bytes) -> PredictionRow:
        return PredictionRow.from_strings(json.loads(record.decode(_ENCODING, _ERRORS)))


# -- Parquet ------------------------------------------------------------------------------------

_ROW_GROUP_ROWS = 65_536  # rows per Parquet row group: large enough for fast column scans
_PATH_BYTES = "path_bytes"  # a path's bytes when they are not UTF-8 (Parquet strings must be)
_PARQUET_TYPES = {
    "path": "string",
    "verdict": "string",
    "p_counterfeit": "float64",
    "threshold": "float64",
    "model_id": "string",
    "width": "int32",
    "height": "int32",
    "error": "string",
}
_JOURNAL = JsonlFormat()  # how a Parquet run keeps its finished rows until the file is closed


def _pyarrow():
    """(pyarrow, pyarrow.parquet), or a UsageError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "Parquet result files need pyarrow: pip install -e '.[parquet]' (or pip install "
            "pyarrow)"
        ) from None
    return pyarrow, pyarrow.parquet


def _arrow_schema():
    pa, _ = _pyarrow()
    types = [(name, _PARQUET_TYPES[name]) for name in FIELD_NAMES] + [(_PATH_BYTES, "binary")]
    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in types])


def _utf8_text(text: str) -> tuple[str, bytes | None]:
    """(text fit for a Parquet string, the original bytes when that had to replace some)."""
    try:
        text.encode(_ENCODING)
        return text, None
    except UnicodeEncodeError:
        raw = text.encode(_ENCODING, _ERRORS)
        return raw.decode(_ENCODING, "replace"), raw


def _arrow_table(rows: Sequence[PredictionRow]):
    pa, _ = _pyarrow()
    columns = {name: [getattr(row, name) for row in rows] for name in FIELD_NAMES}
    paths = [_utf8_text(path) for path in columns["path"]]
    columns["path"] = [text for text, _ in paths]
    columns[_PATH_BYTES] = [raw for _, raw in paths]
    for name in ("verdict", "model_id", "error"):
        columns[name] = [_utf8_text(value)[0] for value in columns[name]]
    return pa.table(columns, schema=_arrow_schema())


def _row_from_parquet(values: dict) -> PredictionRow:
    raw = values.pop(_PATH_BYTES, None)
    if raw is not None:
        values["path"] = raw.decode(_ENCODING, _ERRORS)
    return PredictionRow.from_strings(values)


class ParquetFormat:
    """One column per PredictionRow field (None as null) plus `path_bytes`, written through a
    JSONL journal beside the file until it is closed (see this module's docstring)."""

    name = "parquet"
    suffix = ".parquet"

    def require(self) -> None:
        _pyarrow()

    @staticmethod
    def partial_path(path: Path) -> Path:
        """Where a run streams its row groups until it closes the file."""
        return path.with_name(path.name + ".partial")

    @staticmethod
    def journal_path(path: Path) -> Path:
        """Where a run keeps its finished rows until it closes the file: what --resume reads."""
        return path.with_name(path.name + ".partial.jsonl")

    def holds_rows(self, path: Path) -> bool:
        return path.exists() or self.journal_path(path).exists()

    def open_reader(self, path: Path) -> RowReader:
        journal = self.journal_path(path)
        return _JOURNAL.open_reader(journal) if journal.exists() else _ParquetReader(path)

    def open_writer(
        self, path: Path, *, resume: bool, scan: ResultScan | None
    ) -> ParquetResultWriter:
        journal = self.journal_path(path)
        if resume and journal.exists():  # killed: the journal has the rows, the file does not
            writer = _JOURNAL.open_writer(journal, resume=True, scan=scan)
            return ParquetResultWriter(path, writer, earlier=read_results(journal))
        earlier = _parquet_rows(path) if resume and path.exists() else ()
        writer = _JOURNAL.open_writer(journal, resume=False, scan=None)
        return ParquetResultWriter(path, writer, earlier=earlier, journal_earlier=True)

    def write_file(self, path: Path, batches: Iterable[Sequence[PredictionRow]]) -> None:
        _, pq = _pyarrow()
        rows = (row for batch in batches for row in batch)
        with atomic_open(path, "wb") as out, pq.ParquetWriter(out, _arrow_schema()) as writer:
            for group in _batched(rows, _ROW_GROUP_ROWS):
                writer.write_table(_arrow_table(group))
        self.journal_path(path).unlink(missing_ok=True)  # its rows are in the new file now


def _parquet_rows(path: Path) -> Iterator[PredictionRow]:
    """The rows of a closed Parquet file, whatever journal lies beside it."""
    reader = _ParquetReader(path)
    try:
        for row, _, _ in reader.records():
            yield row
    finally:
        reader.close()


class _ParquetReader:
    """A closed Parquet result file's rows, by row number."""

    def __init__(self, path: Path):
        pa, pq = _pyarrow()
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise UsageError(f"{path}: not a readable Parquet file ({reason})") from None
        names = self._file.schema_arrow.names
        missing = [name for name in FIELD_NAMES if name not in names]
        if missing:
            self._file.close()
            raise UsageError(
                f"{path}: not a cfimg predict result file (no {', '.join(missing)} column)"
            )
        self._columns = [name for name in (*FIELD_NAMES, _PATH_BYTES) if name in names]
        self._table = None

    def records(self) -> Iterator[tuple[PredictionRow, int, int]]:
        number = 0
        for batch in self._file.iter_batches(batch_size=_ROW_GROUP_ROWS, columns=self._columns):
            for values in batch.to_pylist():
                yield _row_from_parquet(values), number, number + 1
                number += 1

    def fetch(self, spans: Sequence[tuple[int, int]]) -> list[PredictionRow]:
        if self._table is None:  # sort and merge: these columns in memory, about 100 B a row
            self._table = self._file.read(columns=self._columns)
        picked = self._table.take([start for start, _ in spans])
        return [_row_from_parquet(values) for values in picked.to_pylist()]

    def close(self) -> None:
        self._file.close()


class ParquetResultWriter:
    """Each batch goes to the journal (one write, flushed: what a kill keeps) and to
    OUT.partial (a row group every _ROW_GROUP_ROWS rows). Leaving `with` normally writes the
    footer and renames OUT.partial over OUT; leaving it on an error keeps the journal for
    --resume and drops OUT.partial."""

    def __init__(
        self,
        path: Path,
        journal: ResultWriter,
        *,
        earlier: Iterable[PredictionRow] = (),
        journal_earlier: bool = False,
    ):
        _, pq = _pyarrow()
        self.path = path
        self._journal = journal
        self._partial = ParquetFormat.partial_path(path)
        self._pending: list[PredictionRow] = []
        self._writer = None
        try:
            self._partial.unlink(missing_ok=True)  # a new file, never one a dead run still holds
            self._writer = pq.ParquetWriter(self._partial, _arrow_schema())
            for rows in _batched(earlier, _ROW_GROUP_ROWS):  # --resume: the rows there already
                if journal_earlier:
                    journal.write(rows)
                self._writer.write_table(_arrow_table(rows))
        except BaseException:
            self._abort()
            raise

    def write(self, rows: Sequence[PredictionRow]) -> None:
        if rows:
            self._journal.write(rows)
            self._pending.extend(rows)
            if len(self._pending) >= _ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(_arrow_table(self._pending))
            self._pending = []

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._flush()
            self._writer.close()
            self._writer = None
            _fsync_file(self._partial)
            os.replace(self._partial, self.path)
        finally:
            self._journal.close()
        self._journal.path.unlink()  # every row it holds is in the file now

    def _abort(self) -> None:
        self._journal.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> ParquetResultWriter:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RESULT_FORMATS: dict[str, ResultFormat] = {
    fmt.suffix: fmt for fmt in (CsvFormat(), JsonlFormat(), ParquetFormat())
}
_SUFFIXES = " or ".join(RESULT_FORMATS)  # for messages: '.csv or .jsonl or .parquet'


def result_format(path: str | Path) -> ResultFormat:
    """The format a result file's suffix names; any other suffix, or a format whose library is
    missing, is a usage error."""
    suffix = Path(path).suffix.lower()
    if suffix not in RESULT_FORMATS:
        raise UsageError(f"{path}: output must end in {_SUFFIXES} (got {suffix or 'no suffix'!r})")
    RESULT_FORMATS[suffix].require()
    return RESULT_FORMATS[suffix]


def encode_rows(rows: Iterable[PredictionRow], fmt: str) -> bytes:
    """Whole records for `rows` in the text format named `fmt` ('csv', 'jsonl'), for one
    write."""
    return RESULT_FORMATS[f".{fmt}"].encode(rows)


# -- reading ------------------------------------------------------------------------------------


@dataclass
class ResultScan:
    """What a result file already holds: the keys of its paths, counts, and where its last
    complete row ends (anything after that is a partial line from a killed run)."""

    done_keys: set[bytes] = field(default_factory=set)
    verdict_counts: Counter = field(default_factory=Counter)
    error_counts: Counter = field(default_factory=Counter)
    rows: int = 0
    complete_bytes: int = 0  # 0 while there is no complete row, header or not
    model_ids: set[str] = field(default_factory=set)


def result_file_exists(path: str | Path) -> bool:
    """Whether `path` holds rows: the file, or an interrupted Parquet run's journal."""
    return result_format(path).holds_rows(Path(path))


def iter_records(path: str | Path) -> Iterator[tuple[PredictionRow, int, int]]:
    """(row, start, end) for each complete row of a result file, in file order.

    A last row cut short (the tail a kill can leave) is skipped; a damaged row with more rows
    after it cannot come from a kill, and is a UsageError rather than a silent truncation."""
    reader = result_format(path).open_reader(Path(path))
    try:
        yield from reader.records()
    finally:
        reader.close()


def read_results(path: str | Path) -> Iterator[PredictionRow]:
    """The complete rows of a CSV, JSONL or Parquet result file."""
    for row, _, _ in iter_records(path):
        yield row


def error_kind(reason: str) -> str:
    """The reason without its particulars, for counting: 'image too large (123 > 100)' ->
    'image too large'."""
    return reason.split(" (", 1)[0].strip() or "unknown"


def scan_results(path: str | Path) -> ResultScan:
    scan = ResultScan()
    for row, _, end in iter_records(path):
        scan.done_keys.add(path_key(row.path))
        scan.verdict_counts[row.verdict] += 1
        if row.failed:
            scan.error_counts[error_kind(row.error)] += 1
        scan.model_ids.add(row.model_id)
        scan.rows += 1
        scan.complete_bytes = end
    return scan


# -- writing ------------------------------------------------------------------------------------


class ResultWriter:
    """Appends batches of rows to a CSV or JSONL file, each batch with one write of whole
    lines."""

    def __init__(self, path: str | Path, fd: int, fmt: _AppendableFormat):
        self.path = Path(path)
        self.format = fmt
        self._fd = fd
        self._last_sync = time.monotonic()

    def write(self, rows: Sequence[PredictionRow]) -> None:
        if rows:
            _write_all(self._fd, self.format.encode(rows))
            if time.monotonic() - self._last_sync >= _FSYNC_INTERVAL_S:
                os.fsync(self._fd)
                self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def check_output_path(path: str | Path, *, resume: bool, overwrite: bool) -> str:
    """The output format's name; refuses to clobber an existing file unless told to."""
    fmt = result_format(path)
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: --out is a folder; give a {_SUFFIXES} file name")
    if fmt.holds_rows(path) and not (resume or overwrite):
        raise UsageError(
            f"{path} already exists; pass --resume to add the missing rows or --overwrite to "
            "start again"
        )
    return fmt.name


def open_result_writer(
    path: str | Path, *, resume: bool, scan: ResultScan | None = None
) -> RowWriter:
    """Open `path` for appending rows. With `resume` and an existing file, go on after its
    complete rows (a partial last line from a killed run is cut off first); otherwise start a
    new file."""
    fmt = result_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return fmt.open_writer(path, resume=resume, scan=scan)


# -- sorting and merging -------------------------------------------------------------------------


def _suspicion_order(p_counterfeit: float | None) -> float:
    """Sort key: most suspicious first, error rows last."""
    return -p_counterfeit if p_counterfeit is not None else float("inf")


def sort_results(path: str | Path) -> int:
    """Rewrite a result file with the most suspicious rows first (errors last), atomically.
    Holds only three numbers per row in memory (and a Parquet file's columns); returns the
    number of rows."""
    return _rewrite(path, [path], sort=True, dedupe=False)


def merge_results(
    out_path: str | Path,
    shard_paths: Sequence[str | Path],
    *,
    sort: bool = False,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Join result files (e.g. one per shard) into `out_path`, atomically: each path once (a
    classified row wins over an error row for the same path, else the first seen), in file
    order or, with `sort`, most suspicious first. Returns (rows written, duplicates dropped)."""
    result_format(out_path)
    if not shard_paths:
        raise UsageError("merge needs at least one result file to read")
    out_resolved = Path(out_path).resolve()
    for shard in shard_paths:
        if not result_file_exists(shard) or Path(shard).is_dir():
            raise UsageError(f"{shard}: no such result file")
        if Path(shard).resolve() == out_resolved:
            raise UsageError(f"{shard}: the merged output cannot also be an input")
    if result_file_exists(out_path) and not overwrite:
        raise UsageError(f"{out_path} already exists; pass --overwrite to replace it")
    total_rows = sum(1 for shard in shard_paths for _ in iter_records(shard))
    written = _rewrite(out_path, shard_paths, sort=sort, dedupe=True)
    return written, total_rows - written


def _rewrite(
    out_path: str | Path, sources: Sequence[str | Path], *, sort: bool, dedupe: bool
) -> int:
    # One small tuple per row: (order key, source index, start, end); rows are re-read from
    # their spans when written, so millions of rows fit in memory.
    with contextlib.ExitStack() as stack:
        readers = []
        for source in sources:
            readers.append(result_format(source).open_reader(Path(source)))
            stack.callback(readers[-1].close)
        chosen: dict[bytes, tuple] | list[tuple] = {} if dedupe else []
        for index, reader in enumerate(readers):
            for row, start, end in reader.records():
                entry = (_suspicion_order(row.p_counterfeit) if sort else 0.0, index, start, end)
                if not dedupe:
                    chosen.append(entry)
                    continue
                key = path_key(row.path)
                previous = chosen.get(key)
                if previous is None or (previous[4] and not row.failed):
                    chosen[key] = (*entry, row.failed)
        entries = list(chosen.values()) if dedupe else chosen
        entries.sort(key=lambda entry: entry[:3])
        batches = (_reread(readers, chunk) for chunk in _batched(entries, 1000))
        result_format(out_path).write_file(Path(out_path), batches)
    return len(entries)


def _reread(readers: Sequence[RowReader], entries: Sequence[tuple]) -> list[PredictionRow]:
    """The rows of `entries`, in their order; each source's spans fetched in one call."""
    wanted: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for position, (_, index, start, end, *_) in enumerate(entries):
        wanted.setdefault(index, []).append((position, (start, end)))
    rows: list = [None] * len(entries)
    for index, items in wanted.items():
        fetched = readers[index].fetch([span for _, span in items])
        for (position, _), row in zip(items, fetched, strict=True):
            rows[position] = row
    return rows


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
