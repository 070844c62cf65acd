"""`cfimg train`: fine-tune a CNN on labelled photos, reproducibly and resumably.

- `cfimg.train.config`: `TrainConfig` (every knob), `validate_config`, `read_run_config`;
- `cfimg.train.loaders`: the resolved split, `PhotoDataset` (training views and evaluation crops
  through cfimg.model_input), `EpochSampler`, `make_loaders`, `class_weights`;
- `cfimg.train.optim`: AdamW with norm weights and biases left undecayed, the warm-up + cosine
  `learning_rate`, the EMA, the AMP dtype;
- `cfimg.train.run_files`: the run folder, config.json, metrics.csv, curves.png, last.pt/best.pt;
- `cfimg.train.loop`: `train`, `train_one_epoch`, `train_step`, `validate`;
- `cfimg.train.progress`: the per-epoch bar and log line.

Several GPUs: `torchrun --nproc_per_node N -m cfimg train`. The names below are the package's API.
"""

from cfimg.train.config import SELECT_METRICS, TrainConfig, read_run_config, validate_config
from cfimg.train.loaders import (
    EpochSampler,
    PhotoDataset,
    class_weights,
    make_loaders,
    resolve_samples,
)
from cfimg.train.loop import TrainResult, train, train_one_epoch, validate
from cfimg.train.optim import learning_rate, make_ema, make_optimizer, weight_decay_groups
from cfimg.train.run_files import METRICS_COLUMNS, prepare_run_dir

__all__ = [
    "METRICS_COLUMNS",
    "SELECT_METRICS",
    "EpochSampler",
    "PhotoDataset",
    "TrainConfig",
    "TrainResult",
    "class_weights",
    "learning_rate",
    "make_ema",
    "make_loaders",
    "make_optimizer",
    "prepare_run_dir",
    "read_run_config",
    "resolve_samples",
    "train",
    "train_one_epoch",
    "validate",
    "validate_config",
    "weight_decay_groups",
]
