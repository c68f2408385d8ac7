"""Results that leave the machine: a results folder logged to an MLflow tracking server.

``lrd export DIR --mlflow URI`` (the optional ``[mlflow]`` extra) writes, in the MLflow
experiment named after the lrd experiment:

- one parent run for the folder (run name: the folder's name), with the study's files as
  artifacts: the figures (``figures/*.png``, PDFs too when drawn), ``report.html``,
  ``summary.csv``, ``runs.csv.gz`` and ``experiment.toml``;
- one child run per lrd run (run name and tag ``lrd.run``: its run id), with the run's
  configuration as parameters (task, gap, model, seed, the task's parameters, the model and
  training settings, the parameter count), its curves as metrics at every logged step
  (loss, metric, gradient norm, growth rate, ...), its final numbers as metrics (``final_*``,
  ``baseline_*``, ``steps_trained``, ``solved`` as 0 or 1) and its outcome and status as tags.

Idempotent: a run is marked complete (tag ``lrd.complete``) only after everything of it is
logged; a second export finds the complete runs by their ``lrd.run`` tag and adds nothing,
and a run an earlier export left incomplete (an error, a Ctrl-C) is deleted and logged again.
A server that is down or refuses ends the export with one line (``ExportError``); the run
being logged then is deleted, so nothing is left half-logged.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from lrd.schema import CONFIG_COLUMNS, SIZE_COLUMNS, TASK_PREFIX, Results

RUN_TAG, COMPLETE_TAG, FOLDER_TAG = "lrd.run", "lrd.complete", "lrd.folder"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the child runs under the folder's run
CURVE_METRICS = (
    *("loss", "metric", "ce_all", "grad_norm", "growth_rate", "e_folding_length"),
    *("grad_norm_max", "grad_norm_mean", "clipped_fraction", "loss_spikes"),
)
BATCH = 900  # metrics per log_batch request (MLflow's limit is 1000)
ARTIFACTS = ("report.html", "summary.csv", "runs.csv.gz", "experiment.toml")
TIMEOUT_S = "10"  # one request to the server, without retries: a server that is down is found at once


class ExportError(Exception):
    """The server cannot be reached or refused a request: one line for the user."""


class Exported(NamedTuple):
    experiment: str
    logged: int  # lrd runs logged now
    present: int  # lrd runs found complete on the server already
    redone: int  # incomplete runs of an earlier export, deleted and logged again


def run_params(row: dict[str, Any]) -> dict[str, str]:
    """The run's configuration as MLflow parameters (strings; NaN and absent options left out)."""
    keys = ["task", "gap", "model", "seed"]
    keys += [c for c in row if c.startswith(TASK_PREFIX)]
    keys += [c for c in (*CONFIG_COLUMNS, *SIZE_COLUMNS) if c in row]
    return {key: str(row[key]) for key in keys if not _missing(row.get(key))}


def run_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The run's final numbers: ``final_*``, ``baseline_*``, steps trained, growth rates, wall time, solved (0/1)."""
    names = [c for c in row if c.startswith(("final_", "baseline_"))]
    names += ["steps_trained", "growth_rate_init", "growth_rate_final", "wall_time_s"]
    out = {name: float(row[name]) for name in names if name in row and _finite(row[name])}
    if "solved" in row and not _missing(row["solved"]):
        out["solved"] = float(bool(row["solved"]))
    return out


def export_mlflow(out_dir: Path, results: Results, uri: str, on_run: Callable[[str], None] | None = None) -> Exported:
    """Log ``results`` (read from ``out_dir``) to the MLflow server at ``uri``; see the module docstring."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", TIMEOUT_S)
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportError("lrd export --mlflow needs MLflow: pip install -e '.[mlflow]'") from None
    import requests

    failures: tuple[type[BaseException], ...] = (MlflowException, requests.RequestException, OSError)
    runs = results.runs
    name = str(runs["experiment"].iloc[0]) if "experiment" in runs and len(runs) else out_dir.name
    client = MlflowClient(tracking_uri=uri)
    current: list[str] = []  # the run being logged: deleted if the export stops inside it

    def incomplete_removed() -> None:
        for run_id in current:
            with contextlib.suppress(*failures):  # the server is gone: the run, not complete, is redone next time
                client.delete_run(run_id)

    try:
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        existing = _existing_runs(client, experiment_id)
        redone = 0
        for run_id in [r for key, r in existing.items() if not r.data.tags.get(COMPLETE_TAG)]:
            client.delete_run(run_id.info.run_id)
            redone += 1
        complete = {key for key, r in existing.items() if r.data.tags.get(COMPLETE_TAG)}

        folder_key = f"folder:{out_dir.resolve().name}"
        if folder_key in complete:
            parent_id = existing[folder_key].info.run_id
        else:
            parent = client.create_run(experiment_id, run_name=out_dir.name, tags={FOLDER_TAG: folder_key})
            current[:] = [parent.info.run_id]
            for artifact in [*(out_dir / a for a in ARTIFACTS), *sorted((out_dir / "figures").glob("*"))]:
                if artifact.is_file():
                    folder = "figures" if artifact.parent.name == "figures" else None
                    client.log_artifact(parent.info.run_id, str(artifact), folder)
            client.set_tag(parent.info.run_id, COMPLETE_TAG, "1")
            client.set_terminated(parent.info.run_id)
            parent_id, current[:] = parent.info.run_id, []

        curves = {run: table for run, table in results.curves.groupby("run")}
        logged = present = 0
        for row in runs.to_dict("records"):
            run_key = f"run:{row['run']}"
            if run_key in complete:
                present += 1
                continue
            tags = {RUN_TAG: run_key, PARENT_TAG: parent_id, "status": row["status"]}
            tags["outcome"] = str(row.get("outcome", ""))
            child = client.create_run(experiment_id, run_name=str(row["run"]), tags=tags)
            current[:] = [child.info.run_id]
            params = [Param(k, v) for k, v in run_params(row).items()]
            metrics = [Metric(k, v, 0, int(row.get("steps_trained", 0) or 0)) for k, v in run_metrics(row).items()]
            metrics += _curve_metrics(curves.get(row["run"]), Metric)
            for i in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 parameters a request
                client.log_batch(child.info.run_id, params=params[i : i + 100])
            for i in range(0, len(metrics), BATCH):
                client.log_batch(child.info.run_id, metrics=metrics[i : i + BATCH])
            client.log_batch(child.info.run_id, tags=[RunTag(COMPLETE_TAG, "1")])
            client.set_terminated(child.info.run_id, "FAILED" if row["status"] == "failed" else "FINISHED")
            current[:] = []
            logged += 1
            if on_run:
                on_run(str(row["run"]))
    except failures as err:
        incomplete_removed()
        raise ExportError(f"{uri}: the MLflow server {_reason(err)}") from None
    except BaseException:
        incomplete_removed()
        raise
    return Exported(name, logged, present, redone)


def _existing_runs(client, experiment_id: str) -> dict[str, Any]:
    """This experiment's runs that an lrd export made, by their key (``run:<id>``, ``folder:<name>``)."""
    out: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(RUN_TAG) or run.data.tags.get(FOLDER_TAG)
            if key:
                out[key] = run
        token = page.token
        if not token:
            return out


def _curve_metrics(curves: pd.DataFrame | None, metric) -> list:
    if curves is None:
        return []
    out = []
    for column in CURVE_METRICS:
        if column in curves:
            for step, value in zip(curves["step"], curves[column], strict=True):
                if _finite(value):
                    out.append(metric(f"curve_{column}", float(value), 0, int(step)))
    return out


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "Connection refused" in text or "Max retries exceeded" in text or "Failed to establish" in text:
        return "does not answer (is it running, and is the address right?)"
    return f"refused: {text[:200]}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
