"""What a user watches during training: a progress bar per epoch and one line per epoch."""

from __future__ import annotations


class EpochBar:
    """A rich progress bar for one epoch, showing loss and images/s."""

    def __init__(self, description: str, total: int):
        from rich import get_console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.1f} img/s"),
            TimeRemainingColumn(),
            transient=True,
            disable=not get_console().is_terminal,  # no bar debris in logs and pipes
        )
        self.task = self.progress.add_task(description, total=total, loss=float("nan"), ips=0.0)
        self.progress.start()

    def update(self, loss: float, ips: float) -> None:
        self.progress.update(self.task, advance=1, loss=loss, ips=ips)

    def close(self) -> None:
        self.progress.stop()


def epoch_bar(enabled: bool, description: str, total: int) -> EpochBar | None:
    return EpochBar(description, total) if enabled else None


def epoch_line(row: dict, improved: bool, select_metric: str) -> str:
    """The line logged after each epoch: a metrics.csv row, marked when it is the new best."""
    return (
        f"epoch {row['epoch']:>3}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"acc {row['accuracy']:.3f}  bal_acc {row['balanced_accuracy']:.3f}  "
        f"auc {row['roc_auc']:.3f}  "
        f"{row['images_per_s']:.1f} img/s  wait {100 * row['data_wait_frac']:.0f}%"
        + (f"  * best {select_metric}" if improved else "")
    )
