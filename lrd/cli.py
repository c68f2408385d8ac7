"""The ``lrd`` command: a thin layer over experiment, sweep, store and plots.

    lrd run [EXPERIMENT] [KEY=VALUE ...] [--out DIR] [--backend local|ray] [--address ADDR]
                                       run (or resume) a sweep; default experiments/quick.toml;
                                       KEY=VALUE overrides a value of the experiment (model.cell=[lstm,gru])
    lrd tasks                          registered tasks and models, conventions, baselines
    lrd show DIR                       the summary table of a results folder
    lrd plot [DIR] [--pdf]             (re)draw every figure of a results folder into DIR/figures (PNG; --pdf: PDF too)
    lrd report DIR                     one self-contained page, DIR/report.html (made by `lrd run` too)
    lrd verify DIR [--sample N]        retrain N groups of a results folder and compare every number
    lrd upgrade DIR                    rewrite a results folder of an older lrd to this one (same numbers), packed
    lrd pack DIR                       pack a results folder's finished runs into one table per kind (DIR/tables)

User errors (a bad experiment file, a missing folder) print one line and exit 2;
a sweep with failed runs exits 1 (rerun it to retry them).
"""

from __future__ import annotations

import argparse
import errno
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
DEFAULT_RESULTS = Path("results") / "quick"  # where `lrd run` writes the default experiment (not committed)
USER_ERROR = 2
RUNS_FAILED = 1
LARGE_GRID = 2000  # runs; a larger grid is announced, with a time estimate after its first group


class UserError(Exception):
    """Printed as one line; exit code 2."""


def entry() -> None:
    """The ``lrd`` command: with LRD_MALLOC=tuned it first restarts with lrd's allocator settings (lrd.runtime)."""
    from lrd import interrupt, runtime

    interrupt.exit_on_sigint()  # a Ctrl-C ends the command at once, one line, exit 130
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
    run = commands.add_parser(
        "run",
        help="run or resume an experiment (a sweep)",
        usage="lrd run [EXPERIMENT] [KEY=VALUE ...] [--out DIR] [--no-plot] [--backend local|ray] [--address ADDR]",
    )
    run.add_argument(
        "items",
        nargs="*",
        metavar="EXPERIMENT KEY=VALUE",
        help=f"experiment file (TOML; default {DEFAULT_EXPERIMENT}), then overrides such as train.lr=3e-3",
    )
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
    plot.add_argument("dir", nargs="?", help=f"results folder (default: {DEFAULT_RESULTS}, once `lrd run` made it)")
    plot.add_argument("--pdf", action="store_true", help="also write each figure as PDF (default: PNG only)")
    run.add_argument("--no-plot", action="store_true", help="do not draw the figures at the end")
    report = commands.add_parser("report", help="write DIR/report.html: summary, figures, experiment, versions")
    report.add_argument("dir", help="results folder (with figures: `lrd plot DIR` draws them)")
    verify = commands.add_parser("verify", help="retrain a sample of a results folder's groups and compare")
    verify.add_argument("dir", help="results folder")
    verify.add_argument("--sample", type=int, default=1, help="how many groups to retrain (default 1)")
    verify.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest relative difference allowed (default 0 on the machine and versions that wrote DIR, else 1e-3)",
    )
    upgrade = commands.add_parser("upgrade", help="rewrite a results folder of an older lrd in place (no retraining)")
    upgrade.add_argument("dir", help="results folder")
    pack = commands.add_parser("pack", help="pack a results folder's finished runs into one table per kind")
    pack.add_argument("dir", help="results folder")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "run" and not any(item.startswith("-") for item in extra):
        args.items += extra  # overrides after an option: lrd run EXP --out DIR train.lr=1e-3
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    console = Console(stderr=True, highlight=False)
    from lrd import interrupt

    try:
        handlers = {"run": cmd_run, "tasks": cmd_tasks, "show": cmd_show, "plot": cmd_plot, "upgrade": cmd_upgrade}
        handlers |= {"report": cmd_report, "verify": cmd_verify, "pack": cmd_pack}
        with interrupt.stop_on_sigint():  # a Ctrl-C swallowed anywhere (a gc callback) still ends the command
            code = handlers[args.command](args, console)
            sys.stdout.flush()  # a full disk or a closed pipe under stdout shows here, not at exit
            return code
    except UserError as err:
        print(f"lrd: error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(interrupt.INTERRUPTED, file=sys.stderr)
        return interrupt.EXIT_INTERRUPTED
    except OSError as err:
        if err.filename is not None or err.errno not in OUTPUT_ERRORS:
            raise
        # the output cannot be written (a full disk, a closed pipe): one line, and what is left unwritten goes nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        print(f"lrd: error: cannot write the output ({os.strerror(err.errno)})", file=sys.stderr)
        return USER_ERROR


OUTPUT_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT, errno.EFBIG}


# --- lrd run -----------------------------------------------------------------------------
def cmd_run(args, console: Console) -> int:
    from lrd.experiment import ExperimentError, load_experiment, parse_overrides

    backend = make_backend(args)
    args.experiment, items = experiment_and_overrides(args.items)
    try:
        experiment = load_experiment(args.experiment, parse_overrides(items, args.experiment))
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
        with reporter:
            summary = run_sweep(experiment, out_dir, TimeEstimate(reporter, len(experiment.runs), LARGE_GRID), backend)
    except TooLarge as err:
        raise UserError(f"{args.experiment}: {err}") from None
    except StoreError as err:  # another lrd run holds the folder
        raise UserError(str(err)) from None
    except OSError as err:  # the results folder went read-only or full mid-sweep: finished runs are kept
        if err.filename is None:  # not a file (a Ray connection, say): not the user's folder
            raise
        raise UserError(f"{out_dir}: cannot write the results ({err.strerror}: {err.filename})") from None
    if summary.damaged:
        print(f"{_damaged_runs(summary.damaged)} recomputed: {_damage_list(summary.damaged)}")
    if summary.not_packed:
        print(f"lrd: not packed: {summary.not_packed}", file=sys.stderr)
    print(
        f"{experiment.name}: {summary.computed} runs computed, {summary.already_done} already done, "
        f"{summary.diverged} diverged, {summary.failed} failed, {summary.wall_time_s:.1f} s; results in {out_dir}"
    )
    if not args.no_plot:
        try:
            draw_figures(out_dir)
            if (out_dir / "figures").is_dir() and any((out_dir / "figures").glob("*.png")):  # none if all failed
                make_report(out_dir)
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


def experiment_and_overrides(items: list[str]) -> tuple[str, list[str]]:
    """The experiment file and the KEY=VALUE overrides of ``lrd run``'s arguments.

    The experiment is the first argument when it has no ``=`` (default: the default
    experiment); every other argument must be KEY=VALUE.
    """
    experiment = str(DEFAULT_EXPERIMENT)
    if items and "=" not in items[0]:
        experiment, items = items[0], items[1:]
    for item in items:
        if "=" not in item:
            raise UserError(f"{item}: not KEY=VALUE; the experiment file, if any, comes first (lrd run EXP KEY=VALUE)")
    return experiment, items


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
    probe = existing / f".tmp-write-check-pid{os.getpid()}"  # a live process's: never cleaned up by another
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
    if args.dir is None and not DEFAULT_RESULTS.is_dir():
        raise UserError(
            f"{DEFAULT_RESULTS}: no such folder yet; `lrd run` makes it, or name a results folder "
            "(lrd plot results/delayed_recall)"
        )
    draw_figures(Path(args.dir) if args.dir is not None else DEFAULT_RESULTS, pdf=args.pdf)
    return 0


def draw_figures(out_dir: Path, pdf: bool = False) -> None:
    """Every figure of a results folder, from its stored tables alone, into out_dir/figures (PNG; with ``pdf``, PDF)."""
    from lrd.plots import PlotError, write_figures

    results = load_results(out_dir)
    failed = int((results.runs["status"] == "failed").sum())
    if failed == len(results.runs):
        print(f"no figures: all {failed} runs failed")
        return
    try:
        paths = write_figures(
            results,
            out_dir / "figures",
            formats=("png", "pdf") if pdf else ("png",),
            on_skip=lambda stem, reason: print(f"skipped {stem}: {reason}"),
        )
    except PlotError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{out_dir / 'figures'}: cannot write the figures ({err.strerror})") from None
    print(
        f"{len(paths)} figure files in {out_dir / 'figures'}" + (f"; {failed} failed runs not drawn" if failed else "")
    )


def load_results(out_dir: Path, all_runs: bool = False):
    """``lrd.store.load``, damaged runs left out and named in one line on stderr; UserError if unreadable."""
    from lrd import store
    from lrd.store import StoreError, load

    damaged: dict[str, str] = {}
    try:
        results = load(out_dir, all_runs=all_runs, on_damaged=damaged.__setitem__)
    except StoreError as err:
        # name the damaged run folders (a damaged packed table is named in the message already)
        folders = {i: why for i, why in damaged.items() if not why.startswith(f"{store.PACKED}/")}
        named = "; ".join(f"{run_id}, {why}" for run_id, why in sorted(folders.items()))
        raise UserError(f"{err}: {named}" if folders else str(err)) from None
    if damaged:
        print(
            f"lrd: {_damaged_runs(damaged)} left out: {_damage_list(damaged)} "
            "(`lrd run` of the experiment computes them again)",
            file=sys.stderr,
        )
    return results


def _damaged_runs(damaged: dict[str, str]) -> str:
    return f"{len(damaged)} damaged run" + ("s" if len(damaged) > 1 else "")


def _damage_list(damaged: dict[str, str]) -> str:
    """``id, reason`` of each damaged run, on one line; runs damaged by one packed file as ``N runs, reason``."""
    by_reason: dict[str, list[str]] = {}
    for run_id, reason in sorted(damaged.items()):
        by_reason.setdefault(reason, []).append(run_id)
    return "; ".join(
        f"{ids[0] if len(ids) == 1 else f'{len(ids)} runs'}, {reason}" for reason, ids in sorted(by_reason.items())
    )


def _stdout_console() -> Console:
    """Tables on stdout; wide enough to stay readable when piped to a file."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


# --- lrd upgrade ----------------------------------------------------------------------------
def cmd_upgrade(args, console: Console) -> int:
    from lrd.store import StoreError
    from lrd.upgrade import upgrade

    try:
        done = upgrade(Path(args.dir))
    except StoreError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{args.dir}: cannot write the results ({err.strerror}: {err.filename})") from None
    if done.probe_stopped:
        print(
            f"{args.dir}: {done.probe_stopped} runs stopped by the probe-batch rule of before the validation stop "
            'check: stop_check = "probe" recorded in its experiment.toml (their ids unchanged); no run retrained'
        )
    if done.from_schema != SCHEMA_VERSION:
        print(
            f"{args.dir}: upgraded from results schema {done.from_schema} to {SCHEMA_VERSION}: {done.runs} runs "
            f"rewritten, solve threshold {done.solve_threshold:g} ([report] of the folder); no run retrained"
        )
    elif not done.packed.added and not done.probe_stopped:
        print(f"{args.dir}: already results schema {SCHEMA_VERSION} and packed; nothing to do")
    _say_packed(args.dir, done.packed)
    return 0


# --- lrd pack -------------------------------------------------------------------------------
def cmd_pack(args, console: Console) -> int:
    from lrd import store

    out_dir = Path(args.dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: no such results folder")
    try:
        with store.lock(out_dir):
            done = store.pack(out_dir)
    except store.StoreError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{out_dir}: cannot write the results ({err.strerror}: {err.filename})") from None
    if not done.added and not done.left:
        print(f"{out_dir}: nothing to pack ({done.runs} runs packed already)")
    _say_packed(args.dir, done)
    return 0


def _say_packed(name: str, done) -> None:
    """One line: what ``store.pack`` did (nothing when it had nothing to do), and the run folders it left."""
    if done.added:
        print(
            f"{name}: {done.added} runs packed, {done.runs} in all, into {Path(name) / 'tables'} "
            f"({done.bytes / 1e6:.1f} MB); values checked against the run folders, which are removed"
        )
    if done.left:
        print(
            f"{name}: {_damaged_runs(done.left).replace('damaged', 'failed or damaged')} left as run folders: "
            f"{_damage_list(done.left)} (`lrd run` computes them again)"
        )


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
    results = load_results(Path(args.dir), all_runs=args.all)
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


EDGE_NOTE = "best lr at the grid's edge: widen it"


def summary_table(runs: pd.DataFrame, title: str) -> Table:
    """``lrd.results.summary`` of ``runs`` (at each configuration's chosen learning rate) as a table to print.

    outcomes: k solved / m undecided / n trained, with the Wilson 95% interval of the
    success rate over the decided runs (``lrd.results.OUTCOME_RULE``, printed as the table's
    caption); lr: the chosen learning rate (of how many), marked where it lies at the grid's edge.
    """
    from lrd.results import OUTCOME_RULE, outcome_text, summary

    rows = summary(runs)
    edge = bool(rows["lr_at_edge"].any()) if len(rows) else False
    table = Table(title=title, caption=OUTCOME_RULE + (f" {EDGE_NOTE} (marked !)." if edge else ""))
    failures = (runs["status"] == "failed").any()
    columns = [
        "task",
        "gap",
        "model",
        "h",
        "lr",
        "seeds",
        "diverged",
        *(["failed"] if failures else []),
        "outcomes [95% CI, decided]",
        "final metric",
        "baseline",
        "solved at step",
        "grad growth /step init→final",
    ]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("task", "model") else "left")
    for row in rows.itertuples(index=False):
        spread = "" if math.isnan(row.final_metric_std) else f" ± {row.final_metric_std:.3f}"
        lr = "—" if math.isnan(row.lr) else f"{row.lr:g}" + (f" of {row.lrs}" if row.lrs > 1 else "")
        table.add_row(
            row.task,
            str(row.gap),
            row.model,
            str(row.hidden),
            lr + (" !" if row.lr_at_edge else ""),
            str(row.seeds),
            str(row.diverged),
            *([str(row.failed)] if failures else []),
            f"{outcome_text(row.solved, row.undecided, row.trained)} [{row.success_lo:.2f},{row.success_hi:.2f}]",
            "—" if math.isnan(row.final_metric) else f"{row.final_metric:.3f}{spread}",
            f"{row.baseline_metric:.3f}",
            "—" if math.isnan(row.solved_step) else f"{row.solved_step:.0f}",
            f"{_rate(row.growth_rate_init)} → {_rate(row.growth_rate_final)}",
        )
    return table


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.3f}"


# --- lrd report -----------------------------------------------------------------------------
def cmd_report(args, console: Console) -> int:
    make_report(Path(args.dir))
    return 0


def make_report(out_dir: Path) -> None:
    """Write out_dir/report.html from the folder's tables and figures, and name it."""
    from lrd.report import ReportError, write_report
    from lrd.store import StoreError, load

    try:
        path = write_report(out_dir, load(out_dir))
    except (StoreError, ReportError) as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{out_dir}: cannot write the report ({err.strerror})") from None
    print(f"report: {path}")


# --- lrd verify -----------------------------------------------------------------------------
def cmd_verify(args, console: Console) -> int:
    from lrd.progress import PlainReporter
    from lrd.runtime import enable_compilation_cache
    from lrd.store import StoreError
    from lrd.verify import VerifyError, machines, verify

    if args.tolerance is not None and not args.tolerance >= 0:
        raise UserError(f"--tolerance {args.tolerance}: must be >= 0")
    enable_compilation_cache()
    try:
        with PlainReporter() as reporter:
            checked = verify(Path(args.dir), args.sample, reporter)
    except (VerifyError, StoreError) as err:
        raise UserError(str(err)) from None
    where = machines(Path(args.dir))
    tolerance = where.tolerance if args.tolerance is None else args.tolerance
    print(f"{args.dir}: written on {where.written}; retrained on {where.here}")
    print(f"{args.dir}: retrained {len(checked.groups)} groups ({checked.runs} runs): {'; '.join(checked.groups)}")
    for t in checked.tables:
        line = f"  {t.table:<10} {t.bitwise}/{t.values} values bitwise equal; largest relative difference"
        print(f"{line} {t.max_difference:.3g}" + (f" ({t.where})" if t.max_difference > 0 else ""))
    if checked.max_difference > tolerance:
        print(
            f"{args.dir}: NOT verified: largest relative difference {checked.max_difference:.3g} "
            f"> tolerance {tolerance:g}"
            + ("" if where.same else " (another machine: README, 'Checking a results folder')")
        )
        return RUNS_FAILED
    why = "same CPU and versions: bitwise" if where.same else "another or unrecorded CPU or versions"
    print(f"{args.dir}: verified: every difference within tolerance {tolerance:g} ({why})")
    return 0


if __name__ == "__main__":
    entry()
