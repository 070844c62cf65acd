"""`cfimg train`: fine-tune a CNN on labelled photos, reproducibly and resumably.

One loop, read top to bottom in `train()`: resolve the data and its grouped split, build the
model behind cfimg's uint8 preprocessing wrapper, then per epoch train (AdamW, warm-up + cosine,
label smoothing, class weights, EMA, gradient clipping), validate with exactly the evaluation
preprocessing, write last.pt / best.pt / metrics.csv, and stop early when the validation metric
stops improving. At the end a temperature is fitted on the validation logits of the best weights.

Reproducibility: every random draw is keyed by (seed, epoch, sample index) or (seed, step), so a
run resumed from last.pt, even one killed mid-epoch, ends with the same weights as an
uninterrupted one on the same device. Several GPUs: `torchrun --nproc_per_node N -m cfimg train`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cfimg.augment import AugmentConfig, augment_image, decode_size_for_training, sample_generator
from cfimg.calibration import fit_temperature
from cfimg.card import ModelCard
from cfimg.checkpoint import card_from_checkpoint, load_checkpoint, save_checkpoint
from cfimg.data import (
    CLASS_NAMES,
    Sample,
    assign_splits,
    dataset_fingerprint,
    load_samples,
    required_splits,
    split_readable,
    training_blockers,
    verify_images,
    write_split_csv,
)
from cfimg.distributed import DistributedContext, gather_arrays, init_distributed
from cfimg.errors import DatasetError, ImageLoadError, TrainingInterrupted, UsageError
from cfimg.fileio import atomic_write_text
from cfimg.imageio import DEFAULT_MAX_PIXELS, load_rgb
from cfimg.metrics import classification_metrics
from cfimg.models import DEFAULT_ARCH, ClassifierWithPreprocessing, create_model, get_arch
from cfimg.preprocess import Preprocessing, preprocess_image

SELECT_METRICS = ("roc_auc", "balanced_accuracy", "accuracy", "pr_auc", "f1")
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


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; saved to config.json and used again by --resume."""

    data: str
    val_data: str | None = None  # a separate validation source; else a grouped split of `data`
    arch: str = DEFAULT_ARCH
    img_size_px: int | None = None  # None: the architecture's own (224), or 320 with `detail`
    detail: bool = False  # higher resolution (320 px) so fine print and stitching survive
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balance: str = "auto"  # class-weighted loss: auto (when classes differ by >1.5x) | on | off
    ema_decay: float = 0.99  # per step; 0 disables the EMA of weights
    freeze_backbone_epochs: int = 0  # train only the classifier head for the first N epochs
    grad_clip_norm: float = 1.0  # 0 disables
    # Epochs without improvement before stopping (0: never). Generous, because under the cosine
    # schedule validation often stalls mid-run and improves again as the rate decays.
    early_stop_patience: int = 6
    select_metric: str = "roc_auc"  # validation metric that picks best.pt
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    workers: int | None = None  # data-loading processes; None: min(4, cpu count)
    threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    seed: int = 0
    out: str | None = None  # run folder; None: models/<name>
    name: str | None = None  # run name when `out` is not given; None: <arch>-<px>px-<date-time>
    overwrite: bool = False
    pretrained: bool = True
    weights_path: str | None = None
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + scaler)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the network
    val_frac: float = 0.15
    test_frac: float = 0.15
    group_regex: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    save_every_steps: int = 50  # last.pt is also written every N steps, so a kill loses little
    stop_after_steps: int | None = None  # stop as if killed after N steps (tests, time boxes)

    def resolved_img_size_px(self) -> int:
        if self.img_size_px:
            return self.img_size_px
        return 320 if self.detail else get_arch(self.arch).preprocessing.img_size_px

    def preprocessing(self) -> Preprocessing:
        return get_arch(self.arch).preprocessing.with_size(self.resolved_img_size_px())

    def to_dict(self) -> dict:
        values = asdict(self)
        values["augment"] = self.augment.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        values = dict(values)
        augment = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.pop("augment", {}).items()
        }
        known = {f for f in cls.__dataclass_fields__}
        return cls(
            augment=AugmentConfig(**augment), **{k: v for k, v in values.items() if k in known}
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


def validate_config(config: TrainConfig) -> None:
    get_arch(config.arch)
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be positive, got {config.lr}"),
        (0 <= config.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (0 <= config.ema_decay < 1, "--ema-decay must be in [0, 1)"),
        (config.balance in ("auto", "on", "off"), "--balance must be auto, on or off"),
        (
            config.select_metric in SELECT_METRICS,
            f"--select-metric must be one of {SELECT_METRICS}",
        ),
        (config.resolved_img_size_px() >= 32, "--img-size must be at least 32 px"),
        (not (config.pretrained and config.weights_path), "--weights replaces --pretrained"),
        (
            not config.name or ("/" not in config.name and config.name not in (".", "..")),
            f"--name must be a plain folder name, got {config.name!r} (use --out for a path)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with, to continue it with --resume."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"{run_dir}: not a cfimg run folder (no config.json)")
    return TrainConfig.from_dict(json.loads(path.read_text())["config"])


# --- data --------------------------------------------------------------------------------------


def resolve_samples(
    config: TrainConfig, run_dir: Path, resuming: bool
) -> tuple[list[Sample], dict]:
    """Samples with splits assigned (readable ones only), and the unreadable files with reasons.

    On resume the run's own split.csv is the source, so the split cannot change under it."""
    if resuming:
        return load_samples(run_dir / "split.csv"), {}
    samples = load_samples(config.data, group_regex=config.group_regex)
    if config.val_data:
        val = load_samples(config.val_data, group_regex=config.group_regex)
        samples = [replace(s, split="train") for s in samples] + [
            replace(s, split="val") for s in val
        ]
    unreadable = verify_images(samples, max_pixels=config.max_pixels)
    readable, _ = split_readable(samples, unreadable)
    splits_given = bool(readable) and all(s.split for s in readable)
    readable = assign_splits(
        readable, val_frac=config.val_frac, test_frac=config.test_frac, seed=config.seed
    )
    required = required_splits(splits_given=splits_given, val_frac=config.val_frac, test_frac=0.0)
    blockers = training_blockers(readable, required=required)
    if "val" not in required:
        raise UsageError("training needs a validation split: use --val-frac > 0 or --val DATA")
    if blockers:
        raise DatasetError(f"{config.data}: cannot train on this dataset: {'; '.join(blockers)}")
    return readable, unreadable


class PhotoDataset(Dataset):
    """Training views (augmented, keyed by (epoch, index)) or evaluation crops (keyed by index),
    as uint8 HWC tensors: normalisation happens inside the model, as in the exported graph."""

    def __init__(
        self,
        samples,
        prep: Preprocessing,
        *,
        train: bool,
        aug: AugmentConfig,
        seed: int,
        max_pixels: int,
    ):
        self.paths = [s.path for s in samples]
        self.labels = [s.label for s in samples]
        self.prep, self.train, self.aug, self.seed, self.max_pixels = (
            prep,
            train,
            aug,
            seed,
            max_pixels,
        )
        self.decode_px = decode_size_for_training(prep, aug) if train else prep.resize_px

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        epoch, index = key if self.train else (0, key)
        image, index = self._load(index)
        if self.train:
            pixels = augment_image(
                image, self.prep, self.aug, sample_generator(self.seed, epoch, index)
            )
        else:
            pixels = preprocess_image(image, self.prep)
        return torch.from_numpy(np.array(pixels)), self.labels[index]

    def _load(self, index: int):
        """Every file was decoded before training; one that broke since must not end the run:
        training takes the next photo instead, validation a grey frame (and says so)."""
        for offset in range(len(self.paths) if self.train else 1):
            candidate = (index + offset) % len(self.paths)
            try:
                image = load_rgb(
                    self.paths[candidate], max_pixels=self.max_pixels, min_side_px=self.decode_px
                )
                return image, candidate
            except ImageLoadError as exc:
                print(f"warning: {exc} (unreadable since the run started)", file=sys.stderr)
        if self.train:
            raise DatasetError("no training photo is readable any more")
        side = self.prep.resize_px
        return Image.new("RGB", (side, side), (128, 128, 128)), index


class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded across ranks, yielding (epoch, index) keys; it can
    start part-way through an epoch when a run resumes."""

    def __init__(self, n: int, seed: int, rank: int, world_size: int):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.per_rank = n // world_size if world_size > 1 else n
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        mine = order[self.rank :: self.world_size][: self.per_rank]
        return iter([(self.epoch, index) for index in mine[self.skip :]])


def _quiet_worker(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not fight the training threads


def make_loaders(samples, prep, config: TrainConfig, ctx: DistributedContext):
    train_samples = [s for s in samples if s.split == "train"]
    val_samples = [s for s in samples if s.split == "val"]
    workers = min(4, os.cpu_count() or 1) if config.workers is None else config.workers
    common = dict(
        num_workers=workers,
        worker_init_fn=_quiet_worker,
        persistent_workers=workers > 0,
        pin_memory=ctx.device.startswith("cuda"),
        **({"prefetch_factor": 4} if workers > 0 else {}),
    )
    train_set = PhotoDataset(
        train_samples,
        prep,
        train=True,
        aug=config.augment,
        seed=config.seed,
        max_pixels=config.max_pixels,
    )
    sampler = EpochSampler(len(train_set), config.seed, ctx.rank, ctx.world_size)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, drop_last=False, **common
    )
    val_set = PhotoDataset(
        val_samples,
        prep,
        train=False,
        aug=config.augment,
        seed=config.seed,
        max_pixels=config.max_pixels,
    )
    val_indices = list(range(ctx.rank, len(val_set), ctx.world_size))
    # Validation workers start afresh each epoch: kept alive between passes, they slowed the
    # next training steps by ~3 s an epoch on 2 cores (measured with scripts/bench_train.py).
    val_loader = DataLoader(
        torch.utils.data.Subset(val_set, val_indices),
        batch_size=config.batch_size,
        **{**common, "persistent_workers": False},
    )
    return train_loader, sampler, val_loader, train_samples, val_samples


def class_weights(labels: list[int], balance: str) -> torch.Tensor | None:
    """Inverse-frequency loss weights (mean 1) when the classes are uneven."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    uneven = counts.max() > 1.5 * max(counts.min(), 1)
    if balance == "off" or (balance == "auto" and not uneven) or counts.min() == 0:
        return None
    weights = counts.sum() / (len(counts) * counts)
    return torch.tensor(weights, dtype=torch.float32)


# --- schedule, EMA, checkpoints ----------------------------------------------------------------


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def head_parameter_names(network: nn.Module) -> set[str]:
    """Parameters of the last Linear layer: the classifier head that --freeze-backbone trains."""
    last = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return (
        {f"{last}.{p}" for p, _ in network.get_submodule(last).named_parameters()}
        if last
        else set()
    )


def make_ema(model: nn.Module, decay: float):
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


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


def _card(
    config: TrainConfig,
    prep: Preprocessing,
    fingerprint: str,
    run_name: str,
    epoch: int,
    metrics: dict,
) -> ModelCard:
    headline = {
        k: metrics[k]
        for k in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "ece", "n")
        if k in metrics
    }
    return ModelCard(
        arch=config.arch,
        preprocessing=prep,
        metrics={**headline, "epoch": epoch, "split": "val"},
        data_fingerprint=fingerprint,
        model_id=f"{run_name}@{epoch}",
    )


def _without_none(state: dict) -> dict:
    return {k: v for k, v in state.items() if v is not None}


# --- the loop ----------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or, with `resume_dir`, continue) a run; returns where it is and how it went."""
    validate_config(config)
    started = time.perf_counter()
    ctx = init_distributed(config.device)
    run_dir = None
    try:
        run_dir = prepare_run_dir(config, resume_dir, ctx)
        return _train(config, run_dir, resume_dir, ctx, progress, log, started)
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
    config, run_dir: Path, resume_dir, ctx: DistributedContext, progress, log, started
) -> TrainResult:
    if config.threads and ctx.device == "cpu":
        torch.set_num_threads(config.threads)
    run_name = run_dir.name
    samples, skipped = resolve_samples(config, run_dir, resuming=bool(resume_dir))
    prep = config.preprocessing()
    fingerprint = dataset_fingerprint(samples)
    if ctx.is_main and not resume_dir:
        write_split_csv(samples, run_dir / "split.csv")
        _write_skipped(run_dir, skipped)
        _write_config(run_dir, config, prep, samples, fingerprint, skipped, ctx)
    train_loader, sampler, val_loader, train_samples, val_samples = make_loaders(
        samples, prep, config, ctx
    )

    torch.manual_seed(config.seed)
    network = create_model(
        config.arch, pretrained=config.pretrained, weights_path=config.weights_path
    )
    model = ClassifierWithPreprocessing(network, prep).to(ctx.device)
    if ctx.device.startswith("cuda") and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    head_names = {f"network.{n}" for n in head_parameter_names(network)}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    ema = make_ema(model, config.ema_decay)
    amp_dtype = _amp_dtype(config, ctx)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    weights = class_weights([s.label for s in train_samples], config.balance)
    criterion = nn.CrossEntropyLoss(
        weight=weights.to(ctx.device) if weights is not None else None,
        label_smoothing=config.label_smoothing,
    )
    trained = ctx.wrap(model)
    forward = torch.compile(trained) if config.compile else trained

    steps_per_epoch = max(1, math.ceil(sampler.per_rank / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    state = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_score": -math.inf,
        "best_epoch": -1,
        "since_best": 0,
        "history": [],
    }
    # A run killed before its first checkpoint starts again from step 0, on its own split.
    if resume_dir and (run_dir / "last.pt").exists():
        state = _restore(run_dir / "last.pt", model, ema, optimizer, scaler, ctx)

    def save_last(epoch: int, step_in_epoch: int, loss_sum: float = 0.0, seen: int = 0) -> None:
        if not ctx.is_main:
            return
        card = _card(config, prep, fingerprint, run_name, epoch, {})
        inference = (ema.module if ema else model).network.state_dict()
        train_state = _without_none(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema else None,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
            }
        )
        save_checkpoint(
            run_dir / "last.pt",
            card=card,
            model_state=inference,
            train_state=train_state,
            progress={
                **{k: state[k] for k in ("best_score", "best_epoch", "since_best", "history")},
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": state["global_step"],
                "loss_sum": loss_sum,  # the epoch's running loss, so a resumed epoch reports
                "seen": seen,  # the same train_loss as an uninterrupted one
            },
        )

    interrupted = stopped_early = False
    epoch = state["epoch"]
    while epoch < config.epochs and not (interrupted or stopped_early):
        sampler.set_epoch(epoch, skip=state["step_in_epoch"] * config.batch_size)
        model.train()
        frozen = epoch < config.freeze_backbone_epochs
        epoch_started = time.perf_counter()
        wait_s = 0.0
        loss_sum, seen = state.pop("loss_sum", 0.0), state.pop("seen", 0)
        seen_before = seen  # images of this epoch trained before a resume
        step_in_epoch = state["step_in_epoch"]
        bar = _progress(
            progress and ctx.is_main,
            f"epoch {epoch + 1}/{config.epochs}",
            math.ceil(len(sampler) / config.batch_size),
        )
        waited_from = time.perf_counter()
        for images, labels in train_loader:
            wait_s += time.perf_counter() - waited_from
            images, labels = (
                images.to(ctx.device, non_blocking=True),
                labels.to(ctx.device, non_blocking=True),
            )
            lr = learning_rate(state["global_step"], total_steps, warmup_steps, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(config.seed * 1_000_003 + state["global_step"])  # dropout, drop-path
            with torch.autocast(
                ctx.device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None
            ):
                _, logits = forward(images)
                loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if frozen:  # keep the backbone as it is: no gradient, so AdamW skips it entirely
                for name, parameter in model.named_parameters():
                    if name not in head_names:
                        parameter.grad = None
            if scaler:
                scaler.unscale_(optimizer)
            if config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.grad is not None], config.grad_clip_norm
                )
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * len(labels)
            seen += len(labels)
            step_in_epoch += 1
            state["global_step"] += 1
            if bar:
                elapsed = time.perf_counter() - epoch_started
                bar.update(loss=loss_sum / seen, ips=seen * ctx.world_size / max(elapsed, 1e-9))
            if config.save_every_steps and state["global_step"] % config.save_every_steps == 0:
                save_last(epoch, step_in_epoch, loss_sum, seen)
            if config.stop_after_steps and state["global_step"] >= config.stop_after_steps:
                save_last(epoch, step_in_epoch, loss_sum, seen)
                interrupted = True
                break
            waited_from = time.perf_counter()
        if bar:
            bar.close()
        if interrupted:
            break
        train_s = time.perf_counter() - epoch_started
        val = _validate(ema.module if ema else model, val_loader, ctx)
        metrics = classification_metrics(val["labels"], val["p_counterfeit"])
        row = {
            "epoch": epoch + 1,
            "train_loss": ctx.mean(loss_sum / max(seen, 1)),
            "val_loss": val["loss"],
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "roc_auc": metrics["roc_auc"],
            "lr": lr,
            "images_per_s": (seen - seen_before) * ctx.world_size / max(train_s, 1e-9),
            "data_wait_frac": wait_s / max(train_s, 1e-9),
            "elapsed_s": time.perf_counter() - started,
        }
        state["history"].append(row)
        score = metrics[config.select_metric]
        score = -math.inf if math.isnan(score) else score
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, since_best=0)
            if ctx.is_main:
                inference = (ema.module if ema else model).network.state_dict()
                save_checkpoint(
                    run_dir / "best.pt",
                    card=_card(config, prep, fingerprint, run_name, epoch + 1, metrics),
                    model_state=inference,
                    val_logits=torch.from_numpy(val["logits"]),
                    val_labels=torch.from_numpy(val["labels"]),
                )
        else:
            state["since_best"] += 1
        if ctx.is_main:
            _write_metrics(run_dir, state["history"])
            log(_epoch_line(row, improved, config.select_metric))
        epoch += 1
        state["step_in_epoch"] = 0
        save_last(epoch, 0)
        stopped_early = (
            bool(config.early_stop_patience) and state["since_best"] >= config.early_stop_patience
        )

    temperature = 1.0
    if not interrupted and ctx.is_main:
        temperature = _calibrate_best(run_dir / "best.pt")
        _plot_curves(run_dir, state["history"])
    ctx.barrier()
    best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
    return TrainResult(
        run_dir=run_dir,
        best_epoch=state["best_epoch"],
        best_metrics=best_row,
        epochs_run=len(state["history"]),
        stopped_early=stopped_early,
        interrupted=interrupted,
        temperature=temperature,
        elapsed_s=time.perf_counter() - started,
        n_train=len(train_samples),
        n_val=len(val_samples),
        skipped=skipped,
    )


def _amp_dtype(config: TrainConfig, ctx: DistributedContext):
    if not (config.amp and ctx.device.startswith("cuda")):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def _validate(model: nn.Module, loader: DataLoader, ctx: DistributedContext) -> dict:
    model.eval()
    logits, labels = [], []
    for images, batch_labels in loader:
        _, batch_logits = model(images.to(ctx.device))
        logits.append(batch_logits.float().cpu().numpy())
        labels.append(batch_labels.numpy())
    logits_all = gather_arrays(
        ctx, np.concatenate(logits) if logits else np.zeros((0, 2), np.float32)
    )
    labels_all = gather_arrays(ctx, np.concatenate(labels) if labels else np.zeros(0, np.int64))
    log_p = torch.log_softmax(torch.from_numpy(logits_all), dim=1)
    loss = (
        float(nn.functional.nll_loss(log_p, torch.from_numpy(labels_all).long()))
        if len(labels_all)
        else float("nan")
    )
    return {
        "logits": logits_all,
        "labels": labels_all,
        "p_counterfeit": log_p.exp()[:, 1].numpy(),
        "loss": loss,
    }


def _restore(path: Path, model, ema, optimizer, scaler, ctx: DistributedContext) -> dict:
    payload = load_checkpoint(path)
    if "train_state" not in payload or "progress" not in payload:
        raise UsageError(f"{path}: has no training state to resume from")
    train_state = payload["train_state"]
    model.load_state_dict(train_state["model"])
    if ema is not None and "ema" in train_state:
        ema.load_state_dict(train_state["ema"])
    optimizer.load_state_dict(train_state["optimizer"])
    if scaler is not None and "scaler" in train_state:
        scaler.load_state_dict(train_state["scaler"])
    progress = dict(payload["progress"])
    progress["history"] = [dict(row) for row in progress["history"]]
    return progress


def _calibrate_best(best_path: Path) -> float:
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


def _epoch_line(row: dict, improved: bool, select_metric: str) -> str:
    return (
        f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"acc {row['accuracy']:.3f}  bal_acc {row['balanced_accuracy']:.3f}  "
        f"auc {row['roc_auc']:.3f}  "
        f"{row['images_per_s']:.1f} img/s  wait {100 * row['data_wait_frac']:.0f}%"
        + (f"  * best {select_metric}" if improved else "")
    )


# --- files in the run folder -------------------------------------------------------------------


def _write_config(run_dir, config, prep, samples, fingerprint, skipped, ctx) -> None:
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
        },
        "versions": machine_summary(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(document, indent=2, default=str) + "\n")


def _write_skipped(run_dir: Path, skipped: dict[str, str]) -> None:
    if not skipped:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(skipped.items()))
    atomic_write_text(run_dir / "skipped.csv", buffer.getvalue())


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


def _plot_curves(run_dir: Path, history: list[dict]) -> None:
    if not history:
        return
    from matplotlib.figure import Figure

    from cfimg.fileio import atomic_write_bytes

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


class _Bar:
    """A rich progress bar for one epoch, showing loss and images/s."""

    def __init__(self, description: str, total: int):
        from rich import get_console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.1f} img/s"),
            TimeRemainingColumn(),
            transient=True,
            disable=not get_console().is_terminal,  # no bar debris in logs and pipes
        )
        self.task = self.progress.add_task(description, total=total, loss=float("nan"), ips=0.0)
        self.progress.start()

    def update(self, loss: float, ips: float) -> None:
        self.progress.update(self.task, advance=1, loss=loss, ips=ips)

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, description: str, total: int) -> _Bar | None:
    return _Bar(description, total) if enabled else None
