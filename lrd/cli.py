"""The ``lrd`` command: a thin layer over experiment, sweep, store and plots.

    lrd run [EXPERIMENT] [--out DIR] [--backend local|ray] [--address ADDR]
                                       run (or resume) a sweep; default experiments/quick.toml
    lrd tasks                          registered tasks and models, conventions, baselines
    lrd show DIR                       the summary table of a results folder
    lrd plot [DIR]                     (re)draw every figure of a results folder into DIR/figures
    lrd upgrade DIR                    rewrite a results folder of an older lrd to this one (same numbers)

User errors (a bad experiment file, a missing folder) print one line and exit 2;
a sweep with failed runs exits 1 (rerun it to retry them).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from lrd.schema import SCHEMA_VERSION

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
    upgrade = commands.add_parser("upgrade", help="rewrite a results folder of an older lrd in place (no retraining)")
    upgrade.add_argument("dir", help="results folder")
    args = parser.parse_args(argv)
    console = Console(stderr=True, highlight=False)
    try:
        handlers = {"run": cmd_run, "tasks": cmd_tasks, "show": cmd_show, "plot": cmd_plot, "upgrade": cmd_upgrade}
        return handlers[args.command](args, console)
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
    check_out_dir(args.out or str(out_dir), given=args.out is not None)
    if len(experiment.runs) > LARGE_GRID:
        print(
            f"{experiment.name}: a large grid of {len(experiment.runs)} runs; a time estimate follows the first group"
        )

    from lrd import interrupt
    from lrd.progress import PlainReporter, RichReporter, TimeEstimate
    from lrd.runtime import enable_compilation_cache
    from lrd.store import StoreError, check_schema
    from lrd.sweep import TooLarge, run_sweep

    try:
        check_schema(out_dir)
    except StoreError as err:
        raise UserError(str(err)) from None
    enable_compilation_cache()
    reporter = RichReporter(console) if console.is_terminal else PlainReporter()
    try:
        with interrupt.stop_on_sigint(), reporter:
            summary = run_sweep(experiment, out_dir, TimeEstimate(reporter, len(experiment.runs), LARGE_GRID), backend)
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


# --- lrd upgrade ----------------------------------------------------------------------------
def cmd_upgrade(args, console: Console) -> int:
    from lrd.store import StoreError
    from lrd.upgrade import upgrade

    try:
        done = upgrade(Path(args.dir))
    except StoreError as err:
        raise UserError(str(err)) from None
    if done.runs == 0 and done.from_schema == SCHEMA_VERSION:
        print(f"{args.dir}: already results schema {SCHEMA_VERSION}; nothing to do")
    else:
        print(
            f"{args.dir}: upgraded from results schema {done.from_schema} to {SCHEMA_VERSION}: {done.runs} runs "
            f"rewritten, solve threshold {done.solve_threshold:g} ([report] of the folder); no run retrained"
        )
    return 0


# --- lrd tasks -----------------------------------------------------------------------------
def cmd_tasks(args, console: Console) -> int:
    from lrd.models import CELLS, ModelConfig, parameter_count
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
    width, input_dim = 32, TASKS["delayed_recall"](gap=100).input_dim
    models = Table(
        title=f"Models (cells; any of them bidirectional and stacked). Parameters: one layer, hidden {width}, "
        f"input width {input_dim} (delayed_recall's default), readout not counted"
    )
    for column in ("cell", "states", "equations", "source", "options", "parameters"):
        models.add_column(column, overflow="fold")
    for name, cell in sorted(CELLS.items()):
        n_params = parameter_count(ModelConfig(cell=name, hidden=width), input_dim)
        options = ", ".join(cell.options()) or "-"
        models.add_row(name, ", ".join(cell.state_names), cell.equations, cell.source, options, str(n_params))
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


def summary_table(runs: pd.DataFrame, title: str) -> Table:
    """``lrd.results.summary`` of ``runs`` as a table to print."""
    from lrd.results import summary

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
        "grad growth /step init→final",
    ]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("task", "model") else "left")
    for row in summary(runs).itertuples(index=False):
        spread = "" if math.isnan(row.final_metric_std) else f" ± {row.final_metric_std:.3f}"
        table.add_row(
            row.task,
            str(row.gap),
            row.model,
            str(row.hidden),
            str(row.seeds),
            str(row.diverged),
            *([str(row.failed)] if failures else []),
            "—" if math.isnan(row.final_metric) else f"{row.final_metric:.3f}{spread}",
            f"{row.baseline_metric:.3f}",
            f"{row.solved}/{row.seeds}",
            "—" if math.isnan(row.solved_step) else f"{row.solved_step:.0f}",
            f"{_rate(row.growth_rate_init)} → {_rate(row.growth_rate_final)}",
        )
    return table


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.3f}"


if __name__ == "__main__":
    entry()
