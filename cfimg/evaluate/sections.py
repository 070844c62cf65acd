"""The sections of report.json, each built from the scored data; cfimg.report documents the
schema and writes the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfimg.card import VERDICT_COUNTERFEIT, VERDICT_GENUINE, ModelCard, is_counterfeit
from cfimg.evaluate.plan import DataPlan
from cfimg.evaluate.scoring import Scored
from cfimg.labels import CLASS_NAMES, COUNTERFEIT_INDEX
from cfimg.metrics import (
    bootstrap_intervals,
    class_counts,
    evaluation_metrics,
    expected_calibration_error,
    metrics_by,
    metrics_by_type,
)
from cfimg.operating import band_counts, in_uncertain_band

CI_LEVEL = 0.95
# The manifest column naming what is wrong with each counterfeit, semicolon-separated (cfimg synth
# writes its defect kinds there; a seizure log's "fake type" fits as well).
TYPE_COLUMN = "defects"


def model_section(model_path: Path, is_onnx: bool, engine) -> dict:
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
        "card_item_rule": card.item_rule,
        "card_item_threshold": card.item_threshold,
    }


def data_section(plan: DataPlan, evaluated: Scored, fitting: Scored) -> dict:
    from cfimg.data import dataset_fingerprint

    items = {s.item_id for s in evaluated.samples if s.item_id}
    return {
        "source": plan.source,
        "split": plan.split,
        "n_images": len(plan.evaluated),
        "n_scored": len(evaluated.samples),
        "n_failed": len(evaluated.failures),
        "n_items": len(items) if items else None,
        **class_counts(evaluated.labels),
        "fingerprint": dataset_fingerprint(plan.evaluated),
        "fit_split": plan.fit_split,
        "fit_is_evaluated": plan.fit_is_evaluated,
        "n_fit": len(fitting.samples),
        "class_names": list(CLASS_NAMES),
    }


def calibration_section(
    plan: DataPlan,
    card: ModelCard,
    evaluated: Scored,
    fitting: Scored,
    *,
    temperature_fitted: float,
    applied: bool,
    p_raw: np.ndarray,
    p_fitted: np.ndarray,
) -> dict:
    """The temperatures, and the ECE on the evaluated split at T=1 (`p_raw`), at the card's
    temperature (what the engine gave) and at the fitted one (`p_fitted`)."""
    labels = evaluated.labels
    return {
        "fitted_on": plan.fit_split,
        "n_fit": len(fitting.samples),
        "temperature_card": card.temperature,
        "temperature_fitted": temperature_fitted,
        "applied": bool(applied),
        "stored": False,
        "ece_raw": expected_calibration_error(labels, p_raw),
        "ece_before": expected_calibration_error(labels, evaluated.p_counterfeit),
        "ece_after": expected_calibration_error(labels, p_fitted),
        "evaluated_split": plan.split,
    }


def metric_sections(
    evaluated: Scored, p: np.ndarray, threshold: float, split: str, n_bootstrap: int, seed: int
) -> dict:
    """ "metrics" (headline with intervals), "breakdown" (per category and brand) and
    "counterfeit_types" (what share of each kind of counterfeit is caught)."""
    labels = evaluated.labels
    items = [s.item_id for s in evaluated.samples]
    options = {"groups": items, "n_resamples": n_bootstrap, "level": CI_LEVEL, "seed": seed}
    return {
        "metrics": {
            **evaluation_metrics(labels, p, threshold),
            "split": split,
            "ci": bootstrap_intervals(labels, p, threshold, **options),
            "ci_level": CI_LEVEL,
            "ci_unit": "item" if any(items) else "image",
            "ci_resamples": n_bootstrap,
        },
        "breakdown": {
            by: metrics_by(
                [getattr(s, by) for s in evaluated.samples], labels, p, threshold, **options
            )
            for by in ("category", "brand")
        },
        "counterfeit_types": type_section(evaluated, p, threshold),
    }


def type_section(evaluated: Scored, p: np.ndarray, threshold: float) -> dict:
    """Per counterfeit type (the manifest's TYPE_COLUMN), how much of it the model catches;
    {} when no photo names a type."""
    cells = [s.extra.get(TYPE_COLUMN, "") for s in evaluated.samples]
    types = [[kind for kind in map(str.strip, cell.split(";")) if kind] for cell in cells]
    if not any(types):
        return {}
    return metrics_by_type(types, evaluated.labels, p, threshold)


def band_section(
    band: tuple[float, float] | None,
    evaluated: Scored,
    eval_p: np.ndarray,
    fitting: Scored,
    fit_p: np.ndarray,
    threshold: float,
    plan: DataPlan,
) -> dict | None:
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
    flagged = is_counterfeit(p, threshold)
    wrong = np.flatnonzero(flagged != (labels == COUNTERFEIT_INDEX))
    error = np.abs(labels[wrong] - p[wrong].astype(np.float64))
    order = wrong[np.argsort(-error, kind="stable")]
    rows = []
    for i in order:
        sample = scored.samples[i]
        rows.append(
            {
                "path": sample.path,
                "label": sample.label_name,
                "predicted": VERDICT_COUNTERFEIT if flagged[i] else VERDICT_GENUINE,
                "uncertain": bool(band is not None and in_uncertain_band(p[i], band)),
                "p_counterfeit": float(p[i]),
                "error": float(abs(labels[i] - float(p[i]))),
                "category": sample.category,
                "brand": sample.brand,
                "item_id": sample.item_id,
            }
        )
    return rows


def timing_section(evaluated: Scored, fitting: Scored, plan: DataPlan) -> dict:
    seconds = evaluated.seconds + (0.0 if plan.fit_is_evaluated else fitting.seconds)
    images = len(plan.evaluated) + (0 if plan.fit_is_evaluated else len(plan.fitting))
    return {"inference_s": seconds, "images_per_s": images / seconds if seconds > 0 else None}
