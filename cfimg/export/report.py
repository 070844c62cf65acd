"""What an export measured and wrote: the checks per file, and the error that stops it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cfimg.errors import CfimgError


class ExportError(CfimgError):
    """An export that failed a check. `report` is what was measured and which files, if any, were
    still written (the fp32 file when only a reduced-precision copy was refused)."""

    def __init__(self, message: str, report: ExportReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ExportedModel:
    """One written file (fp32, fp16 or int8) and what was measured on it."""

    path: Path
    precision: str
    input_format: str
    opset: int
    size_bytes: int = 0
    checks: list[Check] = field(default_factory=list)
    max_abs_dp: float | None = None  # vs PyTorch fp32 on the check images
    accuracy: float | None = None  # on labelled check images, with the card's threshold
    accuracy_change_points: float | None = None  # vs the fp32 ONNX model, in percentage points
    speedup_batch1: float | None = None  # latency of fp32 ONNX / latency of this model
    speedup_batch32: float | None = None
    written: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass
class ExportReport:
    source: Path  # the checkpoint exported
    check_source: str  # where the check images came from, in words
    check_images: int
    calib_source: str = ""
    models: list[ExportedModel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(model.ok for model in self.models)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["source"] = str(self.source)
        for model in values["models"]:
            model["path"] = str(model["path"])
        return values


def raise_if_failed(report: ExportReport) -> None:
    """ExportError naming the first failed check, if any, and what was written all the same."""
    written = [str(model.path) for model in report.models if model.written]
    outcome = f"wrote only {', '.join(written)}" if written else "nothing was written"
    for model in report.models:
        for check in model.checks:
            if check.ok:
                continue
            hint = " (use --force to write it anyway)" if check.name == "accuracy" else ""
            raise ExportError(
                f"{model.path}: {model.precision} {check.name} check failed: {check.detail}; "
                f"{outcome}{hint}",
                report,
            )


def first_line(exc: BaseException) -> str:
    """An exception as a check's detail: its first line, at most 200 characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
