"""A training run's configuration: every knob as one typed value, checked once, saved with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cfimg.augment import AugmentConfig
from cfimg.errors import UsageError
from cfimg.heads import DEFAULT_POOLING, POOLINGS, HeadSpec
from cfimg.imageio import DEFAULT_MAX_PIXELS
from cfimg.models import DEFAULT_ARCH, get_arch
from cfimg.preprocess import Preprocessing

SELECT_METRICS = ("roc_auc", "balanced_accuracy", "accuracy", "pr_auc", "f1")

# The default recipe (README, "Why this default"; BENCHMARKS.md, "Recipe ablation", rounds 2 and
# 6-7): inference on a 384 px frame, training on random crops of the architecture's own input side
# at that scale, the stem plus the next four stages kept as pretrained, and a relation-pooling head
# (self-attention over the feature cells, so one part can be judged against another).
DEFAULT_FRAME_PX = 384
DETAIL_FRAME_PX = 512  # --detail: for print and stitching that 384 px still blurs
DEFAULT_FREEZE_STAGES = 5  # the stem and four stages (cfimg.train.optim.network_stages)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; saved to config.json and used again by --resume."""

    data: str
    val_data: str | None = None  # a separate validation source; else a grouped split of `data`
    arch: str = DEFAULT_ARCH
    img_size_px: int | None = None  # None: DEFAULT_FRAME_PX, or DETAIL_FRAME_PX with `detail`
    detail: bool = False  # higher resolution (512 px) so the finest print survives
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05  # AdamW's; norm weights and biases are never decayed
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) blends of photo pairs (augment.mixup_batch)
    balance: str = "auto"  # class-weighted loss: auto (when classes differ by >1.5x) | on | off
    ema_decay: float = 0.99  # per step, reached after a warm-up (see optim.ema_decay_at); 0: off
    pooling: str = DEFAULT_POOLING  # the head's pooling (cfimg.heads.POOLINGS)
    head_dropout: float | None = None  # None: the architecture's own
    # Inference on N x N tiles of the training crops' side, their logits averaged (HeadSpec);
    # 1: the whole frame in one pass. Needs native-scale crops smaller than the frame.
    tiles: int = 1
    layer_decay: float = 1.0  # layer-wise lr decay: block k of K from the head trains at d^(K-k)
    # The stem and the next N-1 stages stay as pretrained (weights and norm statistics); 0: none.
    # None: DEFAULT_FREEZE_STAGES when starting from pretrained weights, 0 from scratch.
    freeze_stages: int | None = None
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
    # bf16 autocast on a CPU with native bf16: opt-in, because it measured slower than fp32 even
    # on a CPU with AMX (0.49x for EfficientNet-Lite0; BENCHMARKS.md, "Recipe ablation, round 3").
    cpu_bf16: bool = False
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the network
    # On the CPU, each epoch's validation pass runs on onnxruntime through an fp32 export in
    # memory (3-4x faster than PyTorch eager there; BENCHMARKS.md, round 9). False: PyTorch.
    onnx_validation: bool = True
    val_frac: float = 0.15
    test_frac: float = 0.15
    group_regex: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    save_every_steps: int = 50  # last.pt is also written every N steps, so a kill loses little
    stop_after_steps: int | None = None  # stop as if killed after N steps (tests, time boxes)

    def resolved_img_size_px(self) -> int:
        if self.img_size_px:
            return self.img_size_px
        native = get_arch(self.arch).preprocessing.img_size_px
        return max(native, DETAIL_FRAME_PX if self.detail else DEFAULT_FRAME_PX)

    def resolved_freeze_stages(self) -> int:
        if self.freeze_stages is not None:
            return self.freeze_stages
        starts_trained = self.pretrained or self.weights_path is not None
        return DEFAULT_FREEZE_STAGES if starts_trained else 0

    def resolved_crop_px(self) -> int:
        """Side of the native-scale training crops; 0: resized crops of most of the frame.
        Unset (None), the architecture's own input side when the frame is larger, else 0."""
        if self.augment.native_crop_px is not None:
            return self.augment.native_crop_px
        native = get_arch(self.arch).preprocessing.img_size_px
        return native if self.preprocessing().resize_px > native else 0

    def resolved(self) -> TrainConfig:
        """This config with every automatic choice made, as config.json records it, so a resumed
        run (and a later version of cfimg) repeats exactly this recipe."""
        return replace(
            self,
            img_size_px=self.resolved_img_size_px(),
            freeze_stages=self.resolved_freeze_stages(),
            augment=replace(self.augment, native_crop_px=self.resolved_crop_px()),
        )

    def head(self) -> HeadSpec:
        tile_px = self.resolved_crop_px() if self.tiles > 1 else 0
        return HeadSpec(
            pooling=self.pooling, dropout=self.head_dropout, tiles=self.tiles, tile_px=tile_px
        )

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
        values.setdefault("pooling", HeadSpec().pooling)  # written before pooling was a choice
        if "freeze_stages" not in values:  # written before the automatic recipe: its meaning then
            values["freeze_stages"] = 0
            augment["native_crop_px"] = augment.get("native_crop_px") or 0
            if not values.get("img_size_px"):
                native = get_arch(values.get("arch", DEFAULT_ARCH)).preprocessing.img_size_px
                values["img_size_px"] = 320 if values.get("detail") else native
        known = {f for f in cls.__dataclass_fields__}
        return cls(
            augment=AugmentConfig(**augment), **{k: v for k, v in values.items() if k in known}
        )


def validate_config(config: TrainConfig) -> None:
    """Raise UsageError, naming the flag and what it allows, for a config that cannot work."""
    get_arch(config.arch)
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be positive, got {config.lr}"),
        (0 <= config.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (config.mixup_alpha >= 0, f"--mixup must be 0 (off) or positive, got {config.mixup_alpha}"),
        (0 <= config.ema_decay < 1, "--ema-decay must be in [0, 1)"),
        (config.balance in ("auto", "on", "off"), "--balance must be auto, on or off"),
        (
            config.select_metric in SELECT_METRICS,
            f"--select-metric must be one of {SELECT_METRICS}",
        ),
        (config.resolved_img_size_px() >= 32, "--img-size must be at least 32 px"),
        (config.pooling in POOLINGS, f"--pooling must be one of {', '.join(POOLINGS)}"),
        (
            config.head_dropout is None or 0 <= config.head_dropout < 1,
            "--head-dropout must be in [0, 1)",
        ),
        (
            config.augment.native_crop_px in (None, 0)
            or 16 <= config.augment.native_crop_px <= config.preprocessing().resize_px,
            f"--crop must be 0 (resized crops) or between 16 px and the resize side "
            f"({config.preprocessing().resize_px} px)",
        ),
        (
            1.0 <= config.augment.native_zoom <= 4.0,
            f"--zoom must be between 1 (off) and 4, got {config.augment.native_zoom}",
        ),
        (
            config.augment.native_zoom == 1.0 or config.resolved_crop_px() > 0,
            "--zoom jitters native-scale crops; these views are resized crops of the frame, "
            "whose scale already varies with the crop (--crop C below --img-size)",
        ),
        (config.tiles >= 1, f"--tiles must be 1 (the whole frame) or more, got {config.tiles}"),
        (
            config.tiles == 1 or config.resolved_crop_px() > 0,
            f"--tiles {config.tiles} needs native-scale training crops smaller than the frame "
            f"(--crop C below --img-size); these views are resized crops of the whole frame",
        ),
        (0 < config.layer_decay <= 1, "--layer-decay must be in (0, 1]"),
        (
            config.freeze_stages is None or config.freeze_stages >= 0,
            "--freeze-stages must be 0 or more",
        ),
        (config.threads is None or config.threads >= 1, "--threads must be 1 or more"),
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
    try:
        config = TrainConfig.from_dict(json.loads(path.read_text())["config"])
        validate_config(config)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError included
        reason = f"{type(exc).__name__}: {exc}"
        raise UsageError(f"{path}: damaged, not a cfimg run config ({reason})") from None
    return config
