"""What an evaluation is asked to do, checked before any model is loaded, and the data plan.

The plan says which samples are evaluated and which fit the temperature and operating point:
- evaluated: DATA (any source cfimg.data.load_samples reads) or, without DATA, the run's own
  split.csv; its `--split` (default: test if the data has a test split, else val, else all).
- fitting: the validation split of the same data; else the run's own validation split
  (split.csv beside the checkpoint); else, with a note in the report, the evaluated data itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cfimg.data import Sample
from cfimg.errors import DatasetError, UsageError
from cfimg.operating import Target

SPLIT_CHOICES = ("val", "test", "train", "all")
DEFAULT_BOOTSTRAP = 1000
SPLIT_CSV = "split.csv"


# --- the request ----------------------------------------------------------------------------


def resolve_target(
    target_fpr: float | None, target_precision: float | None, target_recall: float | None
) -> Target | None:
    """The one operating-point target given (or None), its value checked against its range."""
    given = {
        kind: value
        for kind, value in (
            ("fpr", target_fpr),
            ("precision", target_precision),
            ("recall", target_recall),
        )
        if value is not None
    }
    if len(given) > 1:
        raise UsageError(
            "choose one of --target-fpr, --target-precision, --target-recall "
            f"(got {', '.join('--target-' + k for k in given)})"
        )
    if not given:
        return None
    kind, value = next(iter(given.items()))
    low_ok = value >= 0.0 if kind == "fpr" else value > 0.0
    high_ok = value < 1.0 if kind == "fpr" else value <= 1.0
    if not (low_ok and high_ok):
        allowed = "0 <= F < 1" if kind == "fpr" else "0 < value <= 1"
        raise UsageError(f"--target-{kind} {value} is out of range ({allowed})")
    return Target(kind, float(value))


def parse_band(text: str) -> tuple[float, float]:
    """'LOW,HIGH' -> (low, high) with 0 <= low < high <= 1."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise UsageError(
            f"--uncertain-band {text!r} is not LOW,HIGH (two numbers, e.g. 0.3,0.7)"
        ) from None
    check_band((low, high))
    return low, high


def check_band(band: tuple[float, float]) -> None:
    low, high = band
    if not 0.0 <= low < high <= 1.0:
        raise UsageError(f"uncertain band {low:g},{high:g} must satisfy 0 <= LOW < HIGH <= 1")


def check_request(
    *,
    is_onnx: bool,
    batch_size: int,
    n_bootstrap: int,
    targets: tuple[float | None, float | None, float | None],
    band: tuple[float, float] | None,
    uncertain_frac: float | None,
    save_threshold: bool,
    calibrate: bool,
) -> Target | None:
    """The operating-point target asked for (see resolve_target: `targets` are its FPR,
    precision and recall); UsageError for a request that cannot be carried out."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if n_bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, not {n_bootstrap}")
    target = resolve_target(*targets)
    if band is not None and uncertain_frac is not None:
        raise UsageError("give --uncertain-band or --uncertain-frac, not both")
    if band is not None:
        check_band(band)
    if uncertain_frac is not None and not 0.0 < uncertain_frac < 1.0:
        raise UsageError(f"--uncertain-frac {uncertain_frac} must be between 0 and 1")
    if is_onnx and (save_threshold or calibrate):
        flag = "--save-threshold" if save_threshold else "--calibrate"
        raise UsageError(
            f"{flag} stores into a checkpoint, and an .onnx file is read-only here: run "
            f"`cfimg eval CHECKPOINT {flag} ...` on the checkpoint it came from, then "
            "`cfimg export` it again"
        )
    if save_threshold and target is None and band is None and uncertain_frac is None:
        raise UsageError(
            "--save-threshold needs an operating point to save: --target-fpr, "
            "--target-precision, --target-recall, --uncertain-band or --uncertain-frac"
        )
    return target


# --- the data plan --------------------------------------------------------------------------


@dataclass
class DataPlan:
    source: str
    split: str
    evaluated: list[Sample]
    fitting: list[Sample]
    fit_split: str  # "val", "val of PATH" (the run's own), or "<split> (same data)"
    fit_is_evaluated: bool
    notes: list[str]  # warnings a reader of the report must see

    def fit_on_evaluated(self) -> None:
        """Fit the temperature and thresholds on the evaluated samples themselves."""
        self.fitting, self.fit_split, self.fit_is_evaluated = (
            self.evaluated,
            f"{self.split} (same data)",
            True,
        )


def run_folder_of(model_path: Path, is_onnx: bool) -> Path | None:
    if is_onnx:
        return None
    return model_path if model_path.is_dir() else model_path.parent


def default_out_dir(model_path: Path, split: str, is_onnx: bool) -> Path:
    if is_onnx:
        return model_path.parent / f"{model_path.stem}-eval-{split}"
    return run_folder_of(model_path, is_onnx) / f"eval-{split}"


def plan_data(
    model_path: Path,
    data_source: str | Path | None,
    split: str | None,
    *,
    is_onnx: bool,
    group_regex: str | None = None,
) -> DataPlan:
    """Load the samples and decide what is evaluated and what fits; see the module docstring."""
    from cfimg.data import load_samples

    if split is not None and split not in SPLIT_CHOICES:
        raise UsageError(f"--split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    run_dir = run_folder_of(model_path, is_onnx)
    run_split_csv = run_dir / SPLIT_CSV if run_dir is not None else None
    if data_source is None:
        if is_onnx:
            raise UsageError(
                f"{model_path}: an .onnx model carries no dataset; give DATA (a folder or "
                "CSV manifest): cfimg eval MODEL.onnx DATA"
            )
        if not run_split_csv.is_file():
            raise UsageError(
                f"{run_dir}: no {SPLIT_CSV} in the run folder to evaluate on; give DATA"
            )
        data_source = run_split_csv
    samples = load_samples(data_source, group_regex=group_regex)
    present = sorted({s.split for s in samples if s.split})
    if split is None:
        split = next((name for name in ("test", "val") if name in present), "all")
    evaluated = samples if split == "all" else [s for s in samples if s.split == split]
    if not evaluated:
        has = f"it has: {', '.join(present)}" if present else "it has no splits; use --split all"
        raise DatasetError(f"{data_source}: no images in split {split!r} ({has})")
    notes = []
    if split in ("train", "all") and "train" in present:
        notes.append(f"split {split!r} includes training images: its metrics are optimistic")
    plan = DataPlan(str(data_source), split, evaluated, [], "", False, notes)
    val = [s for s in samples if s.split == "val"]
    if split == "val":
        plan.fitting, plan.fit_split, plan.fit_is_evaluated = evaluated, "val", True
    elif val:
        plan.fitting, plan.fit_split = val, "val"
    elif (
        run_split_csv is not None and run_split_csv.is_file() and Path(data_source) != run_split_csv
    ):
        run_val = [s for s in load_samples(run_split_csv) if s.split == "val"]
        if run_val:
            plan.fitting, plan.fit_split = run_val, f"val of {run_split_csv}"
    if not plan.fitting:
        plan.fit_on_evaluated()
        notes.append(
            "no validation split found: temperature and thresholds were fitted on the "
            "evaluated data itself, so metrics at them are optimistic"
        )
    return plan
