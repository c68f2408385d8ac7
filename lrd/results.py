"""What the numbers of a run mean: its table rows, and the quantities derived from them.

Defined here once, used by the store, the sweep, the command line and the figures:

- the tables of a run (``run_tables``; ``failed_run_table`` for a run that could not
  be trained), built from its ``RunSpec`` and ``RunResult``;
- the *growth rate* summary of a logged step: ``lrd.dynamics.growth_rate`` of the
  per-sequence gradient norms' geometric mean of layer 0, forward direction, the
  model's last state (``h``), with its e-folding length where it is negative;
- the *dynamics* table of a run (``dynamics_table``): the Jacobian spectra and gate
  statistics of ``lrd.dynamics`` at every logged step, in long form;
- *reaches* (``reaches``): THE comparison of a metric with the solve threshold, in float32,
  used by the compiled stop check of ``stop_when_solved`` and by every table and figure;
- *solved*: a finished run whose final *evaluation* metric reaches the solve threshold, and
  *solved step*: the first logged step whose probe metric reaches it. The threshold is a
  reporting setting (``[report] solve_threshold``), not part of a run, so both are
  derived when a folder is read (``with_solved``) and never stored: changing the
  threshold re-reports without retraining;
- *still improving* (``still_improving``, ``with_trend``): an unsolved run whose loss was
  still clearly falling over the last quarter of its curve, so its budget may not have
  sufficed to show whether it can bridge the gap; derived
  when a folder is read, like *solved*;
- the three *outcomes* of a run (``outcome``, ``OUTCOME_RULE``): solved, undecided (unsolved
  and still improving) or failed;
- *success rates* (``wilson_interval``): the fraction of the decided seeds (solved or
  failed) that solved, with a Wilson 95% interval, the interval a handful of seeds supports
  (no bootstrap over 3 values), the undecided count beside it;
- the *selection rule* for learning rates (``choose_lr``, ``best_lr_runs``): chosen on the
  validation metric, reported with the evaluation metric, flagged at the grid's edge;
- the ``eval_gaps`` table of ``[train] eval_gaps``: one row per (run, test gap);
- the summary of ``lrd show`` (``summary``): seeds aggregated per task, gap and model, at
  the chosen learning rate;
- *time*: a run's series ends at the last step it trained (``last_trained_step``; a run
  stopped by ``stop_when_solved`` or diverged is stored frozen after it, and ``until_stop``
  leaves those rows out), so a mean over seeds at a step is over the runs still training;
- the *spectrum statistic* (``spectrum_statistic``): per run and step, the median over the
  timesteps (or the value at one index) of a dynamics quantity, as the figures draw it and
  the README quotes it (then the median over the seeds).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from lrd.schema import (
    CONFIG_COLUMNS,
    CURVES,
    DERIVED_TASK_COLUMNS,
    DYNAMICS,
    DYNAMICS_COLUMNS,
    EVAL_GAPS,
    GRAD_NORMS,
    RUN,
    RUN_ORDER,
    SOLVED_COLUMNS,
    STATUS_DIVERGED,
    STATUS_DONE,
    STATUS_FAILED,
    STEPS_TRAINED,
    TASK_PREFIX,
    TREND_COLUMN,
    VALID_METRIC,
)

if TYPE_CHECKING:  # the analysis below is pure pandas: figures import this module without JAX
    from lrd.dynamics import Dynamics
    from lrd.experiment import RunSpec
    from lrd.train import RunResult

# where the growth rate summary is read: layer 0, forward direction, the model's last state
DECAY_LAYER, DECAY_DIRECTION = 0, "fwd"


# --- a run's tables ------------------------------------------------------------------------
def run_tables(
    spec: RunSpec, result: RunResult, index: int, experiment: str, wall_time_s: float
) -> dict[str, pd.DataFrame]:
    """The run, curves, grad_norms (and, with diagnostics, dynamics) tables of seed ``index`` of a RunResult."""
    from lrd.dynamics import e_folding_length, growth_rate, steps_from_start
    from lrd.probes import distance_from_loss

    task, model = spec.task, spec.model
    diverged_step = int(result.diverged_step[index])
    diverged = diverged_step >= 0
    records = [r for r in result.records if not diverged or int(r.step[index]) <= diverged_step]
    profiled = _profiled_steps(
        [int(r.step[index]) for r in records], int(result.steps_trained[index]), spec.train.profile_every
    )

    norm_parts: list[dict] = []  # one per profiled step and state: the grad_norms columns of its timesteps
    curve_rows, dynamics_parts = [], []
    for record in records:
        step = int(record.step[index])
        profile = step in profiled
        rate = np.nan
        for layer_name, directions in record.state_norms.items():
            layer = int(layer_name.removeprefix("layer"))
            for direction, states in directions.items():
                distance = distance_from_loss(task, direction)
                for state, norms in states.items():
                    log_gmean = np.asarray(record.log_gmean_norms[layer_name][direction][state][index], np.float64)
                    gmean_below = np.asarray(record.gmean_below_floor[layer_name][direction][state][index], bool)
                    if profile:
                        norm_parts.append(
                            {
                                "step": step,
                                "layer": layer,
                                "direction": direction,
                                "state": state,
                                "timestep": np.arange(task.length),
                                "distance": distance,
                                "norm": np.asarray(norms[index], np.float64),
                                "below_floor": np.asarray(
                                    record.below_floor[layer_name][direction][state][index], bool
                                ),
                                "log_gmean_norm": log_gmean,
                                "gmean_below_floor": gmean_below,
                            }
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
            dynamics_parts.append(_dynamics_columns(record.dynamics, index, step, profile=profile))
    curves = pd.DataFrame(curve_rows)
    grad_norms = _stacked(norm_parts)

    row = {
        **_configuration(spec, experiment),
        "status": STATUS_DIVERGED if diverged else STATUS_DONE,
        "diverged_step": float(diverged_step) if diverged else np.nan,
        **{f"final_{k}": (np.nan if diverged else float(v[index])) for k, v in result.final.items()},
        **{f"final_valid_{k}": (np.nan if diverged else float(v[index])) for k, v in result.final_valid.items()},
        **{
            f"final_test_{name}_{k}": (np.nan if diverged else float(v[index]))
            for name, metrics in result.test_sets.items()
            for k, v in metrics.items()
        },
        **_baselines(spec),
        "steps_trained": int(result.steps_trained[index]),
        "growth_rate_init": float(curves["growth_rate"].iloc[0]),
        "growth_rate_final": float(curves["growth_rate"].iloc[-1]),
        "e_folding_length_init": float(curves["e_folding_length"].iloc[0]),
        "e_folding_length_final": float(curves["e_folding_length"].iloc[-1]),
        "wall_time_s": wall_time_s,
        "group_size": len(result.seeds),
        "time_loop_used": result.time_loop,
        # the gaps whose groups shared the program that trained it, padded to the longest (lrd.buckets); "" alone
        "bucket": ",".join(str(g) for g in result.bucket),
    }
    curves.insert(0, "run", spec.run_id)
    grad_norms.insert(0, "run", spec.run_id)
    tables = {RUN: _run_table(row), CURVES: curves, GRAD_NORMS: grad_norms}
    if dynamics_parts:
        dynamics = _stacked([part for parts in dynamics_parts for part in parts])
        dynamics.insert(0, "run", spec.run_id)
        tables[DYNAMICS] = dynamics[list(DYNAMICS_COLUMNS)]
    if result.eval_gaps:  # a diverged run has no final model: NaN, as its final metrics
        tables[EVAL_GAPS] = pd.DataFrame(
            [
                {
                    "run": spec.run_id,
                    "test_gap": gap,
                    **{k: np.nan if diverged else float(v[index]) for k, v in m.items()},
                }
                for gap, m in sorted(result.eval_gaps.items())
            ]
        )
    return tables


def _profiled_steps(steps: list[int], steps_trained: int, every: int) -> set[int]:
    """The logged steps whose per-timestep profiles a run stores (``TrainConfig.profile_every``).

    Every logged step when ``every`` is 0; otherwise the multiples of ``every`` up to the
    run's last trained step, and that step (its stop, divergence or budget: the profile at
    the end, as the figures and the "final" columns read it). A stopped run's later log
    points, frozen copies of its stop, are left out.
    """
    if not every:
        return set(steps)
    trained = [s for s in steps if s <= steps_trained]
    return {s for s in trained if s % every == 0} | set(trained[-1:])


def _stacked(parts: list[dict]) -> pd.DataFrame:
    """One table of ``parts``, each a dict of columns: arrays of the part's rows, and scalars repeated to them.

    The same table as ``pd.concat`` of a DataFrame per part, built once (a table per part
    cost most of the time of writing a run's results; docs/benchmarks.md).
    """
    rows = [next(len(value) for value in part.values() if np.ndim(value)) for part in parts]
    return pd.DataFrame(
        {
            name: np.concatenate(
                [np.broadcast_to(np.asarray(part[name]), (n,)) for part, n in zip(parts, rows, strict=True)]
            )
            for name in parts[0]
        }
    )


def _dynamics_columns(dynamics: Dynamics, index: int, step: int, profile: bool = True) -> list[dict]:
    """The ``_stacked`` parts of member ``index``'s dynamics rows at one logged step."""
    from lrd.dynamics import QUANTILES

    percent = [round(100 * q) for q in QUANTILES]
    parts = []

    def add(quantity: str, values, positions, gate: str = "") -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        positions = np.broadcast_to(np.asarray(positions, np.int64), values.shape)
        parts.append({"step": step, "quantity": quantity, "gate": gate, "index": positions, "value": values})

    if profile:
        sigma = np.asarray(dynamics.sigma_max[index])  # (T,)
        add("sigma_max", sigma, np.arange(len(sigma)))
        bound = np.asarray(dynamics.pmb_bound[index])
        if np.isfinite(bound).any():  # the tanh RNN only
            add("pmb_bound", bound, np.arange(len(bound)))
    lyapunov = np.asarray(dynamics.lyapunov[index])  # (k,)
    add("lyapunov", lyapunov, np.arange(1, len(lyapunov) + 1))
    roundoff = np.asarray(dynamics.lyapunov_roundoff[index])  # (k,)
    add("lyapunov_roundoff", roundoff, np.arange(1, len(roundoff) + 1))
    for gate, quantiles in dynamics.quantiles.items():
        add("gate_quantile", quantiles[index], percent, gate)
        add("saturated", dynamics.saturated[gate][index], [0], gate)
    tau = np.asarray(dynamics.time_constant[index])
    if np.isfinite(tau).any():  # cells with a weight on the old state
        add("time_constant", tau, percent)
    return parts


def dynamics_table(dynamics: Dynamics, index: int, step: int, profile: bool = True) -> pd.DataFrame:
    """The dynamics rows (schema.DYNAMICS_COLUMNS but ``run``) of member ``index`` at one logged step.

    ``profile``: with the per-timestep quantities (sigma_max, pmb_bound); without them, the
    per-run ones only (``TrainConfig.profile_every``).
    """
    return _stacked(_dynamics_columns(dynamics, index, step, profile))


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
    from lrd.models.network import param_count

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
        "param_count": param_count(model, task.input_dim, task.output_dim),
        "params_target": np.nan if spec.params_target is None else float(spec.params_target),
        "seed": spec.seed,
        **spec.train.model_dump(exclude={"eval_gaps"}),  # its results are a table of their own (eval_gaps)
    }


def _baselines(spec: RunSpec) -> dict:
    baseline = spec.task.baseline()
    return {
        "baseline_loss": baseline.loss,
        "baseline_metric": baseline.metric,
        **{f"baseline_{k}": v for k, v in spec.task.extra_baselines().items()},
        **{  # the partial-memory predictors: baseline_<name>_loss, baseline_<name>_metric
            f"baseline_{name}_{part}": value
            for name, baseline in spec.task.partial_baselines().items()
            for part, value in baseline._asdict().items()
        },
    }


def _run_table(row: dict) -> pd.DataFrame:
    run = pd.DataFrame([row])
    run["forget_bias"] = run["forget_bias"].astype(float)
    return run


# --- solved -----------------------------------------------------------------------------------
# float32 rounding of a metric that is a mean of fractions k/N (chunk means averaged in float32): a few units in
# the last place below 1. A fraction k/N below a threshold p/q (in lowest terms) lies at least 1/(qN) below it,
# more than this for qN < 2^22 (threshold 0.95 = 19/20: evaluation sets of up to 200,000 scored values)
SOLVE_ROUNDING = 2.0**-22


def solve_bound(threshold: float) -> np.float32:
    """The float32 value a metric must reach to count as reaching ``threshold`` (``reaches``)."""
    return np.float32(float(threshold) - SOLVE_ROUNDING)


def reaches(metric, threshold: float):
    """Whether ``metric`` reaches ``threshold``: THE comparison, for training (the stop check) and reporting.

    Both compare in float32, the precision the metric is computed in, against
    ``solve_bound(threshold)``: the threshold less ``SOLVE_ROUNDING`` (2^-22), which absorbs
    the float32 rounding of a mean of fractions (608/640 computed in float32 is 0.94999999,
    and as a chunked mean it may lie a unit or two lower) and no real difference: a metric
    k/N below a threshold p/q lies at least 1/(qN) below it, more than 2^-22 while
    qN < 2^22 (at 0.95 = 19/20, up to 200,000 scored values; the evaluation sets score at
    most a few tens of thousands). So 608/640 reaches 0.95 and 607/640 does not, in the compiled stop check (a JAX
    float32 array) and in the tables (NumPy or pandas values, cast to float32) alike. NaN
    reaches nothing.
    """
    bound = solve_bound(threshold)
    if isinstance(metric, pd.Series):
        return metric.astype(np.float32) >= bound
    if isinstance(metric, (int, float, np.number, np.ndarray, list, tuple)):
        return np.asarray(metric, np.float32) >= bound
    return metric >= bound  # a JAX float32 array inside the compiled programs


def with_solved(runs: pd.DataFrame, curves: pd.DataFrame, solve_threshold: float) -> pd.DataFrame:
    """``runs`` with ``solve_threshold``, ``solved`` and ``solved_step`` (after the baseline columns).

    solved: the run finished (status "done") and its final *evaluation* metric reaches the
    threshold (``reaches``), full stop. A run trained with ``stop_when_solved`` that stopped
    (its validation check passed) but evaluates below the threshold is not solved.
    solved_step: the first logged step whose probe metric reaches the threshold (NaN if
    none; a diverged run's curve counts up to its divergence).
    """
    runs = runs.drop(columns=list(SOLVED_COLUMNS), errors="ignore")
    final = runs["final_metric"] if "final_metric" in runs else pd.Series(np.nan, index=runs.index)  # all failed
    if len(curves):
        reached = curves.loc[reaches(curves["metric"], solve_threshold)].groupby("run")["step"].min().astype(float)
        solved_step = runs["run"].map(reached).astype(float)
    else:
        solved_step = pd.Series(np.nan, index=runs.index)
    solved = (runs["status"] == STATUS_DONE) & reaches(final.astype(float), solve_threshold)
    at = 1 + max((i for i, c in enumerate(runs.columns) if c.startswith("baseline_")), default=len(runs.columns) - 1)
    runs.insert(at, "solve_threshold", float(solve_threshold))
    runs.insert(at + 1, "solved", solved.astype(bool))
    runs.insert(at + 2, "solved_step", solved_step)
    return runs


# --- still improving -------------------------------------------------------------------------
TREND_FRACTION = 0.25  # the window: the last quarter of a run's logged curve ...
TREND_MIN_POINTS = 4  # ... and at least this many log points
TREND_T = 2.0  # the fitted slope must lie this many standard errors below zero
TREND_MIN_DROP = 0.1  # and the fit must fall by at least this much log-loss over the window (about 10%)


def still_improving(steps, losses) -> bool:
    """Whether a loss curve was still falling at its end: the budget did not suffice to see a plateau.

    Fit ``log(loss) = a + b * step`` by least squares to the last ``TREND_FRACTION`` of the
    logged points (at least ``TREND_MIN_POINTS``). The curve is *still improving* when the
    slope is clearly negative against the curve's own noise, ``b < -TREND_T * se(b)`` (se from
    the residuals, n - 2 degrees of freedom), and the fitted fall over the window is material,
    ``-b * (last step - first step) >= TREND_MIN_DROP`` (about a 10% lower loss). A curve with
    too few points, or with non-finite or non-positive losses, is not judged (False). A noisy
    plateau fails the first test, a run polishing a solved loss by a few percent the second.
    """
    steps, losses = np.asarray(steps, float), np.asarray(losses, float)
    n = max(TREND_MIN_POINTS, math.ceil(TREND_FRACTION * len(steps)))
    if len(steps) < n or n < 3:
        return False
    x, y = steps[-n:], losses[-n:]
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        return False
    y = np.log(y)
    x0 = x - x.mean()
    sxx = float(np.sum(x0**2))
    if sxx == 0:
        return False
    slope = float(np.sum(x0 * (y - y.mean())) / sxx)
    residuals = y - y.mean() - slope * x0
    se = math.sqrt(float(np.sum(residuals**2)) / (n - 2) / sxx)
    return slope < -TREND_T * se and -slope * (x[-1] - x[0]) >= TREND_MIN_DROP


def with_trend(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``still_improving`` (``still_improving`` of the run's loss curve), last.

    Judged for finished runs (status "done") that did not solve the task (``solved``, where
    the column is present): a solved run's loss may keep falling as it sharpens answers it
    already gives, and its budget sufficed for the question asked. The curve is read up to
    ``steps_trained`` where recorded (a run stopped by ``stop_when_solved`` is frozen after
    it). False for every other run.
    """
    runs = runs.drop(columns=[TREND_COLUMN], errors="ignore")
    flags = pd.Series(False, index=runs.index)
    if len(curves) and "loss" in curves:
        by_run = {run: c.sort_values("step") for run, c in curves.groupby("run")}
        for i, row in runs.iterrows():
            curve = by_run.get(row["run"])
            if row["status"] != STATUS_DONE or curve is None or bool(row.get("solved", False)):
                continue
            trained = row.get(STEPS_TRAINED, math.nan)
            if isinstance(trained, (int, float, np.number)) and np.isfinite(trained):
                curve = curve[curve["step"] <= trained]
            flags[i] = still_improving(curve["step"], curve["loss"])
    return runs.assign(**{TREND_COLUMN: flags.astype(bool)})


# --- three outcomes ------------------------------------------------------------------------------
SOLVED, FAILED, UNDECIDED = "solved", "failed", "undecided"
OUTCOMES = (SOLVED, FAILED, UNDECIDED)
# the rule, in one sentence, printed beside every table and figure that counts outcomes (lrd show, the report,
# the README's tables, the figure captions)
OUTCOME_RULE = (
    "A run is solved when its final evaluation metric reaches the solve threshold, undecided when it is not "
    "solved and its loss was still falling at the end of its budget (still improving), and failed otherwise "
    "(diverged runs included); counts read k solved / m undecided / n trained, and the Wilson 95% interval is "
    "that of the success rate over the decided runs (solved or failed)."
)


def outcome(runs: pd.DataFrame) -> pd.Series:
    """Per run: "solved", "failed" or "undecided" (``OUTCOME_RULE``); "" for a run never trained (status "failed").

    Reads ``solved`` (``with_solved``) and ``still_improving`` (``with_trend``; absent: no run
    undecided). A diverged run is failed: its budget did not run out, its training broke.
    """
    trained = runs["status"] != STATUS_FAILED
    solved = runs["solved"].fillna(False).astype(bool) if "solved" in runs else pd.Series(False, index=runs.index)
    rising = runs[TREND_COLUMN].fillna(False).astype(bool) if TREND_COLUMN in runs else False
    result = np.where(solved, SOLVED, np.where(rising & ~solved, UNDECIDED, FAILED))
    return pd.Series(np.where(trained, result, ""), index=runs.index, dtype=object)


class OutcomeCounts(NamedTuple):
    """The outcomes of a set of runs (``OUTCOME_RULE``) and the Wilson 95% interval of the decided ones."""

    solved: int
    undecided: int
    trained: int  # done or diverged
    decided: int  # solved or failed: trained less undecided
    success: float  # solved / decided (NaN when none decided)
    lo: float
    hi: float


def outcome_counts(runs: pd.DataFrame) -> OutcomeCounts:
    """``OutcomeCounts`` of ``runs`` (one configuration's seeds): the counts every table and figure shows."""
    outcomes = outcome(runs)
    trained = int((runs["status"] != STATUS_FAILED).sum())
    solved = int((outcomes == SOLVED).sum())
    undecided = int((outcomes == UNDECIDED).sum())
    decided = trained - undecided
    lo, hi = wilson_interval(solved, decided)
    return OutcomeCounts(solved, undecided, trained, decided, solved / decided if decided else math.nan, lo, hi)


def outcome_text(solved: int, undecided: int, trained: int) -> str:
    """'3 solved / 1 undecided / 5': the counts as every table prints them (``OUTCOME_RULE``)."""
    return f"{solved} solved / {undecided} undecided / {trained}"


# --- success rates -------------------------------------------------------------------------------
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) of a binomial proportion; (0, 1) when n = 0.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, p = successes / n: its
    coverage stays near the nominal 95% for small n, where the normal (Wald) interval
    collapses to a point at 0/n and n/n. With 0 of 5 solved it is [0, 0.43]; 5 of 5, [0.57, 1].
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    lo = 0.0 if successes == 0 else (centre - half) / scale  # exactly 0 and 1 at the ends, not rounding's 1e-17
    hi = 1.0 if successes == n else (centre + half) / scale
    return (lo, hi)


# --- choosing the learning rate ------------------------------------------------------------------
def configuration_keys(runs: pd.DataFrame) -> list[str]:
    """The columns that name a configuration apart from its seed and learning rate, those present in ``runs``.

    The task and its parameters, the gap, the model and every model and training setting but ``lr``.
    """
    task = ["task"] + [c for c in runs.columns if c.startswith(TASK_PREFIX) and c not in DERIVED_TASK_COLUMNS]
    settings = [c for c in CONFIG_COLUMNS if c != "lr" and c in runs.columns]
    return [*task, "gap", "model", *settings]


def choose_lr(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (``configuration_keys``): the learning rate the selection rule chooses.

    The rule: among the grid's learning rates, the one with the highest mean validation
    metric (``final_valid_metric``, validation sequences that are neither the training stream
    nor the evaluation set) over its trained seeds, a diverged run counting as 0 (the
    metric's floor); ties go to the lower mean validation loss, then to the smaller
    learning rate. Failed runs (never trained) take no part. The choice is then
    *reported* with the evaluation metric (``final_metric``) of its runs.

    Returns one row per configuration: the keys, ``lr`` (chosen), ``lrs`` (the grid's size),
    ``lr_at_edge`` (the grid has several values and the chosen is its smallest or largest:
    the grid should be widened) and ``valid_metric`` (the chosen lr's mean). A configuration
    trained at a single learning rate needs no validation metric (stored studies before it).
    """
    keys = configuration_keys(runs)
    trained = runs[runs["status"] != STATUS_FAILED]
    rows = []
    for key, g in trained.groupby(keys, sort=True, dropna=False):
        grid = sorted(g["lr"].unique())
        done_valid = g.loc[g["status"] == STATUS_DONE, VALID_METRIC] if VALID_METRIC in g else None
        # every run diverged: each rate scores the floor, and the tie goes to the smallest (below)
        if len(grid) > 1 and (done_valid is None or (len(done_valid) and done_valid.isna().all())):
            raise ValueError(f"{dict(zip(keys, key))}: several learning rates but no {VALID_METRIC} to choose on")
        scores = []
        for lr in grid:
            at = g[g["lr"] == lr]
            done = at["status"] == STATUS_DONE
            metric = at[VALID_METRIC].where(done, 0.0) if VALID_METRIC in at else pd.Series(math.nan, index=at.index)
            loss = at["final_valid_loss"].where(done, math.inf) if "final_valid_loss" in at else metric * 0
            scores.append((-metric.mean(), loss.mean(), lr))
        best = min(scores, key=lambda t: tuple(-math.inf if math.isnan(v) else v for v in t))
        lr = best[2]
        rows.append(
            {
                **dict(zip(keys, key)),
                "lr": float(lr),
                "lrs": len(grid),
                "lr_at_edge": len(grid) > 1 and lr in (grid[0], grid[-1]),
                "valid_metric": -best[0],
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "lr", "lrs", "lr_at_edge", "valid_metric"])


def best_lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at the chosen learning rate of their configuration (``choose_lr``), with ``lrs`` and ``lr_at_edge``.

    Failed runs stay in (they belong to every learning rate); the other learning rates' runs
    are left out. The raw per-lr runs stay in the stored tables.
    """
    if runs.empty:
        return runs.assign(lrs=pd.Series(dtype=int), lr_at_edge=pd.Series(dtype=bool))
    keys = configuration_keys(runs)
    chosen = choose_lr(runs)[[*keys, "lr", "lrs", "lr_at_edge"]].rename(columns={"lr": "_chosen"})
    # a key that is None for every run (an option no cell of the folder has) is object-typed in runs
    # and float NaN in the grouped rows: give the keys runs' types so they merge
    chosen = chosen.astype({k: runs[k].dtype for k in keys})
    merged = runs.merge(chosen, on=keys, how="left")  # NaN-keyed columns match NaN in pandas merges
    keep = (merged["lr"] == merged["_chosen"]) | (merged["status"] == STATUS_FAILED)
    merged["lrs"] = merged["lrs"].fillna(1).astype(int)
    merged["lr_at_edge"] = merged["lr_at_edge"].fillna(False).astype(bool)
    return merged[keep].drop(columns=["_chosen"]).reset_index(drop=True)


# --- the summary of `lrd show` -------------------------------------------------------------
SUMMARY_KEYS = list(RUN_ORDER[:-1])  # task, gap, model, hidden: the seeds are aggregated


COMPARED = ("lr", "solved", "undecided", "trained", "final_metric", "final_metric_std")


def compare(before: pd.DataFrame, after: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Two runs tables (a results folder before and after a change) side by side.

    Returns (rows, same): rows, one per task, gap, model and hidden size in either table,
    with ``summary``'s COMPARED columns of each (suffixes ``_before``, ``_after``; NaN where
    a configuration is in one table only), ``metric_change`` (after - before) and ``changed``
    (the outcome counts or the chosen learning rate differ, the mean metric moved by more
    than the seeds' spread, the larger of the two standard deviations, or a configuration is
    in one table only); same: over the runs in both tables (the same run id, so the same
    configuration and seed), ``runs``, ``identical`` (the same final metric, bit for bit)
    and ``largest_difference`` (the largest absolute difference of the final metric).
    """
    columns = [*SUMMARY_KEYS, *COMPARED]
    rows = summary(before)[columns].merge(
        summary(after)[columns], on=list(SUMMARY_KEYS), how="outer", suffixes=("_before", "_after"), sort=True
    )
    rows["metric_change"] = rows["final_metric_after"] - rows["final_metric_before"]
    differs = [
        rows[f"{c}_before"].ne(rows[f"{c}_after"]) & ~(rows[f"{c}_before"].isna() & rows[f"{c}_after"].isna())
        for c in ("lr", "solved", "undecided", "trained")
    ]
    spread = rows[["final_metric_std_before", "final_metric_std_after"]].max(axis=1).fillna(0.0)  # NaN: one seed
    differs.append(rows["metric_change"].abs() > spread)
    rows["changed"] = np.logical_or.reduce(differs)  # a configuration in one table only: NaN on one side
    both = before[["run", "final_metric"]].merge(after[["run", "final_metric"]], on="run", suffixes=("_b", "_a"))
    gap = (both["final_metric_a"] - both["final_metric_b"]).abs()
    same_value = (both["final_metric_a"] == both["final_metric_b"]) | (
        both["final_metric_a"].isna() & both["final_metric_b"].isna()
    )
    same = {
        "runs": len(both),
        "identical": int(same_value.sum()),
        "largest_difference": float(gap.max()) if gap.notna().any() else 0.0,
    }
    return rows, same


def with_setting_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``model`` naming the settings that vary within a model too: "rnn, recurrent_gain=0.5".

    The settings are the model and training settings (``CONFIG_COLUMNS``) but the learning
    rate (chosen per configuration) and the hidden size (a key of its own); a folder whose
    models each ran one configuration keeps its plain model names.
    """
    from lrd.models.network import LATER_DEFAULTS

    settings = [c for c in CONFIG_COLUMNS if c not in ("lr", "hidden") and c in runs]
    # an option stored only away from its default (recurrent_gain) is absent, NaN, at the default
    filled = runs.fillna({c: v for c, v in LATER_DEFAULTS.items() if c in runs})
    labels = runs["model"].astype(str).copy()
    for model, group in filled.groupby("model", sort=True):
        varying = [c for c in settings if group[c].astype(str).nunique() > 1]
        for index, row in group.iterrows():
            if varying:
                labels[index] = ", ".join([str(model)] + [f"{c}={setting_text(row[c])}" for c in varying])
    return runs.assign(model=labels)


def with_task_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``task`` naming the task parameters that vary within a task: "state_tracking, group=s3".

    The parameters are the ``task_*`` columns but those that follow from the others
    (``DERIVED_TASK_COLUMNS``) and the gap (a key of its own); a folder whose tasks each ran
    with one set of parameters keeps its plain task names.
    """
    params = [c for c in runs.columns if c.startswith(TASK_PREFIX) and c not in DERIVED_TASK_COLUMNS]
    labels = runs["task"].astype(str).copy()
    for task, group in runs.groupby("task", sort=True):
        varying = [c for c in params if group[c].astype(str).nunique() > 1]
        for index, row in group.iterrows():
            if varying:
                parts = [f"{c.removeprefix(TASK_PREFIX)}={setting_text(row[c])}" for c in varying]
                labels[index] = ", ".join([str(task), *parts])
    return runs.assign(task=labels)


def setting_text(value) -> str:
    """A setting's value as the tables and the figures' series name it: 0.5, true, none (missing)."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds aggregated at the chosen learning rate: one row per task, gap, model and hidden size, in that order.

    A model run at several settings (``with_setting_labels``: a sweep over an initial gain,
    a regulariser's weight) gives a row per setting, its model named with the setting; a task
    run with several parameters (``with_task_labels``: parity and S3) a row per parameter set.

    The runs are first narrowed to each configuration's chosen learning rate
    (``best_lr_runs``). Columns: the keys, ``lr`` (chosen), ``lrs`` (grid size), ``lr_at_edge``,
    ``seeds`` (runs), ``diverged`` and ``failed`` (counts of those statuses), ``final_metric`` and
    ``final_metric_std`` (mean and sample standard deviation over the runs with a final
    metric; the std is NaN for one run), ``baseline_metric``; the outcomes (``outcome``,
    ``OUTCOME_RULE``): ``solved``, ``undecided`` and ``unsolved`` (failed outcome) counts,
    ``trained`` (runs that trained: done or diverged), ``decided`` (solved + unsolved),
    ``success`` (solved / decided) with the Wilson 95% interval of the decided runs
    ``success_lo``, ``success_hi``; ``solved_step`` (median over the solved runs),
    ``still_improving`` (count: the undecided runs), ``growth_rate_init`` and
    ``growth_rate_final`` (medians, 1/step; NaN for results from before the signed growth rate).
    """
    for column in ("final_metric", "solved_step", "growth_rate_init", "growth_rate_final"):
        if column not in runs:  # every run failed: no results columns at all; or results from before the column
            runs = runs.assign(**{column: np.nan})
    if "lr" in runs:
        runs = best_lr_runs(runs)
    runs = with_task_labels(with_setting_labels(runs)).assign(_outcome=outcome(runs))
    rows = []
    for key, g in runs.groupby(SUMMARY_KEYS, sort=True):
        metric = g["final_metric"].dropna()
        solved_steps = g.loc[g["_outcome"] == SOLVED, "solved_step"].dropna()
        solved, undecided, trained, decided, success, lo, hi = outcome_counts(g)
        lrs = g.loc[g["status"] != STATUS_FAILED, "lr"] if "lr" in g else pd.Series(dtype=float)
        rows.append(
            {
                **dict(zip(SUMMARY_KEYS, key)),
                "lr": float(lrs.iloc[0]) if len(lrs) else np.nan,
                "lrs": int(g["lrs"].max()) if "lrs" in g else 1,
                "lr_at_edge": bool(g["lr_at_edge"].any()) if "lr_at_edge" in g else False,
                "seeds": len(g),
                "diverged": int((g["status"] == STATUS_DIVERGED).sum()),
                "failed": int((g["status"] == STATUS_FAILED).sum()),
                "final_metric": metric.mean() if len(metric) else np.nan,
                "final_metric_std": metric.std(ddof=1) if len(metric) > 1 else np.nan,
                "baseline_metric": g["baseline_metric"].iloc[0],
                "solved": solved,
                "undecided": undecided,
                "unsolved": decided - solved,
                "trained": trained,
                "decided": decided,
                "success": success,
                "success_lo": lo,
                "success_hi": hi,
                "solved_step": float(np.median(solved_steps)) if len(solved_steps) else np.nan,
                "still_improving": undecided,
                "growth_rate_init": g["growth_rate_init"].median(),
                "growth_rate_final": g["growth_rate_final"].median(),
            }
        )
    return pd.DataFrame(rows)


# --- time --------------------------------------------------------------------------------------
def last_trained_step(runs: pd.DataFrame) -> pd.Series:
    """Per run (indexed like ``runs``): the last step it trained, where its series end.

    ``steps_trained`` where recorded (a run stopped by ``stop_when_solved`` at its stop, a
    diverged run at its divergence), else the divergence step, else the budget ``steps``.
    The log records after it hold the frozen state, not training.
    """
    nan = pd.Series(np.nan, index=runs.index)
    trained, diverged = runs.get(STEPS_TRAINED, nan), runs.get("diverged_step", nan)
    return trained.astype(float).fillna(diverged.astype(float)).fillna(runs["steps"].astype(float))


def stopped_early(runs: pd.DataFrame) -> pd.Series:
    """Per run: finished (status "done") before its budget, i.e. stopped by ``stop_when_solved``."""
    return (runs["status"] == STATUS_DONE) & (last_trained_step(runs) < runs["steps"].astype(float))


def until_stop(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-step table (curves, grad_norms, dynamics) of ``runs`` up to each run's last trained step.

    A run's rows after ``last_trained_step`` (its frozen state, logged while the rest of its
    group trained on) are left out, as are rows of runs not in ``runs``.
    """
    if table.empty:
        return table
    last = pd.Series(last_trained_step(runs).to_numpy(), index=runs["run"].to_numpy())
    limit = table["run"].map(last)
    return table[limit.notna() & (table["step"] <= limit)]


# --- the spectrum statistic ------------------------------------------------------------------------
def spectrum_statistic(
    dynamics: pd.DataFrame, quantity: str, *, gate: str | None = None, index: int | None = None
) -> pd.DataFrame:
    """Per (run, step): the median over the index (timesteps, units) of ``quantity``, or its value at ``index``.

    Columns run, step, value. ``gate`` narrows to one gate's rows. The README's numbers and
    the spectrum figure read this, then take the median over the seeds.
    """
    rows = dynamics[dynamics["quantity"] == quantity]
    if gate is not None:
        rows = rows[rows["gate"] == gate]
    if index is not None:
        rows = rows[rows["index"] == index]
    return rows.groupby(["run", "step"], as_index=False)["value"].median()


# --- the diagnostics against theory ---------------------------------------------------------------
class LineFit(NamedTuple):
    """A least-squares line y = slope x + intercept over n points, with Pearson's r."""

    slope: float
    intercept: float
    r: float
    n: int


def fit_line(x, y) -> LineFit:
    """The least-squares line through the finite (x, y) pairs; NaN slope and r below three points or no spread."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return LineFit(math.nan, math.nan, math.nan, len(x))
    slope, intercept = np.polyfit(x, y, 1)
    return LineFit(float(slope), float(intercept), float(np.corrcoef(x, y)[0, 1]), len(x))


def growth_and_exponent(runs: pd.DataFrame, curves: pd.DataFrame, dynamics: pd.DataFrame) -> pd.DataFrame:
    """Engelken's identity, per run: the gradient's growth rate against the top Lyapunov exponent.

    Engelken 2023 ("Gradient flossing"): the slope of ln ||dL/dh_t|| against the distance
    from the loss is the largest Lyapunov exponent of the forward dynamics. Per run, at
    its first logged step ("init") and its last trained step ("final", ``until_stop``):
    ``growth_rate`` (the signed growth rate of the curves table, 1/step) and
    ``top_exponent`` (the largest of the k exponents of the dynamics table, 1/step; the
    exponents come in QR order, which is not sorted at a finite length). Columns run,
    model, gap, stage, step, growth_rate, top_exponent; runs without diagnostics are absent.
    """
    exponents = dynamics[dynamics["quantity"] == "lyapunov"]
    if exponents.empty:
        return pd.DataFrame(columns=["run", "model", "gap", "stage", "step", "growth_rate", "top_exponent"])
    top = exponents.groupby(["run", "step"], as_index=False)["value"].max().rename(columns={"value": "top_exponent"})
    both = until_stop(curves[["run", "step", "growth_rate"]], runs).merge(top, on=["run", "step"])
    first = both.loc[both.groupby("run")["step"].idxmin()].assign(stage="init")
    last = both.loc[both.groupby("run")["step"].idxmax()].assign(stage="final")
    table = pd.concat([first, last], ignore_index=True).merge(runs[["run", "model", "gap"]], on="run")
    columns = ["run", "model", "gap", "stage", "step", "growth_rate", "top_exponent"]
    return table[columns].sort_values(["stage", "model", "gap", "run"], ignore_index=True)


class Auc(NamedTuple):
    """The area under the ROC curve of a score for two classes, with its 95% interval (Hanley & McNeil 1982)."""

    auc: float
    lo: float
    hi: float
    positives: int
    negatives: int


def rank_auc(scores, positive) -> Auc:
    """P(score of a positive > score of a negative), ties counting half; NaN without both classes.

    The interval is auc +- 1.96 SE with Hanley & McNeil's (1982) standard error, clipped to [0, 1].
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    n1, n0 = len(pos), len(neg)
    if n1 == 0 or n0 == 0:
        return Auc(math.nan, math.nan, math.nan, n1, n0)
    auc = float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt(max(auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2), 0.0) / (n1 * n0))
    return Auc(auc, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se), n1, n0)


def early_exponent(runs: pd.DataFrame, dynamics: pd.DataFrame, step: int) -> pd.DataFrame:
    """Per decided run (solved or failed, ``outcome``): the top Lyapunov exponent at log step ``step``.

    For the early-prediction check (Vogt et al. 2022: early Lyapunov spectra predict the
    final loss): columns run, model, gap, lr, seed, top_exponent, solved.
    """
    exponents = dynamics[(dynamics["quantity"] == "lyapunov") & (dynamics["step"] == step)]
    top = exponents.groupby("run", as_index=False)["value"].max().rename(columns={"value": "top_exponent"})
    decided = runs.assign(_outcome=outcome(runs))
    decided = decided[decided["_outcome"].isin([SOLVED, FAILED])]
    table = decided[["run", "model", "gap", "lr", "seed", "_outcome"]].merge(top, on="run")
    return table.assign(solved=table.pop("_outcome") == SOLVED)


# --- the summary as text: lrd show and the report -----------------------------------------
EDGE_NOTE = "best lr at the grid's edge: widen it"


def summary_cells(runs: pd.DataFrame, wide: bool = True) -> tuple[list[str], list[list[str]], str]:
    """(column names, rows of text, caption) of ``summary`` of ``runs``: what ``lrd show`` and the report print.

    outcomes: k solved / m undecided / n trained, with the Wilson 95% interval of the
    success rate over the decided runs (``lrd.results.OUTCOME_RULE``, the caption); lr: the
    chosen learning rate (of how many), marked ! where it lies at the grid's edge.
    ``wide=False`` keeps what fits 100 columns: a column whose value is the same in every row
    (task, hidden size, baseline) moves to the caption, outcomes read k/m/n, and the seeds,
    diverged and solved-step columns are left to ``--wide``.
    """
    rows = summary(runs)
    edge = bool(rows["lr_at_edge"].any()) if len(rows) else False
    caption = OUTCOME_RULE + (f" {EDGE_NOTE} (marked !)." if edge else "")
    failures = bool((runs["status"] == "failed").any())
    cells: list[dict[str, str]] = []
    for row in rows.itertuples(index=False):
        spread = "" if math.isnan(row.final_metric_std) else f" ± {row.final_metric_std:.3f}"
        lr = "—" if math.isnan(row.lr) else f"{row.lr:g}" + (f" of {row.lrs}" if row.lrs > 1 and wide else "")
        interval = f"[{row.success_lo:.2f},{row.success_hi:.2f}]"
        counts = (
            outcome_text(row.solved, row.undecided, row.trained)
            if wide
            else f"{row.solved}/{row.undecided}/{row.trained}"
        )
        cells.append(
            {
                "task": row.task,
                "gap": str(row.gap),
                "model": row.model,
                "h": str(row.hidden),
                "lr": lr + (" !" if row.lr_at_edge else ""),
                "seeds": str(row.seeds),
                "diverged": str(row.diverged),
                "failed": str(row.failed),
                "outcomes [95% CI, decided]": f"{counts} {interval}",
                "final metric": "—" if math.isnan(row.final_metric) else f"{row.final_metric:.3f}{spread}",
                "baseline": f"{row.baseline_metric:.3f}",
                "solved at step": "—" if math.isnan(row.solved_step) else f"{row.solved_step:.0f}",
                "grad growth /step init→final": f"{_rate(row.growth_rate_init)} → {_rate(row.growth_rate_final)}",
            }
        )
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
    if not wide:
        same = [c for c in ("task", "h", "baseline") if cells and len({r[c] for r in cells}) == 1]
        if same:
            caption = "; ".join(f"{c} {cells[0][c]}" for c in same) + ". " + caption
        if len(rows) and (rows["lrs"] > 1).any():
            caption = f"lr: chosen of a grid of {int(rows['lrs'].max())}. " + caption
        caption = "outcomes: solved/undecided/trained. " + caption
        dropped = {*same, "seeds", "diverged", "solved at step"}
        columns = [c for c in columns if c not in dropped]
        short = {"outcomes [95% CI, decided]": "outcomes [95% CI]", "grad growth /step init→final": "growth init→final"}
        for r in cells:
            r.update({new: r[old] for old, new in short.items()})
        columns = [short.get(c, c) for c in columns]
    return columns, [[r[c] for c in columns] for r in cells], caption


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.3f}"


def pascanu_condition(runs: pd.DataFrame, dynamics: pd.DataFrame) -> pd.DataFrame:
    """Per tanh-RNN run with diagnostics: Pascanu et al.'s sigma_max(U) gamma at initialisation, and its outcome.

    Pascanu, Mikolov & Bengio 2013 (sec. 3.1): with gamma the bound on the activation's
    derivative (1 for tanh), sigma_max(U) < 1/gamma is sufficient for the long-term
    components of the gradient to vanish. ``sigma_gamma``: the largest over the timesteps,
    at the first logged step, of the stored ``pmb_bound`` = sigma_max(U) max_i tanh'(a_t,i)
    (at most sigma_max(U)). Columns run, gap, lr, seed, gain (``recurrent_gain``, 1 where
    the runs table has none), sigma_gamma, growth_rate_init, outcome.
    """
    bound = dynamics[dynamics["quantity"] == "pmb_bound"]
    if bound.empty:
        return pd.DataFrame(columns=["run", "gap", "lr", "seed", "gain", "sigma_gamma", "growth_rate_init", "outcome"])
    first = bound[bound["step"] == bound.groupby("run")["step"].transform("min")]
    sigma = first.groupby("run", as_index=False)["value"].max().rename(columns={"value": "sigma_gamma"})
    table = runs.assign(outcome=outcome(runs))
    gain = table["recurrent_gain"].astype(float).fillna(1.0) if "recurrent_gain" in table else 1.0
    table = table.assign(gain=gain)[["run", "gap", "lr", "seed", "gain", "growth_rate_init", "outcome"]]
    return table.merge(sigma, on="run")[
        ["run", "gap", "lr", "seed", "gain", "sigma_gamma", "growth_rate_init", "outcome"]
    ]
