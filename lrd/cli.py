"""The ``lrd`` command: a thin layer over experiment, sweep, store and plots.

    lrd run [EXPERIMENT] [--out DIR] [--backend local|ray] [--address ADDR]
                                       run (or resume) a sweep; default experiments/quick.toml
    lrd tasks                          registered tasks and models, conventions, baselines
    lrd show DIR                       the summary table of a results folder
    lrd plot [DIR]                     (re)draw every figure of a results folder into DIR/figures

User errors (a bad experiment file, a missing folder) print one line and exit 2;
a sweep with failed runs exits 1 (rerun it to retry them).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

DEFAULT_EXPERIMENT = Path("experiments") / "quick.toml"
USER_ERROR = 2
RUNS_FAILED = 1
LARGE_GRID = 2000  # runs; a larger grid is announced, with a time estimate after its first group


class UserError(Exception):
    """Printed as one line; exit code 2."""


def entry() -> None:
    """The ``lrd`` command: with LRD_MALLOC=tuned it first restarts with lrd's allocator settings (lrd.runtime)."""
    from lrd import runtime

    runtime.reexec_with_malloc_settings()
    sys.stdout = _BrokenPipeSafe(sys.stdout)
    sys.exit(main())


class _BrokenPipeSafe:
    """stdout that, once its reader has gone (``lrd run ... | head -1``), sends the rest nowhere.

    Without it the next print raises BrokenPipeError and aborts the sweep; with it
    training goes on and every result is written.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # the buffered text and all later output go nowhere
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lrd", description="Long-range-dependency experiments in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume an experiment (a sweep)")
    run.add_argument("experiment", nargs="?", default=str(DEFAULT_EXPERIMENT), help="experiment file (TOML)")
    run.add_argument("--out", help="results folder (default: results/<experiment name>)")
    run.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where the groups of runs train (default: local, this process)",
    )
    run.add_argument(
        "--address",
        help="with --backend ray: the cluster to join (the head's host:port); default: start a local Ray cluster",
    )
    commands.add_parser("tasks", help="list the registered tasks and models")
    show = commands.add_parser("show", help="summary table of a results folder")
    show.add_argument("dir", help="results folder")
    show.add_argument("--all", action="store_true", help="include runs of earlier versions of the experiment")
    plot = commands.add_parser("plot", help="redraw every figure of a results folder from its stored tables")
    plot.add_argument("dir", nargs="?", default="results/quick", help="results folder (default: results/quick)")
    run.add_argument("--no-plot", action="store_true", help="do not draw the figures at the end")
    args = parser.parse_args(argv)
    console = Console(stderr=True, highlight=False)
    try:
        return {"run": cmd_run, "tasks": cmd_tasks, "show": cmd_show, "plot": cmd_plot}[args.command](args, console)
    except UserError as err:
        print(f"lrd: error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("lrd: interrupted; finished runs are saved, run the same command to resume", file=sys.stderr)
        return 130


# --- lrd run -----------------------------------------------------------------------------
def cmd_run(args, console: Console) -> int:
    from lrd.experiment import ExperimentError, load_experiment

    backend = make_backend(args)
    try:
        experiment = load_experiment(args.experiment)
    except ExperimentError as err:
        raise UserError(str(err)) from None
    out_dir = Path(args.out) if args.out else Path("results") / experiment.name
    check_out_dir(args.out or str(out_dir), given=args.out is not None)
    if len(experiment.runs) > LARGE_GRID:
        print(
            f"{experiment.name}: a large grid of {len(experiment.runs)} runs; a time estimate follows the first group"
        )

    from lrd import interrupt
    from lrd.backends import enable_compilation_cache
    from lrd.sweep import TooLarge, run_sweep

    enable_compilation_cache()
    reporter = RichReporter(console) if console.is_terminal else PlainReporter()
    try:
        with interrupt.stop_on_sigint(), reporter:
            summary = run_sweep(experiment, out_dir, _TimeEstimate(reporter, len(experiment.runs)), backend)
    except TooLarge as err:
        raise UserError(f"{args.experiment}: {err}") from None
    except OSError as err:  # the results folder went read-only or full mid-sweep: finished runs are kept
        if err.filename is None:  # not a file (a Ray connection, say): not the user's folder
            raise
        raise UserError(f"{out_dir}: cannot write the results ({err.strerror}: {err.filename})") from None
    print(
        f"{experiment.name}: {summary.computed} runs computed, {summary.already_done} already done, "
        f"{summary.diverged} diverged, {summary.failed} failed, {summary.wall_time_s:.1f} s; results in {out_dir}"
    )
    if not args.no_plot:
        try:
            draw_figures(out_dir)
        except UserError as err:  # figures are a by-product: the runs are saved, the exit code says whether they failed
            print(f"lrd: error: {err}", file=sys.stderr)
            if not summary.failed:
                return USER_ERROR
    if summary.failed:
        runs = "run" if summary.failed == 1 else "runs"
        print(
            f"lrd: {summary.failed} {runs} failed (see the error column of the runs table); "
            "run the same command to retry",
            file=sys.stderr,
        )
        return RUNS_FAILED
    return 0


def check_out_dir(name: str, given: bool) -> None:
    """A results folder lrd can use, else a UserError; nothing is written where nothing needs writing.

    Refused: URL-like names (pandas would read ``s3:x`` or ``file:x`` as a URL), an
    existing file, and a folder this process cannot write into. A folder whose
    runs are all done needs no writing, so a read-only finished folder passes:
    ``lrd run`` then only checks it (see store.prepare, which skips unchanged files).
    """
    option = "--out" if given else "results folder"
    if "://" in name or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", name):
        raise UserError(f"{option} {name}: looks like a URL; give a local folder path")
    out_dir = Path(name)  # only now: Path("s3://x") is "s3:/x"
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the sweep creates the rest
    if not existing.is_dir():
        raise UserError(f"{option} {name}: {existing} is a file, not a folder")
    probe = existing / f".tmp-write-check-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        if _finished_here(out_dir):
            return  # nothing to write: checking it is all `lrd run` will do
        raise UserError(f"{option} {name}: cannot write there ({err.strerror})") from None


def _finished_here(out_dir: Path) -> bool:
    """Every run of the experiment last run into ``out_dir`` is stored with its results."""
    from lrd.store import completed_runs, current_run_ids

    try:
        wanted = current_run_ids(out_dir)
    except (OSError, ValueError):
        return False
    return wanted is not None and set(wanted) <= completed_runs(out_dir)


class _TimeEstimate:
    """A reporter's events passed on; for a grid larger than LARGE_GRID, an estimate of the total time.

    The estimate scales the first group's time (compilation included) to the runs
    still to compute; groups train shortest sequences first, so it is a lower bound
    for a grid whose later groups are longer.
    """

    def __init__(self, reporter, total: int):
        self.reporter, self.large = reporter, total > LARGE_GRID

    def start(self, experiment, total, already_done):
        self.t0, self.left = time.perf_counter(), total - already_done
        self.reporter.start(experiment, total, already_done)

    def group_started(self, *args):
        self.reporter.group_started(*args)

    def block_done(self, *args):
        self.reporter.block_done(*args)

    def group_done(self, label, rows):
        self.reporter.group_done(label, rows)
        if self.large:
            self.large = False
            per_run = (time.perf_counter() - self.t0) / max(len(rows), 1)
            print(
                f"estimate: about {_duration(per_run * self.left)} for the {self.left} runs to compute "
                f"({per_run:.1f} s per run in the first group, compilation included)",
                file=sys.stderr,
            )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def make_backend(args):
    """The backend the options ask for; a bad combination is a UserError."""
    if args.address is not None and args.backend != "ray":
        raise UserError("--address needs --backend ray")
    if args.backend == "local":
        return None  # the sweep's default, in this process
    from lrd.backends import RayBackend, RayNotInstalled

    try:
        RayBackend.check_installed()
    except RayNotInstalled as err:
        raise UserError(str(err)) from None
    return RayBackend(args.address)


def _result_line(rows: list[dict]) -> str:
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

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        return False

    def start(self, experiment, total, already_done):
        self.total, self.done = total, already_done
        print(
            f"{experiment.name}: {total} runs, {already_done} already done, {total - already_done} to compute",
            flush=True,
        )

    def group_started(self, label, n_runs, n_blocks, steps, attempt):
        print(f"[{self.done}/{self.total}] training {label} ({steps} steps){_attempt(attempt)}", flush=True)

    def block_done(self, label, done, total):
        pass

    def group_done(self, label, rows):
        self.done += len(rows)
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}: {_result_line(rows)}", flush=True)


class RichReporter:
    """A live progress display: runs done / total, a bar per group in training, elapsed and remaining."""

    def __init__(self, console: Console):
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

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def start(self, experiment, total, already_done):
        self.runs = self.progress.add_task(experiment.name, total=total, completed=already_done, unit="runs")
        self.groups = {}  # label -> (progress task, steps per block) of each group in training
        if already_done:
            self.progress.console.print(f"{already_done} of {total} runs already done; computing the rest")

    def group_started(self, label, n_runs, n_blocks, steps, attempt):
        if label in self.groups:  # a retry: its bar starts again
            self.progress.remove_task(self.groups[label][0])
        self.groups[label] = (
            self.progress.add_task(label + _attempt(attempt), total=steps, unit="steps"),
            steps // n_blocks,
        )

    def block_done(self, label, done, total):
        if label in self.groups:
            task, step_size = self.groups[label]
            self.progress.update(task, completed=done * step_size)

    def group_done(self, label, rows):
        if label in self.groups:
            self.progress.remove_task(self.groups.pop(label)[0])
        self.progress.advance(self.runs, len(rows))
        self.progress.console.print(f"{label}: {_result_line(rows)}", markup=False)


# --- lrd plot -----------------------------------------------------------------------------
def cmd_plot(args, console: Console) -> int:
    draw_figures(Path(args.dir))
    return 0


def draw_figures(out_dir: Path) -> None:
    """Every figure of a results folder, from its stored tables alone, into out_dir/figures."""
    from lrd.plots import PlotError, write_figures
    from lrd.store import StoreError, load

    try:
        results = load(out_dir)
    except StoreError as err:
        raise UserError(str(err)) from None
    failed = int((results.runs["status"] == "failed").sum())
    if failed == len(results.runs):
        print(f"no figures: all {failed} runs failed")
        return
    try:
        paths = write_figures(
            results,
            out_dir / "figures",
            on_skip=lambda stem, reason: print(f"skipped {stem}: {reason}"),
        )
    except PlotError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{out_dir / 'figures'}: cannot write the figures ({err.strerror})") from None
    print(
        f"{len(paths)} figure files in {out_dir / 'figures'}" + (f"; {failed} failed runs not drawn" if failed else "")
    )


def _stdout_console() -> Console:
    """Tables on stdout; wide enough to stay readable when piped to a file."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


# --- lrd tasks -----------------------------------------------------------------------------
def cmd_tasks(args, console: Console) -> int:
    from lrd.models import CELLS
    from lrd.tasks import TASKS

    out = _stdout_console()
    table = Table(title="Tasks (baselines: best predictor that ignores the past; shown at gap=100)")
    for column in ("task", "source", "convention", "memoryless baseline"):
        table.add_column(column, overflow="fold")
    for name, cls in sorted(TASKS.items()):
        task = cls(gap=100)
        base = task.baseline()
        extra = "".join(f", {k} {v:.4g}" for k, v in task.extra_baselines().items())
        table.add_row(
            name, cls.source, cls.convention, f"loss {base.loss:.4g}, {cls.metric_name} {base.metric:.4g}{extra}"
        )
    out.print(table)
    models = Table(title="Models (cells; any of them bidirectional and stacked)")
    for column in ("cell", "states", "equations", "source"):
        models.add_column(column, overflow="fold")
    for name, cell in sorted(CELLS.items()):
        models.add_row(name, ", ".join(cell.state_names), cell.equations, cell.source)
    out.print(models)
    return 0


# --- lrd show ------------------------------------------------------------------------------
def cmd_show(args, console: Console) -> int:
    from lrd.store import StoreError, load

    try:
        results = load(args.dir, all_runs=args.all)
    except StoreError as err:
        raise UserError(str(err)) from None
    out = _stdout_console()
    out.print(summary_table(results.runs, title=str(args.dir)))
    failed = results.runs[results.runs["status"] == "failed"]
    for (label, error), g in failed.groupby(["model", "error"], sort=True):
        seeds = ",".join(str(s) for s in sorted(g["seed"]))
        out.print(
            f"failed: {g['task'].iloc[0]} gaps {','.join(str(x) for x in sorted(set(g['gap'])))} {label} "
            f"seeds {seeds}: {error}"
        )
    return 0


def summary_table(runs, title: str) -> Table:
    """Seeds aggregated: one row per task, gap and model."""
    table = Table(title=title)
    failures = (runs["status"] == "failed").any()
    for column in ("final_metric", "solved_step", "decay_length_init", "decay_length_final"):
        if column not in runs:  # every run failed: no results columns at all
            runs = runs.assign(**{column: np.nan})
    columns = [
        "task",
        "gap",
        "model",
        "h",
        "seeds",
        "diverged",
        *(["failed"] if failures else []),
        "final metric",
        "baseline",
        "solved",
        "solved at step",
        "decay len init→final",
    ]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("task", "model") else "left")
    for (task, gap, model, hidden), g in runs.groupby(["task", "gap", "model", "hidden"], sort=True):
        metric = g["final_metric"].dropna()
        spread = f" ± {metric.std(ddof=1):.3f}" if len(metric) > 1 else ""
        solved_steps = g["solved_step"].dropna()
        failed = [str(int((g["status"] == "failed").sum()))] if failures else []
        table.add_row(
            task,
            str(gap),
            model,
            str(hidden),
            str(len(g)),
            str(int((g["status"] == "diverged").sum())),
            *failed,
            f"{metric.mean():.3f}{spread}" if len(metric) else "—",
            f"{g['baseline_metric'].iloc[0]:.3f}",
            f"{int(g['solved'].sum())}/{len(g)}",
            f"{np.median(solved_steps):.0f}" if len(solved_steps) else "—",
            f"{_fmt(g['decay_length_init'].median())} → {_fmt(g['decay_length_final'].median())}",
        )
    return table


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:.1f}"


if __name__ == "__main__":
    entry()
