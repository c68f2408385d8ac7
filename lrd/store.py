"""The results store: one atomic folder per run while a sweep runs, one packed table per kind once it ends.

Layout of a results folder::

    DIR/experiment.toml     the experiment file as it was run
    DIR/experiment.json     the results schema, the report settings and the resolved runs (id -> configuration)
    DIR/versions.json       Python and package versions of the last run
    DIR/summary.csv         one row per configuration at its chosen learning rate (``lrd.results.summary``),
                            the numbers ``lrd show`` and the report print, for people and spreadsheets
    DIR/runs.csv.gz         the runs table of the current experiment, one row per run (gzip; pandas reads it)
    DIR/tables/             the packed tables of the finished runs (``pack``), rows sorted by run id:
        runs.parquet        the ``runs`` table, one row per run
        curves.parquet      the ``curves`` rows of every run
        grad_norms.parquet  the ``grad_norms`` rows (float32 where the values are float32: all of them today)
        dynamics.parquet    the ``dynamics`` rows (runs trained with diagnostics only)
        eval_gaps.parquet   the ``eval_gaps`` rows (only with ``[train] eval_gaps``)
        manifest.json       written last: each file's size, row count, SHA-256 and the runs' own
                            columns and dtypes; the ids of the runs the tables hold
    DIR/runs/<id>/          one folder per run not packed yet, keyed by the hash of its configuration:
        run.parquet         one row (the ``runs`` table)
        curves.parquet, grad_norms.parquet, dynamics.parquet, eval_gaps.parquet   its rows
        manifest.json       written last: each file's size, row count and SHA-256, the results schema
    DIR/.lock               held (``flock``) by the process writing the folder (``lock``); holds its pid

While a sweep runs, each run is written as a run folder under a temporary name and
renamed into place, so a process killed at any moment leaves either a complete run
or none (stale temporary folders, named with their writer's pid, are removed by the
next sweep once that process is gone). A changed configuration has a new id, so it
never overwrites another run. When a sweep ends with every run finished it packs
(``pack``; ``lrd pack DIR`` by hand): the packed tables are written beside the run
folders, read back and compared with them, put in place, and only then are the run
folders removed; a kill at any step leaves a folder that loads whole. A packed folder
that gains runs (a new seed, an override) takes run folders beside its tables and
packs again when that sweep ends.

A run counts as stored only if it checks (``survey``, ``check_run``): every file its
manifest lists is there with its size and checksum. A run written before manifests (no
``manifest.json``) checks when its run, curves and grad_norms files are there and
parse. A run that does not check is *damaged*: ``load`` skips it and names it, and the
next sweep computes it again. A damaged packed file damages every run it holds.

Every reader (``load``, ``read_tables``, the sweep, ``lrd verify``, ``lrd upgrade``) goes
through ``survey`` and ``_pieces``: a run's rows come back with the columns and dtypes
its run folder had, so packed and unpacked folders load to identical DataFrames.

The tables hold what was measured; what it means (``solved``, at the folder's
``[report] solve_threshold``, and ``still_improving``) is added when they are read (``lrd.results``). A folder
written under an older results schema is refused with one line that says how to
upgrade it (``lrd upgrade DIR``, see ``lrd.upgrade``).

A run whose training failed (its worker died, or it raised) is a run folder with
``run.parquet`` alone: status "failed" and the ``error``. It does not count as
done: the next sweep computes it again and its result replaces the record. Failed
runs are never packed.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lrd.results import with_solved, with_trend
from lrd.runtime import versions
from lrd.schema import (
    CURVES,
    DYNAMICS,
    DYNAMICS_COLUMNS,
    EVAL_GAPS,
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

if TYPE_CHECKING:  # the store reads and writes tables: readers (lrd show, lrd pack) need no JAX
    from lrd.experiment import Experiment

RUNS = "runs"
EXPERIMENT_JSON = "experiment.json"
RUNS_CSV = "runs.csv.gz"  # the per-run table for people (write_summary)
MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
LEGACY_TABLES = (RUN, CURVES, GRAD_NORMS)  # what every finished run written before manifests has
PACKED = "tables"  # DIR/tables: the packed tables of the folder's finished runs, and their manifest
PACKED_OLD = "tables.old"  # the packed tables being replaced, while a pack puts new ones in place
PACKED_FILES = {
    name: f"{RUNS if name == RUN else name}.parquet" for name in (RUN, CURVES, GRAD_NORMS, EVAL_GAPS, DYNAMICS)
}
UNKNOWN_RUNS = "the runs of the packed tables"  # named to on_damaged when the packed manifest is unreadable
# experiment.json and the packed tables' manifest.json, the two JSON files a study commits that grow with its
# runs, are written without indentation or spaces: a third fewer bytes (345 KB of results/ on 2026-12-06)
COMPACT = (",", ":")
ZSTD_LEVEL = 19  # packed once, read often: zstd at its slowest, tightest ordinary level (3% under level 9 here)


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
    """Create the folder, clear stale temporary files (and finish a pack cut short), save the experiment and versions.

    A folder of an older results schema is refused (StoreError) before anything is written.
    """
    check_schema(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean_up(out_dir)
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
    data = _parquet(table)
    _write_bytes(path, data)
    return {"bytes": len(data), "rows": len(table), "sha256": hashlib.sha256(data).hexdigest()}


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
    _write_text(out_dir / EXPERIMENT_JSON, json.dumps(resolved, separators=COMPACT, sort_keys=True))


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


def write_summary(out_dir: Path, runs: pd.DataFrame, summary: pd.DataFrame) -> None:
    """Write DIR/summary.csv (``summary``: one row per configuration) and DIR/runs.csv.gz (``runs``), for people.

    The per-run table is gzip-compressed (a tenth of the bytes; ``pandas.read_csv`` reads it as
    it is), with no name or date in its header, so the same table gives the same bytes.
    """
    _replace_bytes(out_dir / RUNS_CSV, gzip.compress(runs.to_csv(index=False).encode(), mtime=0))
    _write_text(out_dir / "summary.csv", summary.to_csv(index=False))


def _write_text(path: Path, text: str) -> None:
    _replace_bytes(path, text.encode())


def _replace_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` atomically (a temporary file, then a rename), unless it already holds ``data``."""
    if path.is_file() and path.read_bytes() == data:
        return  # unchanged: a finished folder is checked without writing (it may be read-only)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
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
COMPLETE, FAILED, DAMAGED = "complete", "failed", "damaged"


class RunCheck(NamedTuple):
    """What a run folder holds: a complete run, the record of a failed run, or a damaged run (and why)."""

    state: str  # COMPLETE, FAILED or DAMAGED
    reason: str = ""  # for DAMAGED: the file and what is wrong with it, e.g. "curves.parquet unreadable"


def stored_runs(out_dir: Path) -> set[str]:
    """Ids of every run recorded in ``out_dir``: in a run folder (finished or failed) or in the packed tables.

    Nothing is checked: the packed manifest's list of runs and the names of the run folders.
    """
    found = _run_folders(out_dir)
    packed = _packed_set(out_dir, read=False)
    return found | set(packed.runs if packed is not None else ())


def _run_folders(out_dir: Path) -> set[str]:
    runs = out_dir / RUNS
    if not runs.is_dir():
        return set()
    return {p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)}


def completed_runs(out_dir: Path) -> set[str]:
    """Ids of the runs stored with their results in ``out_dir`` and checked (failed and damaged ones excluded)."""
    return {run_id for run_id, found in check_runs(out_dir).items() if found.state == COMPLETE}


def check_runs(out_dir: Path, ids: set[str] | None = None) -> dict[str, RunCheck]:
    """How every stored run (or those of ``ids`` that are stored) checks, wherever it is stored (``survey``)."""
    checks = survey(out_dir, ids).checks
    return {run_id: checks[run_id] for run_id in sorted(checks if ids is None else checks.keys() & ids)}


def check_run(run_dir: Path) -> RunCheck:
    """Whether a run folder holds a whole run, without parsing its tables.

    With a manifest: every file it lists is there with the size and SHA-256 it was
    written with (the bytes read once and hashed, about 1 GB/s: over 100 times faster
    than pandas parses them). Without (runs written before manifests): run.parquet,
    and for a run that did not fail curves.parquet and grad_norms.parquet, are there
    and parse (pyarrow, every page), each with a ``run`` column, run.parquet one row;
    slower, and blind to a changed value that still parses (``lrd upgrade`` packs
    such runs, and the packed tables have a manifest).
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
    return {name.removesuffix(".parquet"): _checked_bytes(run_dir / name, entry) for name, entry in files.items()}


def _checked_bytes(path: Path, entry: dict[str, Any], shown: str | None = None) -> bytes:
    """The bytes of a file a manifest lists, if they have the size and SHA-256 it records; else ``_Damaged``.

    The fault names the file as ``shown`` (default: its name).
    """
    shown = shown or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Damaged(f"{shown} missing") from None
    except OSError as err:
        raise _Damaged(f"{shown} unreadable ({err.strerror})") from None
    if len(data) != entry.get("bytes"):
        raise _Damaged(f"{shown} unreadable ({len(data)} bytes, {entry.get('bytes')} written)")
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise _Damaged(f"{shown} unreadable (its SHA-256 is not the one written)")
    return data


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


def _read_checked(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables of a run folder that checks (``check_run``), each file read once; ``_Damaged`` otherwise."""
    tables = {}
    for name, data in _checked_files(run_dir).items():
        if name not in TABLES + OPTIONAL_TABLES:
            continue  # a table of a newer lrd: not read
        try:
            tables[name] = pd.read_parquet(io.BytesIO(data) if data is not None else run_dir / f"{name}.parquet")
        except (OSError, ValueError, pa.ArrowException) as err:
            raise _Damaged(f"{name}.parquet unreadable ({_first_line(err)})") from None
    return tables


# --- the packed tables --------------------------------------------------------------------------
class PackedSet(NamedTuple):
    """The packed tables of a folder as its manifest lists them (``DIR/tables/manifest.json``).

    The manifest: ``schema``; ``runs``, the ids of the runs the tables hold, sorted; ``files``,
    for each table file its size, row count, SHA-256 and ``groups``: the runs' own columns
    and dtypes (a list of ``{"columns": [[name, dtype], ...], "runs": [index into runs, ...]}``),
    so that each run's rows read back exactly as its run folder held them.
    """

    folder: Path  # DIR/tables (DIR/tables.old while a pack that replaces it was cut short)
    runs: list[str]
    files: dict[str, dict[str, Any]]  # table name -> its manifest entry (with "file": the file name)
    damage: str  # "" when every file checks; else which file and what is wrong with it
    data: dict[str, bytes]  # table name -> the file's checked bytes (when read)


def _packed_dir(out_dir: Path) -> Path | None:
    """DIR/tables, or DIR/tables.old while a pack that replaces it was cut short; None when there is neither."""
    return next((out_dir / name for name in (PACKED, PACKED_OLD) if (out_dir / name).is_dir()), None)


def _packed_set(out_dir: Path, read: bool = True) -> PackedSet | None:
    """The folder's packed tables (None if it has none); with ``read``, every file read and checked."""
    folder = _packed_dir(out_dir)
    return None if folder is None else _read_packed(folder, read)


def _read_packed(folder: Path, read: bool = True) -> PackedSet:
    """The packed tables in ``folder`` as its manifest lists them; with ``read``, every file read and checked."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        runs, files, schema = manifest["runs"], manifest["files"], manifest["schema"]
        assert isinstance(runs, list) and all(isinstance(r, str) for r in runs)
        assert isinstance(files, dict) and all(
            isinstance(e, dict) and isinstance(e["groups"], list) for e in files.values()
        )
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return PackedSet(folder, _unchecked_ids(folder), {}, f"{folder.name}/{MANIFEST} unreadable", {})
    tables = {name: {**files[file], "file": file} for name, file in PACKED_FILES.items() if file in files}
    if schema != SCHEMA_VERSION:
        damage = f"{folder.name}/{MANIFEST} of results schema {schema}, the folder's is {SCHEMA_VERSION}"
        return PackedSet(folder, runs, tables, damage, {})
    if RUN not in tables:
        return PackedSet(folder, runs, tables, f"{folder.name}/{MANIFEST} lists no {PACKED_FILES[RUN]}", {})
    data = {}
    if read:
        try:
            for name, entry in tables.items():
                data[name] = _checked_bytes(folder / entry["file"], entry, f"{folder.name}/{entry['file']}")
        except _Damaged as err:
            return PackedSet(folder, runs, tables, str(err), {})
    return PackedSet(folder, runs, tables, "", data)


def _unchecked_ids(folder: Path) -> list[str]:
    """The run ids in a packed runs table whose manifest is unreadable (to name them damaged); [] if unreadable too."""
    try:
        return sorted(set(pq.read_table(folder / PACKED_FILES[RUN], columns=["run"]).column("run").to_pylist()))
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return []


class Survey(NamedTuple):
    """Where each run of a folder is stored and how it checks (``survey``)."""

    checks: dict[str, RunCheck]  # every run recorded in the folder
    in_folder: set[str]  # the runs read from their run folder (every other complete run: from the packed tables)
    packed: PackedSet | None


def survey(out_dir: Path, ids: set[str] | None = None) -> Survey:
    """Every run of a folder (or those of ``ids``), in its run folder or in the packed tables, checked.

    The packed tables check as one: a damaged file (or manifest) makes every run they
    hold damaged, named by the file. Where a run is in both, the run folder counts if it
    checks as well as the packed run (a run folder of a pack cut short, or a run
    recomputed because the packed tables were damaged); a damaged or failed run folder
    never hides a complete packed run.
    """
    packed = _packed_set(out_dir)
    in_packed = RunCheck(DAMAGED, packed.damage) if packed and packed.damage else RunCheck(COMPLETE)
    checks = dict.fromkeys(packed.runs if packed else [], in_packed)
    rank = {DAMAGED: 0, FAILED: 1, COMPLETE: 2}
    in_folder = set()
    folders = _run_folders(out_dir)
    for run_id in sorted(folders if ids is None else folders & ids):
        found = check_run(out_dir / RUNS / run_id)
        if run_id not in checks or rank[found.state] >= rank[checks[run_id].state]:
            checks[run_id] = found
            in_folder.add(run_id)
    return Survey(checks, in_folder, packed)


Piece = tuple[list[str], pd.DataFrame]  # the rows of consecutive runs that share their columns and dtypes


def _pieces(out_dir: Path, ids: list[str], found: Survey) -> tuple[dict[str, list[Piece]], dict[str, str]]:
    """The rows of runs ``ids`` (sorted, none damaged in ``found``), per table, as pieces in run order.

    Each run's rows come with the columns and dtypes its run folder has (packed runs: as
    their manifest records), so concatenating the pieces gives the same DataFrame whether
    the runs are packed or not. Also returns the runs that could not be parsed (id -> why).
    """
    pieces: dict[str, list[Piece]] = {name: [] for name in TABLES + OPTIONAL_TABLES}
    unreadable: dict[str, str] = {}
    block: list[str] = []  # consecutive packed runs, read together

    def flush() -> None:
        if block:
            assert found.packed is not None
            try:
                for name, parts in _packed_pieces(found.packed, block).items():
                    pieces[name] += parts
            except _Damaged as err:
                unreadable.update(dict.fromkeys(block, str(err)))
            block.clear()

    for run_id in ids:
        if run_id not in found.in_folder:
            block.append(run_id)
            continue
        flush()
        try:
            tables = _read_checked(out_dir / RUNS / run_id)
        except _Damaged as err:
            unreadable[run_id] = str(err)
            continue
        for name, table in tables.items():
            pieces[name].append(([run_id], table))
    flush()
    return pieces, unreadable


def _packed_pieces(packed: PackedSet, ids: list[str]) -> dict[str, list[Piece]]:
    """The rows of packed runs ``ids`` (sorted), per table: one piece per run of consecutive rows and one dtype set."""
    index = {run_id: i for i, run_id in enumerate(packed.runs)}
    out: dict[str, list[Piece]] = {}
    for name, entry in packed.files.items():
        where = f"{packed.folder.name}/{entry['file']}"
        try:
            frame = pd.read_parquet(io.BytesIO(packed.data[name]))
            groups = [([c for c, _ in g["columns"]], dict(g["columns"]), set(g["runs"])) for g in entry["groups"]]
            stored = {c: str(t) for c, t in frame.dtypes.items()}
            casts = [{c: t for c, t in dtypes.items() if stored[c] != t} for _, dtypes, _ in groups]
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
            raise _Damaged(f"{where} unreadable ({_first_line(err)})") from None
        column = frame["run"].to_numpy(dtype=object) if "run" in frame else np.array([], dtype=object)
        spans: list[tuple[int, int, int, list[str]]] = []  # (group, first row, end row, runs)
        for run_id in ids:
            group = next((g for g, (_, _, members) in enumerate(groups) if index[run_id] in members), None)
            if group is None:
                continue  # no rows in this table (no dynamics, say)
            start, end = (int(np.searchsorted(column, run_id, side)) for side in ("left", "right"))
            if spans and spans[-1][0] == group and spans[-1][2] == start:
                spans[-1] = (group, spans[-1][1], end, [*spans[-1][3], run_id])
            else:
                spans.append((group, start, end, [run_id]))
        cast: dict[int, pd.DataFrame] = {}  # group -> its rows, in its runs' columns and dtypes
        for group in dict.fromkeys(g for g, _, _, _ in spans):
            rows = np.concatenate([np.arange(start, end) for g, start, end, _ in spans if g == group])
            columns = groups[group][0]
            try:  # each run's own dtypes: only the columns that differ (float32, or padded for other runs) are cast
                cast[group] = frame.iloc[rows][columns].astype(casts[group]).reset_index(drop=True)
            except (KeyError, ValueError, TypeError) as err:
                raise _Damaged(f"{where} unreadable ({_first_line(err)})") from None
        parts, offset = [], dict.fromkeys(cast, 0)
        for group, start, end, runs in spans:
            parts.append((runs, cast[group].iloc[offset[group] : offset[group] + end - start]))
            offset[group] += end - start
        if parts:
            out[name] = parts
    return out


def _concat(pieces: list[Piece]) -> pd.DataFrame:
    return pd.concat([frame for _, frame in pieces], ignore_index=True) if pieces else pd.DataFrame()


def read_tables(out_dir: Path, ids: list[str]) -> dict[str, pd.DataFrame]:
    """The stored tables of runs ``ids`` of ``out_dir``, packed or in run folders, as stored (nothing derived).

    Rows in run-id order; only the tables the runs have (a failed run has only "run").
    StoreError (one line) naming the first run that is missing or damaged.
    """
    found = survey(out_dir, set(ids))
    for run_id in sorted(ids):
        check = found.checks.get(run_id)
        if check is None or check.state == DAMAGED:
            why = "not stored" if check is None else f"damaged ({check.reason})"
            raise StoreError(f"{out_dir}: run {run_id} {why}; `lrd run` computes it again")
    pieces, unreadable = _pieces(out_dir, sorted(ids), found)
    if unreadable:
        run_id, reason = min(unreadable.items())
        raise StoreError(f"{out_dir}: run {run_id} damaged ({reason}); `lrd run` computes it again")
    return {name: _concat(parts) for name, parts in pieces.items() if parts}


def read_run(out_dir: Path, run_id: str) -> dict[str, pd.DataFrame]:
    """The stored tables of one run (only "run" for a failed run); StoreError if it is missing or damaged."""
    return read_tables(out_dir, [run_id])


def load(out_dir: str | Path, all_runs: bool = False, on_damaged: Callable[[str, str], None] | None = None) -> Results:
    """The tables of a results folder as DataFrames, with ``solved`` and ``still_improving`` (``lrd.results``) added.

    The one reader of results folders: packed tables, run folders, or both (``survey``),
    load to the same DataFrames. By default only the runs of the experiment last run
    into the folder; ``all_runs`` also returns runs of earlier versions of the experiment
    kept in the same folder. A failed run has a row in ``runs`` (status "failed", its
    ``error``) and no curves or gradient norms; ``error`` is empty (None) for every other
    run. A damaged run (``survey``) is left out and passed to ``on_damaged(run_id,
    reason)``; without it, each is named in a ``StoreWarning``.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StoreError(f"{out_dir}: no such results folder")
    check_schema(out_dir)
    found = survey(out_dir)
    wanted = current_run_ids(out_dir)
    ids = sorted(found.checks if all_runs or wanted is None else found.checks.keys() & set(wanted))
    damaged = {run_id: found.checks[run_id].reason for run_id in ids if found.checks[run_id].state == DAMAGED}
    pieces, unreadable = _pieces(out_dir, [run_id for run_id in ids if run_id not in damaged], found)
    damaged = dict(sorted({**damaged, **unreadable}.items()))
    if found.packed is not None and found.packed.damage and not found.packed.runs:
        damaged[UNKNOWN_RUNS] = found.packed.damage  # an unreadable manifest: which runs it held is unknown
    for run_id, reason in damaged.items():
        if on_damaged is None:
            warnings.warn(f"{out_dir}: damaged run {run_id} left out ({reason})", StoreWarning, stacklevel=2)
        else:
            on_damaged(run_id, reason)
    if not pieces[RUN]:
        if damaged:
            reasons = sorted(set(damaged.values()))
            why = f"{reasons[0]}; " if len(reasons) == 1 else ""
            count = "" if UNKNOWN_RUNS in damaged else f", {len(damaged)} damaged"
            raise StoreError(f"{out_dir}: no readable runs here{count} ({why}`lrd run` computes them again)")
        raise StoreError(f"{out_dir}: no finished runs here yet (run `lrd run` first)")
    runs, curves, grad_norms, eval_gaps, dynamics = (_concat(pieces[name]) for name in TABLES + OPTIONAL_TABLES)
    if not pieces[DYNAMICS]:  # results from before the diagnostics, or all trained without them
        dynamics = pd.DataFrame({c: [] for c in DYNAMICS_COLUMNS})
    runs = with_trend(with_solved(runs, curves, solve_threshold(out_dir)), curves)
    runs["error"] = runs.get("error", None)
    runs = runs[[c for c in runs if c != "error"] + ["error"]]  # the same column order with and without failures
    runs = runs.sort_values(list(RUN_ORDER), kind="stable").reset_index(drop=True)
    return Results(runs, curves, grad_norms, eval_gaps, dynamics)


# --- packing ------------------------------------------------------------------------------------
class Packed(NamedTuple):
    """What ``pack`` did."""

    runs: int  # runs in the packed tables
    added: int  # of them, taken from run folders by this pack (0: nothing to do)
    left: dict[str, str]  # run folders left as they are: run id -> "failed" or what is damaged
    bytes: int  # size of the packed tables and their manifest


def pack(out_dir: Path) -> Packed:
    """Pack the folder's complete runs into one table per kind, DIR/tables, and remove their run folders.

    The caller holds the folder's lock (``lock``). The packed tables hold the runs already
    packed and every complete run folder, sorted by run id. They are written into a
    temporary folder, read back and compared with the run folders (and the former packed
    tables) row for row, value for value, and only then put in place; the run folders go
    last. A process killed at any moment leaves a folder that loads whole (``survey``: a run
    in both places is read once). Failed and damaged run folders stay (``lrd run``
    computes them again). StoreError (one line) when the packed tables are damaged and some
    of their runs are in no run folder: packing would lose them.
    """
    check_schema(out_dir)
    _clean_up(out_dir)
    found = survey(out_dir)
    packed = found.packed
    keep = sorted(run_id for run_id, check in found.checks.items() if check.state == COMPLETE)
    left = {run_id: found.checks[run_id].reason or FAILED for run_id in sorted(found.in_folder) if run_id not in keep}
    if packed is not None and packed.damage:
        lost = [run_id for run_id in packed.runs if run_id not in keep]
        if lost or not packed.runs:
            raise StoreError(
                f"{packed.folder}: {packed.damage.removeprefix(packed.folder.name + '/')}; "
                f"{len(lost) or 'some'} of its runs are in no run folder, so packing now would lose them; "
                f"`lrd run` the experiment to compute them again, or move {packed.folder.name} away"
            )
    folders = [run_id for run_id in keep if run_id in found.in_folder]
    if not folders and (packed is None or not packed.damage):
        size = sum(p.stat().st_size for p in packed.folder.iterdir()) if packed is not None else 0
        return Packed(len(keep), 0, left, size)  # nothing new: nothing written
    pieces, unreadable = _pieces(out_dir, keep, found)
    if unreadable:
        run_id, reason = min(unreadable.items())
        raise StoreError(f"{out_dir}: run {run_id} damaged ({reason}); nothing packed")
    tmp = _tmp_name(out_dir / PACKED)
    tmp.mkdir()
    try:
        size = _write_packed(tmp, keep, pieces)
        _pack_step("tables written")
        _check_packed(out_dir, tmp, keep, pieces)
        _pack_step("tables checked")
    except BaseException:  # nothing is in place yet: the run folders are all there is (a kill leaves tmp to clean_up)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _commit(out_dir, tmp, sorted(found.checks.keys() & _run_folders(out_dir) & set(keep)))
    return Packed(len(keep), len(folders), left, size)


def _write_packed(folder: Path, ids: list[str], pieces: dict[str, list[Piece]]) -> int:
    """Each table of ``pieces`` to ``folder/<kind>.parquet``, then the manifest; their total size in bytes."""
    index = {run_id: i for i, run_id in enumerate(ids)}
    files: dict[str, dict[str, Any]] = {}
    size = 0
    for name, parts in pieces.items():
        if not parts:
            continue
        groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for runs, frame in parts:
            groups.setdefault(tuple((c, str(t)) for c, t in frame.dtypes.items()), []).extend(index[r] for r in runs)
        table = _concat(parts)
        data = _parquet(table, lossless_float32=True)
        path = folder / PACKED_FILES[name]
        _write_bytes(path, data)
        size += len(data)
        files[path.name] = {
            "bytes": len(data),
            "rows": len(table),
            "sha256": hashlib.sha256(data).hexdigest(),
            "groups": [{"columns": [list(c) for c in columns], "runs": runs} for columns, runs in groups.items()],
        }
    text = json.dumps({"schema": SCHEMA_VERSION, "runs": ids, "files": files}, separators=COMPACT, sort_keys=True)
    _write_bytes(folder / MANIFEST, text.encode())
    _fsync(folder)
    return size + len(text.encode())


def _check_packed(out_dir: Path, folder: Path, ids: list[str], pieces: dict[str, list[Piece]]) -> None:
    """Read the tables just written in ``folder`` back, as every reader does, and compare them with ``pieces``."""
    packed = _read_packed(folder)
    if packed.damage or packed.runs != ids:
        raise StoreError(
            f"{out_dir}: the packed tables read back wrong ({packed.damage or 'other runs'}); nothing removed"
        )
    try:
        again = _packed_pieces(packed, ids)
    except _Damaged as err:
        raise StoreError(f"{out_dir}: the packed tables read back wrong ({err}); nothing removed") from None
    for name, parts in pieces.items():
        try:
            pd.testing.assert_frame_equal(_concat(again.get(name, [])), _concat(parts), check_exact=True)
        except AssertionError as err:
            raise StoreError(
                f"{out_dir}: packed {name} table differs from the run folders ({_first_line(err)}); nothing removed"
            ) from None


def _commit(out_dir: Path, tmp: Path, folders: list[str]) -> None:
    """Put the checked packed tables in place of the old ones, then remove the run folders they now hold.

    Each step is one rename (or the removal of something no longer read), so a kill
    between any two leaves a folder that loads whole: the old tables move aside to
    DIR/tables.old (read while DIR/tables is missing), the new ones move in, the old ones
    go, then each run folder is renamed to a temporary name and removed.
    """
    current, old = out_dir / PACKED, out_dir / PACKED_OLD
    if current.is_dir():
        os.rename(current, old)
        _fsync(out_dir)
        _pack_step("old tables moved aside")
    os.rename(tmp, current)
    _fsync(out_dir)
    _pack_step("new tables in place")
    if old.is_dir():
        shutil.rmtree(old)
        _pack_step("old tables removed")
    for run_id in folders:
        gone = _tmp_name(out_dir / RUNS / run_id)
        os.rename(out_dir / RUNS / run_id, gone)
        _fsync(out_dir / RUNS)
        shutil.rmtree(gone)
        _pack_step("run folder removed")
    with suppress(OSError):
        (out_dir / RUNS).rmdir()  # only when empty


def _pack_step(step: str) -> None:
    """Called after each step of ``pack`` (the tests make it kill the process there)."""


def _clean_up(out_dir: Path) -> None:
    """Remove temporary files of dead writers; finish or undo a pack that was cut short.

    DIR/tables.old beside DIR/tables is the replaced set (removed); without DIR/tables it
    is the set still in force (renamed back).
    """
    for stale in list(out_dir.glob(f"{TMP_PREFIX}*")) + list((out_dir / RUNS).glob(f"{TMP_PREFIX}*")):
        if _writer_alive(stale):
            continue  # another live process's work in progress (only possible without a working lock)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    old = out_dir / PACKED_OLD
    if old.is_dir():
        if (out_dir / PACKED).is_dir():
            shutil.rmtree(old)
        else:
            os.rename(old, out_dir / PACKED)
            _fsync(out_dir)


def _parquet(table: pd.DataFrame, lossless_float32: bool = False) -> bytes:
    """A table as Parquet: zstd, strings dictionary-encoded, float32 byte-stream-split, no column statistics.

    No reader filters a table by value, so column statistics would be dead weight.

    With ``lossless_float32`` a float64 column whose every value is a float32 (the
    gradient norms and most metrics: computed in float32) is stored as float32; the
    packed manifest records the dtype it is read back as, so every value is the same.
    """
    if lossless_float32:
        narrow = [c for c in table.columns if table[c].dtype == np.float64 and _is_float32(table[c].to_numpy())]
        table = table.astype(dict.fromkeys(narrow, np.float32))
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    strings = [f.name for f in arrow.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    singles = [f.name for f in arrow.schema if f.type == pa.float32()]  # byte stream split: a fifth smaller here
    buffer = io.BytesIO()
    pq.write_table(
        arrow,
        buffer,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        use_dictionary=strings,
        use_byte_stream_split=singles,
        write_statistics=False,
    )
    return buffer.getvalue()


def _is_float32(values: np.ndarray) -> bool:
    """Whether every value of a float64 array is a float32 (NaN included): storing it as float32 loses nothing."""
    with np.errstate(over="ignore"):
        narrowed = values.astype(np.float32).astype(np.float64)
    return bool(np.all((narrowed == values) | (np.isnan(values) & np.isnan(narrowed))))


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
