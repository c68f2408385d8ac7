"""What the numbers of a run mean: its table rows, and the quantities derived from them.

Defined here once, used by the store, the sweep, the command line and the figures:

- the tables of a run (``run_tables``; ``failed_run_table`` for a run that could not
  be trained), built from its ``RunSpec`` and ``RunResult``;
- the *growth rate* summary of a logged step: ``lrd.dynamics.growth_rate`` of the
  per-sequence gradient norms' geometric mean of layer 0, forward direction, the
  model's last state (``h``), with its e-folding length where it is negative;
- the *dynamics* table of a run (``dynamics_table``): the Jacobian spectra and gate
  statistics of ``lrd.dynamics`` at every logged step, in long form;
- *solved*: a finished run whose final metric reaches the solve threshold, and
  *solved step*: the first logged step whose metric reaches it. The threshold is a
  reporting setting (``[report] solve_threshold``), not part of a run, so both are
  derived when a folder is read (``with_solved``) and never stored: changing the
  threshold re-reports without retraining;
- the summary of ``lrd show`` (``summary``): seeds aggregated per task, gap and model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrd.dynamics import QUANTILES, Dynamics, e_folding_length, growth_rate, steps_from_start
from lrd.experiment import RunSpec
from lrd.probes import distance_from_loss
from lrd.schema import (
    CURVES,
    DYNAMICS,
    DYNAMICS_COLUMNS,
    GRAD_NORMS,
    RUN,
    RUN_ORDER,
    SOLVED_COLUMNS,
    STATUS_DIVERGED,
    STATUS_DONE,
    STATUS_FAILED,
    TASK_PREFIX,
)
from lrd.train import RunResult

# where the growth rate summary is read: layer 0, forward direction, the model's last state
DECAY_LAYER, DECAY_DIRECTION = 0, "fwd"


# --- a run's tables ------------------------------------------------------------------------
def run_tables(
    spec: RunSpec, result: RunResult, index: int, experiment: str, wall_time_s: float
) -> dict[str, pd.DataFrame]:
    """The run, curves, grad_norms (and, with diagnostics, dynamics) tables of seed ``index`` of a RunResult."""
    task, model = spec.task, spec.model
    diverged_step = int(result.diverged_step[index])
    diverged = diverged_step >= 0
    records = [r for r in result.records if not diverged or int(r.step[index]) <= diverged_step]

    norm_rows, curve_rows, dynamics_rows = [], [], []
    for record in records:
        step = int(record.step[index])
        rate = np.nan
        for layer_name, directions in record.state_norms.items():
            layer = int(layer_name.removeprefix("layer"))
            for direction, states in directions.items():
                distance = distance_from_loss(task, direction)
                for state, norms in states.items():
                    norm = np.asarray(norms[index], np.float64)
                    below = np.asarray(record.below_floor[layer_name][direction][state][index], bool)
                    log_gmean = np.asarray(record.log_gmean_norms[layer_name][direction][state][index], np.float64)
                    gmean_below = np.asarray(record.gmean_below_floor[layer_name][direction][state][index], bool)
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
                                "log_gmean_norm": log_gmean,
                                "gmean_below_floor": gmean_below,
                            }
                        )
                    )
                    if (layer, direction, state) == (DECAY_LAYER, DECAY_DIRECTION, model.state_names[-1]):
                        start = steps_from_start(task.length, direction)
                        rate = growth_rate(log_gmean, distance, start, gmean_below)
        curve_rows.append(
            {
                "step": step,
                **{k: float(v[index]) for k, v in record.metrics.items()},
                "grad_norm": float(record.grad_norm[index]),
                "growth_rate": rate,
                "e_folding_length": e_folding_length(rate),
                **{k: float(v[index]) for k, v in record.block._asdict().items()},
            }
        )
        if record.dynamics is not None:
            dynamics_rows.append(dynamics_table(record.dynamics, index, step))
    curves = pd.DataFrame(curve_rows)
    grad_norms = pd.concat(norm_rows, ignore_index=True)

    row = {
        **_configuration(spec, experiment),
        "status": STATUS_DIVERGED if diverged else STATUS_DONE,
        "diverged_step": float(diverged_step) if diverged else np.nan,
        **{f"final_{k}": (np.nan if diverged else float(v[index])) for k, v in result.final.items()},
        **_baselines(spec),
        "growth_rate_init": float(curves["growth_rate"].iloc[0]),
        "growth_rate_final": float(curves["growth_rate"].iloc[-1]),
        "e_folding_length_init": float(curves["e_folding_length"].iloc[0]),
        "e_folding_length_final": float(curves["e_folding_length"].iloc[-1]),
        "wall_time_s": wall_time_s,
        "group_size": len(result.seeds),
        "time_loop_used": result.time_loop,
    }
    curves.insert(0, "run", spec.run_id)
    grad_norms.insert(0, "run", spec.run_id)
    tables = {RUN: _run_table(row), CURVES: curves, GRAD_NORMS: grad_norms}
    if dynamics_rows:
        dynamics = pd.concat(dynamics_rows, ignore_index=True)
        dynamics.insert(0, "run", spec.run_id)
        tables[DYNAMICS] = dynamics[list(DYNAMICS_COLUMNS)]
    return tables


def dynamics_table(dynamics: Dynamics, index: int, step: int) -> pd.DataFrame:
    """The dynamics rows (schema.DYNAMICS_COLUMNS but ``run``) of seed ``index`` at one logged step."""
    percent = [round(100 * q) for q in QUANTILES]
    parts = []

    def add(quantity: str, values, positions, gate: str = "") -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        parts.append(pd.DataFrame({"quantity": quantity, "gate": gate, "index": positions, "value": values}))

    sigma = np.asarray(dynamics.sigma_max[index])  # (T,)
    add("sigma_max", sigma, np.arange(len(sigma)))
    bound = np.asarray(dynamics.pmb_bound[index])
    if np.isfinite(bound).any():  # the tanh RNN only
        add("pmb_bound", bound, np.arange(len(bound)))
    lyapunov = np.asarray(dynamics.lyapunov[index])  # (k,)
    add("lyapunov", lyapunov, np.arange(1, len(lyapunov) + 1))
    for gate, quantiles in dynamics.quantiles.items():
        add("gate_quantile", quantiles[index], percent, gate)
        add("saturated", dynamics.saturated[gate][index], [0], gate)
    tau = np.asarray(dynamics.time_constant[index])
    if np.isfinite(tau).any():  # cells with a weight on the old state
        add("time_constant", tau, percent)
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "step", step)
    return table.astype({"index": np.int64})


def failed_run_table(spec: RunSpec, experiment: str, group_size: int, error: str) -> dict[str, pd.DataFrame]:
    """The record of a run that could not be trained: its configuration, baselines, status "failed", the error."""
    row = {
        **_configuration(spec, experiment),
        "status": STATUS_FAILED,
        **_baselines(spec),
        "group_size": group_size,
        "error": error,
    }
    return {RUN: _run_table(row)}


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
        **{f"{TASK_PREFIX}{k}": v for k, v in task.params().items() if k != "gap"},
        "model": model.label,
        **model.model_dump(),
        "seed": spec.seed,
        **spec.train.model_dump(),
    }


def _baselines(spec: RunSpec) -> dict:
    baseline = spec.task.baseline()
    return {
        "baseline_loss": baseline.loss,
        "baseline_metric": baseline.metric,
        **{f"baseline_{k}": v for k, v in spec.task.extra_baselines().items()},
    }


def _run_table(row: dict) -> pd.DataFrame:
    run = pd.DataFrame([row])
    run["forget_bias"] = run["forget_bias"].astype(float)
    return run


# --- solved -----------------------------------------------------------------------------------
def with_solved(runs: pd.DataFrame, curves: pd.DataFrame, solve_threshold: float) -> pd.DataFrame:
    """``runs`` with ``solve_threshold``, ``solved`` and ``solved_step`` (after the baseline columns).

    solved: the run finished (status "done") and its final metric is >= the threshold.
    solved_step: the first logged step whose metric is >= the threshold (NaN if none;
    a diverged run's curve counts up to its divergence).
    """
    runs = runs.drop(columns=list(SOLVED_COLUMNS), errors="ignore")
    final = runs["final_metric"] if "final_metric" in runs else pd.Series(np.nan, index=runs.index)  # all failed
    solved = (runs["status"] == STATUS_DONE) & (final >= solve_threshold)
    if len(curves):
        reached = curves.loc[curves["metric"] >= solve_threshold].groupby("run")["step"].min().astype(float)
        solved_step = runs["run"].map(reached).astype(float)
    else:
        solved_step = pd.Series(np.nan, index=runs.index)
    at = 1 + max((i for i, c in enumerate(runs.columns) if c.startswith("baseline_")), default=len(runs.columns) - 1)
    runs.insert(at, "solve_threshold", float(solve_threshold))
    runs.insert(at + 1, "solved", solved.astype(bool))
    runs.insert(at + 2, "solved_step", solved_step)
    return runs


# --- the summary of `lrd show` -------------------------------------------------------------
SUMMARY_KEYS = list(RUN_ORDER[:-1])  # task, gap, model, hidden: the seeds are aggregated


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds aggregated: one row per task, gap, model and hidden size, in that order.

    Columns: the keys, ``seeds`` (runs), ``diverged`` and ``failed`` (counts),
    ``final_metric`` and ``final_metric_std`` (mean and sample standard deviation over
    the runs with a final metric; the std is NaN for one run), ``baseline_metric``,
    ``solved`` (count), ``solved_step`` (median over the runs that reached the threshold),
    ``growth_rate_init`` and ``growth_rate_final`` (medians, 1/step; NaN for results
    from before the signed growth rate).
    """
    for column in ("final_metric", "solved_step", "growth_rate_init", "growth_rate_final"):
        if column not in runs:  # every run failed: no results columns at all; or results from before the column
            runs = runs.assign(**{column: np.nan})
    rows = []
    for key, g in runs.groupby(SUMMARY_KEYS, sort=True):
        metric = g["final_metric"].dropna()
        solved_steps = g["solved_step"].dropna()
        rows.append(
            {
                **dict(zip(SUMMARY_KEYS, key)),
                "seeds": len(g),
                "diverged": int((g["status"] == STATUS_DIVERGED).sum()),
                "failed": int((g["status"] == STATUS_FAILED).sum()),
                "final_metric": metric.mean() if len(metric) else np.nan,
                "final_metric_std": metric.std(ddof=1) if len(metric) > 1 else np.nan,
                "baseline_metric": g["baseline_metric"].iloc[0],
                "solved": int(g["solved"].sum()),
                "solved_step": float(np.median(solved_steps)) if len(solved_steps) else np.nan,
                "growth_rate_init": g["growth_rate_init"].median(),
                "growth_rate_final": g["growth_rate_final"].median(),
            }
        )
    return pd.DataFrame(rows)
