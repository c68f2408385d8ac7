"""Progress of a sweep as the ``lrd`` command shows it: one line per event, or a live display.

Both reporters implement ``lrd.sweep.Reporter``: ``PlainReporter`` for logs and
pipes, ``RichReporter`` (bars per group in training) on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from lrd.experiment import Experiment
    from lrd.sweep import Reporter


def _result_line(rows: list[dict]) -> str:
    """One line for a group's runs: each seed's metric (and "solved"), its divergence, or the failure."""
    parts = []
    several_lrs = len({row.get("lr") for row in rows}) > 1
    for row in rows:
        if row["status"] == "failed":
            seeds = ",".join(sorted({str(r["seed"]) for r in rows}, key=int))
            return f"seeds {seeds} failed: {row['error']}"
        member = f"seed {row['seed']}" + (f" lr {row['lr']:g}" if several_lrs else "")
        if row["status"] == "diverged":
            parts.append(f"{member}: diverged at step {int(row['diverged_step'])}")
        else:
            parts.append(f"{member}: metric {row['final_metric']:.3f}{' solved' if row['solved'] else ''}")
    return "; ".join(parts)


def _header(name: str, total: int, already_done: int) -> str:
    return f"{name}: {total} runs, {already_done} already done, {total - already_done} to compute"


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
        print(_header(experiment.name, total, already_done), flush=True)

    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int, attempt: int) -> None:
        print(f"[{self.done}/{self.total}] training {label} ({steps} steps){_attempt(attempt)}", flush=True)

    def block_done(self, label: str, done: int, total: int) -> None:
        pass

    def group_done(self, label: str, rows: list[dict]) -> None:
        self.done += len(rows)
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}: {_result_line(rows)}", flush=True)


class Remaining(TimeRemainingColumn):
    """Time left: for the runs bar, the time per run so far times the runs left (from the first group on,
    where rich's own estimate, a speed over its last 30 s of updates, says -:--:-- between groups);
    for a group's bar, rich's estimate."""

    def render(self, task: Task) -> Text:
        done_here = task.completed - task.fields.get("done_before", 0)
        if task.fields.get("unit") != "runs" or task.elapsed is None or done_here <= 0:
            return super().render(task)
        left = task.elapsed / done_here * (task.total - task.completed) if task.total is not None else 0
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class RichReporter:
    """A live progress display: runs done / total, a bar per group in training, elapsed and remaining.

    The header and each finished group's line are printed above the bars, so they stay
    in the terminal when the bars are gone.
    """

    def __init__(self, console: Console) -> None:
        columns: list[str | ProgressColumn] = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            Remaining(),
        ]
        # redrawn on each event (a block, a group), not by a background thread: a redraw racing with the
        # print of a group's line lost that line on a loaded machine (seen in a pseudo-terminal, 1 run in 8)
        self.progress = Progress(*columns, console=console, auto_refresh=False)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, experiment: Experiment, total: int, already_done: int) -> None:
        self.progress.console.print(_header(experiment.name, total, already_done), markup=False)
        self.runs = self.progress.add_task(
            experiment.name, total=total, completed=already_done, unit="runs", done_before=already_done
        )
        self.groups: dict[
            str, tuple[TaskID, int]
        ] = {}  # label -> (progress task, steps per block) of each group in training
        self.progress.refresh()

    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int, attempt: int) -> None:
        if label in self.groups:  # a retry: its bar starts again
            self.progress.remove_task(self.groups[label][0])
        self.groups[label] = (
            self.progress.add_task(label + _attempt(attempt), total=steps, unit="steps"),
            steps // n_blocks,
        )
        self.progress.refresh()

    def block_done(self, label: str, done: int, total: int) -> None:
        if label in self.groups:
            task, step_size = self.groups[label]
            self.progress.update(task, completed=done * step_size)
            self.progress.refresh()

    def group_done(self, label: str, rows: list[dict]) -> None:
        if label in self.groups:
            self.progress.remove_task(self.groups.pop(label)[0])
        self.progress.advance(self.runs, len(rows))
        self.progress.console.print(f"{label}: {_result_line(rows)}", markup=False)
        self.progress.refresh()


class TimeEstimate:
    """A reporter's events passed on; for a grid larger than ``large``, an estimate of the total time.

    The estimate scales the first group's time (compilation included) to the runs
    still to compute, divided by the groups that were training at once when it ended
    (two workers, ``lrd.backends.LocalBackend``, train two); groups train shortest
    sequences first, so it is a lower bound for a grid whose later groups are longer.
    """

    def __init__(self, reporter: Reporter, total: int, large: int):
        self.reporter, self.large = reporter, total > large
        self.training: set[str] = set()  # the groups started and not yet done

    def start(self, experiment, total, already_done):
        self.t0, self.left = time.perf_counter(), total - already_done
        self.reporter.start(experiment, total, already_done)

    def group_started(self, label, *args):
        self.training.add(label)
        self.reporter.group_started(label, *args)

    def block_done(self, *args):
        self.reporter.block_done(*args)

    def group_done(self, label, rows):
        self.reporter.group_done(label, rows)
        at_once = max(len(self.training), 1)
        self.training.discard(label)
        if self.large:
            self.large = False
            per_run = (time.perf_counter() - self.t0) / max(len(rows), 1)
            print(
                f"estimate: about {_duration(per_run * self.left / at_once)} for the {self.left} runs to compute "
                f"({per_run:.1f} s per run in the first group, compilation included; {at_once} group"
                f"{'s' if at_once > 1 else ''} training at once)",
                file=sys.stderr,
            )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
