"""The results schema: the tables of a results folder and their columns, in one place.

Imports only the standard library, NumPy and pandas (no JAX), so plots, the
command line and tests can name the columns without loading the training code.
A test (``tests/test_schema.py``) keeps the configuration columns in step with
the classes they come from (``ModelConfig``, ``TrainConfig``, ``Task``).

Three tables, tidy (one row per observation), and two more where the experiment asks for them:

  runs        one row per run: its configuration, status, final metrics, baselines,
              the gradient growth-rate summary, and (added when read, see ``lrd.results``)
              whether it solved the task
  curves      one row per (run, logged step): metrics, gradient norm, growth rate,
              the clipping statistics of the block of steps before it
  grad_norms  one row per (run, step, layer, direction, state, timestep): ||dL/d state_t||
  eval_gaps   one row per (run, test gap) of ``[train] eval_gaps``: the trained model's final
              metrics on the same task at that gap, no retraining (empty for folders without it)
  dynamics    one row per (run, step, quantity, gate, index): Jacobian spectra and gate
              statistics (``lrd.dynamics``); only runs trained with ``diagnostics = true``

Results written before the signed growth rate (same schema 2) have ``decay_length``
columns instead of ``growth_rate`` / ``e_folding_length``, no clipping statistics, no
``log_gmean_norm`` and no dynamics table; they load, and the figures that need the new
columns say so (``lrd.plots``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2  # part of every run's hash and of experiment.json: bump when stored results change meaning

# file stems of a run's tables (DIR/runs/<id>/<stem>.parquet, one row of the runs table per run folder);
# packed, DIR/tables/<kind>.parquet holds every run's rows (runs.parquet for RUN, see lrd.store)
RUN, CURVES, GRAD_NORMS = "run", "curves", "grad_norms"
TABLES = (RUN, CURVES, GRAD_NORMS)
EVAL_GAPS = "eval_gaps"  # only in runs with [train] eval_gaps; folders without it still load
DYNAMICS = "dynamics"  # only in runs trained with diagnostics = true
OPTIONAL_TABLES = (EVAL_GAPS, DYNAMICS)

# float32's smallest normal number: gradient norms below it were not measured (lrd.probes)
FLOOR = float(np.finfo(np.float32).tiny)

# the default level of the metric that counts as solving a task (a reporting setting, [report] solve_threshold)
SOLVE_THRESHOLD = 0.95


# one row per (run, step, quantity, gate, index); ``index`` is the timestep (sigma_max, pmb_bound), the
# exponent's rank from 1 (lyapunov, lyapunov_roundoff: the fraction of its steps at float32 round-off),
# the quantile in percent (gate_quantile, time_constant), 0 (saturated)
DYNAMICS_COLUMNS = ("run", "step", "quantity", "gate", "index", "value")
DYNAMICS_QUANTITIES = (
    *("sigma_max", "pmb_bound", "lyapunov", "lyapunov_roundoff", "gate_quantile", "time_constant", "saturated"),
)


class Results(NamedTuple):
    """The tables of a results folder (see README, "Results tables"); ``lrd.store.load`` returns it.

    ``eval_gaps`` is empty (no columns) for a folder whose experiment has no ``[train] eval_gaps``.
    ``dynamics`` is empty (with its columns) when no run of the folder has one.
    """

    runs: pd.DataFrame
    curves: pd.DataFrame
    grad_norms: pd.DataFrame
    eval_gaps: pd.DataFrame = pd.DataFrame()
    dynamics: pd.DataFrame = pd.DataFrame(columns=list(DYNAMICS_COLUMNS))


# --- runs: configuration columns ---------------------------------------------------------
# the task: its name and gap, facts about it, then every other parameter as task_<name>
TASK_PREFIX = "task_"
DERIVED_TASK_COLUMNS = ("task_length", "task_convention", "task_source")  # follow from the parameters
# the model (ModelConfig's fields) and the training settings (TrainConfig's fields), in field order
# (the cell options a cell lacks are absent from its rows, see lrd.models.network.LATER_OPTIONS)
MODEL_COLUMNS = (
    "cell",
    "hidden",
    "layers",
    "bidirectional",
    "merge",
    "block",
    "recurrent_init",
    "recurrent_gain",
    "forget_bias",
    "r_min",
    "r_max",
    "max_phase",
    "log_space",
    "heads",
    "eigen_range",
    "time_loop",
)
TRAIN_COLUMNS = (
    "steps",
    "batch_size",
    "optimizer",
    "lr",
    "clip",
    "log_every",
    "eval_size",
    "probe_size",
    "valid_size",
    "stop_when_solved",
    "stop_margin",  # only where set (the later settings below likewise)
    "stop_check",  # only in rows of runs stopped on the validation check set (absent: the probe rule of before)
    "profile_every",
    "recurrence_lr_factor",
    *("omega", "floss", "floss_k", "floss_every"),  # the remedies (lrd.remedies); runs from before lack them
    *("diagnostics", "lyapunov_k", "power_iterations", "spectrum_size", "saturation", "spike_factor"),
)
# the model's size: its parameter count, and the [model] params it was sized for (NaN when hidden was given)
SIZE_COLUMNS = ("param_count", "params_target")
# what defines a configuration besides the task and the seed
CONFIG_COLUMNS = MODEL_COLUMNS + TRAIN_COLUMNS

# --- runs: outcome columns --------------------------------------------------------------------
STATUS_DONE, STATUS_DIVERGED, STATUS_FAILED = "done", "diverged", "failed"
SOLVED_COLUMNS = ("solve_threshold", "solved", "solved_step")  # derived when read, never stored (lrd.results)
# the trained parameters are scored on the evaluation set (final_<metric>, what is reported) and on a
# validation set of other sequences (final_valid_<metric>, what chooses among learning rates)
FINAL_METRIC, VALID_METRIC = "final_metric", "final_valid_metric"
STEPS_TRAINED = "steps_trained"  # optimiser steps that changed the parameters (fewer with stop_when_solved)
TREND_COLUMN = "still_improving"  # the loss still falling at the end (lrd.results.still_improving)
DERIVED_COLUMNS = (*SOLVED_COLUMNS, TREND_COLUMN)  # added when a folder is read, never stored
RUN_KEY = ("run", "task", "gap", "model", "seed", "status")  # what every consumer of the runs table needs
RUN_ORDER = ("task", "gap", "model", "hidden", "seed")  # the order of the rows

# --- curves and grad_norms ---------------------------------------------------------------------
CURVE_KEY = ("run", "step")
EVAL_GAP_KEY = ("run", "test_gap")  # then the task's metrics: loss, metric and any extras
GRAD_COLUMNS = ("run", "step", "layer", "direction", "state", "timestep", "distance", "norm", "below_floor")
GMEAN_COLUMNS = ("log_gmean_norm", "gmean_below_floor")  # in grad_norms since the signed growth rate
GROWTH_COLUMNS = ("growth_rate", "e_folding_length")  # in curves since the signed growth rate (was decay_length)
BLOCK_COLUMNS = ("grad_norm_max", "grad_norm_mean", "clipped_fraction", "loss_spikes")  # in curves, likewise
