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


class UserError(Exception):
    """Printed as one line; exit code 2."""


def entry() -> None:
    """The ``lrd`` command: with LRD_MALLOC=tuned it first restarts with lrd's allocator settings (lrd.runtime)."""
    from lrd import runtime

    runtime.reexec_with_malloc_settings()
    sys.exit(main())


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
    if args.backend == "local":  # a cluster's workers may have the GPU this process lacks: they check there
        for spec in experiment.runs:
            try:
                spec.model.time_loop_path()
            except ValueError as err:  # a forced kernel that cannot run here
                raise UserError(f"{experiment.path}: model.{err}") from None
    out_dir = Path(args.out) if args.out else Path("results") / experiment.name

    from lrd.backends import enable_compilation_cache
    from lrd.sweep import run_sweep

    enable_compilation_cache()
    reporter = RichReporter(console) if console.is_terminal else PlainReporter()
    with reporter:
        summary = run_sweep(experiment, out_dir, reporter, backend)
    print(
        f"{experiment.name}: {summary.computed} runs computed, {summary.already_done} already done, "
        f"{summary.diverged} diverged, {summary.failed} failed, {summary.wall_time_s:.1f} s; results in {out_dir}"
    )
    if not args.no_plot:
        draw_figures(out_dir)
    if summary.failed:
        runs = "run" if summary.failed == 1 else "runs"
        print(
            f"lrd: {summary.failed} {runs} failed (see the error column of the runs table); "
            "run the same command to retry",
            file=sys.stderr,
        )
        return RUNS_FAILED
    return 0


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
        paths = write_figures(
            results,
            out_dir / "figures",
            on_skip=lambda stem, reason: print(f"skipped {stem}: {reason}"),
        )
    except (StoreError, PlotError) as err:
        raise UserError(str(err)) from None
    failed = int((results.runs["status"] == "failed").sum())
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
