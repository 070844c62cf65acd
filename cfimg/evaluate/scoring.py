"""Scoring: run an inference engine over samples, giving logits and p_counterfeit per image.

Images are decoded through the one image path, cfimg.model_input.load_model_input, in worker
threads one batch ahead of the engine; an image that cannot be read is listed, not fatal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cfimg.calibration import softmax_with_temperature
from cfimg.data import Sample
from cfimg.errors import DatasetError
from cfimg.evaluate.plan import DataPlan


@dataclass
class Scored:
    """A set of samples run through the model; failed images are left out and listed."""

    samples: list[Sample]
    logits: np.ndarray  # [N, classes] raw network outputs
    p_counterfeit: np.ndarray  # [N] float32, as the engine outputs it (card temperature)
    failures: list[dict] = field(default_factory=list)  # {"path", "reason"}
    seconds: float = 0.0

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.int64)


def score_samples(
    engine,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Scored:
    """Decode (in `workers` threads, one batch ahead) and run the engine over `samples`.

    The single place eval turns files into probabilities, so it can be swapped for the shared
    predict pipeline without touching anything else.
    """
    from cfimg.model_input import load_model_input  # imports torch

    card = engine.card
    kept: list[Sample] = []
    failures: list[dict] = []
    logits_parts: list[np.ndarray] = []
    p_parts: list[np.ndarray] = []
    batches = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def submit(batch: list[Sample]) -> list[Future]:
            return [pool.submit(load_model_input, s.path, card.preprocessing) for s in batch]

        pending = submit(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            loaded = [future.result() for future in pending]
            pending = submit(batches[index + 1]) if index + 1 < len(batches) else []
            images = []
            for sample, item in zip(batch, loaded, strict=True):
                if item.ok:
                    kept.append(sample)
                    images.append(item.pixels)
                else:
                    failures.append({"path": sample.path, "reason": item.error})
            if images:
                probabilities, logits = engine.predict(np.stack(images))
                p_parts.append(probabilities[:, card.counterfeit_index].astype(np.float32))
                logits_parts.append(logits.astype(np.float32))
            if progress is not None:
                progress(len(batch))
    no_logits = np.zeros((0, len(card.class_names)), np.float32)
    return Scored(
        samples=kept,
        logits=np.concatenate(logits_parts) if logits_parts else no_logits,
        p_counterfeit=np.concatenate(p_parts) if p_parts else np.zeros(0, np.float32),
        failures=failures,
        seconds=time.perf_counter() - start,
    )


def score_plan(
    engine,
    plan: DataPlan,
    *,
    batch_size: int,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Scored, Scored]:
    """(evaluated, fitting): the evaluated split, then the fitting split unless it is the same
    data. When no fitting image can be read, the plan falls back to the evaluated data."""
    total = len(plan.evaluated) + (0 if plan.fit_is_evaluated else len(plan.fitting))
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    options = {"batch_size": batch_size, "workers": workers, "progress": advance}
    evaluated = score_samples(engine, plan.evaluated, **options)
    if not evaluated.samples:
        first = evaluated.failures[0]
        raise DatasetError(
            f"{plan.source}: none of the {len(plan.evaluated)} images in split {plan.split!r} "
            f"could be read (first failure: {first['path']}: {first['reason']})"
        )
    if plan.fit_is_evaluated:
        return evaluated, evaluated
    fitting = score_samples(engine, plan.fitting, **options)
    if not fitting.samples:
        plan.notes.append(f"no image of the fitting split ({plan.fit_split}) could be read")
        plan.fit_on_evaluated()
        return evaluated, evaluated
    return evaluated, fitting


def p_at_temperature(scored: Scored, temperature: float, column: int) -> np.ndarray:
    """p of output `column` (float32, as the engines give it) at another temperature."""
    return softmax_with_temperature(scored.logits, temperature)[:, column].astype(np.float32)
