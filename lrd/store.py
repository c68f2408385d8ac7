"""The results store: one atomic file group per run, tidy tables pandas loads directly.

Layout of a results folder::

    DIR/experiment.toml     the experiment file as it was run
    DIR/experiment.json     the results schema, the report settings and the resolved runs (id -> configuration)
    DIR/versions.json       Python and package versions of the last run
    DIR/summary.csv         the runs table of the current experiment, for people
    DIR/runs/<id>/          one folder per run, keyed by the hash of its configuration:
        run.parquet         one row (the ``runs`` table)
        curves.parquet      the ``curves`` rows
        grad_norms.parquet  the ``grad_norms`` rows
        dynamics.parquet    the ``dynamics`` rows (runs trained with diagnostics only)

A run folder is written under a temporary name and renamed into place, so a
process killed at any moment leaves either a complete run or none (stale
temporary folders are removed by the next sweep). A changed configuration has
a new id, so it never overwrites another run.

The tables hold what was measured; what it means (``solved``, at the folder's
``[report] solve_threshold``) is added when they are read (``lrd.results``). A folder
written under an older results schema is refused with one line that says how to
upgrade it (``lrd upgrade DIR``, see ``lrd.upgrade``).

A run whose training failed (its worker died, or it raised) is a folder with
``run.parquet`` alone: status "failed" and the ``error``. It does not count as
done: the next sweep computes it again and its result replaces the record.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from lrd.experiment import Experiment
from lrd.results import with_solved
from lrd.runtime import versions
from lrd.schema import (
    CURVES,
    DYNAMICS,
    DYNAMICS_COLUMNS,
    RUN,
    RUN_ORDER,
    SCHEMA_VERSION,
    SOLVE_THRESHOLD,
    TABLES,
    Results,
)

RUNS = "runs"
EXPERIMENT_JSON = "experiment.json"
TMP_PREFIX = ".tmp-"


class StoreError(ValueError):
    """A results folder that cannot be read; the message is one line."""


# --- writing -----------------------------------------------------------------------------
def prepare(out_dir: Path, experiment: Experiment) -> None:
    """Create the folder, clear stale temporary files, save the experiment and versions.

    A folder of an older results schema is refused (StoreError) before anything is written.
    """
    check_schema(out_dir)
    (out_dir / RUNS).mkdir(parents=True, exist_ok=True)
    for stale in list(out_dir.glob(f"{TMP_PREFIX}*")) + list((out_dir / RUNS).glob(f"{TMP_PREFIX}*")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    _write_text(out_dir / "experiment.toml", experiment.source)
    resolved = {
        "schema": SCHEMA_VERSION,
        "name": experiment.name,
        "description": experiment.description,
        "report": experiment.report.model_dump(),
        "runs": {spec.run_id: spec.config() for spec in experiment.runs},
    }
    write_experiment_json(out_dir, resolved)
    _write_text(out_dir / "versions.json", json.dumps(versions(), indent=1, sort_keys=True))


def write_run(out_dir: Path, run_id: str, tables: dict[str, pd.DataFrame]) -> None:
    """Write one run's tables atomically: a temporary folder, fsynced, renamed into place.

    ``tables`` has run, curves and grad_norms (and dynamics, with diagnostics), or only "run" for a
    failed run. A finished run
    replaces a failed record of the same run; anything else already there is kept.
    """
    final = out_dir / RUNS / run_id
    tmp = _tmp_name(final)
    tmp.mkdir(parents=True)
    for name, table in tables.items():
        _write_table(tmp / f"{name}.parquet", table)
    _fsync(tmp)
    replaced = None
    if CURVES in tables and _is_failed(final):
        replaced = _tmp_name(final)  # killed between the renames: the run is missing, so recomputed
        os.rename(final, replaced)
    try:
        os.rename(tmp, final)
    except OSError:  # already there (the same configuration finished elsewhere): keep the first
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def rewrite_run(out_dir: Path, old_id: str, new_id: str, tables: dict[str, pd.DataFrame]) -> None:
    """Store run ``old_id`` as ``new_id`` with ``tables`` (a results upgrade); safe to repeat after a crash.

    A new id is written whole (``write_run``) before the old folder goes; under the same
    id each file is replaced atomically, so a crash leaves every file old or new.
    """
    if new_id != old_id:
        write_run(out_dir, new_id, tables)
        shutil.rmtree(out_dir / RUNS / old_id)
        _fsync(out_dir / RUNS)
        return
    for name, table in tables.items():
        path = out_dir / RUNS / old_id / f"{name}.parquet"
        tmp = _tmp_name(path)
        _write_table(tmp, table)
        os.replace(tmp, path)
    _fsync(out_dir / RUNS / old_id)


def _write_table(path: Path, table: pd.DataFrame) -> None:
    table.to_parquet(path, index=False, compression="zstd")
    _fsync(path)


def write_experiment_json(out_dir: Path, resolved: dict[str, Any]) -> None:
    """Write DIR/experiment.json (atomically)."""
    _write_text(out_dir / EXPERIMENT_JSON, json.dumps(resolved, indent=1, sort_keys=True))


def _tmp_name(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")


def _is_failed(run_dir: Path) -> bool:
    """A stored record of a failed run: run.parquet without the curves."""
    return run_dir.is_dir() and not (run_dir / "curves.parquet").exists()


def write_summary(out_dir: Path, runs: pd.DataFrame) -> None:
    """Write DIR/summary.csv: the runs table, for people."""
    _write_text(out_dir / "summary.csv", runs.to_csv(index=False))


def _write_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return  # unchanged: a finished folder is checked without writing (it may be read-only)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -------------------------------------------------------------------------------
def stored_runs(out_dir: Path) -> set[str]:
    """Ids of every run recorded in ``out_dir``: finished (done or diverged) or failed."""
    runs = out_dir / RUNS
    if not runs.is_dir():
        return set()
    return {p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)}


def completed_runs(out_dir: Path) -> set[str]:
    """Ids of the runs stored with their results in ``out_dir`` (failed records excluded)."""
    return {run_id for run_id in stored_runs(out_dir) if not _is_failed(out_dir / RUNS / run_id)}


def read_experiment_json(out_dir: Path) -> dict[str, Any] | None:
    """DIR/experiment.json as written by ``prepare`` (None if the folder has none); StoreError if unreadable."""
    path = out_dir / EXPERIMENT_JSON
    if not path.is_file():
        return None
    try:
        resolved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: cannot read the resolved experiment ({err})") from None
    if not isinstance(resolved, dict) or not isinstance(resolved.get("runs"), dict):
        raise StoreError(f"{path}: not a resolved experiment (no 'runs' table)")
    return resolved


def schema_of(resolved: dict[str, Any]) -> int:
    """The results schema a folder was written under (1: before the schema was recorded)."""
    return int(resolved.get("schema", 1))


def check_schema(out_dir: Path) -> None:
    """StoreError (one line, saying how to upgrade) unless the folder is new or of this results schema."""
    resolved = read_experiment_json(out_dir)
    if resolved is None or schema_of(resolved) == SCHEMA_VERSION:
        return
    found = schema_of(resolved)
    if found < SCHEMA_VERSION:
        raise StoreError(
            f"{out_dir}: results of schema {found}, this lrd reads schema {SCHEMA_VERSION}; "
            f"run `lrd upgrade {out_dir}` once (same numbers, no retraining)"
        )
    raise StoreError(f"{out_dir}: results of schema {found}, newer than this lrd (schema {SCHEMA_VERSION}); update lrd")


def current_run_ids(out_dir: Path) -> list[str] | None:
    """Ids of the runs of the experiment last run into the folder (None if it has no experiment.json)."""
    resolved = read_experiment_json(out_dir)
    return None if resolved is None else list(resolved["runs"])


def solve_threshold(out_dir: Path) -> float:
    """The folder's reporting threshold for 'solved' ([report] solve_threshold of its experiment)."""
    resolved = read_experiment_json(out_dir) or {}
    return float(resolved.get("report", {}).get("solve_threshold", SOLVE_THRESHOLD))


def read_run(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The stored tables of one run folder (only "run" for a failed run)."""
    return {name: pd.read_parquet(path) for name in TABLES if (path := run_dir / f"{name}.parquet").exists()}


def load(out_dir: str | Path, all_runs: bool = False) -> Results:
    """The tables of a results folder as DataFrames, with ``solved`` (``lrd.results.with_solved``) added.

    By default only the runs of the experiment last run into the folder; ``all_runs``
    also returns runs of earlier versions of the experiment kept in the same folder.
    A failed run has a row in ``runs`` (status "failed", its ``error``) and no curves or
    gradient norms; ``error`` is empty (None) for every other run.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StoreError(f"{out_dir}: no such results folder")
    check_schema(out_dir)
    stored = stored_runs(out_dir)
    wanted = current_run_ids(out_dir)
    ids = sorted(stored if all_runs or wanted is None else stored & set(wanted))
    if not ids:
        raise StoreError(f"{out_dir}: no finished runs here yet (run `lrd run` first)")
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for run_id in ids:
        for name in TABLES:
            path = out_dir / RUNS / run_id / f"{name}.parquet"
            if name == RUN or path.exists():
                frames[name].append(pd.read_parquet(path))
    runs, curves, grad_norms, dynamics = (
        pd.concat(frames[name], ignore_index=True) if frames[name] else pd.DataFrame() for name in TABLES
    )
    if not frames[DYNAMICS]:  # results from before the diagnostics, or all trained without them
        dynamics = pd.DataFrame({c: [] for c in DYNAMICS_COLUMNS})
    runs = with_solved(runs, curves, solve_threshold(out_dir))
    runs["error"] = runs.get("error", None)
    runs = runs[[c for c in runs if c != "error"] + ["error"]]  # the same column order with and without failures
    runs = runs.sort_values(list(RUN_ORDER), kind="stable").reset_index(drop=True)
    return Results(runs, curves, grad_norms, dynamics)
