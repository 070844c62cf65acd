"""Training speed: `cfimg.train.train()` against a bare PyTorch loop, side by side in one run.

Both loops train the same network (default efficientnet_lite0 with its packaged ImageNet weights)
at the same input size and batch size on the same batches: the DataLoader that
`cfimg.train.make_loaders` builds (PhotoDataset with the training augmentation, EpochSampler,
the same worker count), fed the same grouped split (`cfimg.train.resolve_samples`).

  cfimg  `cfimg.train.train()` itself, stopped after a fixed number of steps
         (TrainConfig.stop_after_steps). Its training DataLoader is wrapped (by patching
         `cfimg.train.loop.make_loaders` for the duration of the call) to timestamp every batch
         request and arrival, so step times come from the real loop: lr schedule, seeding, uint8
         normalisation inside the model, label-smoothed weighted loss, backward, gradient
         clipping, AdamW, EMA update, loss bookkeeping. Not timed: set-up (reading and verifying
         the data, building the model, starting the workers), the warm-up steps, validation and
         the checkpoints written between epochs or at the stop. Periodic mid-epoch last.pt saves
         are off (save_every_steps=0).
  bare   the same DataLoader, then forward (same uint8 -> float normalisation), cross-entropy,
         backward, AdamW step; nothing else.

A step is timed from one batch request to the next, so the first step of an epoch includes the
loader's restart and a partial last batch counts with its real size, in both loops alike.
Rounds alternate cfimg, bare, cfimg, bare... in one process, so a neighbour's load hits both.
Reported: images/s per loop (median and half the min-max spread over rounds), their ratio (bar:
cfimg >= 90% of bare), the fraction of step time spent waiting for data, and a matmul GFLOP/s
reading before and after. `--gpu` does the same on CUDA with mixed precision (both loops use
the AMP dtype and memory format cfimg picks), or prints one line saying why it was skipped.

    python scripts/bench_train.py                          # 3 rounds x 15 steps, CPU
    python scripts/bench_train.py --data DIR --json out.json
    python scripts/bench_train.py --gpu
    python scripts/bench_train.py --smoke                  # seconds: keeps the script working
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

BAR = 0.9  # cfimg's images/s must be at least this fraction of the bare loop's
DEFAULT_CACHE = Path.home() / ".cache" / "cfimg-bench-train"
SMOKE = dict(
    arch="mobilenet_v3_small",
    img_size=64,
    batch_size=16,
    rounds=1,
    steps=3,
    warmup_steps=1,
    images=96,
    synth_size=96,
    pretrained=False,
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------


def synthetic_dataset(cache_dir: Path, n_images: int, size_px: int, difficulty: str) -> Path:
    """A `cfimg synth` set, generated once into the cache; returns its manifest."""
    from cfimg.synth import generate_dataset

    folder = cache_dir / f"synth-{n_images}-{size_px}px-{difficulty}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():  # written last by generate_dataset: the set is complete
        return manifest
    say(f"generating {n_images} synthetic {size_px} px photos in {folder} (once)")
    return generate_dataset(
        folder,
        n_images=n_images,
        size_px=size_px,
        difficulty=difficulty,
        progress=False,
        overwrite=True,
    )


# -- step timing ---------------------------------------------------------------------------------


@dataclass
class StepClock:
    """Batch request / arrival times of a training DataLoader, one list per epoch (iterator)."""

    epochs: list[list[tuple[float, float, int]]] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)  # the request that found the epoch over

    def wrap(self, loader):
        return _TimedLoader(loader, self)

    def steps(self) -> list[tuple[float, float, int]]:
        """(step seconds, data-wait seconds, images) of every step whose end was observed: the
        next batch request of its epoch, or the request that found the epoch exhausted."""
        result = []
        for index, events in enumerate(self.epochs):
            requests = [request for request, _, _ in events]
            if index < len(self.ends):
                requests.append(self.ends[index])
            for step, (request, ready, images) in enumerate(events):
                if step + 1 < len(requests):
                    result.append((requests[step + 1] - request, ready - request, images))
        return result


class _TimedLoader:
    def __init__(self, loader, clock: StepClock):
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        events: list[tuple[float, float, int]] = []
        self.clock.epochs.append(events)
        iterator = iter(self.loader)
        while True:
            requested = time.perf_counter()
            try:
                images, labels = next(iterator)
            except StopIteration:
                self.clock.ends.append(requested)
                return
            events.append((requested, time.perf_counter(), len(labels)))
            yield images, labels


def window(clock: StepClock, warmup_steps: int, steps: int) -> dict:
    """images/s and data-wait fraction over `steps` steps after the first `warmup_steps`."""
    timed = clock.steps()[warmup_steps : warmup_steps + steps]
    if len(timed) < steps:
        raise SystemExit(
            f"bench_train: observed {len(timed)} timed steps, expected {steps}: the training "
            "loop no longer draws its batches from cfimg.train.make_loaders' loader"
        )
    step_s = sum(s for s, _, _ in timed)
    return {
        "images_per_s": sum(n for _, _, n in timed) / step_s,
        "data_wait_frac": sum(w for _, w, _ in timed) / step_s,
        "step_ms": 1000 * step_s / len(timed),
    }


# -- the two loops -------------------------------------------------------------------------------


def train_config(args, data: str, out: Path, stop_after_steps: int):
    from cfimg.train import TrainConfig

    return TrainConfig(
        data=data,
        arch=args.arch,
        img_size_px=args.img_size,
        batch_size=args.batch_size,
        epochs=1000,  # the step budget stops the run; epochs only shape the lr schedule
        val_frac=0.1,
        test_frac=0.0,  # no test photos held back: more training steps per epoch
        early_stop_patience=0,
        save_every_steps=0,
        stop_after_steps=stop_after_steps,
        device=args.device,
        workers=args.workers,
        threads=args.threads,
        pretrained=args.pretrained,
        out=str(out),
        overwrite=True,
    )


def run_cfimg(args, data: str, work: Path, round_index: int) -> dict:
    import cfimg.train
    import cfimg.train.loop as train_loop

    clock = StepClock()
    original = train_loop.make_loaders

    def timed_make_loaders(*a, **k):
        train_loader, *rest = original(*a, **k)
        return (clock.wrap(train_loader), *rest)

    config = train_config(args, data, work / f"cfimg-{round_index}", total_steps(args))
    with mock.patch.object(train_loop, "make_loaders", timed_make_loaders):
        result = cfimg.train.train(config, progress=False, log=lambda line: None)
    if not result.interrupted:
        raise SystemExit("bench_train: train() ended before its step budget")
    return window(clock, args.warmup_steps, args.steps)


def run_bare(args, data: str, work: Path, round_index: int) -> dict:
    import torch

    from cfimg.distributed import init_distributed
    from cfimg.models import create_model
    from cfimg.train import make_loaders, resolve_samples

    config = train_config(args, data, work / f"bare-{round_index}", total_steps(args))
    ctx = init_distributed(config.device)
    device = ctx.device
    if config.threads and device == "cpu":
        torch.set_num_threads(config.threads)
    samples, _ = resolve_samples(config, Path(config.out), resuming=False)
    prep = config.preprocessing()
    loader, sampler, *_ = make_loaders(samples, prep, config, ctx)
    torch.manual_seed(config.seed)
    network = create_model(config.arch, pretrained=config.pretrained).to(device).train()
    amp_dtype, channels_last = gpu_precision(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    clock = StepClock()
    timed_loader = clock.wrap(loader)
    step, epoch = 0, 0
    while step < config.stop_after_steps:
        sampler.set_epoch(epoch)
        for images, labels in timed_loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
            with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=bool(amp_dtype)):
                loss = torch.nn.functional.cross_entropy(network(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()  # as cfimg's per-step float(loss) does
            step += 1
            if step >= config.stop_after_steps:
                break
        epoch += 1
    n_train = sum(1 for s in samples if s.split == "train")
    return {**window(clock, args.warmup_steps, args.steps), "n_train": n_train}


def gpu_precision(device: str):
    """The AMP dtype and memory format cfimg.train uses on this device (none on CPU)."""
    from cfimg.distributed import DistributedContext
    from cfimg.train import TrainConfig
    from cfimg.train.optim import amp_dtype

    defaults = TrainConfig(data="")
    channels_last = device.startswith("cuda") and defaults.channels_last
    return amp_dtype(defaults, DistributedContext(device=device)), channels_last


def total_steps(args) -> int:
    # One step more than warm-up + timed: a step's end is seen at the next batch request.
    return args.warmup_steps + args.steps + 1


# -- report --------------------------------------------------------------------------------------


def summarise(rounds: list[dict]) -> dict:
    from cfimg.benchutil import median_and_spread

    summary = {"rounds": rounds}
    for key in ("images_per_s", "data_wait_frac", "step_ms"):
        median, spread = median_and_spread([r[key] for r in rounds])
        summary[key] = {"median": median, "spread": spread}
    return summary


def markdown(report: dict) -> str:
    if "skipped" in report:
        return f"GPU training: skipped: {report['skipped']}\n"
    s = report["setup"]
    cfimg, bare = report["cfimg"], report["bare"]
    lines = [
        f"{s['arch']} ({'ImageNet weights' if s['pretrained'] else 'random init'}) at "
        f"{s['img_size_px']} px, batch {s['batch_size']}, {s['workers']} loader workers, "
        f"{s['threads']} torch threads, device {s['device']}"
        + (f" ({s['amp']} AMP)" if s["amp"] else "")
        + f"; {s['rounds']} rounds x {s['steps']} steps after {s['warmup_steps']} warm-up steps; "
        f"data: {s['data']} ({s['n_train']} training photos); matmul "
        f"{report['matmul_gflops_before']:.0f} GFLOP/s before, "
        f"{report['matmul_gflops_after']:.0f} after.",
        "",
        "| loop | images/s | ms/step | data-wait fraction |",
        "|---|---|---|---|",
    ]
    for name, result in (("`cfimg.train.train()` (the real loop)", cfimg), ("bare PyTorch", bare)):
        ips, ms, wait = result["images_per_s"], result["step_ms"], result["data_wait_frac"]
        lines.append(
            f"| {name} | {ips['median']:.1f} ± {ips['spread']:.1f} | {ms['median']:.0f} ± "
            f"{ms['spread']:.0f} | {wait['median']:.3f} ± {wait['spread']:.3f} |"
        )
    ratio = report["ratio"]
    lines += [
        "",
        f"cfimg / bare images/s: {100 * ratio:.1f}% (per round: "
        f"{', '.join(f'{100 * r:.0f}%' for r in report['ratio_per_round'])}); "
        f"bar >= {100 * BAR:.0f}%: {'pass' if ratio >= BAR else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset source (folder, manifest); default: a synth set")
    parser.add_argument("--images", type=int, default=400, help="size of the default synth set")
    parser.add_argument("--synth-size", type=int, default=384, help="synth photo side, px")
    parser.add_argument("--difficulty", default="medium")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=224, help="model input size, px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per loop")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (2 CPU, 5 GPU)")
    parser.add_argument("--workers", type=int, help="loader workers (default: cfimg's default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false")
    parser.add_argument("--gpu", action="store_true", help="measure on CUDA with AMP instead")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, a few seconds (overrides the size flags)"
    )
    parser.add_argument("--json", type=Path, help="also save the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.warmup_steps is None:
        args.warmup_steps = 5 if args.gpu else 2
    if min(args.rounds, args.steps, args.batch_size) < 1 or args.warmup_steps < 0:
        parser.error("--rounds, --steps and --batch-size must be >= 1, --warmup-steps >= 0")
    args.device = "cuda" if args.gpu else "cpu"
    return args


def main(argv=None) -> int:
    from cfimg.errors import CfimgError

    args = parse_args(argv)
    try:
        return measure(args)
    except CfimgError as exc:  # a bad --data, an unknown --arch...: one line, not a traceback
        print(f"bench_train: error: {exc}", file=sys.stderr)
        return exc.exit_code


def measure(args) -> int:
    import torch

    from cfimg.benchutil import machine_summary, matmul_gflops
    from cfimg.fileio import atomic_write_text

    if args.gpu and not torch.cuda.is_available():
        report = {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
        print(markdown(report), end="")
        if args.json:
            atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or str(
        synthetic_dataset(args.cache_dir, args.images, args.synth_size, args.difficulty)
    )
    gflops_before = matmul_gflops()
    results: dict[str, list[dict]] = {"cfimg": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="cfimg-bench-train-") as tmp:
        for index in range(args.rounds):
            for name, run in (("cfimg", run_cfimg), ("bare", run_bare)):
                results[name].append(run(args, data, Path(tmp), index))
                gc.collect()  # let the finished loop's loader workers go before the next one
                row = results[name][-1]
                say(
                    f"round {index + 1}/{args.rounds} {name}: {row['images_per_s']:.1f} "
                    f"images/s, data wait {row['data_wait_frac']:.3f}"
                )
    gflops_after = matmul_gflops()

    amp_dtype, _ = gpu_precision(args.device)
    cfimg, bare = summarise(results["cfimg"]), summarise(results["bare"])
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_summary(),
        "measured": "cfimg.train.train() itself (steps timed at its DataLoader) vs a bare loop "
        "on the same DataLoader",
        "setup": {
            "data": data,
            "n_train": results["bare"][0]["n_train"],
            "arch": args.arch,
            "pretrained": args.pretrained,
            "img_size_px": args.img_size,
            "batch_size": args.batch_size,
            "workers": resolved_workers(args.workers),
            "threads": args.threads or torch.get_num_threads(),
            "device": args.device,
            "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
        },
        "matmul_gflops_before": gflops_before,
        "matmul_gflops_after": gflops_after,
        "cfimg": cfimg,
        "bare": bare,
        "ratio": cfimg["images_per_s"]["median"] / bare["images_per_s"]["median"],
        "ratio_per_round": [
            c["images_per_s"] / b["images_per_s"]
            for c, b in zip(results["cfimg"], results["bare"], strict=True)
        ],
        "bar": BAR,
    }
    report["meets_bar"] = report["ratio"] >= BAR
    print(markdown(report), end="")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def resolved_workers(workers: int | None) -> int:
    # cfimg.train.make_loaders' default
    return min(4, os.cpu_count() or 1) if workers is None else workers


if __name__ == "__main__":
    raise SystemExit(main())
