"""What the numbers mean: 'solved' derived at read time from a reporting threshold, and the `lrd show` summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from conftest import TINY

from lrd import store
from lrd.cli import main
from lrd.results import summary, with_solved


def runs_table() -> pd.DataFrame:
    """Four runs of one configuration: done (0.97, 0.5), diverged, failed; as stored (no solved columns)."""
    return pd.DataFrame(
        {
            "run": ["a", "b", "c", "d"],
            "task": "adding",
            "gap": 10,
            "model": "lstm",
            "hidden": 8,
            "seed": [0, 1, 2, 3],
            "status": ["done", "done", "diverged", "failed"],
            "final_metric": [0.97, 0.5, math.nan, math.nan],
            "baseline_loss": 0.17,
            "baseline_metric": 0.1,
            "growth_rate_init": [-0.5, -0.25, 0.1, math.nan],
            "growth_rate_final": [0.2, 0.05, -1.0, math.nan],
        }
    )


def curves_table() -> pd.DataFrame:
    # metric per step; c (diverged) reached 0.96 before diverging
    metric = {"a": [0.1, 0.9, 0.97], "b": [0.1, 0.5, 0.5], "c": [0.2, 0.96]}
    rows = [{"run": r, "step": 10 * i, "metric": m} for r, ms in metric.items() for i, m in enumerate(ms)]
    return pd.DataFrame(rows)


def test_solved_is_a_finished_run_at_or_above_the_threshold():
    runs = with_solved(runs_table(), curves_table(), 0.95)
    assert runs["solved"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(runs["solved_step"], [20, np.nan, 10, np.nan])  # the diverged run's curve counts
    assert (runs["solve_threshold"] == 0.95).all()
    # placed after the baselines, and replaced (not repeated) when derived again
    again = with_solved(runs, curves_table(), 0.5)
    assert list(again.columns[again.columns.get_loc("baseline_metric") + 1 :][:3]) == [
        "solve_threshold",
        "solved",
        "solved_step",
    ]
    assert again["solved"].tolist() == [True, True, False, False]
    np.testing.assert_array_equal(again["solved_step"], [10, 10, 10, np.nan])


def test_solved_when_every_run_failed():
    failed = runs_table().iloc[3:].drop(columns=["final_metric"])
    runs = with_solved(failed, pd.DataFrame(), 0.95)
    assert runs["solved"].tolist() == [False] and runs["solved_step"].isna().all()


def test_summary_aggregates_seeds_per_configuration():
    runs = pd.concat([runs_table(), runs_table().iloc[:1].assign(run="e", model="rnn")])
    table = summary(with_solved(runs, curves_table(), 0.95))
    assert table[["model", "seeds", "diverged", "failed", "solved"]].values.tolist() == [
        ["lstm", 4, 1, 1, 1],
        ["rnn", 1, 0, 0, 1],
    ]
    lstm, rnn = table.iloc[0], table.iloc[1]
    assert lstm["final_metric"] == np.mean([0.97, 0.5])
    assert lstm["final_metric_std"] == np.std([0.97, 0.5], ddof=1)
    assert math.isnan(rnn["final_metric_std"])  # one run: no spread
    assert lstm["solved_step"] == 15.0  # median of 20 (a) and 10 (c)
    assert lstm["growth_rate_init"] == -0.25 and lstm["growth_rate_final"] == 0.05  # medians, NaN skipped
    assert lstm["baseline_metric"] == 0.1


def test_changing_the_threshold_re_reports_without_retraining(write_experiment, tmp_path, cache_dir, capsys):
    out = tmp_path / "out"
    text = TINY.replace('cell = ["rnn", "lstm"]', 'cell = "rnn"').replace("[0, 1]", "[0]")
    assert main(["run", str(write_experiment(text)), "--out", str(out), "--no-plot"]) == 0
    before = store.load(out).runs
    assert before["solve_threshold"].tolist() == [0.95] and not before["solved"].any()  # 20 steps: far from solved
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.parquet")}
    capsys.readouterr()

    lenient = text + "\n[report]\nsolve_threshold = 0.01\n"
    assert main(["run", str(write_experiment(lenient)), "--out", str(out), "--no-plot"]) == 0
    assert "0 runs computed, 1 already done" in capsys.readouterr().out
    after = store.load(out).runs
    assert after["run"].tolist() == before["run"].tolist()
    assert after["solve_threshold"].tolist() == [0.01] and after["solved"].all()
    assert after["solved_step"].tolist() == [0.0]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.parquet")} == mtimes  # nothing rewritten
    assert pd.read_csv(out / "summary.csv")["solved"].all()
