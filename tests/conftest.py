"""Shared fixtures: a tiny experiment, a per-session JAX compilation cache, the `lrd` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lrd import store
from lrd.schema import Results

TINY = """\
name = "tiny"
seeds = [0, 1]

[task]
name = "delayed_recall"
gap = 4

[model]
cell = ["rnn", "lstm"]
hidden = 8

[train]
steps = 20
log_every = 10
batch_size = 16
eval_size = 64
probe_size = 16
"""

THREE_GROUPS = TINY.replace('cell = ["rnn", "lstm"]', 'cell = ["rnn", "lstm", "gru"]').replace(
    "steps = 20", "steps = 40\ndiagnostics = true"
)


def lrd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The `lrd` command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lrd.cli", *args], cwd=cwd, capture_output=True, text=True)


def comparable(results: Results) -> list[pd.DataFrame]:
    """The four tables without what may differ between two computations of the same runs."""
    return [results.runs.drop(columns=["wall_time_s"]), results.curves, results.grad_norms, results.dynamics]


def as_upgraded(folder: Path, tmp: Path) -> Path:
    """The experiment file of results ``folder`` as ``lrd upgrade`` records it, in a copy under ``tmp``.

    Only experiment.json and experiment.toml are copied (the folder is not touched): where the
    folder's ``stop_when_solved`` runs were stopped by the probe-batch rule of before issue 21,
    the upgrade records ``stop_check = "probe"`` in the file (``lrd.upgrade.record_stop_check``).
    """
    from lrd.upgrade import upgrade

    copy = tmp / folder.name
    copy.mkdir(parents=True)
    for name in ("experiment.json", "experiment.toml"):
        shutil.copy(folder / name, copy / name)
    upgrade(copy)
    assert (copy / "experiment.json").read_bytes() == (folder / "experiment.json").read_bytes()  # ids kept
    return copy / "experiment.toml"


def unpack(out: Path) -> list[str]:
    """Turn a packed results folder back into one run folder per run (as a sweep leaves it before packing).

    Each run's tables as ``store.read_run`` gives them (its own columns and dtypes) go to
    ``DIR/runs/<id>/`` through ``store.write_run``; then DIR/tables is removed. Returns the run ids.
    """
    ids = sorted(store.stored_runs(out))
    for run_id in ids:
        store.write_run(out, run_id, store.read_run(out, run_id))
    shutil.rmtree(out / store.PACKED)
    return ids


def snapshot_files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative name) and its modification time, to show that nothing was rewritten."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The persistent compilation cache that every `lrd` process of the tests shares.

    JAX keys cache entries by the compiled program, so sharing it across test runs
    and workers changes only how long compilation takes, never a result.
    """
    path = Path(os.environ.get("LRD_CACHE_DIR", Path.home() / ".cache" / "lrd" / "jax-tests"))
    os.environ["LRD_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def write_experiment(tmp_path):
    def write(text: str, name: str = "exp.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# trained at two gaps, evaluated at four (lrd.train: eval_gaps); one cell keeps it cheap
EVAL_GAPS = """\
name = "at_gaps"
seeds = [0, 1]

[task]
name = "delayed_recall"
gap = [3, 5]

[model]
cell = "rnn"
hidden = 8

[train]
steps = 20
log_every = 10
batch_size = 16
eval_size = 64
probe_size = 16
eval_gaps = [3, 5, 9, 2]
"""


@pytest.fixture(scope="session")
def at_gaps_run(tmp_path_factory, cache_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """EVAL_GAPS run once through the command (figures and report included): (results folder, the process)."""
    work = tmp_path_factory.mktemp("at_gaps")
    (work / "exp.toml").write_text(EVAL_GAPS)
    proc = lrd("run", "exp.toml", "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "out", proc
