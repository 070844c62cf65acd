"""`cfimg train`: parse flags into a TrainConfig, run cfimg.train.train, print a summary."""

from __future__ import annotations

import typer

from cfimg.heads import DEFAULT_POOLING, POOLINGS  # imports no torch

# Spelt out here rather than imported from cfimg.models so that building the CLI (and so every
# command, predict included) never imports torch; tests check that they agree.
ARCH_NAMES = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)
DEFAULT_ARCH = ARCH_NAMES[0]
DEFAULT_FREEZE_STAGES = 5  # cfimg.train.config's, for the help text (that module imports torch)

HELP = f"""Fine-tune a CNN on labelled photos (folder tree, split folders or CSV manifest).

Architectures: {", ".join(ARCH_NAMES)} (default {DEFAULT_ARCH}, ImageNet weights from an
installed package). Several GPUs: torchrun --nproc_per_node N -m cfimg train DATA ...
"""


def register(app: typer.Typer) -> None:
    app.command(name="train", help=HELP, no_args_is_help=True)(train_command)


def train_command(
    data: str | None = typer.Argument(None, help="Labelled photos; omit with --resume."),
    val: str | None = typer.Option(None, "--val", help="Separate validation data."),
    arch: str = typer.Option(DEFAULT_ARCH, "--arch", help="Architecture."),
    img_size: int | None = typer.Option(
        None, "--img-size", help="Inference frame side in px [384, or the arch's own if larger]."
    ),
    detail: bool = typer.Option(False, "--detail", help="A 512 px frame, for the finest print."),
    epochs: int = typer.Option(15, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(
        0.05, "--weight-decay", help="AdamW weight decay (not of norm weights and biases)."
    ),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs"),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
    mixup: float = typer.Option(
        0.0, "--mixup", help="Mixup alpha: blend photo pairs, Beta(alpha, alpha); 0 = off."
    ),
    balance: str = typer.Option("auto", "--balance", help="Class-weighted loss: auto|on|off."),
    ema_decay: float = typer.Option(0.99, "--ema-decay", help="Per-step EMA decay; 0 = off."),
    freeze_backbone_epochs: int = typer.Option(
        0, "--freeze-backbone-epochs", help="Train only the head (and its pooling) first."
    ),
    pooling: str = typer.Option(
        DEFAULT_POOLING, "--pooling", help=f"Head pooling: {'|'.join(POOLINGS)}."
    ),
    head_dropout: float | None = typer.Option(None, "--head-dropout", help="[the arch's own]"),
    crop: int | None = typer.Option(
        None,
        "--crop",
        help="Train on random crops of this side (px) at the inference scale; 0 = resized "
        "crops of most of the frame [the arch's input side when --img-size is larger].",
    ),
    zoom: float = typer.Option(
        1.0,
        "--zoom",
        help="Scale jitter of the native crops: each at the inference scale times a factor "
        "in [1/Z, Z], drawn log-uniformly; 1 = off.",
    ),
    tiles: int = typer.Option(
        1,
        "--tiles",
        help="Infer on N x N tiles of the crop side spread over the frame, their logits "
        "averaged (about N*N*crop^2/frame^2 the inference cost); 1 = the whole frame at once.",
    ),
    layer_decay: float = typer.Option(
        1.0, "--layer-decay", help="Layer-wise lr decay per block from the head; 1 = off."
    ),
    freeze_stages: int | None = typer.Option(
        None,
        "--freeze-stages",
        help="Keep the stem and the next N-1 stages as pretrained; 0 = train all "
        f"[{DEFAULT_FREEZE_STAGES} from pretrained weights, 0 from scratch].",
    ),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Max gradient norm; 0 = off."),
    patience: int = typer.Option(6, "--patience", help="Early stop after N flat epochs; 0 = off."),
    select_metric: str = typer.Option("roc_auc", "--select-metric", help="Picks best.pt."),
    hflip: bool = typer.Option(
        False,
        "--hflip",
        help="Random horizontal flips (off: mirrored lettering is itself a counterfeit cue).",
    ),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda[:i]"),
    workers: int | None = typer.Option(None, "--workers", help="Data-loading processes."),
    threads: int | None = typer.Option(None, "--threads", help="Torch CPU threads."),
    seed: int = typer.Option(0, "--seed"),
    out: str | None = typer.Option(None, "--out", help="Run folder [models/NAME]."),
    name: str | None = typer.Option(
        None, "--name", help="Run name under models/ [ARCH-PXpx-DATE-TIME]."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: str | None = typer.Option(None, "--resume", help="Continue the run in this folder."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained"),
    weights: str | None = typer.Option(None, "--weights", help="Start from this local file."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA."),
    cpu_bf16: bool = typer.Option(
        False, "--cpu-bf16", help="bf16 autocast on CPUs with native bf16 (AVX-512 BF16, AMX)."
    ),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    val_frac: float = typer.Option(0.15, "--val-frac"),
    test_frac: float = typer.Option(0.15, "--test-frac"),
    group_regex: str | None = typer.Option(None, "--group-regex", help="Item id from filename."),
    stop_after_steps: int | None = typer.Option(
        None, "--stop-after-steps", help="Stop (resumably) after N optimizer steps."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    from dataclasses import replace

    from cfimg.augment import AugmentConfig
    from cfimg.errors import UsageError
    from cfimg.train import TrainConfig, read_run_config, train

    if resume:
        config = read_run_config(resume)
        if stop_after_steps is not None:
            config = replace(config, stop_after_steps=stop_after_steps)
        else:
            config = replace(config, stop_after_steps=None)
    elif data is None:
        raise UsageError("give DATA to train on, or --resume RUN to continue a run")
    else:
        config = TrainConfig(
            data=data,
            val_data=val,
            arch=arch,
            img_size_px=img_size,
            detail=detail,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing,
            mixup_alpha=mixup,
            balance=balance,
            ema_decay=ema_decay,
            freeze_backbone_epochs=freeze_backbone_epochs,
            pooling=pooling,
            head_dropout=head_dropout,
            tiles=tiles,
            layer_decay=layer_decay,
            freeze_stages=freeze_stages,
            grad_clip_norm=grad_clip,
            early_stop_patience=patience,
            select_metric=select_metric,
            augment=AugmentConfig(hflip=hflip, native_crop_px=crop, native_zoom=zoom),
            device=device,
            workers=workers,
            threads=threads,
            seed=seed,
            out=out,
            name=name,
            overwrite=overwrite,
            pretrained=pretrained and weights is None,
            weights_path=weights,
            amp=amp,
            cpu_bf16=cpu_bf16,
            compile=compile_model,
            val_frac=val_frac,
            test_frac=test_frac,
            group_regex=group_regex,
            stop_after_steps=stop_after_steps,
        )
    result = train(config, resume_dir=resume, progress=not quiet, log=_log_main)
    if result.run_dir and _is_main():
        print_summary(result)


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _log_main(line: str) -> None:
    if _is_main():
        typer.echo(line)


def print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    if result.interrupted:
        typer.echo(
            "stopped after the requested steps; continue with: "
            f"cfimg train --resume {result.run_dir}"
        )
        return
    table = Table(title=f"run {result.run_dir}", show_header=False)
    best = result.best_metrics
    rows = [
        (
            "best epoch",
            f"{result.best_epoch} of {result.epochs_run}"
            + (" (early stop)" if result.stopped_early else ""),
        ),
        ("val balanced accuracy", f"{best.get('balanced_accuracy', float('nan')):.4f}"),
        ("val ROC-AUC", f"{best.get('roc_auc', float('nan')):.4f}"),
        ("val accuracy", f"{best.get('accuracy', float('nan')):.4f}"),
        ("temperature", f"{result.temperature:.3f}"),
        (
            "images",
            f"{result.n_train} train, {result.n_val} val"
            + (
                f", {len(result.skipped)} unreadable skipped (skipped.csv)"
                if result.skipped
                else ""
            ),
        ),
        ("time", f"{result.elapsed_s:.0f} s"),
        ("files", "best.pt last.pt config.json split.csv metrics.csv curves.png"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    typer.echo(f"next: cfimg eval {result.run_dir}   |   cfimg export {result.run_dir}")
