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
        eval_gaps.parquet   the ``eval_gaps`` rows (only with ``[train] eval_gaps``)
        manifest.json       written last: each file's size, row count and SHA-256, the results schema
    DIR/.lock               held (``flock``) by the process writing the folder (``lock``); holds its pid

A run folder is written under a temporary name and renamed into place, so a
process killed at any moment leaves either a complete run or none (stale
temporary folders, named with their writer's pid, are removed by the next sweep
once that process is gone). A changed configuration has a new id, so it never
overwrites another run.

A run counts as stored only if it checks (``check_run``): every file its manifest
lists is there with its size and checksum. A run written before manifests (no
``manifest.json``) checks when its run, curves and grad_norms files are there and
parse. A run that does not check is *damaged*: ``load`` skips
it and names it, and the next sweep computes it again and replaces it.

The tables hold what was measured; what it means (``solved``, at the folder's
``[report] solve_threshold``, and ``still_improving``) is added when they are read (``lrd.results``). A folder
written under an older results schema is refused with one line that says how to
upgrade it (``lrd upgrade DIR``, see ``lrd.upgrade``).

A run whose training failed (its worker died, or it raised) is a folder with
``run.parquet`` alone: status "failed" and the ``error``. It does not count as
done: the next sweep computes it again and its result replaces the record.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrd.experiment import Experiment
from lrd.results import with_solved, with_trend
from lrd.runtime import versions
from lrd.schema import (
    CURVES,
    DYNAMICS,
    DYNAMICS_COLUMNS,
    GRAD_NORMS,
    OPTIONAL_TABLES,
    RUN,
    RUN_ORDER,
    SCHEMA_VERSION,
    SOLVE_THRESHOLD,
    STATUS_FAILED,
    TABLES,
    Results,
)

RUNS = "runs"
EXPERIMENT_JSON = "experiment.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
LEGACY_TABLES = (RUN, CURVES, GRAD_NORMS)  # what every finished run written before manifests has


class StoreError(ValueError):
    """A results folder that cannot be read; the message is one line."""


class Locked(StoreError):
    """Another process holds the folder's lock; the message names its pid."""


class StoreWarning(UserWarning):
    """Damaged runs skipped by ``load`` (when no ``on_damaged`` is given)."""


# --- the lock ------------------------------------------------------------------------------
@contextmanager
def lock(out_dir: Path) -> Iterator[None]:
    """Hold the folder's lock (``flock`` on DIR/.lock, exclusive) for the block; else ``Locked``, naming the holder.

    The OS releases the lock when the holder dies, however it dies. The holder's pid
    is written into the lock file for the message. A folder this process cannot write
    into gets no lock file (and needs none: the process cannot change the folder);
    an existing lock file is locked read-only. On a filesystem without file locks
    (``ENOLCK``: some network filesystems) the block runs unlocked after a one-line
    warning on stderr. ``out_dir`` must exist.
    """
    path = out_dir / LOCK
    fd = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        with suppress(OSError):  # none there either: fd stays None
            fd = os.open(path, os.O_RDONLY)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(
                f"{out_dir}: another lrd (pid {_holder(fd)}) is writing this results folder; "
                "run again when it has finished (or stop it)"
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            print(  # some network filesystems: go on, as lrd did before it had a lock, and say so
                f"lrd: warning: {out_dir}: no file locks here ({err.strerror}); "
                "do not run two `lrd run` into this folder at once",
                file=sys.stderr,
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a read-only lock file: the lock holds, only the pid is not recorded
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid in a held lock file (the holder writes it just after locking: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.05)
    return "unknown"


# --- writing -----------------------------------------------------------------------------
def prepare(out_dir: Path, experiment: Experiment) -> None:
    """Create the folder, clear stale temporary files, save the experiment and versions.

    A folder of an older results schema is refused (StoreError) before anything is written.
    """
    check_schema(out_dir)
    (out_dir / RUNS).mkdir(parents=True, exist_ok=True)
    for stale in list(out_dir.glob(f"{TMP_PREFIX}*")) + list((out_dir / RUNS).glob(f"{TMP_PREFIX}*")):
        if _writer_alive(stale):
            continue  # another live process's work in progress (only possible without a working lock)
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

    ``tables`` has all three tables (and eval_gaps and dynamics where asked for), or only "run"
    for a failed run. A finished run replaces a failed record of the same run, any run replaces a damaged one; a run
    that checks is kept. The manifest is written last.
    """
    final = out_dir / RUNS / run_id
    tmp = _tmp_name(final)
    tmp.mkdir(parents=True)
    _write_tables(tmp, tables)
    _fsync(tmp)
    replaced = None
    if final.is_dir() and _replaceable(check_run(final), finished=CURVES in tables):
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
    run_dir = out_dir / RUNS / old_id
    (run_dir / MANIFEST).unlink(missing_ok=True)  # checked as a run without manifest until the new one is written
    _fsync(run_dir)
    entries = {}
    for name, table in tables.items():
        path = run_dir / f"{name}.parquet"
        tmp = _tmp_name(path)
        entries[path.name] = _write_table(tmp, table)
        os.replace(tmp, path)
    _write_manifest(run_dir, entries)
    _fsync(run_dir)


def _write_tables(run_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Each table to ``<name>.parquet``, then the manifest that lists them."""
    _write_manifest(
        run_dir, {f"{name}.parquet": _write_table(run_dir / f"{name}.parquet", t) for name, t in tables.items()}
    )


def _write_table(path: Path, table: pd.DataFrame) -> dict[str, Any]:
    """Write one table; its manifest entry: size in bytes, rows, SHA-256 of the file."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False, compression="zstd")
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(data), "rows": len(table), "sha256": hashlib.sha256(data).hexdigest()}


def add_manifest(run_dir: Path) -> bool:
    """Give a run written before manifests one, its files unchanged; False if it has one or is damaged."""
    if (run_dir / MANIFEST).exists() or check_run(run_dir).state == DAMAGED:
        return False
    entries = {}
    for path in sorted(run_dir.glob("*.parquet")):
        if path.name.startswith(TMP_PREFIX):
            continue
        data = path.read_bytes()
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        entries[path.name] = {"bytes": len(data), "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}
    _write_manifest(run_dir, entries)
    _fsync(run_dir)
    return True


def _write_manifest(run_dir: Path, files: dict[str, dict[str, Any]]) -> None:
    """DIR/runs/<id>/manifest.json, atomically (a temporary file renamed over it)."""
    tmp = _tmp_name(run_dir / MANIFEST)
    with open(tmp, "w") as f:
        json.dump({"schema": SCHEMA_VERSION, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / MANIFEST)


def write_experiment_json(out_dir: Path, resolved: dict[str, Any]) -> None:
    """Write DIR/experiment.json (atomically)."""
    _write_text(out_dir / EXPERIMENT_JSON, json.dumps(resolved, indent=1, sort_keys=True))


def _tmp_name(final: Path) -> Path:
    """A temporary name next to ``final`` that carries this process's pid (see ``_writer_alive``)."""
    return final.with_name(f"{TMP_PREFIX}{final.name}-pid{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary name still runs (names without a pid: an older lrd's, stale)."""
    found = re.search(r"-pid(\d+)(-|$)", tmp.name)
    if found is None:
        return False
    pid = int(found.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def write_summary(out_dir: Path, runs: pd.DataFrame) -> None:
    """Write DIR/summary.csv: the runs table, for people."""
    _write_text(out_dir / "summary.csv", runs.to_csv(index=False))


def _write_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return  # unchanged: a finished folder is checked without writing (it may be read-only)
    tmp = _tmp_name(path)
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
    """Ids of the runs stored with their results in ``out_dir`` and checked (failed and damaged ones excluded)."""
    return {run_id for run_id, found in check_runs(out_dir).items() if found.state == COMPLETE}


COMPLETE, FAILED, DAMAGED = "complete", "failed", "damaged"


class RunCheck(NamedTuple):
    """What a run folder holds: a complete run, the record of a failed run, or a damaged run (and why)."""

    state: str  # COMPLETE, FAILED or DAMAGED
    reason: str = ""  # for DAMAGED: the file and what is wrong with it, e.g. "curves.parquet unreadable"


def check_runs(out_dir: Path, ids: set[str] | None = None) -> dict[str, RunCheck]:
    """``check_run`` of every stored run (or of those of ``ids`` that are stored)."""
    stored = stored_runs(out_dir)
    return {run_id: check_run(out_dir / RUNS / run_id) for run_id in sorted(stored if ids is None else stored & ids)}


def check_run(run_dir: Path) -> RunCheck:
    """Whether a run folder holds a whole run, without parsing its tables.

    With a manifest: every file it lists is there with the size and SHA-256 it was
    written with (the bytes read once and hashed, about 1 GB/s: over 100 times faster
    than pandas parses them). Without (runs written before manifests): run.parquet,
    and for a run that did not fail curves.parquet and grad_norms.parquet, are there
    and parse (pyarrow, every page), each with a ``run`` column, run.parquet one row;
    slower, and blind to a changed value that still parses (``lrd upgrade`` adds
    manifests).
    """
    try:
        _checked_files(run_dir)
    except _Damaged as err:
        return RunCheck(DAMAGED, str(err))
    return RunCheck(COMPLETE if (run_dir / f"{CURVES}.parquet").exists() else FAILED)


def _replaceable(found: RunCheck, finished: bool) -> bool:
    """A stored run that a new result replaces: a damaged one, or a failed record by a finished run."""
    return found.state == DAMAGED or (found.state == FAILED and finished)


class _Damaged(Exception):
    """A run folder that is not a whole run; the message names the file and the fault."""


def _checked_files(run_dir: Path) -> dict[str, bytes | None]:
    """The run's tables (stem -> the file's bytes, None where not read); ``_Damaged`` if the run does not check.

    With a manifest the listed files are read and checked against it; without, the
    files are parsed by pyarrow (``_checked_legacy``; bytes: None).
    """
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        return _checked_legacy(run_dir)
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        schema = manifest["schema"]
        assert isinstance(files, dict) and all(isinstance(e, dict) for e in files.values())
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise _Damaged(f"{MANIFEST} unreadable") from None
    if schema != SCHEMA_VERSION:
        raise _Damaged(f"{MANIFEST} of results schema {schema}, the folder's is {SCHEMA_VERSION}")
    if f"{RUN}.parquet" not in files:
        raise _Damaged(f"{MANIFEST} lists no {RUN}.parquet")
    found = {}
    for name, entry in files.items():
        try:
            data = (run_dir / name).read_bytes()
        except FileNotFoundError:
            raise _Damaged(f"{name} missing") from None
        except OSError as err:
            raise _Damaged(f"{name} unreadable ({err.strerror})") from None
        if len(data) != entry.get("bytes"):
            raise _Damaged(f"{name} unreadable ({len(data)} bytes, {entry.get('bytes')} written)")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise _Damaged(f"{name} unreadable (its SHA-256 is not the one written)")
        found[name.removesuffix(".parquet")] = data
    return found


def _checked_legacy(run_dir: Path) -> dict[str, bytes | None]:
    """The tables of a run written before manifests (stem -> None), each file parsed once to check it."""
    present: dict[str, bytes | None] = {
        p.stem: None for p in sorted(run_dir.glob("*.parquet")) if not p.name.startswith(TMP_PREFIX)
    }
    if RUN not in present:
        raise _Damaged(f"{RUN}.parquet missing")
    for name in present:
        try:
            with pq.ParquetFile(run_dir / f"{name}.parquet") as f:
                table = f.read()  # every page decoded: without a checksum, the best check there is
        except (OSError, ValueError, pa.ArrowException) as err:
            raise _Damaged(f"{name}.parquet unreadable ({_first_line(err)})") from None
        if "run" not in table.column_names or (name == RUN and table.num_rows != 1):
            raise _Damaged(f"{name}.parquet unreadable (not a {name} table)")
    missing = [name for name in LEGACY_TABLES if name not in present]
    if missing and _status(run_dir) != STATUS_FAILED:
        raise _Damaged(f"{missing[0]}.parquet missing")
    return present


def _status(run_dir: Path) -> str:
    try:
        return str(pd.read_parquet(run_dir / f"{RUN}.parquet", columns=["status"])["status"].iloc[0])
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException) as err:
        raise _Damaged(f"{RUN}.parquet unreadable ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def read_experiment_json(out_dir: Path) -> dict[str, Any] | None:
    """DIR/experiment.json as written by ``prepare`` (None if the folder has none); StoreError if unreadable."""
    path = out_dir / EXPERIMENT_JSON
    if not path.is_file():
        return None
    try:
        resolved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(
            f"{path}: cannot read the resolved experiment ({_first_line(err)}); "
            "delete it and `lrd run` the folder's experiment to write it again"
        ) from None
    if not isinstance(resolved, dict) or not isinstance(resolved.get("runs"), dict):
        raise StoreError(f"{path}: not a resolved experiment (no 'runs' table); delete it and `lrd run` again")
    if not isinstance(resolved.get("schema", 1), int) or not isinstance(resolved.get("report", {}), dict):
        raise StoreError(f"{path}: not a resolved experiment ('schema' must be a whole number, 'report' a table)")
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
    """The stored tables of one run folder (only "run" for a failed run); StoreError if the run is damaged."""
    try:
        return _read_checked(run_dir)
    except _Damaged as err:
        raise StoreError(f"{run_dir}: damaged run ({err}); delete the folder, `lrd run` computes it again") from None


def _read_checked(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables of a run that checks (``check_run``), each file read once; ``_Damaged`` otherwise."""
    tables = {}
    for name, data in _checked_files(run_dir).items():
        if name not in TABLES + OPTIONAL_TABLES:
            continue  # a table of a newer lrd: not read
        try:
            tables[name] = pd.read_parquet(io.BytesIO(data) if data is not None else run_dir / f"{name}.parquet")
        except (OSError, ValueError, pa.ArrowException) as err:
            raise _Damaged(f"{name}.parquet unreadable ({_first_line(err)})") from None
    return tables


def load(out_dir: str | Path, all_runs: bool = False, on_damaged: Callable[[str, str], None] | None = None) -> Results:
    """The tables of a results folder as DataFrames, with ``solved`` and ``still_improving`` (``lrd.results``) added.

    By default only the runs of the experiment last run into the folder; ``all_runs``
    also returns runs of earlier versions of the experiment kept in the same folder.
    A failed run has a row in ``runs`` (status "failed", its ``error``) and no curves or
    gradient norms; ``error`` is empty (None) for every other run. A damaged run
    (``check_run``) is left out and passed to ``on_damaged(run_id, reason)``; without
    it, each is named in a ``StoreWarning``.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StoreError(f"{out_dir}: no such results folder")
    check_schema(out_dir)
    stored = stored_runs(out_dir)
    wanted = current_run_ids(out_dir)
    ids = sorted(stored if all_runs or wanted is None else stored & set(wanted))
    names = TABLES + OPTIONAL_TABLES
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in names}
    damaged: dict[str, str] = {}
    for run_id in ids:
        try:
            tables = _read_checked(out_dir / RUNS / run_id)
        except _Damaged as err:
            damaged[run_id] = str(err)
            continue
        for name, table in tables.items():
            frames[name].append(table)
    for run_id, reason in damaged.items():
        if on_damaged is None:
            warnings.warn(f"{out_dir}: damaged run {run_id} left out ({reason})", StoreWarning, stacklevel=2)
        else:
            on_damaged(run_id, reason)
    if not frames[RUN]:
        if damaged:
            raise StoreError(
                f"{out_dir}: no readable runs here, {len(damaged)} damaged (`lrd run` computes them again)"
            )
        raise StoreError(f"{out_dir}: no finished runs here yet (run `lrd run` first)")
    runs, curves, grad_norms, eval_gaps, dynamics = (
        pd.concat(frames[name], ignore_index=True) if frames[name] else pd.DataFrame() for name in names
    )
    if not frames[DYNAMICS]:  # results from before the diagnostics, or all trained without them
        dynamics = pd.DataFrame({c: [] for c in DYNAMICS_COLUMNS})
    runs = with_trend(with_solved(runs, curves, solve_threshold(out_dir)), curves)
    runs["error"] = runs.get("error", None)
    runs = runs[[c for c in runs if c != "error"] + ["error"]]  # the same column order with and without failures
    runs = runs.sort_values(list(RUN_ORDER), kind="stable").reset_index(drop=True)
    return Results(runs, curves, grad_norms, eval_gaps, dynamics)
