"""Sweeps end to end through the `lrd` command: results, resume after SIGKILL, divergence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import THREE_GROUPS, comparable, lrd, snapshot_files

from lrd import store
from lrd.cli import main
from lrd.schema import TABLES


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, cache_dir) -> Path:
    """The three-group experiment run once without interruption, through the command line."""
    work = tmp_path_factory.mktemp("uninterrupted")
    (work / "exp.toml").write_text(THREE_GROUPS)
    proc = lrd("run", "exp.toml", "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work


def test_end_to_end_through_the_command(uninterrupted):
    out = uninterrupted / "out"
    runs, curves, grad_norms, _, dynamics = store.load(out)
    assert set(dynamics["run"]) == set(runs["run"]) and sorted(dynamics["step"].unique()) == [0, 10, 20, 30, 40]
    assert sorted(runs["model"]) == ["gru", "gru", "lstm", "lstm", "rnn", "rnn"]
    assert set(runs["status"]) == {"done"}
    assert runs["run"].is_unique
    assert "time_loop" not in runs and set(runs["time_loop_used"]) == {"scan"}  # the default; the CPU runs the scan
    # the resolved experiment and versions are saved beside the results
    for name in ("experiment.toml", "experiment.json", "versions.json", "summary.csv", "runs.csv.gz"):
        assert (out / name).is_file(), name
    # curves: log points 0, 10, ..., 40 for every run
    assert sorted(curves["step"].unique()) == [0, 10, 20, 30, 40]
    assert len(curves) == len(runs) * 5
    # grad_norms: every timestep of every state of every log point
    T = int(runs["task_length"].iloc[0])
    states = {"rnn": 1, "lstm": 2, "gru": 1}
    expected = sum(states[m] for m in runs["model"]) * 5 * T
    assert len(grad_norms) == expected
    assert (grad_norms["norm"] > 0).all()
    # the baseline columns are the task's analytic values
    np.testing.assert_allclose(runs["baseline_loss"], np.log(8))
    np.testing.assert_allclose(runs["baseline_metric"], 1 / 8)
    # lrd show and lrd plot work on the folder
    show = lrd("show", "out", cwd=uninterrupted)
    assert show.returncode == 0 and "lstm" in show.stdout
    assert any((out / "figures").glob("*.png"))


def test_rerun_computes_nothing(uninterrupted):
    before = snapshot_files(uninterrupted / "out" / "tables")
    assert len(before) == 5  # packed: runs, curves, grad_norms, dynamics and the manifest
    proc = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=uninterrupted)
    assert proc.returncode == 0, proc.stderr
    assert "0 runs computed, 6 already done" in proc.stdout
    assert snapshot_files(uninterrupted / "out" / "tables") == before


def test_sigkill_mid_sweep_then_resume_gives_the_same_tables(uninterrupted, tmp_path, cache_dir):
    (tmp_path / "exp.toml").write_text(THREE_GROUPS)
    runs_dir = tmp_path / "out" / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrd.cli", "run", "exp.toml", "--out", "out", "--no-plot"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(store.completed_runs(tmp_path / "out")) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    names = [p.name for p in runs_dir.iterdir() if not p.name.startswith(".tmp")]
    assert 2 <= len(names) < 6, "the kill should land mid-sweep"
    survived = {}
    for name in names:  # every run folder left behind is complete and readable
        for table in TABLES:
            pd.read_parquet(runs_dir / name / f"{table}.parquet")
        survived[name] = store.read_run(tmp_path / "out", name)

    proc = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(survived)} already done" in proc.stdout
    for name, tables in survived.items():  # finished runs were not recomputed: packed as they were
        for table, frame in store.read_run(tmp_path / "out", name).items():
            pd.testing.assert_frame_equal(frame, tables[table], check_exact=True)
    assert not runs_dir.exists() and (tmp_path / "out" / "tables").is_dir()  # every run finished: packed
    for resumed, reference in zip(
        comparable(store.load(tmp_path / "out")), comparable(store.load(uninterrupted / "out"))
    ):
        pd.testing.assert_frame_equal(resumed, reference, check_exact=True)


def test_diverged_run_is_recorded_and_the_sweep_goes_on(write_experiment, tmp_path, cache_dir, capsys):
    text = """\
seeds = [0]
[task]
name = "adding"
gap = 6
[model]
cell = "rnn"
hidden = 8
[train]
optimizer = "sgd"
lr = [0.01, 1e30]
clip = 0.0
steps = 20
log_every = 10
batch_size = 16
eval_size = 64
probe_size = 16
"""
    out = tmp_path / "out"
    assert main(["run", str(write_experiment(text)), "--out", str(out), "--no-plot"]) == 0
    runs, curves, *_ = store.load(out)
    by_lr = runs.set_index("lr")
    assert by_lr.loc[1e30, "status"] == "diverged"
    assert 0 <= by_lr.loc[1e30, "diverged_step"] < 20
    assert np.isnan(by_lr.loc[1e30, "final_loss"])
    assert not by_lr.loc[1e30, "solved"]
    assert by_lr.loc[0.01, "status"] == "done"
    assert np.isfinite(by_lr.loc[0.01, "final_loss"])
    # the diverged run's curve stops at its divergence
    diverged_curve = curves[curves["run"] == by_lr.loc[1e30, "run"]]
    assert diverged_curve["step"].max() <= by_lr.loc[1e30, "diverged_step"]
    assert "1 diverged" in capsys.readouterr().out


def test_learning_rate_grid_stopping_and_validation_in_the_runs_table(write_experiment, tmp_path, cache_dir, capsys):
    """lr = [...] trains as one group; each run has its lr, steps_trained, final_valid_* and its parameter count."""
    text = """\
seeds = [0]
[task]
name = "delayed_recall"
gap = 2
[model]
cell = "lstm"
params = 900
[train]
lr = [1e-5, 3e-2]
stop_when_solved = true
steps = 40
log_every = 10
batch_size = 16
eval_size = 64
valid_size = 64
probe_size = 16
[report]
solve_threshold = 0.5
"""
    out = tmp_path / "out"
    assert main(["run", str(write_experiment(text)), "--out", str(out), "--no-plot"]) == 0
    assert "2 runs computed" in capsys.readouterr().out
    results = store.load(out)
    runs, curves = results.runs, results.curves
    by_lr = runs.set_index("lr")
    assert (runs["group_size"] == 2).all()
    assert by_lr.loc[3e-2, "steps_trained"] < 40 and by_lr.loc[3e-2, "solved_step"] == by_lr.loc[3e-2, "steps_trained"]
    assert by_lr.loc[1e-5, "steps_trained"] == 40 and np.isnan(by_lr.loc[1e-5, "solved_step"])
    assert curves.groupby("run")["step"].max().tolist() == [40, 40]  # the slow run kept the group going
    for column in ("final_valid_loss", "final_valid_metric"):
        assert np.all(np.isfinite(runs[column])) and np.all(runs[column] != runs[column.replace("valid_", "")])
    # lstm on delayed recall (18 inputs, 8 classes): 4h(18 + h + 1) + 8h + 8 parameters, nearest 900 at h = 8
    assert (runs["hidden"] == 8).all() and (runs["param_count"] == 4 * 8 * 27 + 72).all()
    assert (runs["params_target"] == 900).all()


def test_profile_every_keeps_the_curves_and_thins_only_the_per_timestep_tables(write_experiment, tmp_path, cache_dir):
    """profile_every stores grad_norms and the per-timestep dynamics at its multiples up to each run's last trained
    step and at that step (nothing of a stopped run's frozen log points); the curves, the per-run dynamics and every
    final number are those of a run storing them all."""
    text = """\
seeds = [0]
[task]
name = "delayed_recall"
gap = 2
[model]
cell = "rnn"
hidden = 8
[train]
lr = [1e-5, 3e-2]
stop_when_solved = true
steps = 60
log_every = 10
batch_size = 16
eval_size = 64
valid_size = 64
probe_size = 16
diagnostics = true
[report]
solve_threshold = 0.5
"""
    full, thin = tmp_path / "full", tmp_path / "thin"
    assert main(["run", str(write_experiment(text)), "--out", str(full), "--no-plot"]) == 0
    assert main(["run", str(write_experiment(text)), "--out", str(thin), "--no-plot", "train.profile_every=40"]) == 0
    a, b = store.load(full), store.load(thin)
    assert set(a.runs["run"]).isdisjoint(b.runs["run"])  # profile_every enters the run id when set
    a_runs, b_runs = (r.runs.set_index("lr").sort_index() for r in (a, b))
    stop = int(a_runs.loc[3e-2, "steps_trained"])
    assert 0 < stop < 40 and stop % 10 == 0  # the fast run stops between two profile steps
    for column in ("steps_trained", "final_metric", "final_loss", "growth_rate_final"):
        np.testing.assert_array_equal(a_runs[column], b_runs[column])
    by_lr = lambda r, table: table.merge(r.runs[["run", "lr"]], on="run").drop(columns="run")
    keys = ["lr", "step"]
    pd.testing.assert_frame_equal(
        by_lr(a, a.curves).sort_values(keys).reset_index(drop=True),
        by_lr(b, b.curves).sort_values(keys).reset_index(drop=True),
    )
    steps = by_lr(b, b.grad_norms).groupby("lr")["step"].unique().map(sorted)
    assert steps[3e-2] == [0, stop] and steps[1e-5] == [0, 40, 60]
    a_dyn, b_dyn = by_lr(a, a.dynamics), by_lr(b, b.dynamics)
    per_timestep = b_dyn["quantity"].isin(["sigma_max", "pmb_bound"])
    assert sorted(b_dyn[per_timestep & (b_dyn["lr"] == 1e-5)]["step"].unique()) == [0, 40, 60]
    kept = a_dyn.merge(b_dyn[["lr", "step", "quantity"]].drop_duplicates(), on=["lr", "step", "quantity"])
    cols = ["lr", "step", "quantity", "gate", "index"]
    pd.testing.assert_frame_equal(
        kept.sort_values(cols).reset_index(drop=True), b_dyn.sort_values(cols).reset_index(drop=True)
    )
    assert set(b_dyn[~per_timestep]["step"]) == set(a_dyn["step"])  # the per-run quantities at every log point


BRITTLE = '''\
"""delayed_recall that raises at gap 6 while a marker file exists."""

import os

from lrd.tasks import register
from lrd.tasks.delayed_recall import DelayedRecall


@register
class Brittle(DelayedRecall):
    name = "brittle"

    def sample(self, key, batch_size):
        if self.gap == 6 and os.path.exists({marker!r}):
            raise ValueError("no samples today")
        return super().sample(key, batch_size)
'''


def test_a_group_that_raises_is_recorded_failed_and_a_rerun_retries_only_it(tmp_path, cache_dir):
    marker = tmp_path / "raise"
    marker.touch()
    (tmp_path / "brittle.py").write_text(BRITTLE.format(marker=str(marker)))
    (tmp_path / "exp.toml").write_text(
        THREE_GROUPS.replace('name = "tiny"', 'name = "brittle"\nimports = ["brittle.py"]')
        .replace('name = "delayed_recall"\ngap = 4', 'name = "brittle"\ngap = [4, 6]')
        .replace('cell = ["rnn", "lstm", "gru"]', 'cell = "rnn"')
    )
    proc = lrd("run", "exp.toml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "2 runs computed, 0 already done, 0 diverged, 2 failed" in proc.stdout
    assert "seeds 0,1 failed: ValueError: no samples today (at brittle.py:15)" in proc.stdout
    assert "2 failed runs not drawn" in proc.stdout
    runs, curves, *_ = store.load(tmp_path / "out")
    failed = runs[runs["status"] == "failed"]
    assert sorted(failed["gap"]) == [6, 6] and not failed["solved"].any() and failed["final_metric"].isna().all()
    assert set(failed["error"]) == {"ValueError: no samples today (at brittle.py:15)"}
    assert not set(failed["run"]) & set(curves["run"])
    assert not (tmp_path / "out" / "tables").exists()  # runs failed: not packed, the next sweep retries them
    show = lrd("show", "out", cwd=tmp_path)
    assert show.returncode == 0 and "failed: brittle gaps 6 rnn seeds 0,1: ValueError: no samples today" in show.stdout

    marker.unlink()
    proc = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs computed, 2 already done, 0 diverged, 0 failed" in proc.stdout
    runs = store.load(tmp_path / "out").runs
    assert set(runs["status"]) == {"done"} and runs["error"].isna().all()
    assert not (tmp_path / "out" / "runs").exists()  # the failed runs done at last: packed, no run folder left
