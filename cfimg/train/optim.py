"""The optimiser and its schedule: AdamW over two parameter groups (decayed weights; norm
weights and biases without decay), linear warm-up then cosine decay, the EMA of weights, the
mixed-precision dtype, and `TrainingParts`, the model with everything that updates it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cfimg.distributed import DistributedContext
from cfimg.models import ClassifierWithPreprocessing
from cfimg.train.config import TrainConfig

# What decoupled weight decay leaves alone, as timm's `param_groups_weight_decay` and
# torchvision's reference `set_weight_decay` do: decaying a norm's scale or a bias towards zero
# only fights the normalisation, it regularises nothing. Written to config.json.
NO_WEIGHT_DECAY_RULE = "1-D parameters: norm weights and biases"


def decays(parameter: nn.Parameter) -> bool:
    """Whether weight decay applies to `parameter` (conv and linear weights; see the rule)."""
    return parameter.ndim > 1


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: decayed parameters first, then the rest with decay 0."""
    decayed = [p for p in model.parameters() if decays(p)]
    kept = [p for p in model.parameters() if not decays(p)]
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": kept, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(weight_decay_groups(model, config.weight_decay), lr=config.lr)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, model: nn.Module) -> None:
    """Restore `saved` into `optimizer`. A last.pt written before norm weights and biases were
    left undecayed holds one group over `model.parameters()` in order; its moments are carried
    into today's groups, which keep their own weight decay."""
    if len(saved["param_groups"]) == 1 and len(optimizer.param_groups) > 1:
        position = {id(p): i for i, p in enumerate(model.parameters())}
        old = saved["param_groups"][0]
        groups = [
            {
                **old,
                "weight_decay": group["weight_decay"],
                "params": [position[id(p)] for p in group["params"]],
            }
            for group in optimizer.param_groups
        ]
        saved = {**saved, "param_groups": groups}
    optimizer.load_state_dict(saved)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass(frozen=True)
class LrSchedule:
    """`learning_rate` with a run's numbers filled in."""

    base_lr: float
    total_steps: int
    warmup_steps: int

    def at(self, step: int) -> float:
        return learning_rate(step, self.total_steps, self.warmup_steps, self.base_lr)


def lr_schedule(config: TrainConfig, steps_per_epoch: int) -> LrSchedule:
    return LrSchedule(
        base_lr=config.lr,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=int(config.warmup_epochs * steps_per_epoch),
    )


def make_ema(model: nn.Module, decay: float):
    """An AveragedModel holding the EMA of `model`'s weights and buffers; None for decay 0."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def amp_dtype(config: TrainConfig, ctx: DistributedContext) -> torch.dtype | None:
    """Autocast dtype on CUDA (bf16 where supported, else fp16); None: full precision."""
    if not (config.amp and ctx.device.startswith("cuda")):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class TrainingParts:
    """The model and everything that updates it."""

    model: ClassifierWithPreprocessing  # unwrapped: what checkpoints and the EMA read
    forward: nn.Module  # what a step calls: `model` under DDP, compiled when asked
    ema: nn.Module | None  # AveragedModel of `model`
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 autocast only
    criterion: nn.Module
    amp_dtype: torch.dtype | None
    head_names: set[str]  # in model.named_parameters(): what a frozen-backbone step trains

    @property
    def inference_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model
