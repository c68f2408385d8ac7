"""The results schema names the columns the code writes: kept in step with the config classes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from lrd import schema
from lrd.models.network import ModelConfig
from lrd.tasks import TASKS, Task
from lrd.train import TrainConfig


def test_config_columns_are_the_config_fields():
    assert tuple(ModelConfig.model_fields) == schema.MODEL_COLUMNS
    # eval_gaps is a training setting whose results are a table of their own, not a runs column
    assert tuple(f for f in TrainConfig.model_fields if f != "eval_gaps") == schema.TRAIN_COLUMNS
    assert schema.CONFIG_COLUMNS == schema.MODEL_COLUMNS + schema.TRAIN_COLUMNS
    assert "solve_threshold" not in Task.model_fields  # a reporting setting: never part of a run's identity
    for name, cls in TASKS.items():
        task_columns = {f"{schema.TASK_PREFIX}{k}" for k in cls.model_fields if k != "gap"}
        assert not task_columns & set(schema.DERIVED_TASK_COLUMNS), name
        assert not task_columns & set(schema.CONFIG_COLUMNS), name


def test_results_has_one_field_per_table():
    assert schema.Results._fields == ("runs", "curves", "grad_norms", "eval_gaps", "dynamics")
    stems = (schema.RUN, schema.CURVES, schema.GRAD_NORMS, schema.EVAL_GAPS, schema.DYNAMICS)
    assert (*schema.TABLES, *schema.OPTIONAL_TABLES) == stems
    assert list(schema.Results(*[None] * 3).dynamics.columns) == list(schema.DYNAMICS_COLUMNS)  # empty by default


def test_floor_is_float32s_smallest_normal_and_the_probe_uses_it():
    from lrd import probes

    assert float(np.finfo(np.float32).tiny) == schema.FLOOR
    assert probes.FLOOR is schema.FLOOR


def test_schema_and_plots_import_without_jax():
    code = "import sys, lrd.schema, lrd.plots; sys.exit('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
