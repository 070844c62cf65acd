"""The files in a run folder: config.json, split.csv's companions skipped.csv and metrics.csv,
curves.png, and the checkpoints last.pt (everything a resume needs) and best.pt (the best
validated weights, with their validation logits for the temperature fitted at the end)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cfimg.calibration import fit_temperature
from cfimg.card import ModelCard
from cfimg.checkpoint import card_from_checkpoint, load_checkpoint, save_checkpoint
from cfimg.data import Sample
from cfimg.distributed import DistributedContext
from cfimg.errors import UsageError
from cfimg.fileio import atomic_write_bytes, atomic_write_text
from cfimg.labels import CLASS_NAMES
from cfimg.models import get_arch
from cfimg.preprocess import Preprocessing
from cfimg.train.config import TrainConfig
from cfimg.train.optim import NO_WEIGHT_DECAY_RULE, TrainingParts, load_optimizer_state

METRICS_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
    "lr",
    "images_per_s",
    "data_wait_frac",
    "elapsed_s",
)
CARD_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "ece", "n")


# --- the folder and its description ------------------------------------------------------------


def _new_run_dir(config: TrainConfig) -> Path:
    if config.out:
        return Path(config.out)
    if config.name:
        return Path("models") / config.name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("models") / f"{config.arch}-{config.resolved_img_size_px()}px-{stamp}"


def prepare_run_dir(config: TrainConfig, resume_dir: str | None, ctx: DistributedContext) -> Path:
    """The run folder; a run is never overwritten unless asked."""
    if resume_dir:
        return Path(resume_dir)
    run_dir = Path(ctx.broadcast(str(_new_run_dir(config)) if ctx.is_main else None))
    if ctx.is_main:
        if run_dir.exists() and any(run_dir.iterdir()) and not config.overwrite:
            raise UsageError(
                f"{run_dir}: run folder exists; pass --overwrite to replace it "
                f"or --resume {run_dir} to continue it"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("last.pt", "best.pt", "metrics.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    ctx.barrier()
    return run_dir


def write_config(
    run_dir: Path,
    config: TrainConfig,
    prep: Preprocessing,
    samples: list[Sample],
    fingerprint: str,
    skipped: dict[str, str],
    ctx: DistributedContext,
) -> None:
    """config.json: the config as given, what it resolved to, and the software it ran on."""
    from cfimg.benchutil import machine_summary

    counts = {
        split: {
            name: sum(1 for s in samples if s.split == split and s.label == i)
            for i, name in enumerate(CLASS_NAMES)
        }
        for split in sorted({s.split for s in samples})
    }
    document = {
        "config": config.to_dict(),
        "resolved": {
            "img_size_px": prep.img_size_px,
            "preprocessing": prep.to_dict(),
            "class_names": list(CLASS_NAMES),
            "device": ctx.device,
            "world_size": ctx.world_size,
            "data_fingerprint": fingerprint,
            "split_counts": counts,
            "skipped_unreadable": len(skipped),
            "weights_source": get_arch(config.arch).weights_source
            if config.pretrained
            else (config.weights_path or "scratch"),
            "no_weight_decay": NO_WEIGHT_DECAY_RULE,
        },
        "versions": machine_summary(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(document, indent=2, default=str) + "\n")


def write_skipped(run_dir: Path, skipped: dict[str, str]) -> None:
    """skipped.csv: the unreadable files left out, with reasons (none: no file)."""
    if not skipped:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(skipped.items()))
    atomic_write_text(run_dir / "skipped.csv", buffer.getvalue())


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv: one row per epoch, METRICS_COLUMNS."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


def plot_curves(run_dir: Path, history: list[dict]) -> None:
    """curves.png: train and val loss, and the val metrics, per epoch."""
    if not history:
        return
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    losses, scores = figure.subplots(1, 2)
    losses.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    losses.plot(epochs, [r["val_loss"] for r in history], label="val loss")
    losses.set_xlabel("epoch")
    losses.legend()
    for key in ("accuracy", "balanced_accuracy", "roc_auc"):
        scores.plot(epochs, [r[key] for r in history], label=f"val {key}")
    scores.set_xlabel("epoch")
    scores.set_ylim(0, 1.02)
    scores.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(run_dir / "curves.png", buffer.getvalue())


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """What every checkpoint of a run is labelled with."""

    run_dir: Path
    config: TrainConfig
    prep: Preprocessing
    fingerprint: str  # of the dataset, cfimg.data.dataset_fingerprint

    def card(self, epoch: int, metrics: dict) -> ModelCard:
        headline = {k: metrics[k] for k in CARD_METRICS if k in metrics}
        return ModelCard(
            arch=self.config.arch,
            head=self.config.head(),
            preprocessing=self.prep,
            metrics={**headline, "epoch": epoch, "split": "val"},
            data_fingerprint=self.fingerprint,
            model_id=f"{self.run_dir.name}@{epoch}",
        )


@dataclass
class RunProgress:
    """Where a run stands; stored in last.pt as `progress`, so a resume continues from it."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    global_step: int = 0
    best_score: float = -math.inf  # of config.select_metric; NaN scores count as -inf
    best_epoch: int = -1
    since_best: int = 0  # epochs without improvement, for early stopping
    history: list[dict] = field(default_factory=list)  # metrics.csv rows
    # The epoch's running loss, so a resumed epoch reports the same train_loss as an
    # uninterrupted one.
    loss_sum: float = 0.0
    seen: int = 0

    def start_next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch, self.loss_sum, self.seen = 0, 0.0, 0


def save_last(run: RunIdentity, progress: RunProgress, parts: TrainingParts) -> None:
    """last.pt: the inference weights (the EMA's when there is one) and all a resume needs."""
    train_state = {
        "model": parts.model.state_dict(),
        "ema": parts.ema.state_dict() if parts.ema else None,
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None,
    }
    save_checkpoint(
        run.run_dir / "last.pt",
        card=run.card(progress.epoch, {}),
        model_state=parts.inference_model.network.state_dict(),
        train_state={k: v for k, v in train_state.items() if v is not None},
        progress=asdict(progress),
    )


def restore_last(path: Path, parts: TrainingParts) -> RunProgress:
    """Load last.pt's training state into `parts`; return where the run stood."""
    payload = load_checkpoint(path)
    if "train_state" not in payload or "progress" not in payload:
        raise UsageError(f"{path}: has no training state to resume from")
    train_state = payload["train_state"]
    parts.model.load_state_dict(train_state["model"])
    if parts.ema is not None and "ema" in train_state:
        parts.ema.load_state_dict(train_state["ema"])
    load_optimizer_state(parts.optimizer, train_state["optimizer"], parts.model)
    if parts.scaler is not None and "scaler" in train_state:
        parts.scaler.load_state_dict(train_state["scaler"])
    progress = dict(payload["progress"])
    progress["history"] = [dict(row) for row in progress["history"]]
    return RunProgress(**progress)


def save_best(
    run: RunIdentity,
    epoch: int,
    metrics: dict,
    inference_model: nn.Module,
    val_logits: np.ndarray,
    val_labels: np.ndarray,
) -> None:
    """best.pt: the weights that scored best, with the validation logits they scored."""
    save_checkpoint(
        run.run_dir / "best.pt",
        card=run.card(epoch, metrics),
        model_state=inference_model.network.state_dict(),
        val_logits=torch.from_numpy(val_logits),
        val_labels=torch.from_numpy(val_labels),
    )


def calibrate_best(best_path: Path) -> float:
    """Fit a temperature on the best weights' validation logits and store it in their card."""
    payload = load_checkpoint(best_path)
    temperature = fit_temperature(payload["val_logits"].numpy(), payload["val_labels"].numpy())
    card = card_from_checkpoint(payload, best_path).updated(temperature=float(temperature))
    save_checkpoint(
        best_path,
        card=card,
        model_state=payload["model"],
        val_logits=payload["val_logits"],
        val_labels=payload["val_labels"],
    )
    return float(temperature)
