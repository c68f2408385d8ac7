"""Progress of a sweep as the ``lrd`` command shows it: one line per event, or a live display.

Both reporters implement ``lrd.sweep.Reporter``: ``PlainReporter`` for logs and
pipes, ``RichReporter`` (bars per group in training) on a terminal.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from lrd.experiment import Experiment


def _result_line(rows: list[dict]) -> str:
    """One line for a group's runs: each seed's metric (and "solved"), its divergence, or the failure."""
    parts = []
    for row in rows:
        if row["status"] == "failed":
            seeds = ",".join(str(r["seed"]) for r in rows)
            return f"seeds {seeds} failed: {row['error']}"
        if row["status"] == "diverged":
            parts.append(f"seed {row['seed']}: diverged at step {int(row['diverged_step'])}")
        else:
            parts.append(f"seed {row['seed']}: metric {row['final_metric']:.3f}{' solved' if row['solved'] else ''}")
    return "; ".join(parts)


def _attempt(attempt: int) -> str:
    return f" (attempt {attempt}: its worker died)" if attempt > 1 else ""


class PlainReporter:
    """One line per event, for logs and pipes."""

    def __enter__(self) -> PlainReporter:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, experiment: Experiment, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        print(
            f"{experiment.name}: {total} runs, {already_done} already done, {total - already_done} to compute",
            flush=True,
        )

    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int, attempt: int) -> None:
        print(f"[{self.done}/{self.total}] training {label} ({steps} steps){_attempt(attempt)}", flush=True)

    def block_done(self, label: str, done: int, total: int) -> None:
        pass

    def group_done(self, label: str, rows: list[dict]) -> None:
        self.done += len(rows)
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}: {_result_line(rows)}", flush=True)


class RichReporter:
    """A live progress display: runs done / total, a bar per group in training, elapsed and remaining."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, experiment: Experiment, total: int, already_done: int) -> None:
        self.runs = self.progress.add_task(experiment.name, total=total, completed=already_done, unit="runs")
        self.groups: dict[
            str, tuple[TaskID, int]
        ] = {}  # label -> (progress task, steps per block) of each group in training
        if already_done:
            self.progress.console.print(f"{already_done} of {total} runs already done; computing the rest")

    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int, attempt: int) -> None:
        if label in self.groups:  # a retry: its bar starts again
            self.progress.remove_task(self.groups[label][0])
        self.groups[label] = (
            self.progress.add_task(label + _attempt(attempt), total=steps, unit="steps"),
            steps // n_blocks,
        )

    def block_done(self, label: str, done: int, total: int) -> None:
        if label in self.groups:
            task, step_size = self.groups[label]
            self.progress.update(task, completed=done * step_size)

    def group_done(self, label: str, rows: list[dict]) -> None:
        if label in self.groups:
            self.progress.remove_task(self.groups.pop(label)[0])
        self.progress.advance(self.runs, len(rows))
        self.progress.console.print(f"{label}: {_result_line(rows)}", markup=False)
