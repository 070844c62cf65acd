"""`cfimg eval` as a library: score a labelled dataset with a model file and report on it.

evaluate(model_path, data_source=None, ...) runs the model (a checkpoint / run folder on PyTorch,
or an exported .onnx on onnxruntime, through cfimg.engines) over the evaluated split, fits the
temperature and any operating point on the *validation* split, computes metrics with bootstrap
intervals and per-category/brand breakdowns, writes the report (cfimg.report documents
report.json) and, when asked, stores the temperature and operating point in the checkpoint's
model card, from where `cfimg export` and `cfimg predict` pick them up.

Which data plays which role:
- evaluated: DATA (any source cfimg.data.load_samples reads) or, without DATA, the run's own
  split.csv; its `--split` (default: test if the data has a test split, else val, else all).
- fitting (temperature, operating point, uncertain band): the validation split of the same data;
  else the run's own validation split (split.csv beside the checkpoint); else, with a warning in
  the report, the evaluated data itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cfimg import __version__
from cfimg.calibration import fit_temperature, remap_threshold, softmax_with_temperature
from cfimg.card import VERDICT_COUNTERFEIT, VERDICT_GENUINE, ModelCard
from cfimg.data import Sample
from cfimg.labels import CLASS_NAMES
from cfimg.errors import DatasetError, ImageLoadError, UsageError
from cfimg.metrics import bootstrap_intervals, evaluation_metrics, metrics_by, reliability_bins

SPLIT_CHOICES = ("val", "test", "train", "all")
DEFAULT_BOOTSTRAP = 1000
SPLIT_CSV = "split.csv"
REPORT_SCHEMA = "cfimg.eval/1"


@dataclass
class Scored:
    """A set of samples run through the model; failed images are left out and listed."""

    samples: list[Sample]
    logits: np.ndarray  # [N, 2] raw network outputs
    p_counterfeit: np.ndarray  # [N] float32, as the engine outputs it (card temperature)
    failures: list[dict] = field(default_factory=list)  # {"path", "reason"}
    seconds: float = 0.0

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.int64)


@dataclass
class EvalResult:
    report: dict  # exactly what report.json holds (NaN written as null)
    out_dir: Path
    files: dict[str, str]
    card: ModelCard  # the card as saved (or as it would be saved)
    scored: Scored

    @property
    def n_failed(self) -> int:
        return len(self.scored.failures)


@dataclass(frozen=True)
class Target:
    kind: str  # "precision", "recall" or "fpr"
    value: float

    def describe(self) -> str:
        return {"precision": "precision >= ", "recall": "recall >= ", "fpr": "FPR <= "}[
            self.kind
        ] + f"{self.value:g}"


def resolve_target(
    target_fpr: float | None, target_precision: float | None, target_recall: float | None
) -> Target | None:
    given = {
        kind: value
        for kind, value in (
            ("fpr", target_fpr),
            ("precision", target_precision),
            ("recall", target_recall),
        )
        if value is not None
    }
    if len(given) > 1:
        raise UsageError(
            "choose one of --target-fpr, --target-precision, --target-recall "
            f"(got {', '.join('--target-' + k for k in given)})"
        )
    if not given:
        return None
    kind, value = next(iter(given.items()))
    low_ok = value >= 0.0 if kind == "fpr" else value > 0.0
    high_ok = value < 1.0 if kind == "fpr" else value <= 1.0
    if not (low_ok and high_ok):
        allowed = "0 <= F < 1" if kind == "fpr" else "0 < value <= 1"
        raise UsageError(f"--target-{kind} {value} is out of range ({allowed})")
    return Target(kind, float(value))


def parse_band(text: str) -> tuple[float, float]:
    """'LOW,HIGH' -> (low, high) with 0 <= low < high <= 1."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise UsageError(
            f"--uncertain-band {text!r} is not LOW,HIGH (two numbers, e.g. 0.3,0.7)"
        ) from None
    check_band((low, high))
    return low, high


def check_band(band: tuple[float, float]) -> None:
    low, high = band
    if not 0.0 <= low < high <= 1.0:
        raise UsageError(f"uncertain band {low:g},{high:g} must satisfy 0 <= LOW < HIGH <= 1")


# --- data ---------------------------------------------------------------------------------


@dataclass
class DataPlan:
    source: str
    split: str
    evaluated: list[Sample]
    fitting: list[Sample]
    fit_split: str  # "val", "run val (PATH)", or "<split> (same data)"
    fit_is_evaluated: bool
    notes: list[str]


def run_folder_of(model_path: Path, is_onnx: bool) -> Path | None:
    if is_onnx:
        return None
    return model_path if model_path.is_dir() else model_path.parent


def plan_data(
    model_path: Path,
    data_source: str | Path | None,
    split: str | None,
    *,
    is_onnx: bool,
    group_regex: str | None = None,
) -> DataPlan:
    from cfimg.data import load_samples

    if split is not None and split not in SPLIT_CHOICES:
        raise UsageError(f"--split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    run_dir = run_folder_of(model_path, is_onnx)
    run_split_csv = run_dir / SPLIT_CSV if run_dir is not None else None
    if data_source is None:
        if is_onnx:
            raise UsageError(
                f"{model_path}: an .onnx model carries no dataset; give DATA (a folder or "
                "CSV manifest): cfimg eval MODEL.onnx DATA"
            )
        if not run_split_csv.is_file():
            raise UsageError(
                f"{run_dir}: no {SPLIT_CSV} in the run folder to evaluate on; give DATA"
            )
        data_source = run_split_csv
    samples = load_samples(data_source, group_regex=group_regex)
    present = sorted({s.split for s in samples if s.split})
    if split is None:
        split = next((name for name in ("test", "val") if name in present), "all")
    evaluated = samples if split == "all" else [s for s in samples if s.split == split]
    if not evaluated:
        has = f"it has: {', '.join(present)}" if present else "it has no splits; use --split all"
        raise DatasetError(f"{data_source}: no images in split {split!r} ({has})")
    notes = []
    if split in ("train", "all") and "train" in present:
        notes.append(f"split {split!r} includes training images: its metrics are optimistic")
    plan = DataPlan(str(data_source), split, evaluated, [], "", False, notes)
    val = [s for s in samples if s.split == "val"]
    if split == "val":
        plan.fitting, plan.fit_split, plan.fit_is_evaluated = evaluated, "val", True
    elif val:
        plan.fitting, plan.fit_split = val, "val"
    elif (
        run_split_csv is not None and run_split_csv.is_file() and Path(data_source) != run_split_csv
    ):
        run_val = [s for s in load_samples(run_split_csv) if s.split == "val"]
        if run_val:
            plan.fitting, plan.fit_split = run_val, f"val of {run_split_csv}"
    if not plan.fitting:
        plan.fitting, plan.fit_split, plan.fit_is_evaluated = (
            evaluated,
            f"{split} (same data)",
            True,
        )
        notes.append(
            "no validation split found: temperature and thresholds were fitted on the "
            "evaluated data itself, so metrics at them are optimistic"
        )
    return plan


# --- scoring ------------------------------------------------------------------------------


def _load_one(sample: Sample, prep) -> np.ndarray | str:
    """The model input for one sample, or the reason it could not be read."""
    from cfimg.imageio import load_rgb
    from cfimg.preprocess import preprocess_image

    try:
        return preprocess_image(load_rgb(sample.path, min_side_px=prep.resize_px), prep)
    except ImageLoadError as exc:
        return exc.reason
    except Exception as exc:  # a batch job records the failure and goes on
        return f"{type(exc).__name__}: {exc}"


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
    prep = engine.card.preprocessing
    column = engine.card.counterfeit_index
    kept: list[Sample] = []
    failures: list[dict] = []
    logits_parts: list[np.ndarray] = []
    p_parts: list[np.ndarray] = []
    batches = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def submit(batch: list[Sample]) -> list[Future]:
            return [pool.submit(_load_one, sample, prep) for sample in batch]

        pending = submit(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            loaded = [future.result() for future in pending]
            pending = submit(batches[index + 1]) if index + 1 < len(batches) else []
            images = []
            for sample, item in zip(batch, loaded, strict=True):
                if isinstance(item, str):
                    failures.append({"path": sample.path, "reason": item})
                else:
                    kept.append(sample)
                    images.append(item)
            if images:
                probabilities, logits = engine.predict(np.stack(images))
                p_parts.append(probabilities[:, column].astype(np.float32))
                logits_parts.append(logits.astype(np.float32))
            if progress is not None:
                progress(len(batch))
    return Scored(
        samples=kept,
        logits=np.concatenate(logits_parts) if logits_parts else np.zeros((0, 2), np.float32),
        p_counterfeit=np.concatenate(p_parts) if p_parts else np.zeros(0, np.float32),
        failures=failures,
        seconds=time.perf_counter() - start,
    )


def p_at_temperature(scored: Scored, temperature: float, column: int) -> np.ndarray:
    return softmax_with_temperature(scored.logits, temperature)[:, column].astype(np.float32)


# --- the driver ---------------------------------------------------------------------------


def default_out_dir(model_path: Path, split: str, is_onnx: bool) -> Path:
    if is_onnx:
        return model_path.parent / f"{model_path.stem}-eval-{split}"
    return run_folder_of(model_path, is_onnx) / f"eval-{split}"


def _check_requests(
    is_onnx: bool,
    save_threshold: bool,
    calibrate: bool,
    target: Target | None,
    band: tuple[float, float] | None,
    uncertain_frac: float | None,
) -> None:
    if band is not None and uncertain_frac is not None:
        raise UsageError("give --uncertain-band or --uncertain-frac, not both")
    if band is not None:
        check_band(band)
    if uncertain_frac is not None and not 0.0 < uncertain_frac < 1.0:
        raise UsageError(f"--uncertain-frac {uncertain_frac} must be between 0 and 1")
    if is_onnx and (save_threshold or calibrate):
        flag = "--save-threshold" if save_threshold else "--calibrate"
        raise UsageError(
            f"{flag} stores into a checkpoint, and an .onnx file is read-only here: run "
            f"`cfimg eval CHECKPOINT {flag} ...` on the checkpoint it came from, then "
            "`cfimg export` it again"
        )
    if save_threshold and target is None and band is None and uncertain_frac is None:
        raise UsageError(
            "--save-threshold needs an operating point to save: --target-fpr, "
            "--target-precision, --target-recall, --uncertain-band or --uncertain-frac"
        )


def evaluate(
    model_path: str | Path,
    data_source: str | Path | None = None,
    *,
    split: str | None = None,
    out_dir: str | Path | None = None,
    target_fpr: float | None = None,
    target_precision: float | None = None,
    target_recall: float | None = None,
    save_threshold: bool = False,
    uncertain_band: tuple[float, float] | None = None,
    uncertain_frac: float | None = None,
    calibrate: bool = False,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 0,
    group_regex: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    write_plots: bool = True,
) -> EvalResult:
    """Evaluate a model on a labelled dataset and write the report; see the module docstring.

    `progress(done, total)` is called after each batch. Raises ModelFileError (bad model),
    DatasetError (no data, no readable image) and UsageError (impossible requests). When
    --save-threshold meets an unreachable target, the report is written, nothing of the
    operating point is saved, and UsageError is raised last.
    """
    from cfimg.engines import is_onnx_path, load_engine
    from cfimg.report import write_report

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if n_bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, not {n_bootstrap}")
    model_path = Path(model_path)
    is_onnx = is_onnx_path(model_path)
    target = resolve_target(target_fpr, target_precision, target_recall)
    _check_requests(is_onnx, save_threshold, calibrate, target, uncertain_band, uncertain_frac)

    engine = load_engine(model_path, device=device, threads=threads)
    card = engine.card
    plan = plan_data(model_path, data_source, split, is_onnx=is_onnx, group_regex=group_regex)
    evaluated, fitting = _score_plan(engine, plan, batch_size, workers, progress)

    column = card.counterfeit_index
    temperature_fitted = fit_temperature(fitting.logits, fitting.labels)
    temperature_used = temperature_fitted if calibrate else card.temperature
    if calibrate:
        eval_p = p_at_temperature(evaluated, temperature_used, column)
        fit_p = p_at_temperature(fitting, temperature_used, column)
    else:  # exactly what the engine (and so `cfimg predict`) outputs
        eval_p, fit_p = evaluated.p_counterfeit, fitting.p_counterfeit
    threshold, band, operating = _choose_operating_point(
        card, target, uncertain_band, uncertain_frac, fitting, fit_p, plan, temperature_used
    )
    if band is not None and not band[0] <= threshold <= band[1]:
        plan.notes.append(
            f"the threshold {threshold:.4g} lies outside the uncertain band "
            f"[{band[0]:.4g}, {band[1]:.4g})"
        )
    p_fitted = p_at_temperature(evaluated, temperature_fitted, column)
    report = {
        "schema": REPORT_SCHEMA,
        "cfimg_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(),
        "model": _model_section(model_path, is_onnx, engine),
        "data": _data_section(plan, evaluated, fitting),
        "threshold": {
            "value": threshold,
            "source": operating["source"],
            "split": operating["split"],
        },
        "metrics": None,  # filled below, kept here so the key order reads top-down
        "operating_point": operating["point"],
        "uncertain_band": _band_section(band, evaluated, eval_p, fitting, fit_p, threshold, plan),
        "calibration": {
            "fitted_on": plan.fit_split,
            "n_fit": len(fitting.samples),
            "temperature_card": card.temperature,
            "temperature_fitted": temperature_fitted,
            "applied": bool(calibrate),
            "stored": False,
            "ece_raw": _ece(evaluated, p_at_temperature(evaluated, 1.0, column)),
            "ece_before": _ece(evaluated, evaluated.p_counterfeit),
            "ece_after": _ece(evaluated, p_fitted),
            "evaluated_split": plan.split,
        },
        **_metric_sections(evaluated, eval_p, threshold, plan.split, n_bootstrap, seed),
        "misclassified": misclassified(evaluated, eval_p, threshold, band),
        "failed": evaluated.failures + ([] if plan.fit_is_evaluated else fitting.failures),
        "notes": plan.notes,
        "timing": _timing(evaluated, fitting, plan),
        "saved": {
            "checkpoint": None,
            "threshold": False,
            "uncertain_band": False,
            "temperature": False,
        },
        "files": {},
    }
    if operating["point"] is not None:
        operating["point"]["eval"] = {
            **report["metrics"],
            **target_check(report["metrics"], target),
        }
        operating["point"]["eval"].pop("ci")

    saved_card = card
    if save_threshold or calibrate:
        saved_card = _save_to_checkpoint(
            model_path,
            card,
            report,
            save_threshold=save_threshold,
            calibrate=calibrate,
            temperature=temperature_used,
            threshold=threshold,
            band=band,
            target=target,
            fit_split=plan.fit_split,
        )
    out = Path(out_dir) if out_dir is not None else default_out_dir(model_path, plan.split, is_onnx)
    curves = {
        "labels": evaluated.labels,
        "p_counterfeit": eval_p,
        "reliability_before": reliability_bins(evaluated.labels, evaluated.p_counterfeit),
        "reliability_after": reliability_bins(evaluated.labels, p_fitted),
    }
    files = write_report(report, evaluated, eval_p, curves, out, write_plots=write_plots)
    point = operating["point"]
    if save_threshold and point is not None and not point["reachable"]:
        raise UsageError(
            f"target {target.describe()} is not reachable on {plan.fit_split} (best "
            f"{point['achieved']:.4g} at threshold {point['threshold']:.4g}); threshold NOT "
            f"saved; report in {out}"
        )
    return EvalResult(report=report, out_dir=out, files=files, card=saved_card, scored=evaluated)


def _score_plan(
    engine, plan: DataPlan, batch_size: int, workers: int, progress
) -> tuple[Scored, Scored]:
    """Score the evaluated split, then the fitting split unless it is the same data."""
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
        plan.fitting, plan.fit_split, plan.fit_is_evaluated = (
            plan.evaluated,
            f"{plan.split} (same data)",
            True,
        )
        return evaluated, evaluated
    return evaluated, fitting


def _metric_sections(
    evaluated: Scored, p: np.ndarray, threshold: float, split: str, n_bootstrap: int, seed: int
) -> dict:
    """ "metrics" (headline with intervals) and "breakdown" (per category and brand)."""
    labels = evaluated.labels
    items = [s.item_id for s in evaluated.samples]
    options = {"groups": items, "n_resamples": n_bootstrap, "seed": seed}
    return {
        "metrics": {
            **evaluation_metrics(labels, p, threshold),
            "split": split,
            "ci": bootstrap_intervals(labels, p, threshold, **options),
            "ci_level": 0.95,
            "ci_unit": "item" if any(items) else "image",
            "ci_resamples": n_bootstrap,
        },
        "breakdown": {
            by: metrics_by(
                [getattr(s, by) for s in evaluated.samples], labels, p, threshold, **options
            )
            for by in ("category", "brand")
        },
    }


def _model_section(model_path: Path, is_onnx: bool, engine) -> dict:
    card = engine.card
    return {
        "path": str(model_path),
        "kind": "onnx" if is_onnx else "checkpoint",
        "arch": card.arch,
        "model_id": card.model_id,
        "device": str(engine.device),
        "img_size_px": card.preprocessing.img_size_px,
        "card_threshold": card.threshold,
        "card_uncertain_band": list(card.uncertain_band) if card.uncertain_band else None,
        "card_temperature": card.temperature,
    }


def _timing(evaluated: Scored, fitting: Scored, plan: DataPlan) -> dict:
    seconds = evaluated.seconds + (0.0 if plan.fit_is_evaluated else fitting.seconds)
    images = len(plan.evaluated) + (0 if plan.fit_is_evaluated else len(plan.fitting))
    return {"inference_s": seconds, "images_per_s": images / seconds if seconds > 0 else None}


def _ece(scored: Scored, p: np.ndarray) -> float:
    from cfimg.metrics import expected_calibration_error

    return expected_calibration_error(scored.labels, p)


def _data_section(plan: DataPlan, evaluated: Scored, fitting: Scored) -> dict:
    from cfimg.data import dataset_fingerprint

    labels = evaluated.labels
    items = {s.item_id for s in evaluated.samples if s.item_id}
    return {
        "source": plan.source,
        "split": plan.split,
        "n_images": len(plan.evaluated),
        "n_scored": len(evaluated.samples),
        "n_failed": len(evaluated.failures),
        "n_items": len(items) if items else None,
        "n_genuine": int((labels == 0).sum()),
        "n_counterfeit": int((labels == 1).sum()),
        "fingerprint": dataset_fingerprint(plan.evaluated),
        "fit_split": plan.fit_split,
        "fit_is_evaluated": plan.fit_is_evaluated,
        "n_fit": len(fitting.samples),
        "class_names": list(CLASS_NAMES),
    }


def _choose_operating_point(
    card: ModelCard,
    target: Target | None,
    uncertain_band: tuple[float, float] | None,
    uncertain_frac: float | None,
    fitting: Scored,
    fit_p: np.ndarray,
    plan: DataPlan,
    temperature_used: float,
) -> tuple[float, tuple[float, float] | None, dict]:
    """(threshold, band, {"source", "split", "point"}) on the probability scale in use."""
    from cfimg.operating import fit_operating_point, uncertain_band_around

    def remap(value: float) -> float:
        return remap_threshold(value, card.temperature, temperature_used)

    if target is None:
        threshold = remap(card.threshold)
        choice = {"source": "model card", "split": None, "point": None}
        default_band = (
            (remap(card.uncertain_band[0]), remap(card.uncertain_band[1]))
            if card.uncertain_band
            else None
        )
    else:
        try:
            point = fit_operating_point(fitting.labels, fit_p, target.kind, target.value)
        except ValueError as exc:
            raise DatasetError(
                f"cannot fit {target.describe()} on {plan.fit_split}: {exc}"
            ) from None
        threshold = point.threshold
        fit_metrics = evaluation_metrics(fitting.labels, fit_p, threshold)
        choice = {
            "source": f"target {target.describe()}",
            "split": plan.fit_split,
            "point": {
                **point.to_dict(),
                "fitted_on": plan.fit_split,
                "fit": {**fit_metrics, "split": plan.fit_split},
            },
        }
        default_band = None
        if card.uncertain_band and uncertain_band is None and uncertain_frac is None:
            plan.notes.append(
                "the model card's uncertain band belongs to its old threshold and is not used "
                "with the new operating point; give --uncertain-band or --uncertain-frac"
            )
    if (target is not None or uncertain_frac is not None) and plan.split == plan.fit_split:
        plan.notes.append(
            f"the operating point was fitted and measured on the same split ({plan.split}): "
            "its metrics there are optimistic; evaluate --split test for honest figures"
        )
    if uncertain_band is not None:
        band = uncertain_band
    elif uncertain_frac is not None:
        band = uncertain_band_around(fit_p, threshold, uncertain_frac)
    else:
        band = default_band
    return threshold, band, choice


def target_check(metrics: dict, target: Target | None) -> dict:
    """The target metric's value in `metrics` and whether it meets the target (None: undefined)."""
    if target is None:
        return {"achieved": None, "target_met": None}
    achieved = metrics[target.kind]
    if achieved != achieved:  # NaN: e.g. no genuine item for an FPR
        return {"achieved": achieved, "target_met": None}
    met = achieved <= target.value if target.kind == "fpr" else achieved >= target.value
    return {"achieved": achieved, "target_met": bool(met)}


def _band_section(band, evaluated, eval_p, fitting, fit_p, threshold, plan) -> dict | None:
    from cfimg.operating import band_counts

    if band is None:
        return None
    return {
        "low": band[0],
        "high": band[1],
        "eval": {**band_counts(evaluated.labels, eval_p, threshold, band), "split": plan.split},
        "fit": {**band_counts(fitting.labels, fit_p, threshold, band), "split": plan.fit_split},
    }


def misclassified(
    scored: Scored, p: np.ndarray, threshold: float, band: tuple[float, float] | None
) -> list[dict]:
    """Wrong verdicts at `threshold`, worst first (largest |label - p_counterfeit|)."""
    labels = scored.labels
    wrong = np.flatnonzero((p >= threshold).astype(int) != labels)
    error = np.abs(labels[wrong] - p[wrong].astype(np.float64))
    order = wrong[np.argsort(-error, kind="stable")]
    rows = []
    for i in order:
        sample = scored.samples[i]
        predicted = VERDICT_COUNTERFEIT if p[i] >= threshold else VERDICT_GENUINE
        rows.append(
            {
                "path": sample.path,
                "label": sample.label_name,
                "predicted": predicted,
                "uncertain": bool(band is not None and band[0] <= p[i] < band[1]),
                "p_counterfeit": float(p[i]),
                "error": float(abs(labels[i] - float(p[i]))),
                "category": sample.category,
                "brand": sample.brand,
                "item_id": sample.item_id,
            }
        )
    return rows


def _save_to_checkpoint(
    model_path: Path,
    card: ModelCard,
    report: dict,
    *,
    save_threshold: bool,
    calibrate: bool,
    temperature: float,
    threshold: float,
    band: tuple[float, float] | None,
    target: Target | None,
    fit_split: str,
) -> ModelCard:
    """Store the temperature and/or operating point in the checkpoint's card.

    With --calibrate alone, the stored threshold and band are re-expressed at the new
    temperature, so the model takes exactly the decisions it took before.
    """
    from cfimg.checkpoint import resolve_checkpoint_path, update_checkpoint_card

    changes: dict = {}
    notes = dict(card.metrics)
    point = report["operating_point"]
    if calibrate:
        changes["temperature"] = temperature
        changes["threshold"] = remap_threshold(card.threshold, card.temperature, temperature)
        if card.uncertain_band:
            changes["uncertain_band"] = tuple(
                remap_threshold(v, card.temperature, temperature) for v in card.uncertain_band
            )
        notes["temperature_fitted_on"] = fit_split
    if save_threshold and (point is None or point["reachable"]):
        if target is not None:
            changes["threshold"] = threshold
            notes["operating_point"] = f"{target.describe()} fitted on {fit_split}"
        changes["uncertain_band"] = band
        report["saved"]["threshold"] = target is not None
        report["saved"]["uncertain_band"] = band is not None
    if not changes:
        return card
    new_card = card.updated(**changes, metrics=notes)
    path = resolve_checkpoint_path(model_path)
    update_checkpoint_card(path, new_card)
    report["saved"]["checkpoint"] = str(path)
    report["saved"]["temperature"] = bool(calibrate)
    report["calibration"]["stored"] = bool(calibrate)
    return new_card
