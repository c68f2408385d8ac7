"""Experiment files: every user error is one line naming file and key, exit code 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, as_upgraded

from lrd import sweep
from lrd.cli import main
from lrd.experiment import ExperimentError, load_experiment
from lrd.models.network import ModelConfig, SequenceModel, hidden_for_params, param_count

BAD = {
    # case: (experiment text, words the one-line message must contain)
    "misspelled task key": (TINY.replace("gap = 4", "gpa = 4"), ["task.gpa", "unknown key", "did you mean 'gap'"]),
    "misspelled top-level key": (TINY.replace("seeds =", "seed ="), ["seed:", "did you mean 'seeds'"]),
    "misspelled train key": (TINY.replace("log_every", "log_evry"), ["train.log_evry", "did you mean 'log_every'"]),
    "negative gap": (TINY.replace("gap = 4", "gap = -4"), ["task.gap", "greater than 0", "-4"]),
    "zero gap": (TINY.replace("gap = 4", "gap = [4, 0]"), ["task.gap", "greater than 0"]),
    "wrong type": (TINY.replace("gap = 4", 'gap = "4"'), ["task.gap", "valid integer", "'4'"]),
    "float for int": (TINY.replace("hidden = 8", "hidden = 8.5"), ["model.hidden", "valid integer"]),
    "bool for int": (TINY.replace("steps = 20", "steps = true"), ["train.steps", "valid integer"]),
    "unknown task": (
        TINY.replace('"delayed_recall"', '"delayed_recal"'),
        ["task.name", "did you mean 'delayed_recall'", "copy"],
    ),
    "unknown model": (TINY.replace('["rnn", "lstm"]', '["rnn", "lstn"]'), ["model.cell", "did you mean 'lstm'", "gru"]),
    "unknown optimizer": (
        TINY.replace("steps = 20", 'steps = 20\noptimizer = "adamw"'),
        ["train.optimizer", "'adam'", "'sgd'"],
    ),
    "empty grid": (TINY.replace('["rnn", "lstm"]', "[]"), ["model.cell", "empty"]),
    "empty seeds": (TINY.replace("[0, 1]", "[]"), ["seeds", "empty"]),
    "negative seed": (TINY.replace("[0, 1]", "[0, -1]"), ["seeds", "-1"]),
    "seed of 2**32": (TINY.replace("[0, 1]", "[0, 4294967296]"), ["seeds", "[0, 2**32)", "4294967296"]),
    "infinite lr": (TINY.replace("steps = 20", "steps = 20\nlr = inf"), ["train.lr", "finite", "inf"]),
    "nan clip": (TINY.replace("steps = 20", "steps = 20\nclip = nan"), ["train.clip", "finite", "nan"]),
    "nan forget_bias": (TINY.replace("hidden = 8", "hidden = 8\nforget_bias = nan"), ["model.forget_bias", "finite"]),
    "missing task name": (TINY.replace('name = "delayed_recall"\n', ""), ["task.name", "missing"]),
    "missing cell": (TINY.replace('cell = ["rnn", "lstm"]\n', ""), ["model.cell", "missing"]),
    "steps not a multiple": (TINY.replace("steps = 20", "steps = 25"), ["train", "multiple of log_every"]),
    "not toml": ("[task\nname = 1", ["not valid TOML"]),
    "unknown time loop": (
        TINY.replace("hidden = 8", 'hidden = 8\ntime_loop = "fast"'),
        ["model.time_loop", "'scan'", "'kernel'"],
    ),
    "kernel beyond its size limit": (
        TINY.replace("hidden = 8", 'hidden = 8\ntime_loop = "kernel"'),
        ["model.time_loop", "'kernel' cannot run", "power of two from 16", "got 8"],
    ),
    "parallel form of a cell without one": (
        TINY.replace("hidden = 8", 'hidden = 8\ntime_loop = "parallel"'),
        ["model.time_loop", "'parallel' cannot run", "'rnn' is not linear in its state", "lru"],
    ),
    "missing import": ('imports = ["nowhere.py"]\n' + TINY, ["imports", "nowhere.py"]),
    "zero lyapunov_k": (
        TINY.replace("steps = 20", "steps = 20\nlyapunov_k = 0"),
        ["train.lyapunov_k", "greater than 0"],
    ),
    "negative saturation": (
        TINY.replace("steps = 20", "steps = 20\nsaturation = -0.1"),
        ["train.saturation", "greater than 0", "-0.1"],
    ),
    "diagnostics not a bool": (
        TINY.replace("steps = 20", 'steps = 20\ndiagnostics = "yes"'),
        ["train.diagnostics", "valid boolean"],
    ),
    "spike factor at most 1": (
        TINY.replace("steps = 20", "steps = 20\nspike_factor = 1.0"),
        ["train.spike_factor", "greater than 1"],
    ),
    "threshold above 1": (TINY + "[report]\nsolve_threshold = 1.5\n", ["report.solve_threshold", "less than or equal"]),
    "threshold as a grid": (TINY + "[report]\nsolve_threshold = [0.9, 0.95]\n", ["report.solve_threshold"]),
    "misspelled report key": (TINY + "[report]\nsolve_treshold = 0.9\n", ["report.solve_treshold", "did you mean"]),
    "heads not dividing the width": (
        TINY.replace('cell = ["rnn", "lstm"]', 'cell = "attention"\nheads = 3'),
        ["model: heads", "must divide hidden (8); got 3"],
    ),
    "an option the cell lacks": (
        TINY.replace("hidden = 8", "hidden = 8\nheads = 2"),
        ["model: heads", "cell 'rnn' has no such option"],
    ),
    "r_min above r_max": (
        TINY.replace('cell = ["rnn", "lstm"]', 'cell = "lru"\nr_min = 0.99\nr_max = 0.9'),
        ["model: r_min, r_max", "0 <= r_min < r_max <= 1"],
    ),
    "zero recurrence lr factor": (
        TINY.replace("steps = 20", "steps = 20\nrecurrence_lr_factor = 0"),
        ["train.recurrence_lr_factor", "greater than 0"],
    ),
    "threshold in the task": (
        TINY.replace("gap = 4", "gap = 4\nsolve_threshold = 0.9"),
        ["task.solve_threshold", "moved to [report] solve_threshold"],
    ),
    "non-positive lr": (TINY.replace("steps = 20", "steps = 20\nlr = [1e-3, 0.0]"), ["train.lr", "greater than 0"]),
    "infinite lr in a list": (
        TINY.replace("steps = 20", "steps = 20\nlr = [1e-3, inf]"),
        ["train.lr", "finite", "inf"],
    ),
    "nan lr": (TINY.replace("steps = 20", "steps = 20\nlr = nan"), ["train.lr", "finite"]),
    "hidden and params": (TINY.replace("hidden = 8", "hidden = 8\nparams = 500"), ["model.params", "both given"]),
    "neither hidden nor params": (TINY.replace("hidden = 8\n", ""), ["model.params", "neither given"]),
    "params too small": (
        TINY.replace("hidden = 8", "params = 40"),
        ["model.params", "no lstm on task 'delayed_recall' has about 40", "allowed: 96 (hidden 1)"],  # rnn: 36
    ),
    "params not an integer": (TINY.replace("hidden = 8", "params = 500.5"), ["model.params", "positive integer"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_experiment_is_one_line_exit_2_nothing_written(case, write_experiment, tmp_path, capsys):
    text, words = BAD[case]
    path = write_experiment(text)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()


def test_missing_experiment_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_user_error_from_the_command_line_has_no_traceback(write_experiment, tmp_path):
    path = write_experiment(TINY.replace("gap = 4", "gap = -4"))
    proc = subprocess.run(
        [sys.executable, "-m", "lrd.cli", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_grid_expansion_and_deduplication(write_experiment):
    text = TINY.replace("gap = 4", "gap = [4, 6]").replace("hidden = 8", "hidden = 8\nforget_bias = [0.0, 1.0]")
    experiment = load_experiment(write_experiment(text))
    # rnn has no forget gate: forget_bias is dropped, so its two grid points are one run
    cells = [spec.model.cell for spec in experiment.runs]
    assert cells.count("lstm") == 2 * 2 * 2  # gaps x forget biases x seeds
    assert cells.count("rnn") == 2 * 2  # gaps x seeds
    assert len({spec.run_id for spec in experiment.runs}) == len(experiment.runs)
    assert experiment.name == "tiny"


def test_run_id_is_stable_and_changes_with_the_configuration(write_experiment):
    a = load_experiment(write_experiment(TINY, "a.toml"))
    b = load_experiment(write_experiment(TINY, "b.toml"))
    c = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 30"), "c.toml"))
    assert [s.run_id for s in a.runs] == [s.run_id for s in b.runs]
    assert not {s.run_id for s in a.runs} & {s.run_id for s in c.runs}


def test_runs_with_diagnostics_have_their_own_ids(write_experiment):
    """Diagnostics do not change training, but a run stored without them must not count as having them.

    Off (the default) they stay out of the id, so runs stored before them keep theirs.
    """
    off = load_experiment(write_experiment(TINY, "off.toml"))
    off_again = load_experiment(
        write_experiment(TINY.replace("steps = 20", "steps = 20\ndiagnostics = false"), "o.toml")
    )
    on = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 20\ndiagnostics = true"), "on.toml"))
    assert [s.run_id for s in off.runs] == [s.run_id for s in off_again.runs]
    assert all("diagnostics" not in json.dumps(s.config()) for s in off.runs)
    assert not {s.run_id for s in on.runs} & {s.run_id for s in off.runs}


def test_the_report_threshold_is_no_part_of_a_run(write_experiment):
    default = load_experiment(write_experiment(TINY, "a.toml"))
    lenient = load_experiment(write_experiment(TINY + "[report]\nsolve_threshold = 0.5\n", "b.toml"))
    assert (default.report.solve_threshold, lenient.report.solve_threshold) == (0.95, 0.5)
    assert [s.run_id for s in default.runs] == [s.run_id for s in lenient.runs]
    assert all("solve_threshold" not in json.dumps(s.config()) for s in lenient.runs)


def test_plugin_task_file_is_imported(write_experiment, tmp_path):
    plugin = tmp_path / "my_tasks.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ExperimentError, match=r"my_tasks.py.*RuntimeError: boom"):
        load_experiment(write_experiment('imports = ["my_tasks.py"]\n' + TINY))


BROKEN_CELL_FILES = {
    "fails to import": ("raise ImportError('no module named flashattn')\n", "ImportError: no module named flashattn"),
    "registers a taken name": (
        "from lrd.models import CELLS, register\n\n@register\nclass Twin(CELLS['lstm']):\n    cell_name = 'gru'\n",
        "cell name 'gru' is already registered by GRUCell",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CELL_FILES))
def test_a_broken_cell_file_is_one_line_exit_2_nothing_written(case, write_experiment, tmp_path, capsys):
    text, words = BROKEN_CELL_FILES[case]
    (tmp_path / "my_cell.py").write_text(text)
    path = write_experiment('imports = ["my_cell.py"]\n' + TINY)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "imports: 'my_cell.py' failed" in lines[0], lines
    assert words in lines[0]
    assert not out.exists()


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_experiments_are_valid(path):
    experiment = load_experiment(path)
    assert experiment.runs
    assert "runtime" in path.read_text(), "each shipped experiment states its expected runtime"


def test_every_builtin_task_has_a_shipped_experiment():
    from lrd.tasks import TASKS

    tasks = {load_experiment(p).runs[0].task.name for p in SHIPPED}
    builtin = {name for name, cls in TASKS.items() if cls.__module__.startswith("lrd.tasks.")}
    assert builtin <= tasks, builtin - tasks


SHIPPED_RESULTS = Path(__file__).resolve().parents[1] / "results"


STORED = sorted(SHIPPED_RESULTS.glob("*/experiment.toml"))


@pytest.mark.parametrize("path", STORED, ids=[p.parent.name for p in STORED])
def test_committed_results_keep_their_run_ids(path, tmp_path):
    """New settings (lr grids, valid_size, stop_when_solved, params) leave the identities of stored runs alone.

    The experiment file as it was run (saved in the results folder), as ``lrd upgrade`` leaves it,
    gives today the run ids the folder holds, so ``lrd run`` finds them done. The upgrade records
    ``stop_check = "probe"`` in the files whose runs stopped on their probe batch (stored without a
    ``stop_check``), and only there: the reruns trained with the validation stop check store it.
    """
    stored = json.loads((path.parent / "experiment.json").read_text())["runs"]
    upgraded = as_upgraded(path.parent, tmp_path)
    assert {s.run_id for s in load_experiment(upgraded).runs} == set(stored)
    # runs that stopped on the probe batch: stop_when_solved stored without a stop_check (the rule of before)
    stopping = {i for i, c in stored.items() if c["train"].get("stop_when_solved") and "stop_check" not in c["train"]}
    assert ('stop_check = "probe"' in upgraded.read_text()) == bool(stopping)
    as_committed = {s.run_id for s in load_experiment(path).runs}
    assert as_committed == set(stored)  # the committed folders are upgraded: their files give their runs


def test_a_learning_rate_list_is_one_group_per_shape_and_keeps_each_runs_identity(write_experiment):
    single = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 20\nlr = 3e-3"), "single.toml"))
    grid = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 20\nlr = [1e-3, 3e-3]"), "grid.toml"))
    groups = sweep.plan(grid, set())
    assert len(groups) == 2  # rnn, lstm: the learning rates join the seeds
    assert [g.members for g in groups] == [[(0, 1e-3), (0, 3e-3), (1, 1e-3), (1, 3e-3)]] * 2
    assert {s.run_id for s in single.runs} < {s.run_id for s in grid.runs}  # lr 3e-3: the same runs


def test_stop_when_solved_and_valid_size_enter_the_identity_only_when_set(write_experiment):
    base = load_experiment(write_experiment(TINY, "base.toml")).runs[0]
    same = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 20\nvalid_size = 1024"), "s.toml"))
    stopping = TINY.replace("steps = 20", "steps = 20\nstop_when_solved = true")
    stop = load_experiment(write_experiment(stopping, "t.toml"))
    valid = load_experiment(write_experiment(TINY.replace("steps = 20", "steps = 20\nvalid_size = 64"), "v.toml"))
    assert same.runs[0].run_id == base.run_id  # the default: the identity of before
    assert stop.runs[0].run_id != base.run_id and valid.runs[0].run_id != base.run_id
    assert stop.runs[0].config()["train"]["stop_threshold"] == 0.95  # the default [report] solve_threshold
    assert stop.runs[0].config()["train"]["stop_check"] == "valid"  # the rule that stops it (issue 21), the default
    assert "stop_threshold" not in base.config()["train"]
    # with stop_when_solved the report threshold changes training: another threshold, other runs
    lenient = load_experiment(write_experiment(stopping + "[report]\nsolve_threshold = 0.5\n", "u.toml"))
    assert lenient.runs[0].config()["train"]["stop_threshold"] == 0.5
    assert lenient.runs[0].run_id != stop.runs[0].run_id
    assert lenient.runs[0].group_key != stop.runs[0].group_key  # and another compiled program


def test_the_probe_stop_rule_of_before_keeps_the_ids_of_the_runs_it_stopped(write_experiment):
    """stop_check = "probe" (the rule of before issue 21) stays out of the identity: a run stopped so has the id of
    its configuration without the setting, as stored; "valid" (the default) is in it; without stop_when_solved the
    setting decides nothing, so it changes neither the id nor the compiled program."""
    import hashlib
    import json as json_

    from lrd.schema import SCHEMA_VERSION

    stopping = TINY.replace("steps = 20", "steps = 20\nstop_when_solved = true")
    valid = load_experiment(write_experiment(stopping, "v.toml")).runs[0]
    probe = load_experiment(write_experiment(stopping.replace("[train]", '[train]\nstop_check = "probe"'), "p.toml"))
    config = probe.runs[0].config()
    assert "stop_check" not in config["train"] and config["train"]["stop_when_solved"] is True
    # the id is the hash of the configuration as it was stored before the setting existed
    payload = json_.dumps({**config, "schema": SCHEMA_VERSION}, sort_keys=True)
    assert probe.runs[0].run_id == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert probe.runs[0].run_id != valid.run_id and probe.runs[0].group_key != valid.group_key
    plain = load_experiment(write_experiment(TINY, "a.toml")).runs[0]
    ignored = load_experiment(write_experiment(TINY.replace("[train]", '[train]\nstop_check = "probe"'), "b.toml"))
    assert ignored.runs[0].run_id == plain.run_id and ignored.runs[0].group_key == plain.group_key
    with pytest.raises(ExperimentError, match="stop_check"):
        load_experiment(write_experiment(stopping.replace("[train]", '[train]\nstop_check = "eval"'), "c.toml"))


@pytest.mark.parametrize(
    "model",
    [
        ModelConfig(cell="rnn", hidden=5),
        ModelConfig(cell="lstm", hidden=7, layers=2),
        ModelConfig(cell="gru", hidden=6, bidirectional=True),
        ModelConfig(cell="lstm", hidden=3, bidirectional=True, merge="sum", layers=2),
    ],
    ids=lambda m: f"{m.label}-h{m.hidden}-l{m.layers}-{m.merge}",
)
def test_param_count_is_the_size_of_the_initialised_params_tree(model):
    dims = (10, 4)  # inputs, outputs
    params = SequenceModel(model, dims[1]).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, dims[0])))
    assert param_count(model, *dims) == sum(x.size for x in jax.tree.leaves(params))
    target = param_count(model, *dims) + 1
    hidden = hidden_for_params(model, *dims, target)
    counts = {h: param_count(model.model_copy(update={"hidden": h}), *dims) for h in (hidden - 1, hidden, hidden + 1)}
    assert all(abs(counts[hidden] - target) <= abs(c - target) for c in counts.values())
    assert hidden == model.hidden  # count(h) + 1 is nearest to h itself


def test_params_gives_each_cell_the_hidden_size_nearest_the_target(write_experiment):
    experiment = load_experiment(
        write_experiment(
            TINY.replace("hidden = 8", 'params = 1896\ncell = "rnn"')
            .replace('cell = ["rnn", "lstm"]\n', "")
            .replace("gap = 4", "gap = 30")
        )
    )
    spec = experiment.runs[0]
    assert spec.params_target == 1896 and spec.config()["model"]["params_target"] == 1896
    # delayed recall: 18 inputs, 8 classes; rnn count h^2 + 27 h + 8, 1896 at h = 32 exactly
    assert spec.model.hidden == 32
    np.testing.assert_equal(param_count(spec.model, 18, 8), 1896)


@pytest.mark.parametrize("heads", [None, 3])
def test_params_gives_attention_a_hidden_size_its_heads_divide(write_experiment, heads):
    """attention's hidden must be a multiple of its heads (2 by default): params = N searches only those."""
    extra = "" if heads is None else f"\nheads = {heads}"
    experiment = load_experiment(
        write_experiment(
            TINY.replace("hidden = 8", f'params = 3000\ncell = "attention"{extra}').replace(
                'cell = ["rnn", "lstm"]\n', ""
            )
        )
    )
    model = experiment.runs[0].model
    unit = heads or 2
    assert model.hidden % unit == 0

    def off(hidden: int) -> int:  # delayed recall at gap 4: 18 inputs, 8 classes
        return abs(param_count(model.model_copy(update={"hidden": hidden}), 18, 8) - 3000)

    assert off(model.hidden) <= min(off(model.hidden - unit), off(model.hidden + unit))
