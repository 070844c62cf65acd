"""Typed errors a user can act on. The CLI turns each into one line and a distinct exit status."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected failure
EXIT_USAGE = 2  # bad flags or arguments (typer/click also use 2)
EXIT_SOME_INPUTS_FAILED = 3  # a batch job finished, but some inputs could not be processed
EXIT_BAD_DATASET = 4
EXIT_BAD_MODEL = 5
EXIT_BAD_IMAGE = 6
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CfimgError(Exception):
    """Base class: a failure with a message fit to show a user as it is."""

    exit_code = EXIT_ERROR


class UsageError(CfimgError):
    """A flag or argument combination that cannot work."""

    exit_code = EXIT_USAGE


class ImageLoadError(CfimgError):
    """One image could not be turned into RGB pixels; `reason` says why in a few words."""

    exit_code = EXIT_BAD_IMAGE

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(CfimgError):
    """A dataset source that cannot be read or trained on."""

    exit_code = EXIT_BAD_DATASET


class ModelFileError(CfimgError):
    """A checkpoint or ONNX file that is missing, damaged, foreign or incompatible."""

    exit_code = EXIT_BAD_MODEL

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TrainingInterrupted(CfimgError):
    """Ctrl-C during training, with the run's last checkpoint on disk to resume from."""

    exit_code = EXIT_INTERRUPTED


def one_line(text: str) -> str:
    """A reason squeezed onto one line: error fields in CSV/JSONL rows and terminal messages."""
    return " ".join(str(text).split())
