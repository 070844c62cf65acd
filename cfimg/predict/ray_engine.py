"""`cfimg predict --engine ray`: decoding as Ray tasks, classification in Ray actors.

The job (cfimg.predict.job) stays the same: it enumerates the inputs lazily, applies --shard and
--resume, and writes the rows. What changes is where the rows come from:

    driver: paths -> batches of `batch_size` paths, in input order
      -> a decode task per batch (1 CPU, wherever Ray finds one): the one image path,
         `decode_for_rows`, on each photo -> ModelInput list in the object store
      -> `classify` on one of the classifier actors (one onnxruntime session each, round robin):
         `classify_images`, the engine seam -> rows
      -> rows fetched by the driver, a batch at a time, in input order.

At most `in_flight` batches are in flight, so memory stays flat however many photos there are,
and the photos' pixels go from decode task to actor without passing through the driver. Each
batch's rows come from one ObjectRef fetched once, so a retried task or actor call can neither
lose nor double a photo; the driver still checks each batch's rows against its paths.

Failures: a decode task whose process dies is retried (`max_retries`); when it keeps dying, its
batch is decoded again one photo per task, so only the photo that kills its decoder becomes an
error row ("decoder process crashed"). An actor that dies is restarted (`max_restarts`) and its
calls retried (`max_task_retries`). Anything else ends the job with one line; the rows written so
far are kept for --resume. Nothing here imports torch: the model must be ONNX.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cfimg.card import ModelCard
from cfimg.errors import CfimgError, UsageError, one_line
from cfimg.model_input import ModelInput
from cfimg.predict.classify import classify_images
from cfimg.predict.decode_pool import decode_for_rows
from cfimg.preprocess import Preprocessing
from cfimg.results import PredictionRow

INSTALL_HINT = "pip install -e '.[ray]'"
_DECODE_RETRIES = 2  # a decode task whose process died runs again this often
_ACTOR_RESTARTS = 3  # an actor whose process died is restarted this often
_ACTOR_TASK_RETRIES = 3  # and each of its calls retried this often
_ACTORS_READY_TIMEOUT_S = 600.0  # sessions load in seconds; this long means no room on the cluster
_CONNECT_TIMEOUT_S = 10.0  # for the cluster's address to answer at all
_BATCHES_PER_ACTOR = 4  # queued at each actor, so it never waits for the driver


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray engine runs; resolved once from the flags."""

    address: str | None = None  # None: start a local Ray on this machine
    actors: int | None = None  # None: one per GPU share, or one per two CPUs without GPUs
    gpus_per_actor: float = 0.0  # 0: actors run on CPU
    threads_per_actor: int = 1  # onnxruntime intra-op threads per actor, and the CPUs it holds
    device: str = "auto"  # --device: auto, cpu, or cuda / tensorrt with gpus_per_actor > 0

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise UsageError(f"--actors must be at least 1 (got {self.actors})")
        if self.gpus_per_actor < 0:
            raise UsageError(f"--gpus-per-actor must be 0 or more (got {self.gpus_per_actor:g})")
        if self.threads_per_actor < 1:
            raise UsageError(f"--threads must be at least 1 (got {self.threads_per_actor})")

    @property
    def actor_device(self) -> str:
        """The engine device inside an actor: Ray hands each one its GPUs as device 0."""
        kind, _, index = self.device.partition(":")
        if self.gpus_per_actor == 0:
            if kind not in ("auto", "cpu"):
                raise UsageError(
                    f"--device {self.device} with --engine ray needs --gpus-per-actor above 0"
                )
            return "cpu"
        if kind == "auto":
            return "cuda"
        if kind not in ("cuda", "tensorrt") or index:
            raise UsageError(
                f"--device {self.device} with --engine ray: use auto, cuda or tensorrt (Ray "
                "gives each actor its GPUs)"
            )
        return kind


def import_ray():
    """The ray module, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    return ray


# -- what runs on the cluster --------------------------------------------------------------------


def decode_batch(paths: list[str], prep: Preprocessing, max_pixels: int | None) -> list[ModelInput]:
    """Body of a decode task: the one image path on each photo (never raises for a bad file)."""
    return [decode_for_rows(path, prep, max_pixels) for path in paths]


class Classifier:
    """Body of a classifier actor: one engine (one onnxruntime session), batches in, rows out.
    A model that cannot load is kept as the error `ready` raises, so it reaches the driver as
    the CfimgError it is rather than as a dead actor."""

    def __init__(self, model_path: str, device: str, threads: int):
        from cfimg.engines import load_engine

        self._engine = None
        self._failure: CfimgError | None = None
        try:
            self._engine = load_engine(model_path, device=device, threads=threads)
        except CfimgError as exc:
            self._failure = exc

    def ready(self) -> str:
        """The engine's device, once the session is up."""
        if self._failure is not None:
            raise self._failure
        return self._engine.device

    def classify(
        self, images: list[ModelInput], threshold: float | None, model_id: str
    ) -> list[PredictionRow]:
        return classify_images(self._engine, images, threshold=threshold, model_id=model_id)


# -- the driver ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    paths: list[str]
    decoded: object  # ObjectRef of the decode task's ModelInput list
    rows: object  # ObjectRef of the actor's rows
    actor: object


class RayClassifier:
    """Rows for paths from decode tasks and classifier actors on Ray; use it in `with`, which
    starts (or joins) Ray and the actors and stops what it started.

        with RayClassifier("model.onnx", card, RayOptions(), model_id="m@1") as ray_rows:
            for rows in ray_rows.row_batches(paths): ...
    """

    def __init__(
        self,
        model_path: str | Path,
        card: ModelCard,
        options: RayOptions,
        *,
        model_id: str,
        batch_size: int,
        threshold: float | None = None,
        max_pixels: int | None = None,
    ):
        self._ray = import_ray()
        self._model_path = str(Path(model_path).resolve())  # the same path on every node
        self.card = card  # the model's, read once on the driver
        self._prep = card.preprocessing
        self._options = options
        self._actor_device = options.actor_device
        self.model_id = model_id
        self._batch_size = batch_size
        self._threshold = threshold
        self._max_pixels = max_pixels
        self._started_ray = False
        self._actors: list = []
        self._decode = self._decode_alone = self._prep_ref = None  # Ray handles, once started
        self._in_flight = 0
        self.device = ""  # e.g. 'Ray, 2 actors on CPUExecutionProvider', once started

    # starting and stopping

    def __enter__(self) -> RayClassifier:
        ray = self._ray
        self._started_ray = _start_or_join(ray, self._options.address)
        try:
            self._start_actors(ray.cluster_resources())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # best effort: the job ends either way
                self._ray.kill(actor)
        self._actors = []
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def _start_actors(self, resources: dict) -> None:
        ray, options = self._ray, self._options
        actors, decode_cpus = plan_actors(options, resources)
        actor_class = ray.remote(Classifier).options(
            num_cpus=options.threads_per_actor,
            num_gpus=options.gpus_per_actor,
            max_restarts=_ACTOR_RESTARTS,
            max_task_retries=_ACTOR_TASK_RETRIES,
        )
        self._actors = [
            actor_class.remote(self._model_path, self._actor_device, options.threads_per_actor)
            for _ in range(actors)
        ]
        try:
            ready = ray.get(
                [actor.ready.remote() for actor in self._actors],
                timeout=_ACTORS_READY_TIMEOUT_S,
            )
        except ray.exceptions.GetTimeoutError:
            raise CfimgError(
                f"{actors} Ray classifier actors did not start within "
                f"{_ACTORS_READY_TIMEOUT_S:g} s (cluster resources: {_resources_text(resources)})"
            ) from None
        except ray.exceptions.RayError as exc:
            raise _job_error(ray, exc) from None
        providers = sorted(set(ready))
        self.device = f"Ray, {actors} actor{'s' * (actors > 1)} on {', '.join(providers)}"
        self._in_flight = _BATCHES_PER_ACTOR * actors + decode_cpus
        decode_task = ray.remote(decode_batch)
        self._decode = decode_task.options(num_cpus=1, max_retries=_DECODE_RETRIES)
        self._decode_alone = decode_task.options(num_cpus=1, max_retries=0)
        self._prep_ref = ray.put(self._prep)

    # rows

    def row_batches(self, paths: Iterable[str]) -> Iterator[list[PredictionRow]]:
        """Rows for `paths`, in input order, a batch at a time (error rows included)."""
        pending: collections.deque[_Batch] = collections.deque()
        for number, batch_paths in enumerate(_batched(paths, self._batch_size)):
            pending.append(self._submit(number, batch_paths))
            if len(pending) >= self._in_flight:
                yield self._rows_of(pending.popleft())
        while pending:
            yield self._rows_of(pending.popleft())

    def _submit(self, number: int, paths: list[str]) -> _Batch:
        actor = self._actors[number % len(self._actors)]
        decoded = self._decode.remote(paths, self._prep_ref, self._max_pixels)
        rows = actor.classify.remote(decoded, self._threshold, self.model_id)
        return _Batch(paths, decoded, rows, actor)

    def _rows_of(self, batch: _Batch) -> list[PredictionRow]:
        ray = self._ray
        try:
            rows = ray.get(batch.rows)
        except ray.exceptions.RayError as exc:
            if not self._decode_failed(batch.decoded):
                raise _job_error(ray, exc) from None
            rows = self._classify_one_decode_at_a_time(batch)
        if [row.path for row in rows] != batch.paths:  # a batch's rows, once each, in order
            raise CfimgError(
                "Ray returned rows that do not match the batch sent; stopping (the rows written "
                "so far are kept: rerun with --resume)"
            )
        return rows

    def _decode_failed(self, decoded) -> bool:
        try:
            self._ray.get(decoded)
        except self._ray.exceptions.RayError:
            return True
        return False

    def _classify_one_decode_at_a_time(self, batch: _Batch) -> list[PredictionRow]:
        """A batch whose decode task kept dying: one task per photo, so only the photo that
        kills its decoder becomes an error row."""
        ray = self._ray
        decode = self._decode_alone
        refs = [decode.remote([path], self._prep_ref, self._max_pixels) for path in batch.paths]
        images: list[ModelInput] = []
        for path, ref in zip(batch.paths, refs, strict=True):
            try:
                images.extend(ray.get(ref))
            except ray.exceptions.RayError as exc:
                reason = "out of memory" if "OutOfMemory" in type(exc).__name__ else "worker died"
                images.append(ModelInput(path, None, f"decoder process crashed ({reason})"))
        try:
            return ray.get(batch.actor.classify.remote(images, self._threshold, self.model_id))
        except ray.exceptions.RayError as exc:
            raise _job_error(ray, exc) from None


def plan_actors(options: RayOptions, resources: dict) -> tuple[int, int]:
    """(classifier actors, CPUs left for decode tasks) on a cluster with `resources`."""
    cpus = int(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    per_actor = options.gpus_per_actor
    if per_actor > 0:
        actors = options.actors or int(gpus // per_actor)
        if actors < 1 or actors * per_actor > gpus:
            wanted = (options.actors or 1) * per_actor
            raise UsageError(
                f"--gpus-per-actor {per_actor:g}: {options.actors or 1} actor(s) need {wanted:g} "
                f"GPUs and the Ray cluster has {gpus:g}"
            )
    else:
        actors = options.actors or max(1, cpus // (2 * options.threads_per_actor))
    decode_cpus = cpus - actors * options.threads_per_actor
    if decode_cpus < 1:
        raise UsageError(
            f"{actors} actor(s) x {options.threads_per_actor} thread(s) take all {cpus} CPUs of "
            "the Ray cluster, leaving none to decode photos; use fewer --actors or --threads"
        )
    return actors, decode_cpus


def _start_or_join(ray, address: str | None) -> bool:
    """Start a local Ray (no address) or join the cluster at `address`; True when this call
    started or joined it, so that we also stop it. A Ray this process already runs is used."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats banner
    try:
        if address is None:
            ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), **quiet)
        else:
            _check_reachable(address)
            quiet.pop("include_dashboard")  # the cluster's own choice
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise UsageError(f"cannot {where} ({_first_line(exc)})") from None
    return True


def _check_reachable(address: str) -> None:
    """A host:port where nothing answers fails here in seconds, not after minutes of Ray's own
    retries; other forms (auto, ray://...) are Ray's to resolve."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UsageError(f"cannot join the Ray cluster at {address} ({reason.lower()})") from None


def _job_error(ray, exc: BaseException) -> CfimgError:
    """The CfimgError an actor raised, or one line for anything else Ray reports."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, CfimgError):
        return cause
    return CfimgError(
        f"Ray: {_first_line(exc)} (the rows written so far are kept: rerun with --resume)"
    )


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0])[:200] if lines else type(exc).__name__


def _resources_text(resources: dict) -> str:
    return ", ".join(f"{resources.get(kind, 0):g} {kind}" for kind in ("CPU", "GPU"))


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
