"""Evaluation at other gaps ([train] eval_gaps): no retraining, its own table, its figure, run ids kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, as_upgraded

from lrd import store
from lrd.experiment import ExperimentError, load_experiment
from lrd.models import CELLS
from lrd.plots import eval_gaps_curves, write_figures
from lrd.plots.base import NotAskedFor
from lrd.schema import EVAL_GAP_KEY

ROOT = Path(__file__).resolve().parent.parent


def test_every_run_is_evaluated_at_every_test_gap_and_at_its_own_gap_as_its_final_metric(at_gaps_run):
    out, _ = at_gaps_run
    results = store.load(out)
    table = results.eval_gaps
    assert list(table.columns[:2]) == list(EVAL_GAP_KEY)
    assert {"loss", "metric"} <= set(table.columns)
    assert len(table) == len(results.runs) * 4
    assert sorted(table.groupby("run")["test_gap"].apply(tuple).unique()) == [(2, 3, 5, 9)]
    # the same evaluation program, keys and sequences at the training gap: the run's final metrics
    own = table.merge(results.runs[["run", "gap", "final_metric", "final_loss"]], on="run")
    own = own[own["test_gap"] == own["gap"]]
    assert len(own) == len(results.runs)
    np.testing.assert_allclose(own["metric"], own["final_metric"], rtol=0, atol=0)
    np.testing.assert_allclose(own["loss"], own["final_loss"], rtol=1e-6)
    # other gaps are other sequences: not all the same numbers
    assert table.groupby("run")["loss"].nunique().min() > 1
    assert "eval_gaps" not in results.runs.columns  # a table of its own, not a runs column


def test_the_figure_draws_one_line_per_training_gap(at_gaps_run):
    out, _ = at_gaps_run
    assert (out / "figures" / "delayed_recall_eval_gaps.png").is_file()
    results = store.load(out)
    fig = eval_gaps_curves(results.runs, results.eval_gaps)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    assert {"mean:rnn:3", "mean:rnn:5"} <= set(lines)
    done = results.runs[results.runs["gap"] == 5]["run"]
    mean = results.eval_gaps[results.eval_gaps["run"].isin(done)].groupby("test_gap")["metric"].mean()
    np.testing.assert_allclose(lines["mean:rnn:5"].get_ydata(), mean.to_numpy())
    np.testing.assert_array_equal(lines["mean:rnn:5"].get_xdata(), [2, 3, 5, 9])


def test_a_folder_without_eval_gaps_loads_and_leaves_the_figure_out_silently(tmp_path):
    results = store.load(ROOT / "results" / "parity")
    assert results.eval_gaps.empty
    with pytest.raises(NotAskedFor, match="no eval_gaps data"):
        eval_gaps_curves(results.runs, results.eval_gaps)
    skipped = {}
    paths = write_figures(
        results, tmp_path, formats=("png",), on_skip=lambda stem, reason: skipped.setdefault(stem, reason)
    )
    assert "parity_eval_gaps" not in skipped  # not asked for: nothing to report
    assert paths and not any(p.stem.endswith("_eval_gaps") for p in paths)


@pytest.mark.parametrize("folder", ["parity", "delayed_recall"])
def test_the_new_setting_at_its_default_keeps_every_stored_run_id(folder, tmp_path):
    experiment = load_experiment(as_upgraded(ROOT / "results" / folder, tmp_path))  # the file as lrd upgrade leaves it
    stored = json.loads((ROOT / "results" / folder / "experiment.json").read_text())["runs"]
    assert {spec.run_id for spec in experiment.runs} == set(stored)
    assert all("eval_gaps" not in spec.config()["train"] for spec in experiment.runs)


def test_eval_gaps_enter_the_identity_only_when_set(write_experiment):
    plain = load_experiment(write_experiment(TINY, "plain.toml")).runs
    with_gaps = load_experiment(write_experiment(TINY.replace("[train]", "[train]\neval_gaps = [8, 2]"))).runs
    assert len(plain) == len(with_gaps)  # a list is one value, not a grid axis
    assert {s.run_id for s in plain}.isdisjoint({s.run_id for s in with_gaps})
    assert with_gaps[0].train.eval_gaps == (2, 8)  # sorted
    grid = load_experiment(write_experiment(TINY.replace("[train]", "[train]\neval_gaps = [[8], [2, 16]]"))).runs
    assert len(grid) == 2 * len(plain)  # a list of lists is a grid axis


@pytest.mark.parametrize(
    "value, message",
    [
        ("[0, 4]", "train.eval_gaps: every gap must be > 0"),
        ("[4, 4]", "train.eval_gaps: repeated gap"),
        ('["long"]', "train.eval_gaps: must be a list of positive integers"),
    ],
)
def test_bad_eval_gaps_are_one_line_naming_the_key(write_experiment, value, message):
    path = write_experiment(TINY.replace("[train]", f"[train]\neval_gaps = {value}"))
    with pytest.raises(ExperimentError, match=message) as err:
        load_experiment(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_length_dependent_model_is_refused(write_experiment, monkeypatch):
    monkeypatch.setattr(CELLS["lstm"], "length_dependent", True, raising=False)
    path = write_experiment(TINY.replace("[train]", "[train]\neval_gaps = [8]"))
    with pytest.raises(ExperimentError, match="cell 'lstm' has parameters that depend on the sequence length"):
        load_experiment(path)
    load_experiment(write_experiment(TINY, "plain.toml"))  # without eval_gaps it trains as before


def test_a_gap_the_task_refuses_is_one_line(write_experiment):
    text = TINY.replace('name = "delayed_recall"\ngap = 4', 'name = "temporal_order"\ngap = 20')
    path = write_experiment(text.replace("[train]", "[train]\neval_gaps = [40, 5]"))
    with pytest.raises(ExperimentError, match=r"train\.eval_gaps: gap 5 not allowed for 'temporal_order'") as err:
        load_experiment(path)
    assert "\n" not in str(err.value)
