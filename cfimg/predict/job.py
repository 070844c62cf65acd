"""The `cfimg predict` job: inputs -> shard -> skip what --resume finds done -> rows -> file.

Inputs are enumerated lazily, classified a batch at a time and appended to the result file
(cfimg.results) as each batch comes, with a live progress line on stderr; `--sort` rewrites the
file at the end. The rows come from one of two engines behind the same `row_batches(paths)`:
the local one (decode processes and a model here, cfimg.predict.classify) or Ray's (decode
tasks and classifier actors on a cluster, cfimg.predict.ray_engine).

    predict_paths("model.onnx", ["photos/"], "results.csv")  # the whole `cfimg predict` job
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cfimg.card import ModelCard
from cfimg.engines import is_onnx_path
from cfimg.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError
from cfimg.imageio import DEFAULT_MAX_PIXELS
from cfimg.inputs import Shard, iter_input_paths, parse_shard, path_key
from cfimg.predict.classify import DEFAULT_BATCH_SIZE, classify_batches, default_split
from cfimg.predict.ray_engine import RayClassifier, RayOptions, import_ray
from cfimg.results import (
    VERDICT_ERROR,
    PredictionRow,
    ResultScan,
    check_output_path,
    error_kind,
    open_result_writer,
    result_file_exists,
    scan_results,
    sort_results,
)

_ERRORS_SHOWN = 10  # error rows echoed on stderr while running; the file has them all
ENGINES = ("local", "ray")  # where the rows come from: this machine's processes, or Ray


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
    card: ModelCard | None = None  # the model's card: thresholds, item rule

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
    engine: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
) -> PredictSummary:
    """Classify every image named by `inputs` (files, folders, globs, @lists, '-') into a CSV,
    JSONL or Parquet file, streaming a batch at a time; see `cfimg predict --help`.

    `engine` "local" decodes in worker processes of this machine and runs the model in this
    process; "ray" decodes in Ray tasks and classifies in `actors` Ray actors (`gpus_per_actor`
    GPUs and `threads` threads each) on the cluster at `ray_address`, or on a local Ray started
    for the run (cfimg.predict.ray_engine). Everything else is the same for both.

    Raises UsageError (bad options, output exists, no images found), ModelFileError."""
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if workers is not None and workers < 0:
        raise UsageError("--workers must be 0 (decode in the main process) or more")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold} is not a probability between 0 and 1")
    ray_options = _ray_options(
        engine,
        workers=workers,
        device=device,
        threads=threads,
        address=ray_address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
    )
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    out_path = Path(out_path)
    check_output_path(out_path, resume=resume, overwrite=overwrite)
    batching = {"batch_size": batch_size, "threshold": threshold, "max_pixels": max_pixels}
    if ray_options is None:
        classifier = _local_classifier(
            engine_or_model_path, device=device, threads=threads, workers=workers, **batching
        )
    else:
        classifier = _ray_classifier(engine_or_model_path, ray_options, **batching)
    model_id = classifier.model_id

    found = iter_input_paths(inputs, stdin=stdin)
    first = next(found, None)
    if first is None:
        raise UsageError(f"no images found in {' '.join(inputs) or 'the inputs given'}")
    scan = scan_results(out_path) if resume and result_file_exists(out_path) else ResultScan()
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
    bar = _ProgressLine(console) if console else contextlib.nullcontext()
    # The classifier first: a Ray that cannot start must not leave an empty result file.
    with classifier, open_result_writer(out_path, resume=resume, scan=scan) as writer, bar:
        start = time.perf_counter()
        for rows in classifier.row_batches(selected):
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
        device=classifier.device,
        verdict_counts=dict(verdicts),
        error_counts=dict(errors),
        rows_written=rows_written,
        skipped_done=tally["done"],
        elapsed_s=elapsed_s,
        card=classifier.card,
    )


def _ray_options(
    engine: str, *, workers, device, threads, address, actors, gpus_per_actor
) -> RayOptions | None:
    """RayOptions for engine "ray", None for "local"; the other engine's flags are errors."""
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "local":
        ray_flags = (("--ray-address", address), ("--actors", actors))
        given = [flag for flag, value in ray_flags if value is not None]
        given += ["--gpus-per-actor"] * bool(gpus_per_actor)
        if given:
            raise UsageError(f"{', '.join(given)}: only with --engine ray")
        return None
    if workers is not None:
        raise UsageError("--workers: only with --engine local (Ray decodes on every free CPU)")
    return RayOptions(
        address=address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        threads_per_actor=1 if threads is None else threads,
        device=device,
    )


class _LocalClassifier:
    """The local engine as the job uses it (like RayClassifier): decode worker processes of
    this machine feeding a model loaded in this process."""

    def __init__(self, model_engine, model_id: str, **batching):
        self.model_id = model_id
        self.card = model_engine.card
        self.device = model_engine.device
        self._engine = model_engine
        self._batching = batching

    def row_batches(self, paths: Iterable[str]) -> Iterator[list[PredictionRow]]:
        return classify_batches(self._engine, paths, model_id=self.model_id, **self._batching)

    def __enter__(self) -> _LocalClassifier:
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def _local_classifier(
    engine_or_model_path, *, device: str, threads: int | None, workers: int | None, **batching
) -> _LocalClassifier:
    if threads is None and workers is not None:
        threads = max(1, (os.cpu_count() or 1) - workers)
    model_engine, model_id = _engine_and_id(
        engine_or_model_path, device, threads or default_split()[1]
    )
    return _LocalClassifier(model_engine, model_id, workers=workers, **batching)


def _ray_classifier(model_path, options: RayOptions, **batching) -> RayClassifier:
    if not isinstance(model_path, str | os.PathLike):
        raise UsageError("engine='ray' needs the model's file path, not a loaded engine")
    if not is_onnx_path(model_path):
        raise UsageError(
            f"{model_path}: --engine ray runs ONNX models; export it first (cfimg export RUN)"
        )
    import_ray()  # before the model loads: the one line that says how to install it
    # Read the card (and check the file) here; the actors load their own sessions.
    card_engine, model_id = _engine_and_id(model_path, "cpu", 1)
    return RayClassifier(model_path, card_engine.card, options, model_id=model_id, **batching)


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
