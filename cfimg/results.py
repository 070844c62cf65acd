"""Result files of `cfimg predict`: one row per input path, CSV or JSONL by the file's extension.

Each format is one class (CsvFormat, JsonlFormat: the ResultFormat interface) in RESULT_FORMATS,
by suffix; everything else here (scan, resume, write, sort, merge) works for any of them.
Rows are appended a batch at a time with one `write` call of whole lines, so a killed run leaves
complete rows plus at most one partial line at the end; reading a file back (`--resume`, `merge`)
ignores that partial line and `open_result_writer(..., resume=True)` cuts it off before appending.
Every writer and reader here uses UTF-8 with `surrogateescape`, so a file name that is not valid
UTF-8 survives the round trip byte for byte.
"""

from __future__ import annotations

import csv
import io
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


class ResultFormat(Protocol):
    """How one kind of result file stores rows; RESULT_FORMATS maps a file suffix to one.

    A file is `header` followed by `encode`d batches appended as they come, so each record
    `encode` writes must be whole: a killed run then leaves complete records plus at most one
    partial record at the end, which `records` skips."""

    name: str  # as users say it: 'csv'
    suffix: str  # lower case, with the dot: '.csv'
    header: bytes  # what a new file starts with, b"" for none

    def encode(self, rows: Iterable[PredictionRow]) -> bytes:
        """Whole records for `rows`, ready for one write."""
        ...

    def records(
        self, handle: BinaryIO, path, size: int
    ) -> Iterator[tuple[PredictionRow, int, int]]:
        """(row, start byte, end byte) of each complete record of the open file `handle` of
        `size` bytes, in file order; a damaged record with more after it is a UsageError."""
        ...

    def decode(self, record: bytes) -> PredictionRow:
        """The row of one record's bytes, as spanned by `records`."""
        ...


def _damaged(path, offset: int) -> UsageError:
    return UsageError(
        f"{path}: damaged row at byte {offset} with rows after it (not from an interrupted "
        "run); fix or remove that line"
    )


def _row_from_csv_values(values: list[str]) -> PredictionRow:
    return PredictionRow.from_strings(dict(zip(FIELD_NAMES, values, strict=True)))


class CsvFormat:
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


class JsonlFormat:
    """One JSON object per line, typed values (null for None), no header."""

    name = "jsonl"
    suffix = ".jsonl"
    header = b""

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


RESULT_FORMATS: dict[str, ResultFormat] = {fmt.suffix: fmt for fmt in (CsvFormat(), JsonlFormat())}
_SUFFIXES = " or ".join(RESULT_FORMATS)  # for messages: '.csv or .jsonl'


def result_format(path: str | Path) -> ResultFormat:
    """The format a result file's suffix names; any other suffix is a usage error."""
    suffix = Path(path).suffix.lower()
    if suffix not in RESULT_FORMATS:
        raise UsageError(f"{path}: output must end in {_SUFFIXES} (got {suffix or 'no suffix'!r})")
    return RESULT_FORMATS[suffix]


def encode_rows(rows: Iterable[PredictionRow], fmt: str) -> bytes:
    """Whole records for `rows` in the format named `fmt` ('csv', 'jsonl'), ready for one write."""
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


def iter_records(path: str | Path) -> Iterator[tuple[PredictionRow, int, int]]:
    """(row, start byte, end byte) for each complete row of a result file, in file order.

    A last row cut short (the tail a kill can leave) is skipped; a damaged row with more rows
    after it cannot come from a kill, and is a UsageError rather than a silent truncation."""
    fmt = result_format(path)
    with open(path, "rb") as handle:
        yield from fmt.records(handle, path, os.fstat(handle.fileno()).st_size)


def read_results(path: str | Path) -> Iterator[PredictionRow]:
    """The complete rows of a CSV or JSONL result file."""
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
    """Appends batches of rows to a result file, each batch with one write of whole lines."""

    def __init__(self, path: str | Path, fd: int, fmt: ResultFormat):
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
    if path.exists() and not (resume or overwrite):
        raise UsageError(
            f"{path} already exists; pass --resume to add the missing rows or --overwrite to "
            "start again"
        )
    return fmt.name


def open_result_writer(
    path: str | Path, *, resume: bool, scan: ResultScan | None = None
) -> ResultWriter:
    """Open `path` for appending rows. With `resume` and an existing file, cut off a partial
    last line (from a killed run) first; otherwise start a new file (with its format's header)."""
    fmt = result_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and path.exists():
        scan = scan if scan is not None else scan_results(path)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, scan.complete_bytes)
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if scan.complete_bytes == 0:  # no rows: (re)write the header, it may be partial
                _write_all(fd, fmt.header)
        except BaseException:
            os.close(fd)
            raise
        return ResultWriter(path, fd, fmt)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
    _write_all(fd, fmt.header)
    return ResultWriter(path, fd, fmt)


# -- sorting and merging -------------------------------------------------------------------------


def _suspicion_order(p_counterfeit: float | None) -> float:
    """Sort key: most suspicious first, error rows last."""
    return -p_counterfeit if p_counterfeit is not None else float("inf")


def sort_results(path: str | Path) -> int:
    """Rewrite a result file with the most suspicious rows first (errors last), atomically.
    Holds only three numbers per row in memory; returns the number of rows."""
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
        if not Path(shard).is_file():
            raise UsageError(f"{shard}: no such result file")
        if Path(shard).resolve() == out_resolved:
            raise UsageError(f"{shard}: the merged output cannot also be an input")
        result_format(shard)
    if Path(out_path).exists() and not overwrite:
        raise UsageError(f"{out_path} already exists; pass --overwrite to replace it")
    total_rows = sum(1 for shard in shard_paths for _ in iter_records(shard))
    written = _rewrite(out_path, shard_paths, sort=sort, dedupe=True)
    return written, total_rows - written


def _rewrite(
    out_path: str | Path, sources: Sequence[str | Path], *, sort: bool, dedupe: bool
) -> int:
    # One small tuple per row: (order key, source index, start, end); rows are re-read from
    # their byte spans when written, so millions of rows fit in memory.
    chosen: dict[bytes, tuple] | list[tuple] = {} if dedupe else []
    for index, source in enumerate(sources):
        for row, start, end in iter_records(source):
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
    out_format = result_format(out_path)
    formats = [result_format(source) for source in sources]
    handles = [open(source, "rb") for source in sources]
    try:
        with atomic_open(out_path, "wb") as out:
            out.write(out_format.header)
            for chunk in _chunks(entries, 1000):
                out.write(out_format.encode(_reread(handles, formats, chunk)))
    finally:
        for handle in handles:
            handle.close()
    return len(entries)


def _reread(handles, formats, entries) -> Iterator[PredictionRow]:
    for entry in entries:
        _, index, start, end = entry[:4]
        handles[index].seek(start)
        yield formats[index].decode(handles[index].read(end - start))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
