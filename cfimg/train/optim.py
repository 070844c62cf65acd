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


def weight_decay_groups(
    model: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None
) -> list[dict]:
    """Optimizer parameter groups: decayed parameters first, then the rest with decay 0; with
    `lr_scales` (parameter name -> learning-rate factor) one such pair per distinct factor."""
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen stages (freeze_stages)
            continue
        key = (not decays(parameter), lr_scales.get(name, 1.0))
        groups.setdefault(key, []).append(parameter)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if undecayed else weight_decay,
            **({"lr_scale": scale} if lr_scales else {}),
        }
        for (undecayed, scale), params in sorted(
            groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])
        )
    ]


def network_stages(model: nn.Module) -> list[list[str]]:
    """The network's parameter names by depth, input first: the stem (every top-level child
    before the first stack of blocks) is stage 0, then each block of a stack (timm's `blocks`,
    torchvision's `features`, ResNet's `layerN`) and each later child is one stage. Names are
    as in `model.named_parameters()`; the head's modules are stages too here (callers that
    treat the head apart take its names out)."""
    network = model.network if hasattr(model, "network") else model
    prefix = "network." if network is not model else ""
    stages: list[list[str]] = []
    stem: list[str] = []
    in_stem = True
    for child_name, child in network.named_children():
        stacked = isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1
        in_stem = in_stem and not stacked
        for sub_name, sub in child.named_children() if stacked else [("", child)]:
            base = f"{prefix}{child_name}" + (f".{sub_name}" if sub_name else "")
            owned = [f"{base}.{name}" for name, _ in sub.named_parameters()]
            if in_stem:
                stem.extend(owned)
            elif owned:
                stages.append(owned)
    return ([stem] if stem else []) + stages


def layer_lr_scales(model: nn.Module, head_names: set[str], layer_decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (as BEiT and timm's `layer_decay`): the head trains at the
    full rate and each stage below it (`network_stages`) at `layer_decay` times the one above,
    so the pretrained early layers, which a few hundred photos cannot improve, move least."""
    stage_of = {name: depth for depth, names in enumerate(network_stages(model)) for name in names}
    top = max(stage_of.values(), default=-1) + 1  # the head, wherever it sits, gets the full rate
    for name in head_names:
        stage_of[name] = top
    return {name: layer_decay ** (top - depth) for name, depth in stage_of.items()}


def freeze_stages(model: nn.Module, n_stages: int, head_names: set[str]) -> None:
    """Fix the stem and the next `n_stages - 1` stages (`network_stages`) as pretrained: no
    gradient, and (through `TrainingParts.train_mode`) their norm layers keep ImageNet's
    statistics. Why: on a few hundred photos the early, generic edge and texture filters cannot
    improve, only overfit, and skipping their backward pass makes a CPU step about twice as fast
    (BENCHMARKS.md, "Recipe ablation")."""
    parameters = dict(model.named_parameters())
    for names in network_stages(model)[: max(n_stages, 0)]:
        for name in names:
            if name not in head_names:
                parameters[name].requires_grad_(False)


def make_optimizer(
    model: nn.Module, config: TrainConfig, head_names: set[str] | None = None
) -> torch.optim.Optimizer:
    scales = None
    if config.layer_decay < 1.0:
        scales = layer_lr_scales(model, head_names or set(), config.layer_decay)
    return torch.optim.AdamW(weight_decay_groups(model, config.weight_decay, scales), lr=config.lr)


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
    """The schedule's rate, times each group's layer-wise factor."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


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


def ema_decay_at(updates: int, decay: float) -> float:
    """The EMA decay for the update after `updates` earlier ones: timm's ModelEmaV3 warm-up,
    1 - (1 + t)^(-2/3), capped at `decay`. A fixed 0.99 from step 0 leaves a run of a few dozen
    steps (100 photos, batch 32) with an average still mostly made of the random new head; the
    warm-up gives 0.80 after 10 updates, 0.95 after 100, 0.99 from about 1000."""
    return min(decay, 1.0 - (1.0 + updates) ** (-2.0 / 3.0))


def make_ema(model: nn.Module, decay: float):
    """An AveragedModel holding the warmed-up EMA of `model`'s weights and buffers; None for 0."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates) -> None:
        weight = 1.0 - ema_decay_at(int(updates), decay)
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked) are counts, not averages
            for kept, new in zip(averaged, current, strict=True):
                kept.copy_(new)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def amp_dtype(config: TrainConfig, ctx: DistributedContext) -> torch.dtype | None:
    """Autocast dtype: with --amp on CUDA bf16 where supported, else fp16; with --cpu-bf16 on a
    CPU with native bf16 (AVX-512 BF16, AMX) bf16; None: full precision."""
    if ctx.device.startswith("cuda"):
        if not config.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if config.cpu_bf16 and cpu_has_native_bf16() else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively; emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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

    def train_mode(self) -> None:
        """model.train(), with every module whose own weights are all frozen (freeze_stages) left
        in eval mode, so the frozen stages' norm layers keep their pretrained statistics."""
        self.model.train()
        for module in self.model.modules():
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()

    @property
    def inference_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model
