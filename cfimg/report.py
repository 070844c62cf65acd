"""The evaluation report: report.json, report.md, predictions.csv and PNG plots.

Every file is written atomically. report.json is the machine-readable record; its keys are
stable (new keys may be added, existing ones keep their meaning). NaN (an undefined metric,
e.g. ROC-AUC with one class) is written as null. Probabilities are p_counterfeit at the
temperature in use; a threshold means "p_counterfeit >= threshold is a counterfeit verdict".

report.json (schema "cfimg.eval/1"):
  schema, cfimg_version, created_utc
  model: path, kind ("checkpoint"|"onnx"), arch, model_id, device, img_size_px,
         card_threshold, card_uncertain_band ([low, high] | null), card_temperature,
         card_item_rule, card_item_threshold (null: items are judged as photos)
  data: source, split (evaluated split: val|test|train|all), n_images, n_scored, n_failed,
        n_items (distinct item ids | null), n_genuine, n_counterfeit, fingerprint,
        fit_split (where temperature/thresholds were fitted), fit_is_evaluated, n_fit, class_names
  threshold: value, source ("model card" | "target FPR <= 0.01"...), split (fitted on | null)
  metrics (on data.split, at threshold.value): n, accuracy, balanced_accuracy, precision, recall,
        f1, fpr, roc_auc, pr_auc, ece, threshold, n_genuine, n_counterfeit, tn, fp, fn, tp, split,
        ci {metric: [low, high]} for accuracy, balanced_accuracy, precision, recall, f1, fpr,
        roc_auc, pr_auc, ece; ci_level (0.95), ci_unit ("item" | "image": what was resampled),
        ci_resamples
  operating_point: null | {target ("precision"|"recall"|"fpr"), target_value, threshold,
        reachable, achieved, tp, fp, tn, fn (counts on the fitting data), fitted_on,
        fit {metrics on the fitting split, split}, eval {metrics on the evaluated split, split,
        achieved, target_met}}
  uncertain_band: null | {low, high, eval {...}, fit {...}} where each of eval/fit holds
        n, n_uncertain, n_uncertain_genuine, n_uncertain_counterfeit, coverage,
        accuracy_decided, precision_decided, recall_decided, low, high, split
  calibration: fitted_on, n_fit, temperature_card, temperature_fitted, applied, stored,
        ece_raw (T=1), ece_before (card temperature), ece_after (fitted temperature),
        evaluated_split (ECEs are measured there)
  breakdown: {category: {name: metrics + ci}, brand: {name: metrics + ci}} ({} without them)
  counterfeit_types: {type: {n, recall (at threshold.value), roc_auc (against every genuine
        photo), n_alone, roc_auc_alone (photos with that type only)}}, from the manifest's
        `defects` column (semicolon-separated types); {} without it
  items (one verdict per item, cfimg.evaluate.items): split, fit_split, unit ("item_id" |
        "image": no item ids, every photo its own item), n_items, n_genuine, n_counterfeit,
        n_fit_items, photos_per_item {"1": n, ...}, rule (whose threshold --save-threshold
        stores), card_rule, threshold (that rule's), best_rule_on_fit (highest ROC-AUC on
        fit_split), rules {max|mean_logit|noisy_or: {threshold, threshold_source ("target ..."
        | "model card" | "max balanced accuracy" | "photo threshold"), reachable, n, roc_auc,
        balanced_accuracy, accuracy, precision, recall, fpr, pr_auc, tp, fp, tn, fn (on split,
        at threshold), ci {roc_auc, balanced_accuracy} (bootstrap over items), fit {n, roc_auc,
        balanced_accuracy} (on fit_split)}}
  misclassified: [{path, label, predicted, uncertain, p_counterfeit, error, category, brand,
        item_id}], worst (largest |label - p_counterfeit|) first
  failed: [{path, reason}] images that could not be read
  notes: [str] warnings a reader must see
  timing: inference_s, images_per_s
  saved: checkpoint (path | null), threshold, uncertain_band, temperature, item_threshold (bools)
  files: {name: path} of everything written (report_json, report_md, predictions_csv, roc_png,
        pr_png, confusion_png, reliability_png, histogram_png)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from cfimg.card import VERDICT_COUNTERFEIT, VERDICT_GENUINE, VERDICT_UNCERTAIN, is_counterfeit
from cfimg.fileio import atomic_write_bytes, atomic_write_text
from cfimg.labels import CLASS_NAMES
from cfimg.operating import in_uncertain_band, target_sign

REPORT_SCHEMA = "cfimg.eval/1"
MISCLASSIFIED_SHOWN_MD = 50
PLOTS = ("roc", "pr", "confusion", "reliability", "histogram")
CLASS_COLOURS = {"genuine": "tab:green", "counterfeit": "tab:red"}


def json_safe(value):
    """NaN/inf -> None, numpy scalars -> Python, tuples -> lists: strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(
    report: dict,
    scored,
    p_counterfeit: np.ndarray,
    curves: dict,
    out_dir: Path,
    *,
    write_plots=True,
) -> dict[str, str]:
    """Write everything into `out_dir`; fills report["files"] and returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "report_json": str(out_dir / "report.json"),
        "report_md": str(out_dir / "report.md"),
        "predictions_csv": str(out_dir / "predictions.csv"),
    }
    if write_plots:
        files.update({f"{name}_png": str(out_dir / f"{name}.png") for name in PLOTS})
    report["files"] = files
    write_predictions_csv(Path(files["predictions_csv"]), scored, p_counterfeit, report)
    if write_plots:
        write_plot_files(out_dir, curves, report)
    atomic_write_text(files["report_md"], markdown(report))
    atomic_write_text(
        files["report_json"], json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    )
    return files


def write_predictions_csv(path: Path, scored, p_counterfeit: np.ndarray, report: dict) -> None:
    threshold = report["threshold"]["value"]
    band = report["uncertain_band"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["path", "label", "p_counterfeit", "predicted", "verdict", "correct", "category", "brand",
         "item_id", *(f"logit_{name}" for name in CLASS_NAMES)]
    )  # fmt: skip
    for sample, p, logits in zip(scored.samples, p_counterfeit, scored.logits, strict=True):
        predicted = VERDICT_COUNTERFEIT if is_counterfeit(p, threshold) else VERDICT_GENUINE
        uncertain = band and in_uncertain_band(p, (band["low"], band["high"]))
        verdict = VERDICT_UNCERTAIN if uncertain else predicted
        writer.writerow(
            [sample.path, sample.label_name, f"{float(p):.6f}", predicted, verdict,
             int(predicted == sample.label_name), sample.category, sample.brand, sample.item_id,
             *(f"{float(logit):.6f}" for logit in logits)]
        )  # fmt: skip
    atomic_write_text(path, buffer.getvalue())


# --- plots --------------------------------------------------------------------------------


def _figure(width_in: float = 5.0, height_in: float = 4.2):
    # A bare Figure with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def write_plot_files(out_dir: Path, curves: dict, report: dict) -> None:
    from sklearn import metrics as skm

    labels, p = curves["labels"], curves["p_counterfeit"]
    threshold = report["threshold"]["value"]
    m = report["metrics"]
    split = report["data"]["split"]
    both = len(np.unique(labels)) == 2
    marker = {"marker": "o", "color": "crimson", "zorder": 3}

    figure = _figure()
    axes = figure.add_subplot()
    if both:
        fpr, tpr, _ = skm.roc_curve(labels, p)
        axes.plot(fpr, tpr, label=f"ROC-AUC {m['roc_auc']:.3f}")
        axes.scatter([m["fpr"]], [m["recall"]], label=f"threshold {threshold:.3g}", **marker)
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="false-positive rate (genuine flagged)", ylabel="recall (counterfeits caught)")
    axes.set_title(f"ROC ({split}, n={m['n']})")
    axes.legend(loc="lower right")
    _save(figure, out_dir / "roc.png")

    figure = _figure()
    axes = figure.add_subplot()
    if both:
        precision, recall, _ = skm.precision_recall_curve(labels, p)
        axes.step(recall, precision, where="post", label=f"PR-AUC (AP) {m['pr_auc']:.3f}")
        axes.scatter([m["recall"]], [m["precision"]], label=f"threshold {threshold:.3g}", **marker)
        axes.axhline(labels.mean(), linestyle=":", color="grey", label="prevalence")
    axes.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    axes.set_title(f"Precision-recall ({split})")
    axes.legend(loc="lower left")
    _save(figure, out_dir / "pr.png")

    _confusion_plot(out_dir / "confusion.png", m, threshold, split)
    _reliability_plot(out_dir / "reliability.png", curves, report)

    figure = _figure(6.0, 4.0)
    axes = figure.add_subplot()
    edges = np.linspace(0, 1, 41)
    for label, name in enumerate(CLASS_NAMES):
        axes.hist(p[labels == label], bins=edges, alpha=0.6, label=name, color=CLASS_COLOURS[name])
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    band = report["uncertain_band"]
    if band:
        axes.axvspan(band["low"], band["high"], color="gold", alpha=0.25, label="uncertain")
    axes.set(xlabel="p_counterfeit", ylabel="images", title=f"Scores by true class ({split})")
    axes.legend()
    _save(figure, out_dir / "histogram.png")


def _confusion_plot(path: Path, m: dict, threshold: float, split: str) -> None:
    figure = _figure(4.4, 4.0)
    axes = figure.add_subplot()
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    axes.imshow(counts, cmap="Blues")
    for (row, col), value in np.ndenumerate(counts):
        colour = "white" if value > counts.max() / 2 else "black"
        axes.text(col, row, str(value), ha="center", va="center", color=colour, fontsize=14)
    axes.set_xticks([0, 1], list(CLASS_NAMES))
    axes.set_yticks([0, 1], list(CLASS_NAMES))
    axes.set(xlabel="predicted", ylabel="true", title=f"Confusion ({split}, t={threshold:.3g})")
    _save(figure, path)


def _reliability_plot(path: Path, curves: dict, report: dict) -> None:
    calibration = report["calibration"]
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot([0.5, 1], [0.5, 1], ":", color="grey", label="perfect calibration")
    for key, name in (
        ("reliability_before", f"T={calibration['temperature_card']:.3g}, "
         f"ECE {calibration['ece_before']:.3f}"),
        ("reliability_after", f"fitted T={calibration['temperature_fitted']:.3g}, "
         f"ECE {calibration['ece_after']:.3f}"),
    ):  # fmt: skip
        table = curves[key]
        filled = table["count"] > 0
        axes.plot(table["confidence"][filled], table["accuracy"][filled], "o-", label=name)
    axes.set(
        xlabel="confidence of the predicted class",
        ylabel="accuracy",
        xlim=(0.5, 1.0),
        ylim=(0.0, 1.02),
        title=f"Reliability ({report['data']['split']})",
    )
    axes.legend(loc="lower right")
    _save(figure, path)


# --- markdown -----------------------------------------------------------------------------


def format_metric(value, digits: int = 3) -> str:
    """A metric for people: "n/a" when undefined (None, NaN), a count as it is."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def _ci(ci: dict, name: str) -> str:
    low, high = ci.get(name, [None, None])
    if low is None or not math.isfinite(low):
        return "n/a"
    return f"[{low:.3f}, {high:.3f}]"


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table: a header line, its rule, one line per row."""

    def line(cells) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


HEADLINE = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("precision", "Precision (counterfeit)"),
    ("recall", "Recall (counterfeit)"),
    ("f1", "F1 (counterfeit)"),
    ("fpr", "False-positive rate (genuine flagged)"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC (average precision)"),
    ("ece", "Expected calibration error"),
)


def markdown(report: dict) -> str:
    model, data, m = report["model"], report["data"], report["metrics"]
    threshold = report["threshold"]
    lines = [
        f"# cfimg evaluation: {model['model_id'] or Path(model['path']).name}",
        "",
        f"- Model: `{model['path']}` ({model['kind']}, {model['arch']}, {model['device']})",
        f"- Data: `{data['source']}`, split **{data['split']}**: {data['n_scored']} images "
        f"({data['n_genuine']} genuine, {data['n_counterfeit']} counterfeit"
        + (f", {data['n_items']} items" if data["n_items"] else "")
        + f"), {data['n_failed']} unreadable; fingerprint {data['fingerprint']}",
        f"- Threshold {threshold['value']:.4g} ({threshold['source']}"
        + (f", fitted on {threshold['split']}" if threshold["split"] else "")
        + "); temperature and thresholds fitted on: "
        + data["fit_split"],
        f"- Created {report['created_utc']} by cfimg {report['cfimg_version']}",
        "",
    ]
    lines += [f"> **Note:** {note}" for note in report["notes"]]
    lines += [
        "",
        f"## Metrics on {data['split']} at threshold {threshold['value']:.4g}",
        "",
        f"95% intervals: bootstrap over {m['ci_unit']}s, {m['ci_resamples']} resamples.",
        "",
    ]
    lines += _table(
        ["metric", "value", "95% CI"],
        [[title, format_metric(m[key]), _ci(m["ci"], key)] for key, title in HEADLINE],
    )
    lines += [""]
    lines += _table(
        ["true \\ predicted", *CLASS_NAMES],
        [["genuine", m["tn"], m["fp"]], ["counterfeit", m["fn"], m["tp"]]],
    )
    lines += [""]
    lines += _operating_md(report) + _band_md(report) + _calibration_md(report)
    for by in ("category", "brand"):
        lines += _breakdown_md(by, report["breakdown"][by])
    lines += _types_md(report["counterfeit_types"])
    lines += _items_md(report)
    lines += _misclassified_md(report)
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name}.png)" for name in PLOTS if f"{name}_png" in report["files"]]
    return "\n".join(lines) + "\n"


def _operating_md(report: dict) -> list[str]:
    point = report["operating_point"]
    if point is None:
        return []
    fit, ev = point["fit"], point["eval"]
    reach = "reached" if point["reachable"] else "NOT reachable; closest threshold shown"
    met = {True: "met", False: "NOT met", None: "undefined"}[ev["target_met"]]
    name = point["target"]

    def row(m: dict, role: str) -> list:
        rates = [format_metric(m[key]) for key in ("precision", "recall", "fpr", "f1")]
        return [m["split"], role, *rates, m["tp"], m["fp"], m["tn"], m["fn"]]

    return [
        "## Operating point",
        "",
        f"Target {name} {target_sign(name)} {point['target_value']:g}: "
        f"threshold {point['threshold']:.6g}, fitted on {point['fitted_on']} ({reach}).",
        "",
        *_table(
            ["split", "role", "precision", "recall", "FPR", "F1", "tp", "fp", "tn", "fn"],
            [row(fit, "fitted"), row(ev, f"evaluated (target {met})")],
        ),
        "",
    ]


def _band_md(report: dict) -> list[str]:
    band = report["uncertain_band"]
    if band is None:
        return []
    header = ["split", "uncertain", "coverage", "accuracy decided", "precision decided",
              "recall decided"]  # fmt: skip
    rates = ("coverage", "accuracy_decided", "precision_decided", "recall_decided")
    rows = [
        [row["split"], f"{row['n_uncertain']} of {row['n']}",
         *(format_metric(row[key]) for key in rates)]
        for row in (band["fit"], band["eval"])
    ]  # fmt: skip
    return [
        "## Uncertain band",
        "",
        f"p_counterfeit in [{band['low']:.4g}, {band['high']:.4g}) answers *uncertain*.",
        "",
        *_table(header, rows),
        "",
    ]


def _calibration_md(report: dict) -> list[str]:
    c = report["calibration"]
    state = "applied and stored" if c["stored"] else "applied" if c["applied"] else "not applied"
    return [
        "## Calibration",
        "",
        f"Temperature fitted on {c['fitted_on']} ({c['n_fit']} images): "
        f"{c['temperature_fitted']:.4g} (model card: {c['temperature_card']:.4g}; {state}).",
        f"ECE on {c['evaluated_split']}: {format_metric(c['ece_before'])} with the card's "
        f"temperature, {format_metric(c['ece_after'])} with the fitted one "
        f"({format_metric(c['ece_raw'])} uncalibrated, T=1).",
        "",
    ]


def _breakdown_md(by: str, table: dict) -> list[str]:
    if not table:
        return []
    header = [by, "n", *CLASS_NAMES, "accuracy", "precision", "recall", "FPR", "ROC-AUC (95% CI)"]
    rows = [
        [name, m["n"], m["n_genuine"], m["n_counterfeit"], format_metric(m["accuracy"]),
         format_metric(m["precision"]), format_metric(m["recall"]), format_metric(m["fpr"]),
         f"{format_metric(m['roc_auc'])} {_ci(m['ci'], 'roc_auc')}"]
        for name, m in table.items()
    ]  # fmt: skip
    return [f"## By {by}", "", *_table(header, rows), ""]


def _types_md(table: dict) -> list[str]:
    if not table:
        return []
    header = ["counterfeit type", "photos", "recall", "ROC-AUC vs genuine", "photos with it alone",
              "ROC-AUC alone"]  # fmt: skip
    worst_first = sorted(table.items(), key=lambda kv: (_nan_last(kv[1]["roc_auc"]), kv[0]))
    rows = [
        [name, m["n"], format_metric(m["recall"]), format_metric(m["roc_auc"]), m["n_alone"],
         format_metric(m["roc_auc_alone"])]
        for name, m in worst_first
    ]  # fmt: skip
    return [
        "## By counterfeit type",
        "",
        "Each type's counterfeit photos against every genuine photo, the least caught first. A "
        "photo with several types counts for each; *alone* is the photos with that type only.",
        "",
        *_table(header, rows),
        "",
    ]


def _nan_last(value: float | None) -> float:
    """A sort key putting undefined metrics (NaN, or None as report.json stores them) last."""
    return value if value is not None and math.isfinite(value) else math.inf


def _items_md(report: dict) -> list[str]:
    items, photo = report["items"], report["metrics"]
    photos = ", ".join(f"{n} with {k}" for k, n in items["photos_per_item"].items())
    header = ["rule", "n", "ROC-AUC (95% CI)", "balanced accuracy (95% CI)", "threshold",
              "fitted by", f"ROC-AUC on {items['fit_split']}"]  # fmt: skip
    rows = [
        [f"**{name}**" if name == items["rule"] else name, m["n"],
         f"{format_metric(m['roc_auc'])} {_ci(m['ci'], 'roc_auc')}",
         f"{format_metric(m['balanced_accuracy'])} {_ci(m['ci'], 'balanced_accuracy')}",
         f"{m['threshold']:.4g}", m["threshold_source"], format_metric(m["fit"]["roc_auc"])]
        for name, m in items["rules"].items()
    ]  # fmt: skip
    rows.append(
        ["photos (for reference)", photo["n"], f"{format_metric(photo['roc_auc'])} "
         f"{_ci(photo['ci'], 'roc_auc')}", f"{format_metric(photo['balanced_accuracy'])} "
         f"{_ci(photo['ci'], 'balanced_accuracy')}", f"{photo['threshold']:.4g}",
         report["threshold"]["source"], ""]
    )  # fmt: skip
    unit = "" if items["unit"] == "item_id" else " (no item ids: every photo is its own item)"
    return [
        "## Items (listings)",
        "",
        f"{items['n_items']} items on {items['split']}{unit}: {items['n_genuine']} genuine, "
        f"{items['n_counterfeit']} counterfeit; {photos} photos. Item thresholds fitted on "
        f"{items['fit_split']} ({items['n_fit_items']} items). Best rule there: "
        f"{items['best_rule_on_fit']}; in bold the rule --save-threshold stores.",
        "",
        *_table(header, rows),
        "",
    ]


def _misclassified_md(report: dict) -> list[str]:
    rows = report["misclassified"]
    lines = [f"## Misclassified ({len(rows)}, worst first)", ""]
    if rows:
        lines += _table(
            ["p_counterfeit", "true", "predicted", "category", "brand", "path"],
            [
                [f"{row['p_counterfeit']:.4f}", row["label"],
                 row["predicted"] + (" (uncertain)" if row["uncertain"] else ""),
                 row["category"], row["brand"], f"`{row['path']}`"]
                for row in rows[:MISCLASSIFIED_SHOWN_MD]
            ],
        )  # fmt: skip
        if len(rows) > MISCLASSIFIED_SHOWN_MD:
            lines.append(f"\n{len(rows) - MISCLASSIFIED_SHOWN_MD} more in report.json.")
    failed = report["failed"]
    if failed:
        lines += ["", f"## Unreadable images ({len(failed)})", ""]
        lines += [f"- `{row['path']}`: {row['reason']}" for row in failed]
    return [*lines, ""]
