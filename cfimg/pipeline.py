"""Batch classification: decode in worker processes, infer in batches in this one, in input order.

Decoding a photo costs about as much CPU as running a small CNN on it, so it runs in `workers`
separate processes (fresh interpreters: no GIL shared, no torch, no onnxruntime threads) while the
engine runs batches in the main process. A collector thread moves decoded 224x224x3 uint8 arrays
(150 KB, about 10 us to pickle) from per-worker sockets into an ordered, bounded queue: at most a
few batches are in flight, and paths are pulled from the lazy input iterator only as room frees.

A worker that dies (a codec segfault, the OOM killer) or hangs on one file costs only that file:
it becomes an error row, the worker is replaced, and the files queued behind it are decoded by
the others.

    predict_paths("model.onnx", ["photos/"], "results.csv")     # the whole `cfimg predict` job
    for row in classify(load_engine("model.onnx"), paths): ...  # rows for eval, explain...
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import IO

import numpy as np

from cfimg.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, CfimgError, UsageError
from cfimg.imageio import DEFAULT_MAX_PIXELS, image_size, load_rgb
from cfimg.inputs import Shard, iter_input_paths, parse_shard, path_key
from cfimg.preprocess import Preprocessing, preprocess_image
from cfimg.results import (
    VERDICT_ERROR,
    PredictionRow,
    ResultScan,
    check_output_path,
    error_kind,
    one_line,
    open_result_writer,
    scan_results,
    sort_results,
)

DEFAULT_BATCH_SIZE = 32
DEFAULT_DECODE_TIMEOUT_S = 120.0
_WORKER_DEPTH = 4  # files queued per worker: enough to cover the collector's latency
_PARTIAL_BATCH_WAIT_S = 1.0  # run a partial batch when no new image came for this long
_MAX_STARTUP_FAILURES = 3


@dataclass(slots=True)
class DecodedImage:
    """A path's model-sized pixels, or why there are none. Width and height are the original
    image's (EXIF rotation applied), known whenever its header could be read."""

    seq: int
    path: str
    pixels: np.ndarray | None
    width: int | None = None
    height: int | None = None
    error: str = ""


def decode_image(
    seq: int, path: str, prep: Preprocessing, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """load_rgb (draft-decoding JPEGs just large enough) + preprocess_image; never raises."""
    from cfimg.errors import ImageLoadError

    try:
        image = load_rgb(path, max_pixels=max_pixels, min_side_px=prep.resize_px)
        pixels = preprocess_image(image, prep)
    except ImageLoadError as exc:
        width, height = _header_size(path)
        return DecodedImage(seq, path, None, width, height, error=one_line(exc.reason))
    except MemoryError:
        return DecodedImage(seq, path, None, error="out of memory while decoding")
    except Exception as exc:  # a bug or an exotic codec failure must cost one file, not the run
        return DecodedImage(seq, path, None, error=one_line(f"decode failed ({exc!r})"))
    try:
        width, height = image_size(path, max_pixels=None)
    except Exception:  # the file changed under us; the draft size is the best we know
        width, height = image.size
    return DecodedImage(seq, path, pixels, width, height)


def _header_size(path: str) -> tuple[int | None, int | None]:
    """The size a damaged or oversized file declares, when its header says; else unknown."""
    try:
        return image_size(path, max_pixels=None)
    except Exception:
        return None, None


# -- worker processes ---------------------------------------------------------------------------


def _worker_main(conn) -> None:
    """Body of a decode process: (seq, path) lists in, one DecodedImage out per path."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        prep_values, max_pixels = conn.recv()
        prep = Preprocessing.from_dict(prep_values)
        conn.send("ready")
        while (tasks := conn.recv()) is not None:
            for seq, path in tasks:
                conn.send(decode_image(seq, path, prep, max_pixels))
    except (EOFError, OSError):  # the main process is gone or stopped listening: just end
        return


def _worker_entry() -> None:
    """`python -c` entry point of a decode process; argv[1] is its socket's file descriptor."""
    from multiprocessing.connection import Connection

    _worker_main(Connection(int(sys.argv[1])))


_WORKER_CODE = "from cfimg.pipeline import _worker_entry; _worker_entry()"


def _worker_environment() -> dict[str, str]:
    # One thread per decode process: the processes are the parallelism. The package's parent
    # folder goes first on the path so a source checkout decodes with its own code.
    package_root = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**os.environ, **threads, "PYTHONPATH": python_path}


def _launch_worker(prep: Preprocessing, max_pixels: int | None):
    """A fresh interpreter (no fork: the parent may hold torch or onnxruntime thread pools, and
    no re-import of the caller's __main__ as multiprocessing's spawn would do) talking over a
    socket pair. It imports only Pillow, numpy and cfimg's image code, never torch."""
    parent_socket, child_socket = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(child_socket.fileno())],
            pass_fds=(child_socket.fileno(),),
            stdin=subprocess.DEVNULL,
            env=_worker_environment(),
        )
    finally:
        child_socket.close()
    conn = Connection(parent_socket.detach())
    conn.send((prep.to_dict(), max_pixels))
    return process, conn


@dataclass
class _Worker:
    process: object
    conn: object
    outstanding: collections.deque = field(default_factory=collections.deque)
    head_since: float = 0.0  # when the file it is decoding now was started
    ready: bool = False


class _Failed:
    """Carries an exception from the collector thread to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class DecodePool:
    """Worker processes decoding paths, delivering DecodedImage in input order (an iterator)."""

    def __init__(
        self,
        paths: Iterable[str],
        prep: Preprocessing,
        *,
        workers: int,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_in_flight: int = 2 * DEFAULT_BATCH_SIZE,
        decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
    ):
        self._paths = enumerate(paths)
        self._retry: collections.deque = collections.deque()
        self._prep = prep
        self._max_pixels = max_pixels
        self._max_in_flight = max(max_in_flight, workers)
        self._decode_timeout_s = decode_timeout_s
        self._workers: list[_Worker] = []
        self._pending: dict[int, DecodedImage] = {}
        self._next_seq = 0
        self._exhausted = False
        self._startup_failures = 0
        self._stop = threading.Event()
        self._ordered: queue.Queue = queue.Queue(maxsize=max(2, max_in_flight))
        self.crashes = 0
        for _ in range(workers):
            self._workers.append(self._start_worker())
        self._thread = threading.Thread(target=self._collect, name="cfimg-decode", daemon=True)
        self._thread.start()

    # consumer side

    def __iter__(self) -> Iterator[DecodedImage]:
        while True:
            item = self.get()
            if item is _END:
                return
            yield item

    def get(self, timeout: float | None = None):
        """The next DecodedImage in input order, _END at the end; queue.Empty on timeout."""
        item = self._ordered.get(timeout=timeout)
        if isinstance(item, _Failed):
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for worker in self._workers:
            self._stop_worker(worker)
        self._workers = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # collector thread

    def _start_worker(self) -> _Worker:
        process, conn = _launch_worker(self._prep, self._max_pixels)
        return _Worker(process, conn)

    def _stop_worker(self, worker: _Worker) -> None:
        # An idle worker reads None and ends; one blocked sending a result gets a broken pipe.
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(None)
        worker.conn.close()
        try:
            worker.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=5)

    def _collect(self) -> None:
        try:
            while not self._stop.is_set():
                self._assign()
                if self._finished():
                    self._emit(_END)
                    return
                self._receive(timeout_s=0.2)
                self._kill_hung_workers()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._emit(_Failed(exc))

    def _in_flight(self) -> int:
        return sum(len(w.outstanding) for w in self._workers) + len(self._pending)

    def _next_task(self):
        if self._retry:
            return self._retry.popleft()
        if self._exhausted:
            return None
        task = next(self._paths, None)
        if task is None:
            self._exhausted = True
        return task

    def _assign(self) -> None:
        room = self._max_in_flight - self._in_flight()
        for worker in sorted(self._workers, key=lambda w: len(w.outstanding)):
            tasks = []
            while room > 0 and len(worker.outstanding) + len(tasks) < _WORKER_DEPTH:
                task = self._next_task()
                if task is None:
                    break
                tasks.append(task)
                room -= 1
            if tasks:
                try:
                    worker.conn.send(tasks)
                except (OSError, ValueError):  # it died idle; its socket's EOF will tell
                    self._retry.extendleft(reversed(tasks))
                    return
                if not worker.outstanding:
                    worker.head_since = time.monotonic()
                worker.outstanding.extend(tasks)

    def _finished(self) -> bool:
        return (
            self._exhausted
            and not self._retry
            and not self._pending
            and not any(w.outstanding for w in self._workers)
        )

    def _receive(self, timeout_s: float) -> None:
        # A worker's death shows as end-of-file on its socket, so the sockets are all to watch.
        by_handle = {worker.conn: worker for worker in self._workers}
        for handle in wait(list(by_handle), timeout=timeout_s):
            worker = by_handle[handle]
            if worker in self._workers:
                self._drain(worker)

    def _drain(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if isinstance(message, str):  # "ready": the decode clock starts now
                    worker.ready = True
                    worker.head_since = time.monotonic()
                    continue
                expected_seq, _ = worker.outstanding.popleft()
                assert message.seq == expected_seq, "worker answered out of order"
                worker.head_since = time.monotonic()
                self._deliver(message)
        except (EOFError, OSError):
            cause = self._death_reason(worker)
            self._replace(worker, row_error=f"decoder process crashed ({cause})", cause=cause)

    def _death_reason(self, worker: _Worker) -> str:
        try:
            code = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its socket but lives on: stop it
            worker.process.kill()
            code = worker.process.wait()
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit status {code}"

    def _replace(self, worker: _Worker, *, row_error: str, cause: str) -> None:
        """Start a new worker for a dead one. The file it was decoding gets the blame (an error
        row); the files queued behind it go to the others. A worker that died before it was
        ready blames no file, and a few of those in a row end the run."""
        self.crashes += 1
        self._workers.remove(worker)
        worker.conn.close()
        if not worker.ready:
            self._retry.extendleft(reversed(worker.outstanding))
            self._startup_failures += 1
            if self._startup_failures >= _MAX_STARTUP_FAILURES:
                raise CfimgError(f"decode worker processes fail to start ({cause})")
        elif worker.outstanding:
            seq, path = worker.outstanding.popleft()
            self._deliver(DecodedImage(seq, path, None, error=row_error))
            self._retry.extendleft(reversed(worker.outstanding))
        self._workers.append(self._start_worker())

    def _kill_hung_workers(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.outstanding and now - worker.head_since > self._decode_timeout_s:
                worker.process.kill()
                worker.process.wait()
                reason = f"decoding took longer than {self._decode_timeout_s:g} s (stopped)"
                self._replace(worker, row_error=reason, cause=reason)

    def _deliver(self, image: DecodedImage) -> None:
        self._pending[image.seq] = image
        while self._next_seq in self._pending:
            self._emit(self._pending.pop(self._next_seq))
            self._next_seq += 1

    def _emit(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._ordered.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def _decode_inline(paths: Iterable[str], prep: Preprocessing, max_pixels: int | None):
    for seq, path in enumerate(paths):
        yield decode_image(seq, path, prep, max_pixels)


# -- batching and inference ---------------------------------------------------------------------


def runs_on_gpu(engine) -> bool:
    device = str(getattr(engine, "device", "")).lower()
    return "cuda" in device or "tensorrt" in device


def default_split(cores: int | None = None, *, gpu: bool = False) -> tuple[int, int]:
    """(decode workers, inference threads) for this machine.

    On CPU the two share the cores and never oversubscribe them: measured on 2 cores with the
    default model (decode ~5.6 ms, inference ~5.9 ms CPU per image), 1 worker + 1 thread ran at
    88% of the 2-core bound, while 2 workers + 2 threads (4 busy threads on 2 cores) ran at 71%:
    a descheduled inference thread stalls the whole batch. On a GPU inference needs next to no
    CPU, so every core decodes. Heavier models want more threads: --workers/--threads."""
    cores = cores or os.cpu_count() or 1
    if gpu:
        return cores, 1
    workers = max(1, cores // 2)
    return workers, max(1, cores - workers)


def default_workers(engine=None) -> int:
    return default_split(gpu=engine is not None and runs_on_gpu(engine))[0]


def classify_batches(
    engine,
    paths: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_id: str | None = None,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> Iterator[list[PredictionRow]]:
    """Rows for `paths`, in input order, a batch at a time (error rows included in order).

    `engine` is a cfimg.engines.Engine. `workers` decode processes (default: half the cores on
    CPU, all of them when the engine runs on a GPU; 0 decodes in this process, no overlap)."""
    workers = default_workers(engine) if workers is None else workers
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    card = engine.card
    model_id = card.model_id if model_id is None else model_id
    if workers == 0:
        for batch in _batches_inline(
            _decode_inline(paths, card.preprocessing, max_pixels), batch_size
        ):
            yield _rows(engine, batch, threshold, model_id)
        return
    with DecodePool(
        paths,
        card.preprocessing,
        workers=workers,
        max_pixels=max_pixels,
        max_in_flight=2 * batch_size,
        decode_timeout_s=decode_timeout_s,
    ) as pool:
        for batch in _batches_from_pool(pool, batch_size):
            yield _rows(engine, batch, threshold, model_id)


def classify(
    engine,
    paths: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_id: str | None = None,
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> Iterator[PredictionRow]:
    """Rows for `paths`, one at a time, in input order; see classify_batches.

    >>> engine = load_engine("model.onnx")
    >>> for row in classify(engine, ["a.jpg", "b.png"]):
    ...     print(row.path, row.verdict, row.p_counterfeit, row.error)
    """
    for batch in classify_batches(
        engine,
        paths,
        batch_size=batch_size,
        workers=workers,
        threshold=threshold,
        max_pixels=max_pixels,
        model_id=model_id,
        decode_timeout_s=decode_timeout_s,
    ):
        yield from batch


def _batch_is_full(batch: list[DecodedImage], decoded: int, batch_size: int) -> bool:
    # Error items cost no inference but are held until the batch is written: cap them too.
    return decoded >= batch_size or len(batch) >= 8 * batch_size


def _batches_inline(images: Iterator[DecodedImage], batch_size: int):
    batch, decoded = [], 0
    for image in images:
        batch.append(image)
        decoded += image.pixels is not None
        if _batch_is_full(batch, decoded, batch_size):
            yield batch
            batch, decoded = [], 0
    if batch:
        yield batch


def _batches_from_pool(pool: DecodePool, batch_size: int):
    batch, decoded = [], 0
    while True:
        try:
            item = pool.get(timeout=_PARTIAL_BATCH_WAIT_S if batch else None)
        except queue.Empty:  # inputs trickle in (stdin): do not sit on what we have
            yield batch
            batch, decoded = [], 0
            continue
        if item is _END:
            break
        batch.append(item)
        decoded += item.pixels is not None
        if _batch_is_full(batch, decoded, batch_size):
            yield batch
            batch, decoded = [], 0
    if batch:
        yield batch


def _rows(
    engine, batch: list[DecodedImage], threshold: float | None, model_id: str
) -> list[PredictionRow]:
    card = engine.card
    good = [image for image in batch if image.pixels is not None]
    p_by_seq = {}
    if good:
        probabilities, _ = engine.predict(np.stack([image.pixels for image in good]))
        column = probabilities[:, card.counterfeit_index].astype(np.float32)
        # The shortest decimal that is still this float32: what the file shows is exactly what
        # the verdict was decided on.
        p_by_seq = {image.seq: float(str(p)) for image, p in zip(good, column, strict=True)}
    used_threshold = card.threshold if threshold is None else threshold
    rows = []
    for image in batch:
        if image.pixels is None:
            verdict, p = VERDICT_ERROR, None
        else:
            p = p_by_seq[image.seq]
            verdict = card.verdict(p, threshold)
        rows.append(
            PredictionRow(
                path=image.path,
                verdict=verdict,
                p_counterfeit=p,
                threshold=float(used_threshold),
                model_id=model_id,
                width=image.width,
                height=image.height,
                error=image.error,
            )
        )
    return rows


# -- the whole job ------------------------------------------------------------------------------

_ERRORS_SHOWN = 10  # error rows echoed on stderr while running; the file has them all


@dataclass
class PredictSummary:
    """What a `predict_paths` run left in its output file (earlier rows included on --resume)."""

    out_path: Path
    model_id: str
    device: str
    verdict_counts: dict[str, int]  # over the whole output file; "error" counts failed inputs
    error_counts: dict[str, int]  # failed inputs by kind of reason
    rows_written: int  # by this run
    skipped_done: int  # inputs already in the output (--resume)
    elapsed_s: float  # classification time of this run, model loading excluded

    @property
    def total_rows(self) -> int:
        return sum(self.verdict_counts.values())

    @property
    def failed(self) -> int:
        return self.verdict_counts.get(VERDICT_ERROR, 0)

    @property
    def images_per_s(self) -> float:
        return self.rows_written / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_INPUTS_FAILED if self.failed else EXIT_OK


def predict_paths(
    engine_or_model_path,
    inputs: Sequence[str],
    out_path: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    threshold: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shard: Shard | str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    sort: bool = False,
    progress: bool = True,
    stdin: IO[str] | None = None,
) -> PredictSummary:
    """Classify every image named by `inputs` (files, folders, globs, @lists, '-') into a CSV or
    JSONL file, streaming a batch at a time; see `cfimg predict --help` for the behaviour.

    Raises UsageError (bad options, output exists, no images found), ModelFileError."""
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if workers is not None and workers < 0:
        raise UsageError("--workers must be 0 (decode in the main process) or more")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold} is not a probability between 0 and 1")
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    out_path = Path(out_path)
    check_output_path(out_path, resume=resume, overwrite=overwrite)
    if threads is None and workers is not None:
        threads = max(1, (os.cpu_count() or 1) - workers)
    engine, model_id = _engine_and_id(engine_or_model_path, device, threads or default_split()[1])

    found = iter_input_paths(inputs, stdin=stdin)
    first = next(found, None)
    if first is None:
        raise UsageError(f"no images found in {' '.join(inputs) or 'the inputs given'}")
    scan = scan_results(out_path) if resume and out_path.exists() else ResultScan()
    console = _stderr_console() if progress else None
    if console and scan.model_ids - {model_id, ""}:
        console.print(
            f"warning: {out_path} holds rows from {', '.join(sorted(scan.model_ids))}; "
            f"new rows come from {model_id}"
        )
    tally: Counter = Counter()
    selected = _select(itertools.chain([first], found), shard, scan.done_keys, tally)
    verdicts, errors = Counter(scan.verdict_counts), Counter(scan.error_counts)
    rows_written = 0
    start = time.perf_counter()
    bar = _ProgressLine(console) if console else contextlib.nullcontext()
    with open_result_writer(out_path, resume=resume, scan=scan) as writer, bar:
        for rows in classify_batches(
            engine,
            selected,
            batch_size=batch_size,
            workers=workers,
            threshold=threshold,
            max_pixels=max_pixels,
            model_id=model_id,
        ):
            writer.write(rows)
            rows_written += len(rows)
            for row in rows:
                verdicts[row.verdict] += 1
                if row.failed:
                    errors[error_kind(row.error)] += 1
                    if console and errors.total() <= _ERRORS_SHOWN:
                        console.print(f"warning: {row.path}: {row.error}", markup=False)
            if console:
                bar.update(rows_written, errors.total() - scan.error_counts.total())
    elapsed_s = time.perf_counter() - start
    if sort:
        sort_results(out_path)
    return PredictSummary(
        out_path=out_path,
        model_id=model_id,
        device=engine.device,
        verdict_counts=dict(verdicts),
        error_counts=dict(errors),
        rows_written=rows_written,
        skipped_done=tally["done"],
        elapsed_s=elapsed_s,
    )


def _engine_and_id(engine_or_model_path, device: str, threads: int | None):
    if hasattr(engine_or_model_path, "predict") and hasattr(engine_or_model_path, "card"):
        engine = engine_or_model_path
        return engine, engine.card.model_id or type(engine).__name__
    from cfimg.engines import load_engine

    engine = load_engine(engine_or_model_path, device=device, threads=threads)
    return engine, engine.card.model_id or Path(engine_or_model_path).name


def _select(paths: Iterable[str], shard: Shard | None, done_keys: set[bytes], tally: Counter):
    """This shard's paths that the output does not hold yet; counts what it skips."""
    for path in paths:
        if shard is not None and not shard.holds(path):
            continue
        if done_keys and path_key(path) in done_keys:
            tally["done"] += 1
            continue
        yield path


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


class _ProgressLine:
    """A live "N images done, M failed, X/s" line on stderr. No total or ETA:
    inputs are enumerated lazily, so how many there are is not known until the end."""

    def __init__(self, console):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(
                "{task.completed} images done, {task.fields[failed]} failed, {task.fields[rate]}"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # no bar debris in logs and pipes
        )
        self._task = self._progress.add_task("predict", total=None, failed=0, rate="")
        self._started = time.perf_counter()

    def update(self, done: int, failed: int) -> None:
        rate = done / max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(self._task, completed=done, failed=failed, rate=f"{rate:.1f}/s")

    def __enter__(self) -> _ProgressLine:
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()
