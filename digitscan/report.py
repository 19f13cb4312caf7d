"""Rich tables for standard error: the run summary, the training epochs, the confusion matrix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    import torch

    from .calibration import Bin
    from .scorer import Result


def epochs_table(history: list[dict[str, float]]) -> Table:
    table = Table(title="digitscan fit")
    for name in ("epoch", "loss", "train acc", "holdout acc", "MNIST test acc", "seconds"):
        table.add_column(name, justify="right")
    for h in history:
        table.add_row(str(int(h["epoch"])), f"{h['loss']:.4f}", f"{h['train_acc']:.4f}",
                      f"{h['holdout_acc']:.4f}", f"{h['test_acc']:.4f}", f"{h['seconds']:.0f}")
    return table


LOW_CONFIDENCE = 0.9


class Tally:
    """Counts for the run summary, updated as results arrive (so memory stays flat)."""

    def __init__(self) -> None:
        self.status = {"ok": 0, "blank": 0, "error": 0}
        self.digits = [0] * 10
        self.low = 0
        self.inverted = 0

    def add(self, results: Iterable[Result]) -> None:
        for r in results:
            self.status[r.status] += 1
            for d in [r.digit] if r.digit is not None else [int(c) for c in r.text or ""]:
                self.digits[d] += 1
            if r.confidence is not None:
                self.low += r.confidence < LOW_CONFIDENCE
            self.inverted += bool(r.inverted)

    @property
    def total(self) -> int:
        return sum(self.status.values())


def summary_table(tally: Tally, device: str, seconds: float, skipped: int = 0) -> Table:
    """Images, statuses, digit counts, low-confidence count, device and throughput."""
    table = Table(title="digitscan run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("images", f"{tally.total:,}")
    if skipped:
        table.add_row("already scored (--resume)", f"{skipped:,}")
    table.add_row("ok", f"[green]{tally.status['ok']:,}[/]")
    table.add_row("blank", f"{tally.status['blank']:,}")
    table.add_row("error", f"[red]{tally.status['error']:,}[/]" if tally.status["error"] else "0")
    table.add_row("inverted (dark ink)", f"{tally.inverted:,}")
    table.add_row(f"confidence < {LOW_CONFIDENCE:g}", f"{tally.low:,}")
    table.add_row("per digit", "  ".join(f"{d}:{n}" for d, n in enumerate(tally.digits)))
    table.add_row("device", device)
    rate = tally.total / seconds if seconds > 0 else 0.0
    table.add_row("time", f"{seconds:.2f} s  ({rate:,.0f} images/s)")
    return table


def confusion_table(confusion: torch.Tensor, title: str) -> Table:
    """Rows: true digit; columns: predicted digit; mistakes highlighted."""
    table = Table(title=title)
    table.add_column("true \\ predicted", justify="right", style="bold")
    for d in range(10):
        table.add_column(str(d), justify="right")
    table.add_column("recall", justify="right")
    for t in range(10):
        row = confusion[t]
        cells = [f"[green]{int(v)}[/]" if p == t else (f"[red]{int(v)}[/]" if v else "·") for p, v in enumerate(row)]
        total = int(row.sum())
        table.add_row(str(t), *cells, f"{int(row[t]) / total:.3f}" if total else "-")
    return table


def reliability_table(bins: list[Bin], error: float) -> Table:
    """Per confidence bin: how many readings, how sure the model was, how often it was right."""
    table = Table(title=f"calibration: expected calibration error {error:.4f}")
    for name in ("confidence", "readings", "mean confidence", "accuracy", "gap"):
        table.add_column(name, justify="right")
    for b in bins:
        gap = b.accuracy - b.confidence
        colour = "green" if abs(gap) < 0.02 else "yellow" if abs(gap) < 0.05 else "red"
        table.add_row(f"{b.low:.2f}-{b.high:.2f}", f"{b.count:,}", f"{b.confidence:.4f}" if b.count else "·",
                      f"{b.accuracy:.4f}" if b.count else "·", f"[{colour}]{gap:+.4f}[/]" if b.count else "·")
    return table

