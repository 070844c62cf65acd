"""What the loop trains and validates on: the resolved split, the photo datasets, the seeded
epoch sampler, their DataLoaders, and the class weights of the loss."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from cfimg.augment import AugmentConfig, sample_generator
from cfimg.data import (
    Sample,
    assign_splits,
    load_samples,
    required_splits,
    split_readable,
    training_blockers,
    verify_images,
)
from cfimg.distributed import DistributedContext
from cfimg.errors import DatasetError, UsageError
from cfimg.labels import CLASS_NAMES
from cfimg.model_input import ModelInput, TrainView, load_model_input
from cfimg.preprocess import Preprocessing, preprocess_image
from cfimg.train.config import TrainConfig


def resolve_samples(
    config: TrainConfig, run_dir: Path, resuming: bool
) -> tuple[list[Sample], dict[str, str]]:
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
    as uint8 HWC tensors: normalisation happens inside the model, as in the exported graph.

    Both come from `cfimg.model_input.load_model_input`, the path eval and predict use. Every
    file was decoded before training; one that broke since must not end the run: training takes
    the next photo instead, validation a grey frame (and says so)."""

    def __init__(
        self,
        samples: list[Sample],
        prep: Preprocessing,
        *,
        train: bool,
        aug: AugmentConfig,
        seed: int,
        max_pixels: int,
    ):
        self.paths = [s.path for s in samples]
        self.labels = [s.label for s in samples]
        self.prep, self.train, self.aug = prep, train, aug
        self.seed, self.max_pixels = seed, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if self.train:
            epoch, index = key
            pixels, index = self._training_view(epoch, index)
        else:
            index = key
            pixels = self._evaluation_crop(index)
        return torch.from_numpy(np.array(pixels)), self.labels[index]

    def _training_view(self, epoch: int, index: int) -> tuple[np.ndarray, int]:
        """The view of photo `index`, or of the next readable one; and which photo it is."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            view = TrainView(self.aug, sample_generator(self.seed, epoch, candidate))
            loaded = load_model_input(
                self.paths[candidate], self.prep, view=view, max_pixels=self.max_pixels
            )
            if loaded.ok:
                return loaded.pixels, candidate
            _warn_unreadable(loaded)
        raise DatasetError("no training photo is readable any more")

    def _evaluation_crop(self, index: int) -> np.ndarray:
        loaded = load_model_input(self.paths[index], self.prep, max_pixels=self.max_pixels)
        if loaded.ok:
            return loaded.pixels
        _warn_unreadable(loaded)
        side = self.prep.resize_px
        return preprocess_image(Image.new("RGB", (side, side), (128, 128, 128)), self.prep)


def _warn_unreadable(loaded: ModelInput) -> None:
    print(
        f"warning: {loaded.path}: {loaded.error} (unreadable since the run started)",
        file=sys.stderr,
    )


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


def make_loaders(
    samples: list[Sample], prep: Preprocessing, config: TrainConfig, ctx: DistributedContext
) -> tuple[DataLoader, EpochSampler, DataLoader, list[Sample], list[Sample]]:
    """(train loader, its sampler, this rank's validation loader, train samples, val samples)."""
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

    def dataset(split_samples: list[Sample], train: bool) -> PhotoDataset:
        return PhotoDataset(
            split_samples,
            prep,
            train=train,
            aug=config.augment,
            seed=config.seed,
            max_pixels=config.max_pixels,
        )

    train_set = dataset(train_samples, train=True)
    sampler = EpochSampler(len(train_set), config.seed, ctx.rank, ctx.world_size)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, drop_last=False, **common
    )
    val_set = dataset(val_samples, train=False)
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
