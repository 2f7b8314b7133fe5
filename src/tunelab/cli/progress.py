"""A Rich progress bar for training: loss, lr, throughput and ETA; evaluation lines above it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task_id: Any = None

    def start(self, total_steps: int, done_steps: int) -> None:
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=total_steps, completed=done_steps, stats="")

    def step(self, step: int, record: dict[str, Any]) -> None:
        stats = f"loss {record['loss']:.4f} lr {record['lr']:.1e} {record['samples_per_s']:.1f} rows/s"
        if record.get("mfu"):
            stats += f" MFU {100 * record['mfu']:.0f}%"
        self.progress.update(self.task_id, completed=step, stats=stats)

    def evaluation(self, step: int, metrics: dict[str, Any], note: str) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        self.progress.console.print(f"[cyan]step {step}[/] validation {shown}  [dim]({note})[/]")

    def end(self) -> None:
        self.progress.stop()
