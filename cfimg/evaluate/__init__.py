"""`cfimg eval` as a library: score a labelled dataset with a model file and report on it.

evaluate(model_path, data_source=None, ...) runs the model (a checkpoint / run folder on PyTorch,
or on the CPU through an fp32 ONNX export of it in memory; an exported .onnx on onnxruntime;
through cfimg.engines) over the evaluated split, fits the
temperature and any operating point on the *validation* split, computes metrics with bootstrap
intervals and per-category/brand breakdowns, writes the report (cfimg.report documents
report.json) and, when asked, stores the temperature and operating point in the checkpoint's
model card, from where `cfimg export` and `cfimg predict` pick them up.

The steps, one module each:
- plan: the request and its checks; which data is evaluated and which fits (see its docstring).
- scoring: the engine over the samples, giving logits and p_counterfeit.
- cfimg.operating: the threshold and uncertain band applied (the card's, or fitted).
- sections: report.json's sections; cfimg.report writes the files.
- items: the item-level section (one verdict per listing, per aggregation rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cfimg import __version__
from cfimg.calibration import fit_temperature, remap_threshold
from cfimg.card import ModelCard
from cfimg.errors import UsageError
from cfimg.evaluate.items import THRESHOLD_PHOTO, items_section
from cfimg.evaluate.plan import (
    DEFAULT_BOOTSTRAP,
    SPLIT_CHOICES,
    SPLIT_CSV,
    DataPlan,
    check_band,
    check_request,
    default_out_dir,
    parse_band,
    plan_data,
    resolve_target,
    run_folder_of,
)
from cfimg.evaluate.scoring import Scored, p_at_temperature, score_plan, score_samples
from cfimg.evaluate.sections import (
    band_section,
    calibration_section,
    data_section,
    metric_sections,
    misclassified,
    model_section,
    timing_section,
)
from cfimg.items import check_item_rule
from cfimg.metrics import reliability_bins
from cfimg.operating import Target, choose_operating_point, target_check
from cfimg.report import REPORT_SCHEMA

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "REPORT_SCHEMA",
    "SPLIT_CHOICES",
    "SPLIT_CSV",
    "DataPlan",
    "EvalResult",
    "Scored",
    "Target",
    "check_band",
    "default_out_dir",
    "evaluate",
    "misclassified",
    "p_at_temperature",
    "parse_band",
    "plan_data",
    "resolve_target",
    "run_folder_of",
    "score_samples",
    "target_check",
]


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
    item_rule: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    write_plots: bool = True,
    onnx_on_cpu: bool = True,
) -> EvalResult:
    """Evaluate a model on a labelled dataset and write the report; see the module docstring.

    `item_rule` (default: the card's) is the item aggregation rule whose fitted item threshold
    --save-threshold stores with the photo threshold; the report measures every rule.

    `onnx_on_cpu`: a checkpoint evaluated on the CPU is scored by onnxruntime through an fp32
    export in memory (cfimg.engines.onnx_twin), several times faster than PyTorch eager and the
    same within 1e-4; the report's model.device says which ran. False: PyTorch.

    `progress(done, total)` is called after each batch. Raises ModelFileError (bad model),
    DatasetError (no data, no readable image) and UsageError (impossible requests). When
    --save-threshold meets an unreachable target, the report is written, nothing of the
    operating point is saved, and UsageError is raised last.
    """
    from cfimg.engines import is_onnx_path, load_engine, onnx_twin
    from cfimg.report import write_report

    model_path = Path(model_path)
    is_onnx = is_onnx_path(model_path)
    target = check_request(
        is_onnx=is_onnx,
        batch_size=batch_size,
        n_bootstrap=n_bootstrap,
        targets=(target_fpr, target_precision, target_recall),
        band=uncertain_band,
        uncertain_frac=uncertain_frac,
        save_threshold=save_threshold,
        calibrate=calibrate,
    )
    if item_rule is not None:
        check_item_rule(item_rule)

    engine = load_engine(model_path, device=device, threads=threads)
    if onnx_on_cpu:
        engine = onnx_twin(engine, threads=threads)
    card = engine.card
    plan = plan_data(model_path, data_source, split, is_onnx=is_onnx, group_regex=group_regex)
    evaluated, fitting = score_plan(
        engine, plan, batch_size=batch_size, workers=workers, progress=progress
    )

    column = card.counterfeit_index
    temperature_fitted = fit_temperature(fitting.logits, fitting.labels)
    temperature_used = temperature_fitted if calibrate else card.temperature
    if calibrate:
        eval_p = p_at_temperature(evaluated, temperature_used, column)
        fit_p = p_at_temperature(fitting, temperature_used, column)
    else:  # exactly what the engine (and so `cfimg predict`) outputs
        eval_p, fit_p = evaluated.p_counterfeit, fitting.p_counterfeit
    threshold, band, operating = choose_operating_point(
        card,
        target,
        uncertain_band,
        uncertain_frac,
        fitting.labels,
        fit_p,
        temperature=temperature_used,
        fit_split=plan.fit_split,
        evaluated_split=plan.split,
        notes=plan.notes,
    )
    p_fitted = p_at_temperature(evaluated, temperature_fitted, column)
    items = items_section(
        card,
        (evaluated.samples, eval_p),
        (fitting.samples, fit_p),
        rule=check_item_rule(item_rule or card.item_rule),
        target=target,
        card_item_threshold=None
        if card.item_threshold is None
        else remap_threshold(card.item_threshold, card.temperature, temperature_used),
        photo_threshold=threshold,
        split=plan.split,
        fit_split=plan.fit_split,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    report = {
        "schema": REPORT_SCHEMA,
        "cfimg_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(),
        "model": model_section(model_path, is_onnx, engine),
        "data": data_section(plan, evaluated, fitting),
        "threshold": {
            "value": threshold,
            "source": operating["source"],
            "split": operating["split"],
        },
        "metrics": None,  # filled below, kept here so the key order reads top-down
        "operating_point": operating["point"],
        "uncertain_band": band_section(band, evaluated, eval_p, fitting, fit_p, threshold, plan),
        "calibration": calibration_section(
            plan,
            card,
            evaluated,
            fitting,
            temperature_fitted=temperature_fitted,
            applied=calibrate,
            p_raw=p_at_temperature(evaluated, 1.0, column),
            p_fitted=p_fitted,
        ),
        **metric_sections(evaluated, eval_p, threshold, plan.split, n_bootstrap, seed),
        "items": items,
        "misclassified": misclassified(evaluated, eval_p, threshold, band),
        "failed": evaluated.failures + ([] if plan.fit_is_evaluated else fitting.failures),
        "notes": plan.notes,
        "timing": timing_section(evaluated, fitting, plan),
        "saved": {
            "checkpoint": None,
            "threshold": False,
            "uncertain_band": False,
            "temperature": False,
            "item_threshold": False,
        },
        "files": {},
    }
    point = operating["point"]
    if point is not None:
        point["eval"] = {**report["metrics"], **target_check(report["metrics"], target)}
        point["eval"].pop("ci")

    saved_card = card
    if save_threshold or calibrate:
        saved_card = store_in_checkpoint(
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
    if save_threshold and point is not None and not point["reachable"]:
        raise UsageError(
            f"target {target.describe()} is not reachable on {plan.fit_split} (best "
            f"{point['achieved']:.4g} at threshold {point['threshold']:.4g}); threshold NOT "
            f"saved; report in {out}"
        )
    return EvalResult(report=report, out_dir=out, files=files, card=saved_card, scored=evaluated)


def store_in_checkpoint(
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
    """Store the temperature and/or operating point in the checkpoint's card; record in
    `report` what was saved.

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
        if card.item_threshold is not None:  # exact for max and mean_logit, close for noisy_or
            changes["item_threshold"] = remap_threshold(
                card.item_threshold, card.temperature, temperature
            )
        notes["temperature_fitted_on"] = fit_split
    if save_threshold and (point is None or point["reachable"]):
        if target is not None:
            changes["threshold"] = threshold
            notes["operating_point"] = f"{target.describe()} fitted on {fit_split}"
        changes["uncertain_band"] = band
        report["saved"]["threshold"] = target is not None
        report["saved"]["uncertain_band"] = band is not None
        changes.update(item_changes(report["items"], report["notes"]))
        report["saved"]["item_threshold"] = changes["item_threshold"] is not None
    if not changes:
        return card
    new_card = card.updated(**changes, metrics=notes)
    path = resolve_checkpoint_path(model_path)
    update_checkpoint_card(path, new_card)
    report["saved"]["checkpoint"] = str(path)
    report["saved"]["temperature"] = bool(calibrate)
    report["calibration"]["stored"] = bool(calibrate)
    return new_card


def item_changes(items: dict, notes: list[str]) -> dict:
    """The item rule and threshold --save-threshold stores: the fitted one, or None (items are
    then judged as photos) when it fell back to the photo threshold or missed its target."""
    rule = items["rule"]
    fitted = items["rules"][rule]
    threshold = fitted["threshold"]
    if fitted["threshold_source"] == THRESHOLD_PHOTO:
        threshold = None
    elif not fitted["reachable"]:
        notes.append(
            f"the item threshold ({rule}) does not reach {fitted['threshold_source']} on "
            f"{items['fit_split']}; items are judged by the photo threshold"
        )
        threshold = None
    return {"item_rule": rule, "item_threshold": threshold}
