"""The training loop, read top to bottom: `train` sets a run up, `run_epochs` alternates
`train_one_epoch` (steps of `train_step`) and `validate`, keeps best.pt, writes metrics.csv and
last.pt, and stops early when the validation metric stops improving. At the end a temperature is
fitted on the validation logits of the best weights.

Reproducibility: every random draw is keyed by (seed, epoch, sample index) or (seed, step), so a
run resumed from last.pt, even one killed mid-epoch, ends with the same weights as an
uninterrupted one on the same device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cfimg.augment import mixup_batch
from cfimg.card import ModelCard
from cfimg.data import dataset_fingerprint, write_split_csv
from cfimg.distributed import DistributedContext, gather_arrays, init_distributed
from cfimg.engines import network_twin
from cfimg.errors import TrainingInterrupted
from cfimg.labels import CLASS_NAMES, COUNTERFEIT_INDEX
from cfimg.metrics import classification_metrics
from cfimg.models import ClassifierWithPreprocessing, create_model, head_parameter_names
from cfimg.preprocess import Preprocessing
from cfimg.train.config import TrainConfig, validate_config
from cfimg.train.loaders import EpochSampler, class_weights, make_loaders, resolve_samples
from cfimg.train.optim import (
    LrSchedule,
    TrainingParts,
    amp_dtype,
    freeze_stages,
    lr_schedule,
    make_ema,
    make_optimizer,
    set_learning_rate,
)
from cfimg.train.progress import epoch_bar, epoch_line
from cfimg.train.run_files import (
    RunIdentity,
    RunProgress,
    calibrate_best,
    plot_curves,
    prepare_run_dir,
    restore_last,
    save_best,
    save_last,
    write_config,
    write_metrics,
    write_skipped,
)


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    stopped_early: bool
    interrupted: bool  # stopped by stop_after_steps; resume with --resume
    temperature: float
    elapsed_s: float
    n_train: int
    n_val: int
    skipped: dict[str, str]  # unreadable files left out, with reasons


@dataclass(frozen=True)
class EpochStats:
    lr: float  # of the epoch's last step
    wait_s: float  # spent waiting for the loader
    train_s: float
    images: int  # trained by this rank in this process (a resumed epoch: since the resume)
    interrupted: bool  # by config.stop_after_steps


@dataclass(frozen=True)
class Validation:
    logits: np.ndarray  # [N, classes], every rank's shard
    labels: np.ndarray
    p_counterfeit: np.ndarray
    loss: float  # unweighted, unsmoothed cross-entropy; NaN without samples


def train(
    config: TrainConfig,
    *,
    resume_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or, with `resume_dir`, continue) a run; returns where it is and how it went."""
    validate_config(config)
    config = config.resolved()  # config.json records the recipe's automatic choices as made
    started = time.perf_counter()
    ctx = init_distributed(config.device)
    run_dir = None
    try:
        run_dir = prepare_run_dir(config, resume_dir, ctx)
        return _train(config, run_dir, bool(resume_dir), ctx, progress, log, started)
    except KeyboardInterrupt:
        # last.pt is written atomically: a Ctrl-C in the middle of a save keeps the previous one.
        if run_dir is not None and (run_dir / "last.pt").exists():
            raise TrainingInterrupted(
                f"interrupted; {run_dir / 'last.pt'} holds the progress: "
                f"cfimg train --resume {run_dir}"
            ) from None
        raise
    finally:
        ctx.close()


def _train(
    config: TrainConfig,
    run_dir: Path,
    resuming: bool,
    ctx: DistributedContext,
    show_progress: bool,
    log: Callable[[str], None],
    started: float,
) -> TrainResult:
    if config.threads and ctx.device == "cpu":
        torch.set_num_threads(config.threads)
    samples, skipped = resolve_samples(config, run_dir, resuming=resuming)
    prep = config.preprocessing()
    run = RunIdentity(run_dir, config, prep, dataset_fingerprint(samples))
    if ctx.is_main and not resuming:
        write_split_csv(samples, run_dir / "split.csv")
        write_skipped(run_dir, skipped)
        write_config(run_dir, config, prep, samples, run.fingerprint, skipped, ctx)
    train_loader, sampler, val_loader, train_samples, val_samples = make_loaders(
        samples, prep, config, ctx
    )
    parts = build_training_parts(config, prep, [s.label for s in train_samples], ctx)
    schedule = lr_schedule(config, max(1, math.ceil(sampler.per_rank / config.batch_size)))
    progress = RunProgress()
    # A run killed before its first checkpoint starts again from step 0, on its own split.
    if resuming and (run_dir / "last.pt").exists():
        progress = restore_last(run_dir / "last.pt", parts)
    interrupted, stopped_early = run_epochs(
        run,
        parts,
        train_loader,
        sampler,
        val_loader,
        schedule,
        progress,
        ctx,
        show_progress=show_progress,
        log=log,
        started=started,
    )
    temperature = 1.0
    if not interrupted and ctx.is_main:
        temperature = calibrate_best(run_dir / "best.pt")
        plot_curves(run_dir, progress.history)
    ctx.barrier()
    best_row = next((r for r in progress.history if r["epoch"] == progress.best_epoch), {})
    return TrainResult(
        run_dir=run_dir,
        best_epoch=progress.best_epoch,
        best_metrics=best_row,
        epochs_run=len(progress.history),
        stopped_early=stopped_early,
        interrupted=interrupted,
        temperature=temperature,
        elapsed_s=time.perf_counter() - started,
        n_train=len(train_samples),
        n_val=len(val_samples),
        skipped=skipped,
    )


def build_training_parts(
    config: TrainConfig, prep: Preprocessing, train_labels: list[int], ctx: DistributedContext
) -> TrainingParts:
    """The seeded model behind cfimg's uint8 preprocessing, AdamW, EMA, AMP and the loss."""
    torch.manual_seed(config.seed)
    network = create_model(
        config.arch,
        head=config.head(),
        pretrained=config.pretrained,
        weights_path=config.weights_path,
    )
    model = ClassifierWithPreprocessing(network, prep).to(ctx.device)
    if ctx.device.startswith("cuda") and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(config, ctx)
    weights = class_weights(train_labels, config.balance)
    criterion = nn.CrossEntropyLoss(
        weight=weights.to(ctx.device) if weights is not None else None,
        label_smoothing=config.label_smoothing,
    )
    head_names = {f"network.{name}" for name in head_parameter_names(network)}
    freeze_stages(model, config.resolved_freeze_stages(), head_names)
    trained = ctx.wrap(model)
    return TrainingParts(
        model=model,
        forward=torch.compile(trained, dynamic=False) if config.compile else trained,
        ema=make_ema(model, config.ema_decay),
        optimizer=make_optimizer(model, config, head_names),
        scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
        criterion=criterion,
        amp_dtype=dtype,
        head_names=head_names,
    )


def run_epochs(
    run: RunIdentity,
    parts: TrainingParts,
    train_loader: DataLoader,
    sampler: EpochSampler,
    val_loader: DataLoader,
    schedule: LrSchedule,
    progress: RunProgress,
    ctx: DistributedContext,
    *,
    show_progress: bool,
    log: Callable[[str], None],
    started: float,
) -> tuple[bool, bool]:
    """Train and validate until the last epoch or early stop; (interrupted, stopped_early)."""
    config = run.config
    while progress.epoch < config.epochs:
        stats = train_one_epoch(
            run, parts, train_loader, sampler, schedule, progress, ctx, show_bar=show_progress
        )
        if stats.interrupted:
            return True, False
        on_onnx = config.onnx_validation and ctx.device == "cpu"
        onnx_card = run.card(progress.epoch + 1, {}) if on_onnx else None
        val = validate(
            parts.inference_model, val_loader, ctx, onnx_card=onnx_card, threads=config.threads
        )
        metrics = classification_metrics(val.labels, val.p_counterfeit)
        row = {
            "epoch": progress.epoch + 1,
            "train_loss": ctx.mean(progress.loss_sum / max(progress.seen, 1)),
            "val_loss": val.loss,
            **{k: metrics[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")},
            "lr": stats.lr,
            "images_per_s": stats.images * ctx.world_size / max(stats.train_s, 1e-9),
            "data_wait_frac": stats.wait_s / max(stats.train_s, 1e-9),
            "elapsed_s": time.perf_counter() - started,
        }
        progress.history.append(row)
        score = metrics[config.select_metric]
        score = -math.inf if math.isnan(score) else score
        improved = score > progress.best_score
        if improved:
            progress.best_score, progress.best_epoch, progress.since_best = score, row["epoch"], 0
            if ctx.is_main:
                save_best(run, row["epoch"], metrics, parts.inference_model, val.logits, val.labels)
        else:
            progress.since_best += 1
        if ctx.is_main:
            write_metrics(run.run_dir, progress.history)
            log(epoch_line(row, improved, config.select_metric))
        progress.start_next_epoch()
        if ctx.is_main:
            save_last(run, progress, parts)
        if config.early_stop_patience and progress.since_best >= config.early_stop_patience:
            return False, True
    return False, False


def train_one_epoch(
    run: RunIdentity,
    parts: TrainingParts,
    loader: DataLoader,
    sampler: EpochSampler,
    schedule: LrSchedule,
    progress: RunProgress,
    ctx: DistributedContext,
    *,
    show_bar: bool,
) -> EpochStats:
    """This rank's shard of the epoch (after a resume, the rest of it), a step per batch;
    last.pt every config.save_every_steps steps and at config.stop_after_steps, where it stops."""
    config = run.config
    sampler.set_epoch(progress.epoch, skip=progress.step_in_epoch * config.batch_size)
    parts.train_mode()
    frozen = progress.epoch < config.freeze_backbone_epochs
    started = time.perf_counter()
    seen_before, wait_s, lr, interrupted = progress.seen, 0.0, None, False
    bar = epoch_bar(
        show_bar and ctx.is_main,
        f"epoch {progress.epoch + 1}/{config.epochs}",
        math.ceil(len(sampler) / config.batch_size),
    )
    waited_from = time.perf_counter()
    for images, labels in loader:
        wait_s += time.perf_counter() - waited_from
        images = images.to(ctx.device, non_blocking=True)
        if config.compile and images.device.type == "cpu":
            # A compiled CPU graph segfaulted on batches in the workers' shared memory
            # (torch 2.14); a private copy costs ~1 ms a batch.
            images = images.clone()
        labels = labels.to(ctx.device, non_blocking=True)
        lr = schedule.at(progress.global_step)
        seed = config.seed * 1_000_003 + progress.global_step
        loss = train_step(
            parts,
            images,
            labels,
            lr=lr,
            seed=seed,
            frozen=frozen,
            clip_norm=config.grad_clip_norm,
            mixup_alpha=config.mixup_alpha,
        )
        progress.loss_sum += loss * len(labels)
        progress.seen += len(labels)
        progress.step_in_epoch += 1
        progress.global_step += 1
        if bar:
            elapsed = time.perf_counter() - started
            ips = progress.seen * ctx.world_size / max(elapsed, 1e-9)
            bar.update(loss=progress.loss_sum / progress.seen, ips=ips)
        step = progress.global_step
        periodic = config.save_every_steps and step % config.save_every_steps == 0
        interrupted = bool(config.stop_after_steps) and step >= config.stop_after_steps
        if (periodic or interrupted) and ctx.is_main:
            save_last(run, progress, parts)
        if interrupted:
            break
        waited_from = time.perf_counter()
    if bar:
        bar.close()
    if lr is None:  # nothing left of the epoch after a resume: the rate its last step used
        lr = schedule.at(max(progress.global_step - 1, 0))
    train_s = time.perf_counter() - started
    return EpochStats(lr, wait_s, train_s, progress.seen - seen_before, interrupted)


def train_step(
    parts: TrainingParts,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lr: float,
    seed: int,
    frozen: bool,
    clip_norm: float,
    mixup_alpha: float = 0.0,
) -> float:
    """One optimizer step on a batch; returns its mean loss (with mixup, the blended loss)."""
    model, optimizer, scaler = parts.model, parts.optimizer, parts.scaler
    set_learning_rate(optimizer, lr)
    torch.manual_seed(seed)  # dropout and drop-path draws, keyed by step so a resume matches
    if mixup_alpha > 0:
        images, partner, lam = mixup_batch(images, mixup_alpha, seed)
    # Head-only phase: the backbone keeps its weights (no gradient, so AdamW skips it), and
    # without requires_grad autograd does not run its backward pass at all.
    held = [
        parameter
        for name, parameter in model.named_parameters()
        if frozen and parameter.requires_grad and name not in parts.head_names
    ]
    for parameter in held:
        parameter.requires_grad_(False)
    try:
        with torch.autocast(
            images.device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None
        ):
            _, logits = parts.forward(images)
            loss = parts.criterion(logits.float(), labels)
            if mixup_alpha > 0:
                loss = lam * loss + (1.0 - lam) * parts.criterion(logits.float(), labels[partner])
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
    finally:
        for parameter in held:
            parameter.requires_grad_(True)
    if scaler:
        scaler.unscale_(optimizer)
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.grad is not None], clip_norm
        )
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if parts.ema:
        parts.ema.update_parameters(model)
    return float(loss.detach())


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    ctx: DistributedContext,
    *,
    onnx_card: ModelCard | None = None,
    threads: int | None = None,
) -> Validation:
    """Predictions for the whole validation split, gathered from every rank, and their loss.
    With `onnx_card` (on the CPU), the weights are exported to ONNX in memory and scored by
    onnxruntime, as `cfimg eval` does: 3-4x faster than PyTorch eager there, where validation
    had taken a third of each epoch, and within 1e-5 of its probabilities (BENCHMARKS.md,
    round 9). A network the tracer cannot take is scored by PyTorch."""
    model.eval()
    twin = network_twin(model.network, onnx_card, threads=threads) if onnx_card else None
    logits, labels = [], []
    for images, batch_labels in loader:
        if twin is not None:
            logits.append(twin.predict(images.numpy())[1])
        else:
            _, batch_logits = model(images.to(ctx.device))
            logits.append(batch_logits.float().cpu().numpy())
        labels.append(batch_labels.numpy())
    no_logits = np.zeros((0, len(CLASS_NAMES)), np.float32)
    logits_all = gather_arrays(ctx, np.concatenate(logits) if logits else no_logits)
    labels_all = gather_arrays(ctx, np.concatenate(labels) if labels else np.zeros(0, np.int64))
    log_p = torch.log_softmax(torch.from_numpy(logits_all), dim=1)
    loss = (
        float(nn.functional.nll_loss(log_p, torch.from_numpy(labels_all).long()))
        if len(labels_all)
        else float("nan")
    )
    return Validation(logits_all, labels_all, log_p.exp()[:, COUNTERFEIT_INDEX].numpy(), loss)
