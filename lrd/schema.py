"""The results schema: the tables of a results folder and their columns, in one place.

Imports only the standard library, NumPy and pandas (no JAX), so plots, the
command line and tests can name the columns without loading the training code.
A test (``tests/test_schema.py``) keeps the configuration columns in step with
the classes they come from (``ModelConfig``, ``TrainConfig``, ``Task``).

Three tables, tidy (one row per observation):

  runs        one row per run: its configuration, status, final metrics, baselines,
              the decay-length summary, and (added when read, see ``lrd.results``)
              whether it solved the task
  curves      one row per (run, logged step): metrics, gradient norm, decay length
  grad_norms  one row per (run, step, layer, direction, state, timestep): ||dL/d state_t||
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2  # part of every run's hash and of experiment.json: bump when stored results change meaning

# file stems of a run's tables (DIR/runs/<id>/<stem>.parquet); the runs table is stored one row per file
RUN, CURVES, GRAD_NORMS = "run", "curves", "grad_norms"
TABLES = (RUN, CURVES, GRAD_NORMS)

# float32's smallest normal number: gradient norms below it were not measured (lrd.probes)
FLOOR = float(np.finfo(np.float32).tiny)

# the default level of the metric that counts as solving a task (a reporting setting, [report] solve_threshold)
SOLVE_THRESHOLD = 0.95


class Results(NamedTuple):
    """The three tables of a results folder (see README, "Results tables"); ``lrd.store.load`` returns it."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    grad_norms: pd.DataFrame


# --- runs: configuration columns ---------------------------------------------------------
# the task: its name and gap, facts about it, then every other parameter as task_<name>
TASK_PREFIX = "task_"
DERIVED_TASK_COLUMNS = ("task_length", "task_convention", "task_source")  # follow from the parameters
# the model (ModelConfig's fields) and the training settings (TrainConfig's fields), in field order
MODEL_COLUMNS = ("cell", "hidden", "layers", "bidirectional", "merge", "recurrent_init", "forget_bias")
TRAIN_COLUMNS = ("steps", "batch_size", "optimizer", "lr", "clip", "log_every", "eval_size", "probe_size")
# what defines a configuration besides the task and the seed
CONFIG_COLUMNS = MODEL_COLUMNS + TRAIN_COLUMNS

# --- runs: outcome columns --------------------------------------------------------------------
STATUS_DONE, STATUS_DIVERGED, STATUS_FAILED = "done", "diverged", "failed"
SOLVED_COLUMNS = ("solve_threshold", "solved", "solved_step")  # derived when read, never stored (lrd.results)
RUN_KEY = ("run", "task", "gap", "model", "seed", "status")  # what every consumer of the runs table needs
RUN_ORDER = ("task", "gap", "model", "hidden", "seed")  # the order of the rows

# --- curves and grad_norms ---------------------------------------------------------------------
CURVE_KEY = ("run", "step")
GRAD_COLUMNS = ("run", "step", "layer", "direction", "state", "timestep", "distance", "norm", "below_floor")
