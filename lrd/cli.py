"""The ``lrd`` command: a thin layer over experiment, sweep, store and plots.

    lrd run [EXPERIMENT] [KEY=VALUE ...] [--out DIR] [--backend local|ray] [--address ADDR]
                                       run (or resume) a sweep; default experiments/quick.toml;
                                       KEY=VALUE overrides a value of the experiment (model.cell=[lstm,gru])
    lrd tasks [NAME] [--import MODULE] registered tasks and models; with a name, its parameters, defaults, source
    lrd cells [NAME] [--import MODULE] registered cells; with a name, its equations, options, defaults, source
    lrd show DIR [--where KEY=VALUE ...] [--format table|csv|markdown|json] [--wide]
                                       the summary of a results folder (fits 100 columns; --wide: every column)
    lrd compare BEFORE AFTER [--format ...]
                                       two results folders side by side: outcomes, metric, what changed
    lrd plot [DIR] [--pdf]             (re)draw every figure of a results folder into DIR/figures (PNG; --pdf: PDF too)
    lrd report DIR                     one self-contained page, DIR/report.html (made by `lrd run` too)
    lrd verify DIR [--sample N]        retrain N groups of a results folder and compare every number
    lrd export DIR --mlflow URI        log a results folder to an MLflow server (the [mlflow] extra), idempotently
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
import signal
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
    code = main()
    # the command is done; Python's teardown restores SIGINT's default action, which would kill it (exit -2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


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
    parser.add_argument("--version", action="version", version=f"lrd {lrd_version()}")
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
    tasks = commands.add_parser("tasks", help="list the registered tasks and models, or show one")
    tasks.add_argument("name", nargs="?", help="a task or cell: its parameters, defaults and source file")
    _import_option(tasks, "a file (my_task.py) or module that registers tasks or cells")
    cells = commands.add_parser("cells", help="list the registered cells (models), or show one")
    cells.add_argument("name", nargs="?", help="a cell: its equations, options, defaults and source file")
    _import_option(cells, "a file (my_cell.py) or module that registers cells")
    show = commands.add_parser("show", help="summary table of a results folder")
    show.add_argument("dir", help="results folder")
    show.add_argument("--all", action="store_true", help="include runs of earlier versions of the experiment")
    show.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="keep the runs whose column KEY has VALUE (model=lstm gap=50; VALUE may list several: gap=50,200)",
    )
    show.add_argument("--format", choices=SHOW_FORMATS, default="table", help="table (default), csv, markdown or json")
    show.add_argument("--wide", action="store_true", help="every column of the table (default: what fits 100 columns)")
    compare = commands.add_parser("compare", help="two results folders side by side (before and after a change)")
    compare.add_argument("before", help="results folder")
    compare.add_argument("after", help="results folder")
    compare.add_argument(
        "--format", choices=SHOW_FORMATS, default="table", help="table (default), csv, markdown or json"
    )
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
    export = commands.add_parser("export", help="log a results folder to an experiment tracker (MLflow)")
    export.add_argument("dir", help="results folder")
    export.add_argument(
        "--mlflow", required=True, metavar="URI", help="the MLflow tracking server (http://127.0.0.1:5000)"
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
        handlers |= {"compare": cmd_compare, "cells": cmd_cells, "export": cmd_export}
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


def _import_option(command: argparse.ArgumentParser, what: str) -> None:
    """``--import MODULE`` (repeatable): ``what``, loaded as an experiment's ``imports``."""
    command.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help=f"{what}, as an experiment's imports; repeatable",
    )


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
            overridden=stored_overrides(out_dir),
        )
    except PlotError as err:
        raise UserError(str(err)) from None
    except OSError as err:
        raise UserError(f"{out_dir / 'figures'}: cannot write the figures ({err.strerror})") from None
    print(
        f"{len(paths)} figure files in {out_dir / 'figures'}" + (f"; {failed} failed runs not drawn" if failed else "")
    )


def stored_overrides(out_dir: Path) -> str:
    """The "overridden: ..." note of the experiment stored in a results folder ("" if run as its file says)."""
    from lrd.experiment import overridden_part
    from lrd.store import StoreError, read_experiment_json

    try:
        resolved = read_experiment_json(out_dir) or {}
    except StoreError:  # unreadable: load_results has already said so, or will
        return ""
    return overridden_part(str(resolved.get("description", "")))


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
            f"{args.dir}: {done.probe_stopped} runs stopped by the older probe-batch rule: "
            'stop_check = "probe" recorded in its experiment.toml (their ids unchanged); no run retrained'
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
def lrd_version() -> str:
    """The installed lrd's version (the package metadata), or "unknown" for a source tree not installed."""
    from importlib import metadata

    try:
        return metadata.version("lrd")
    except metadata.PackageNotFoundError:
        return "unknown"


def _load_imports(imports: list[str]) -> None:
    """The modules of ``--import``, loaded as an experiment's imports; a bad one is a UserError."""
    from lrd.experiment import ExperimentError, _import_plugins

    try:
        _import_plugins("--import", Path.cwd(), list(imports))
    except ExperimentError as err:
        raise UserError(str(err)) from None


def cmd_cells(args, console: Console) -> int:
    """``lrd cells [NAME]``: the cells table of ``lrd tasks``, or one cell's parameters and source."""
    from lrd.models import CELLS

    _load_imports(args.imports)
    if args.name is None:
        _stdout_console().print(_cells_table())
        _stdout_console().print("`lrd cells NAME` shows one cell: its equations, options, defaults and source file.")
        return 0
    if args.name in CELLS:
        return _show_cell(CELLS[args.name])
    from lrd.names import unknown_name_message

    message = unknown_name_message(args.name, list(CELLS), imports_hint="lrd cells NAME --import my_cell.py")
    raise UserError(f"cells {args.name}: {message}")


def cmd_tasks(args, console: Console) -> int:
    from lrd.models import CELLS
    from lrd.tasks import TASKS

    _load_imports(args.imports)
    if args.name is not None:
        if args.name in TASKS:
            return _show_task(TASKS[args.name])
        if args.name in CELLS:
            return _show_cell(CELLS[args.name])
        from lrd.names import unknown_name_message

        message = unknown_name_message(args.name, [*TASKS, *CELLS], imports_hint="lrd tasks NAME --import my_task.py")
        raise UserError(f"tasks {args.name}: {message}")
    return _list_tasks()


def _source_file(cls) -> str:
    """Where a task or cell class is defined: relative to the current folder when it lies below it."""
    import inspect

    try:
        path = Path(inspect.getsourcefile(cls) or "?")
    except TypeError:
        return "?"
    registered = getattr(sys.modules.get(cls.__module__), "__file__", None)  # a task file imported from its text
    path = Path(registered) if registered and not path.is_file() else path
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _title(kind: str, name: str, cls) -> str:
    """ "task copy: <the first line of its docstring, or of its module's>"."""
    doc = (cls.__doc__ or getattr(sys.modules.get(cls.__module__), "__doc__", None) or "").strip()
    return f"{kind} {name}: {doc.splitlines()[0]}" if doc else f"{kind} {name}"


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _show_task(cls) -> int:
    from pydantic_core import PydanticUndefined

    out = _stdout_console()
    out.print(_title("task", cls.name, cls), markup=False)
    out.print(f"source: {cls.source}\nconvention: {cls.convention}\nfile: {_source_file(cls)}", markup=False)
    table = Table(title=f"parameters of {cls.name} (\\[task] keys of an experiment file)")
    for column in ("parameter", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for name, field in cls.model_fields.items():
        default = "(required)" if field.default is PydanticUndefined else repr(field.default)
        table.add_row(name, _type_name(field.annotation), default, field.description or "")
    out.print(table)
    return 0


def _show_cell(cell) -> int:
    import dataclasses

    out = _stdout_console()
    out.print(_title("cell", cell.cell_name, cell), markup=False)
    states = ", ".join(cell.state_names)
    out.print(f"equations: {cell.equations}\nsource: {cell.source}\nstates: {states}", markup=False)
    out.print(f"file: {_source_file(cell)}", markup=False)
    table = Table(title=f"options of {cell.cell_name} (\\[model] keys of an experiment file, besides cell and hidden)")
    for column in ("option", "type", "default"):
        table.add_column(column, overflow="fold")
    for field in dataclasses.fields(cell):
        if field.name in cell.options():
            default = "(required)" if field.default is dataclasses.MISSING else repr(field.default)
            table.add_row(field.name, _type_name(field.type), default)
    out.print(table)
    return 0


def _list_tasks() -> int:
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
    out.print(_cells_table())
    out.print("`lrd tasks NAME` shows one task or cell: its parameters, defaults and source file.")
    return 0


def _cells_table() -> Table:
    """The registered cells: states, equations, source, options and a parameter count."""
    from lrd.models import CELLS, ModelConfig, parameter_count
    from lrd.tasks import TASKS

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
    return models


# --- lrd show ------------------------------------------------------------------------------
SHOW_FORMATS = ("table", "csv", "markdown", "json")
SHOW_WIDTH = 100  # the default table fits a terminal this wide; --wide shows every column


def cmd_show(args, console: Console) -> int:
    results = load_results(Path(args.dir), all_runs=args.all)
    runs = select_runs(results.runs, args.where)
    if args.format == "csv":
        sys.stdout.write(show_summary(runs).to_csv(index=False))
        return 0
    if args.format == "json":
        sys.stdout.write(show_summary(runs).to_json(orient="records", indent=1) + "\n")
        return 0
    if args.format == "markdown":
        sys.stdout.write(markdown_table(runs, title=str(args.dir)))
        return 0
    out = _stdout_console()
    if not args.wide:
        out = Console(highlight=False, width=min(out.width, SHOW_WIDTH) if out.is_terminal else SHOW_WIDTH)
    out.print(summary_table(runs, title=str(args.dir), wide=args.wide))
    failed = runs[runs["status"] == "failed"]
    for (label, error), g in failed.groupby(["model", "error"], sort=True):
        seeds = ",".join(str(s) for s in sorted(g["seed"]))
        gaps = ",".join(str(x) for x in sorted(set(g["gap"])))
        print(f"failed: {g['task'].iloc[0]} gaps {gaps} {label} seeds {seeds}: {error}")  # one line, never wrapped
    return 0


def select_runs(runs: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    """The runs whose columns hold the values of ``KEY=VALUE`` items (all of them; ``gap=50,200``: either).

    A value is compared with the column's values as text and, for a numeric column, as a
    number (``lr=0.01`` matches 1e-2). An unknown column or an item without ``=`` is a UserError.
    """
    from lrd.names import did_you_mean

    keep = pd.Series(True, index=runs.index)
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--where {item}: expected KEY=VALUE, for example model=lstm or gap=50,200")
        if key not in runs:
            hint = did_you_mean(key, runs.columns)
            raise UserError(f"--where {item}: no column {key!r} in the runs table{hint}")
        column = runs[key]
        wanted = [v.strip() for v in value.split(",")]
        match = column.astype(str).isin(wanted)
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numbers = pd.to_numeric(pd.Series(wanted), errors="coerce").dropna()
            match |= column.isin(numbers.tolist())
        keep &= match
    selected = runs[keep]
    if where and selected.empty:
        raise UserError(f"--where {' '.join(where)}: no run matches")
    return selected


def show_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """``lrd.results.summary`` of ``runs``: the numbers behind the table, for --format csv and json."""
    from lrd.results import summary

    return summary(runs)


def summary_table(runs: pd.DataFrame, title: str, wide: bool = True) -> Table:
    from lrd.results import summary_cells

    """``summary_cells`` of ``runs`` (at each configuration's chosen learning rate) as a table to print."""
    columns, rows, caption = summary_cells(runs, wide)
    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(column, justify="left" if column in ("task", "model") else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(runs: pd.DataFrame, title: str) -> str:
    """``summary_cells`` of ``runs``, every column, as a Markdown (pipe) table under its title, the caption after."""
    from lrd.results import summary_cells

    columns, rows, caption = summary_cells(runs, wide=True)
    escape = lambda text: text.replace("|", "\\|")
    lines = [f"**{escape(title)}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join([*lines, "", caption]) + "\n"


def cmd_compare(args, console: Console) -> int:
    """``lrd.results.compare`` of two folders: a table (or csv, markdown, json) and a line on their shared runs."""
    from lrd.results import compare

    before, after = Path(args.before), Path(args.after)
    rows, same = compare(load_results(before).runs, load_results(after).runs)
    shared = f"{same['runs']} runs in both (the same run id): {same['identical']} with the same final metric" + (
        f", the largest difference {same['largest_difference']:.3g}" if same["identical"] < same["runs"] else ""
    )
    if args.format in ("csv", "json"):
        data = rows.to_csv(index=False) if args.format == "csv" else rows.to_json(orient="records", indent=1) + "\n"
        sys.stdout.write(data)
        return 0
    columns = ["task", "gap", "model", "h", "lr", "outcomes", "final metric", "change"]
    lines = []
    for r in rows.to_dict("records"):
        was, now = _compared_side(r, "before"), _compared_side(r, "after")
        change = "" if math.isnan(r["metric_change"]) else f"{r['metric_change']:+.3f}"
        lines.append(
            [r["task"], str(r["gap"]), r["model"], str(r["hidden"])]
            + [f"{a} → {b}" for a, b in zip(was, now, strict=True)]
            + [change + (" *" if r["changed"] else "")]
        )
    caption = (
        f"{before} → {after}. outcomes: solved/undecided/trained at the chosen lr; * the outcomes or the chosen lr "
        f"changed, or the metric moved by more than the seeds' spread. {shared}."
    )
    if args.format == "markdown":
        escape = lambda text: text.replace("|", "\\|")
        out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(escape(cell) for cell in line) + " |" for line in lines]
        sys.stdout.write("\n".join([*out, "", caption]) + "\n")
        return 0
    table = Table(title=f"{before} → {after}", caption=caption)
    for column in columns:
        table.add_column(column, justify="left" if column in ("task", "model") else "right", overflow="fold")
    for line in lines:
        table.add_row(*line)
    out_console = _stdout_console()
    Console(highlight=False, width=min(out_console.width, SHOW_WIDTH) if out_console.is_terminal else SHOW_WIDTH).print(
        table
    )
    return 0


def cmd_export(args, console: Console) -> int:
    """``lrd.export.export_mlflow`` of a folder: one line of what was logged."""
    from lrd.export import ExportError, export_mlflow
    from lrd.results import outcome

    out_dir = Path(args.dir)
    results = load_results(out_dir)
    results = results._replace(runs=results.runs.assign(outcome=outcome(results.runs)))
    try:
        done = export_mlflow(out_dir, results, args.mlflow)
    except ExportError as err:
        raise UserError(str(err)) from None
    redone = f", {done.redone} incomplete runs of an earlier export logged again" if done.redone else ""
    print(
        f"{out_dir}: {done.logged} runs logged to {args.mlflow}, experiment {done.experiment!r}; "
        f"{done.present} there already{redone}"
    )
    return 0


def _compared_side(row: dict, which: str) -> tuple[str, str, str]:
    """(lr, solved/undecided/trained, final metric) of one side of a ``compare`` row; dashes where it has none."""
    if math.isnan(row[f"trained_{which}"]):
        return "—", "—", "—"
    counts = "/".join(f"{row[f'{c}_{which}']:.0f}" for c in ("solved", "undecided", "trained"))
    metric = row[f"final_metric_{which}"]
    lr = row[f"lr_{which}"]
    return "—" if math.isnan(lr) else f"{lr:g}", counts, "—" if math.isnan(metric) else f"{metric:.3f}"


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
