"""The results store: one atomic file group per run, tidy tables pandas loads directly.

Layout of a results folder::

    DIR/experiment.toml     the experiment file as it was run
    DIR/experiment.json     the resolved runs of that file (id -> configuration)
    DIR/versions.json       Python and package versions of the last run
    DIR/summary.csv         the runs table of the current experiment, for people
    DIR/runs/<id>/          one folder per run, keyed by the hash of its configuration:
        run.parquet         one row (the ``runs`` table)
        curves.parquet      the ``curves`` rows
        grad_norms.parquet  the ``grad_norms`` rows

A run folder is written under a temporary name and renamed into place, so a
process killed at any moment leaves either a complete run or none (stale
temporary folders are removed by the next sweep). A changed configuration has
a new id, so it never overwrites another run.

A run whose training failed (its worker died, or it raised) is a folder with
``run.parquet`` alone: status "failed" and the ``error``. It does not count as
done: the next sweep computes it again and its result replaces the record.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from lrd.experiment import Experiment, RunSpec
from lrd.models.network import param_count
from lrd.probes import decay_length, distance_from_loss
from lrd.train import RunResult

RUNS = "runs"
TMP_PREFIX = ".tmp-"
TABLES = ("run", "curves", "grad_norms")


class Results(NamedTuple):
    """The three tables of a results folder (see README, "Results tables")."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    grad_norms: pd.DataFrame


class StoreError(ValueError):
    """A results folder that cannot be read; the message is one line."""


# --- building a run's tables -----------------------------------------------------------
def run_tables(
    spec: RunSpec, result: RunResult, index: int, experiment: str, wall_time_s: float
) -> dict[str, pd.DataFrame]:
    """The run, curves and grad_norms tables of seed ``index`` of a (vmapped) RunResult."""
    task, model = spec.task, spec.model
    diverged_step = int(result.diverged_step[index])
    diverged = diverged_step >= 0
    records = [r for r in result.records if not diverged or int(r.step[index]) <= diverged_step]

    norm_rows, curve_rows = [], []
    for record in records:
        step = int(record.step[index])
        decay = np.nan
        for layer_name, directions in record.state_norms.items():
            layer = int(layer_name.removeprefix("layer"))
            for direction, states in directions.items():
                distance = distance_from_loss(task, direction)
                for state, norms in states.items():
                    norm = np.asarray(norms[index], np.float64)
                    below = np.asarray(record.below_floor[layer_name][direction][state][index], bool)
                    norm_rows.append(
                        pd.DataFrame(
                            {
                                "step": step,
                                "layer": layer,
                                "direction": direction,
                                "state": state,
                                "timestep": np.arange(task.length),
                                "distance": distance,
                                "norm": norm,
                                "below_floor": below,
                            }
                        )
                    )
                    if layer == 0 and direction == "fwd" and state == model.state_names[-1]:
                        decay = decay_length(norm, distance, below)
        curve_rows.append(
            {
                "step": step,
                **{k: float(v[index]) for k, v in record.metrics.items()},
                "grad_norm": float(record.grad_norm[index]),
                "decay_length": decay,
            }
        )
    curves = pd.DataFrame(curve_rows)
    grad_norms = pd.concat(norm_rows, ignore_index=True)

    baseline = task.baseline()
    final = {f"final_{k}": (np.nan if diverged else float(v[index])) for k, v in result.final.items()}
    final_valid = {f"final_valid_{k}": (np.nan if diverged else float(v[index])) for k, v in result.final_valid.items()}
    reached = curves.loc[curves["metric"] >= task.solve_threshold, "step"]
    row = {
        **_configuration(spec, experiment),
        "status": "diverged" if diverged else "done",
        "diverged_step": float(diverged_step) if diverged else np.nan,
        **final,
        **final_valid,
        "baseline_loss": baseline.loss,
        "baseline_metric": baseline.metric,
        **{f"baseline_{k}": v for k, v in task.extra_baselines().items()},
        **_partial_baselines(task),
        "solve_threshold": task.solve_threshold,
        "solved": bool(not diverged and final["final_metric"] >= task.solve_threshold),
        "solved_step": float(reached.iloc[0]) if len(reached) else np.nan,
        "steps_trained": int(result.steps_trained[index]),
        "decay_length_init": float(curves["decay_length"].iloc[0]),
        "decay_length_final": float(curves["decay_length"].iloc[-1]),
        "wall_time_s": wall_time_s,
        "group_size": len(result.seeds),
    }
    curves.insert(0, "run", spec.run_id)
    grad_norms.insert(0, "run", spec.run_id)
    return {"run": _run_table(row), "curves": curves, "grad_norms": grad_norms}


def failed_run_table(spec: RunSpec, experiment: str, group_size: int, error: str) -> dict[str, pd.DataFrame]:
    """The record of a run that could not be trained: its configuration, baselines, status "failed", the error."""
    task = spec.task
    baseline = task.baseline()
    row = {
        **_configuration(spec, experiment),
        "status": "failed",
        "baseline_loss": baseline.loss,
        "baseline_metric": baseline.metric,
        **{f"baseline_{k}": v for k, v in task.extra_baselines().items()},
        **_partial_baselines(task),
        "solve_threshold": task.solve_threshold,
        "solved": False,
        "group_size": group_size,
        "error": error,
    }
    return {"run": _run_table(row)}


def _configuration(spec: RunSpec, experiment: str) -> dict:
    """The runs-table columns that describe what was run (everything before ``status``)."""
    task, model = spec.task, spec.model
    return {
        "run": spec.run_id,
        "experiment": experiment,
        "task": task.name,
        "gap": task.gap,
        "task_length": task.length,
        "metric_name": task.metric_name,
        "task_source": task.source,
        "task_convention": task.convention,
        **{f"task_{k}": v for k, v in task.params().items() if k != "gap"},
        "model": model.label,
        **model.model_dump(),
        "param_count": param_count(model, task.input_dim, task.output_dim),
        "params_target": np.nan if spec.params_target is None else float(spec.params_target),
        "seed": spec.seed,
        **spec.train.model_dump(),
    }


def _partial_baselines(task) -> dict[str, float]:
    """baseline_<name>_loss and baseline_<name>_metric of the task's partial-memory predictors."""
    return {
        f"baseline_{name}_{part}": value
        for name, baseline in task.partial_baselines().items()
        for part, value in baseline._asdict().items()
    }


def _run_table(row: dict) -> pd.DataFrame:
    run = pd.DataFrame([row])
    run["forget_bias"] = run["forget_bias"].astype(float)
    return run


# --- writing -----------------------------------------------------------------------------
def prepare(out_dir: Path, experiment: Experiment) -> None:
    """Create the folder, clear stale temporary files, save the experiment and versions."""
    (out_dir / RUNS).mkdir(parents=True, exist_ok=True)
    for stale in list(out_dir.glob(f"{TMP_PREFIX}*")) + list((out_dir / RUNS).glob(f"{TMP_PREFIX}*")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    _write_text(out_dir / "experiment.toml", experiment.source)
    resolved = {
        "name": experiment.name,
        "description": experiment.description,
        "runs": {spec.run_id: spec.config() for spec in experiment.runs},
    }
    _write_text(out_dir / "experiment.json", json.dumps(resolved, indent=1, sort_keys=True))
    _write_text(out_dir / "versions.json", json.dumps(versions(), indent=1, sort_keys=True))


def write_run(out_dir: Path, run_id: str, tables: dict[str, pd.DataFrame]) -> None:
    """Write one run's tables atomically: a temporary folder, fsynced, renamed into place.

    ``tables`` has all three tables, or only "run" for a failed run. A finished run
    replaces a failed record of the same run; anything else already there is kept.
    """
    final = out_dir / RUNS / run_id
    tmp = _tmp_name(final)
    tmp.mkdir(parents=True)
    for name, table in tables.items():
        path = tmp / f"{name}.parquet"
        table.to_parquet(path, index=False, compression="zstd")
        _fsync(path)
    _fsync(tmp)
    replaced = None
    if len(tables) == len(TABLES) and _is_failed(final):
        replaced = _tmp_name(final)  # killed between the renames: the run is missing, so recomputed
        os.rename(final, replaced)
    try:
        os.rename(tmp, final)
    except OSError:  # already there (the same configuration finished elsewhere): keep the first
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")


def _is_failed(run_dir: Path) -> bool:
    """A stored record of a failed run: run.parquet without the curves."""
    return run_dir.is_dir() and not (run_dir / "curves.parquet").exists()


def write_summary(out_dir: Path, runs: pd.DataFrame) -> None:
    _write_text(out_dir / "summary.csv", runs.to_csv(index=False))


def _write_text(path: Path, text: str) -> None:
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


def versions() -> dict[str, str]:
    packages = ("lrd", "jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow", "matplotlib", "pydantic")
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


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


def current_run_ids(out_dir: Path) -> list[str] | None:
    path = out_dir / "experiment.json"
    if not path.is_file():
        return None
    return list(json.loads(path.read_text())["runs"])


def load(out_dir: str | Path, all_runs: bool = False) -> Results:
    """The tables of a results folder as DataFrames.

    By default only the runs of the experiment last run into the folder; ``all_runs``
    also returns runs of earlier versions of the experiment kept in the same folder.
    A failed run has a row in ``runs`` (status "failed", its ``error``) and no curves or
    gradient norms; ``error`` is empty (None) for every other run.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StoreError(f"{out_dir}: no such results folder")
    stored = stored_runs(out_dir)
    wanted = current_run_ids(out_dir)
    ids = sorted(stored if all_runs or wanted is None else stored & set(wanted))
    if not ids:
        raise StoreError(f"{out_dir}: no finished runs here yet (run `lrd run` first)")
    frames = {name: [] for name in TABLES}
    for run_id in ids:
        for name in TABLES:
            path = out_dir / RUNS / run_id / f"{name}.parquet"
            if name == "run" or path.exists():
                frames[name].append(pd.read_parquet(path))
    runs, curves, grad_norms = (
        pd.concat(frames[name], ignore_index=True) if frames[name] else pd.DataFrame() for name in TABLES
    )
    runs["error"] = runs.get("error", None)
    runs = runs[[c for c in runs if c != "error"] + ["error"]]  # the same column order with and without failures
    order = ["task", "gap", "model", "hidden", "seed"]
    runs = runs.sort_values(order, kind="stable").reset_index(drop=True)
    return Results(runs, curves, grad_norms)
