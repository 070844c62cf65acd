"""Decoding in worker processes, isolated so that a crash or a hang costs one file, not the run.

Decoding a photo costs about as much CPU as running a small CNN on it, so it runs in `workers`
separate processes (fresh interpreters: no GIL shared, no torch, no onnxruntime threads) while the
engine runs batches in the main process. Each worker runs the one image path,
`cfimg.model_input.load_model_input`. A collector thread moves decoded 224x224x3 uint8 arrays
(150 KB, about 10 us to pickle) from per-worker sockets into an ordered, bounded queue: at most
`max_in_flight` images are in flight, and paths are pulled from the lazy input iterator only as
room frees.

A worker that dies (a codec segfault, the OOM killer) or hangs on one file costs only that file:
it becomes an error image, the worker is replaced, and the files queued behind it are decoded by
the others.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from cfimg.errors import CfimgError
from cfimg.imageio import DEFAULT_MAX_PIXELS
from cfimg.model_input import ModelInput, load_model_input
from cfimg.preprocess import Preprocessing

DEFAULT_DECODE_TIMEOUT_S = 120.0
_WORKER_DEPTH = 4  # files queued per worker: enough to cover the collector's latency
_MAX_STARTUP_FAILURES = 3


def decode_for_rows(path: str, prep: Preprocessing, max_pixels: int | None) -> ModelInput:
    """What a decode worker does with one path: the model input plus the original image size
    (read from the header once), which result rows carry."""
    return load_model_input(path, prep, max_pixels=max_pixels, with_size=True)


class InlineDecoder:
    """Decodes in this process, one path per `get` (`workers=0`: no processes, no overlap)."""

    def __init__(
        self, paths: Iterable[str], prep: Preprocessing, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ):
        self._paths = iter(paths)
        self._prep = prep
        self._max_pixels = max_pixels

    def get(self, timeout: float | None = None) -> ModelInput | None:
        """The next path's ModelInput, None at the end (`timeout` is moot: it never waits)."""
        path = next(self._paths, None)
        return None if path is None else decode_for_rows(path, self._prep, self._max_pixels)

    def close(self) -> None:
        pass

    def __enter__(self) -> InlineDecoder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- worker processes ---------------------------------------------------------------------------


def _worker_main(conn) -> None:
    """Body of a decode process: (seq, path) lists in, one (seq, ModelInput) out per path."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        prep_values, max_pixels = conn.recv()
        prep = Preprocessing.from_dict(prep_values)
        conn.send("ready")
        while (tasks := conn.recv()) is not None:
            for seq, path in tasks:
                conn.send((seq, decode_for_rows(path, prep, max_pixels)))
    except (EOFError, OSError):  # the main process is gone or stopped listening: just end
        return


def _worker_entry() -> None:
    """`python -c` entry point of a decode process; argv[1] is its socket's file descriptor."""
    _worker_main(Connection(int(sys.argv[1])))


_WORKER_CODE = "from cfimg.predict.decode_pool import _worker_entry; _worker_entry()"


def _worker_environment() -> dict[str, str]:
    # One thread per decode process: the processes are the parallelism. The package's parent
    # folder goes first on the path so a source checkout decodes with its own code.
    package_root = str(Path(__file__).resolve().parents[2])
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
    outstanding: collections.deque = field(default_factory=collections.deque)  # (seq, path)
    head_since: float = 0.0  # when the file it is decoding now was started
    ready: bool = False


class _Failed:
    """Carries an exception from the collector thread to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class DecodePool:
    """Worker processes decoding paths into ModelInput, delivered in input order: `get` one at a
    time, or iterate. Use it as a context manager: `close` stops the processes."""

    def __init__(
        self,
        paths: Iterable[str],
        prep: Preprocessing,
        *,
        workers: int,
        max_in_flight: int,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
    ):
        self._paths = enumerate(paths)
        self._retry: collections.deque = collections.deque()
        self._prep = prep
        self._max_pixels = max_pixels
        self._max_in_flight = max(max_in_flight, workers)
        self._decode_timeout_s = decode_timeout_s
        self._workers: list[_Worker] = []
        self._pending: dict[int, ModelInput] = {}  # decoded out of order, by input position
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

    def __iter__(self):
        while (image := self.get()) is not None:
            yield image

    def get(self, timeout: float | None = None) -> ModelInput | None:
        """The next ModelInput in input order, None at the end; queue.Empty on timeout."""
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
                    self._emit(None)  # the end
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
                seq, image = message
                expected_seq, _ = worker.outstanding.popleft()
                assert seq == expected_seq, "worker answered out of order"
                worker.head_since = time.monotonic()
                self._deliver(seq, image)
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
        image); the files queued behind it go to the others. A worker that died before it was
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
            self._deliver(seq, ModelInput(path, None, row_error))
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

    def _deliver(self, seq: int, image: ModelInput) -> None:
        self._pending[seq] = image
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
