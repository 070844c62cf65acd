"""`cfimg demo`: the whole job on built-in synthetic photos, each step a library call.

synthesise a labelled set -> train the default recipe -> evaluate on the held-out test split and
store an operating point -> export fp32 and int8 ONNX -> classify a folder of fresh photos with
the exported model -> write the review page -> summarise where everything is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cfimg.errors import UsageError


@dataclass(frozen=True)
class DemoSettings:
    n_images: int  # labelled synthetic photos to train, validate and test on
    n_incoming: int  # fresh, unlabelled-to-the-model photos to classify
    size_px: int  # side of the synthetic photos
    difficulty: str
    img_size_px: int | None  # the network's inference frame; None: the training default (384)
    epochs: int
    target_fpr: float  # operating point: flag at most this fraction of genuine items


# Sized to finish in under 8 minutes on 2 CPU cores, with the default recipe (a 384 px frame,
# 224 px native-scale crops, the stem and four stages frozen, relation pooling). The `easy`
# defects, so that a model trained that briefly shows something; the medium set is the
# benchmark (BENCHMARKS.md). Many photos for few epochs, not few photos for many: in the same
# minutes more photos is what the network learns more from (BENCHMARKS.md, "Recipe ablation,
# round 4"), and the generator makes them faster than training reads them; the test split is
# larger, so its figure is steadier too. A fourth epoch was level (round 9: best epoch 3, test
# ROC-AUC 0.752 against 0.743) and slower.
FULL = DemoSettings(
    n_images=3000,
    n_incoming=200,
    size_px=384,
    difficulty="easy",
    img_size_px=None,
    epochs=3,
    target_fpr=0.05,
)
QUICK = DemoSettings(
    n_images=320,
    n_incoming=60,
    size_px=256,
    difficulty="easy",
    img_size_px=160,
    epochs=3,
    target_fpr=0.05,
)


@dataclass
class DemoSummary:
    out_dir: Path
    settings: DemoSettings
    steps_s: dict[str, float] = field(default_factory=dict)  # seconds per step
    artefacts: dict[str, Path] = field(default_factory=dict)
    numbers: dict[str, float | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_demo(
    out_dir: str | Path,
    *,
    quick: bool = False,
    settings: DemoSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoSummary:
    """Run every step into `out_dir`; each step's output feeds the next. `settings` overrides the
    FULL / QUICK presets (tests use a tiny one)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"{out}: folder exists and is not empty; pass --overwrite or another --out"
        )
    settings = settings or (QUICK if quick else FULL)
    summary = DemoSummary(out_dir=out, settings=settings)

    def step(name: str, action: Callable[[], object]):
        log(f"[demo] {name} ...")
        started = time.perf_counter()
        result = action()
        summary.steps_s[name] = time.perf_counter() - started
        log(f"[demo] {name}: done in {summary.steps_s[name]:.0f} s")
        return result

    data_dir = step(
        "synthesise labelled photos", lambda: _synthesise(out / "data", settings, 0, progress)
    )
    run = step("train", lambda: _train(data_dir, out / "run", settings, progress, log))
    evaluation = step("evaluate", lambda: _evaluate(run, settings))
    exported = step("export ONNX (fp32 + int8)", lambda: _export(run, summary))
    incoming = step(
        "synthesise fresh photos",
        lambda: _synthesise(out / "incoming", settings, 1, progress, n=settings.n_incoming),
    )
    predictions = step(
        "predict", lambda: _predict(exported, incoming, out / "predictions.csv", progress)
    )
    review = step("review page", lambda: _review(out / "predictions.csv", out / "review", run))

    best = run.best_metrics
    report = evaluation.report
    summary.numbers.update(
        {
            "val balanced accuracy (best epoch)": best.get("balanced_accuracy", float("nan")),
            "test balanced accuracy": report["metrics"]["balanced_accuracy"],
            "test ROC-AUC": report["metrics"]["roc_auc"],
            "operating threshold": report["threshold"]["value"],
            "temperature": run.temperature,
            "predict images/s": predictions.images_per_s,
            "predicted counterfeit": predictions.verdict_counts.get("counterfeit", 0),
            "predicted genuine": predictions.verdict_counts.get("genuine", 0),
        }
    )
    summary.artefacts.update(
        {
            "dataset": data_dir,
            "run": run.run_dir,
            "eval report": evaluation.out_dir / "report.md",
            "onnx fp32": exported,
            "predictions": out / "predictions.csv",
            "review page": review,
        }
    )
    return summary


def _synthesise(
    folder: Path, settings: DemoSettings, seed: int, progress: bool, n: int | None = None
) -> Path:
    from cfimg.synth import generate_dataset

    generate_dataset(
        folder,
        n_images=n or settings.n_images,
        seed=seed,
        difficulty=settings.difficulty,
        size_px=settings.size_px,
        progress=progress,
        overwrite=True,
    )
    return folder


def _train(data_dir: Path, run_dir: Path, settings: DemoSettings, progress: bool, log):
    from cfimg.train import TrainConfig, train

    config = TrainConfig(
        data=str(data_dir),
        img_size_px=settings.img_size_px,
        epochs=settings.epochs,
        out=str(run_dir),
        overwrite=True,
        early_stop_patience=0,
    )
    return train(config, progress=progress, log=log)


def _evaluate(run, settings: DemoSettings):
    from cfimg.evaluate import evaluate

    return evaluate(
        run.run_dir,
        split="test",
        target_fpr=settings.target_fpr,
        save_threshold=True,
        n_bootstrap=200,
    )


def _export(run, summary: DemoSummary) -> Path:
    """fp32 and int8 together; when int8 is refused (it lost accuracy), export still writes the
    fp32 file, and the demo goes on with it."""
    from cfimg.export import export_onnx
    from cfimg.export.report import ExportError

    fp32 = run.run_dir / "model.onnx"
    try:
        report = export_onnx(run.run_dir, fp32, int8=True)
    except ExportError as exc:
        if exc.report is None or not exc.report.models[0].written:
            raise
        summary.notes.append(f"int8 export refused, fp32 only: {exc}")
        report = exc.report
    summary.notes.extend(report.notes)  # e.g. which layers int8 kept in float
    for model in report.models:
        if model.precision != "int8":
            continue
        if model.written:
            summary.artefacts["onnx int8"] = model.path
            if model.speedup_batch32:
                summary.numbers["int8 speed-up vs fp32 (batch 32)"] = model.speedup_batch32
        if model.accuracy_change_points is not None:
            summary.numbers["int8 accuracy change (points)"] = model.accuracy_change_points
    return fp32


def _predict(model_path: Path, incoming: Path, out_csv: Path, progress: bool):
    from cfimg.predict import predict_paths

    return predict_paths(
        model_path, [str(incoming)], out_csv, overwrite=True, sort=True, progress=progress
    )


def _review(results: Path, review_dir: Path, run) -> Path:
    from cfimg.review import write_review

    return write_review(results, review_dir, model_path=run.run_dir, top_k=12)
