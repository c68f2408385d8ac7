"""What the numbers mean: 'solved' derived at read time from a reporting threshold, and the `lrd show` summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, snapshot_files

from lrd import store
from lrd.cli import main
from lrd.dynamics import Dynamics
from lrd.results import (
    OUTCOME_RULE,
    _stacked,
    best_lr_runs,
    choose_lr,
    dynamics_table,
    outcome,
    outcome_text,
    reaches,
    still_improving,
    summary,
    wilson_interval,
    with_solved,
    with_trend,
)


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


def test_a_run_that_stopped_counts_as_solved_only_if_its_evaluation_reaches_the_threshold():
    # stop_when_solved: a stopped (its check passed, its probe reached 0.95) and then evaluates at 0.94: below
    # the threshold, so unsolved, with or without stopping; the stop decides nothing about solved
    runs = runs_table().assign(final_metric=[0.94, 0.5, math.nan, math.nan], stop_when_solved=True)
    curves = curves_table()
    curves.loc[(curves["run"] == "a") & (curves["step"] == 20), "metric"] = 0.95
    assert with_solved(runs, curves, 0.95)["solved"].tolist() == [False] * 4
    assert with_solved(runs.assign(stop_when_solved=False), curves, 0.95)["solved"].tolist() == [False] * 4
    assert with_solved(runs.assign(final_metric=[0.95, 0.5, 1.0, 1.0]), curves, 0.95)["solved"].tolist() == [
        True,
        False,
        False,  # diverged: no final model
        False,  # never trained
    ]


def test_the_threshold_comparison_is_exact_at_the_boundary_in_every_precision():
    """608/640 reaches 0.95 and 607/640 does not: as float32 (training, JAX), float64 and pandas (the tables)."""
    import jax.numpy as jnp

    at, below = 608 / 640, 607 / 640
    assert float(np.float32(at)) < 0.95  # the float32 rounding that made stopped runs look unsolved
    for value, want in ((at, True), (below, False), (1.0, True), (0.0, False), (math.nan, False)):
        assert bool(reaches(value, 0.95)) is want
        assert bool(reaches(np.float32(value), 0.95)) is want
        assert bool(reaches(jnp.float32(value), 0.95)) is want  # the compiled stop check's operands
        assert reaches(pd.Series([value]), 0.95).tolist() == [want]
    # a float32 mean of chunk means, as the evaluation computes it, lands on the same side
    chunks = np.array([152 / 160, 150 / 160, 154 / 160, 152 / 160], np.float32)  # 608 of 640 in 4 chunks
    assert bool(reaches(jnp.mean(jnp.asarray(chunks)), 0.95))
    chunks[0] = np.float32(151 / 160)  # 607 of 640
    assert not bool(reaches(jnp.mean(jnp.asarray(chunks)), 0.95))
    # one count below the threshold is below it, for every set of up to 200,000 scored values at 19/20
    for n in (20, 640, 1000, 10240, 2**17, 200_000):
        k = math.ceil(0.95 * n - 1e-9)
        assert bool(reaches(np.float32(k / n), 0.95)) and not bool(reaches(np.float32((k - 1) / n), 0.95))


def test_three_outcomes_solved_failed_undecided():
    runs = with_solved(runs_table().assign(final_metric=[0.97, 0.5, math.nan, math.nan]), curves_table(), 0.95)
    runs["still_improving"] = [False, True, False, False]
    assert outcome(runs).tolist() == ["solved", "undecided", "failed", ""]  # done, improving, diverged, never trained
    runs["still_improving"] = False
    assert outcome(runs).tolist() == ["solved", "failed", "failed", ""]
    assert outcome_text(3, 1, 5) == "3 solved / 1 undecided / 5"
    assert "final evaluation metric" in OUTCOME_RULE and "decided" in OUTCOME_RULE


def test_the_success_interval_is_over_the_decided_runs():
    """0 solved, 4 undecided, 1 failed of 5: the interval of 0/1, not of 0/5, with the 4 undecided beside it."""
    runs = pd.DataFrame(
        {
            "run": list("abcde"),
            "task": "copy",
            "gap": 20,
            "model": "lstm",
            "hidden": 8,
            "seed": range(5),
            "status": "done",
            "final_metric": [0.5, 0.6, 0.7, 0.8, 0.3],
            "baseline_metric": 0.125,
        }
    )
    runs = with_solved(runs, pd.DataFrame(), 0.95).assign(still_improving=[True, True, True, True, False])
    row = summary(runs).iloc[0]
    assert (row["solved"], row["undecided"], row["unsolved"], row["decided"], row["trained"]) == (0, 4, 1, 1, 5)
    assert (row["success_lo"], row["success_hi"]) == wilson_interval(0, 1)
    assert row["success"] == 0.0
    assert summary(runs.assign(still_improving=False)).iloc[0]["success_hi"] == wilson_interval(0, 5)[1]


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
    assert lstm["solved_step"] == 20.0  # over the solved runs only: a (c reached it on its probe, then diverged)
    assert lstm["growth_rate_init"] == -0.25 and lstm["growth_rate_final"] == 0.05  # medians, NaN skipped
    assert lstm["baseline_metric"] == 0.1


def test_changing_the_threshold_re_reports_without_retraining(write_experiment, tmp_path, cache_dir, capsys):
    out = tmp_path / "out"
    text = TINY.replace('cell = ["rnn", "lstm"]', 'cell = "rnn"').replace("[0, 1]", "[0]")
    assert main(["run", str(write_experiment(text)), "--out", str(out), "--no-plot"]) == 0
    before = store.load(out).runs
    assert before["solve_threshold"].tolist() == [0.95] and not before["solved"].any()  # 20 steps: far from solved
    mtimes = snapshot_files(out / "tables")  # packed: every run finished
    assert "runs.parquet" in mtimes
    capsys.readouterr()

    lenient = text + "\n[report]\nsolve_threshold = 0.01\n"
    assert main(["run", str(write_experiment(lenient)), "--out", str(out), "--no-plot"]) == 0
    assert "0 runs computed, 1 already done" in capsys.readouterr().out
    after = store.load(out).runs
    assert after["run"].tolist() == before["run"].tolist()
    assert after["solve_threshold"].tolist() == [0.01] and after["solved"].all()
    assert after["solved_step"].tolist() == [0.0]
    assert snapshot_files(out / "tables") == mtimes  # nothing rewritten
    assert pd.read_csv(out / "runs.csv.gz")["solved"].all()
    summary = pd.read_csv(out / "summary.csv")  # one row per configuration, the numbers lrd show prints
    assert summary[["solved", "undecided", "trained"]].values.tolist() == [[1, 0, 1]]


# --- still improving -------------------------------------------------------------------------
STEPS = np.arange(0, 2001, 50)  # 41 log points: the window is the last 11 (steps 1500 to 2000)


def noisy(loss, seed=0, sigma=0.05):
    """``loss`` times log-normal noise of ``sigma``: the jitter of a probe-batch loss."""
    return loss * np.exp(np.random.default_rng(seed).normal(0, sigma, loss.shape))


def test_still_improving_flags_a_loss_still_falling_at_the_end():
    falling = noisy(2.0 * np.exp(-STEPS / 800))  # halves every 550 steps, to the end
    assert still_improving(STEPS, falling)
    for seed in range(5):  # a noisy plateau is not a trend
        plateau = noisy(np.full(STEPS.shape, 0.3), seed=seed, sigma=0.2)
        assert not still_improving(STEPS, plateau)


def test_still_improving_looks_at_the_last_quarter_only():
    learnt_then_flat = noisy(np.maximum(2.0 * np.exp(-STEPS / 200), 0.05))  # flat from step ~740
    assert not still_improving(STEPS, learnt_then_flat)
    flat_then_learning = noisy(np.where(STEPS < 1500, 2.0, 2.0 * np.exp(-(STEPS - 1500) / 300)))
    assert still_improving(STEPS, flat_then_learning)  # the late take-off the issue describes


def test_still_improving_ignores_small_drifts_and_short_or_broken_curves():
    polishing = 1e-3 * np.exp(-STEPS / 1e5)  # falls clearly but by 0.5% over the window: not a budget problem
    assert not still_improving(STEPS, polishing)
    assert not still_improving(STEPS[:3], np.array([3.0, 2.0, 1.0]))  # too few points to judge
    assert not still_improving(STEPS, np.where(STEPS == 2000, np.nan, np.exp(-STEPS / 100.0)))


def test_with_trend_judges_finished_runs_up_to_their_steps_trained():
    falling = 2.0 * np.exp(-STEPS / 800)
    frozen = np.where(STEPS <= 1000, falling, falling[STEPS == 1000][0])  # stopped (solved) at step 1000
    curves = pd.concat(
        [
            pd.DataFrame({"run": r, "step": STEPS, "loss": loss})
            for r, loss in (("a", falling), ("b", frozen), ("c", falling))
        ]
    )
    runs = pd.DataFrame(
        {"run": ["a", "b", "c"], "status": ["done", "done", "diverged"], "steps_trained": [2000, 1000, 2000]}
    )
    # b: its curve up to step 1000 is still falling; after it, frozen (not judged); c: diverged, not judged
    assert with_trend(runs, curves)["still_improving"].tolist() == [True, True, False]
    assert with_trend(runs.drop(columns="steps_trained"), curves)["still_improving"].tolist() == [True, False, False]
    solved = runs.assign(solved=[True, False, False])  # a solved run's falling loss is no budget problem
    assert with_trend(solved, curves)["still_improving"].tolist() == [False, True, False]


# --- success rates -------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(0, 3), (1, 3), (2, 5), (5, 5), (7, 10), (0, 1)])
def test_wilson_interval_inverts_the_score_test(k, n):
    """Each finite end p0 of the interval solves |k/n - p0| = z sqrt(p0 (1 - p0) / n) (Wilson 1927)."""
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    z = 1.959963984540054
    for end in (lo, hi):
        if 0.0 < end < 1.0:
            assert abs(k / n - end) == pytest.approx(z * math.sqrt(end * (1 - end) / n), rel=1e-9)
    if k == 0:
        assert lo == 0.0 and hi == pytest.approx(z * z / (n + z * z))
    if k == n:
        assert hi == 1.0 and lo == pytest.approx(n / (n + z * z))
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --- the learning-rate selection rule -------------------------------------------------------------
def grid_runs() -> pd.DataFrame:
    """lstm at gap 10, three learning rates x two seeds; gap 20 at one learning rate."""
    rows = []
    valid = {1e-3: [0.5, 0.6], 3e-3: [0.9, 0.8], 1e-2: [0.95, math.nan]}  # 1e-2 seed 1 diverged
    final = {1e-3: [0.99, 0.99], 3e-3: [0.7, 0.7], 1e-2: [0.9, math.nan]}  # the evaluation set prefers 1e-3
    for lr in valid:
        for seed in (0, 1):
            status = "diverged" if math.isnan(valid[lr][seed]) else "done"
            rows.append(("lstm", 10, lr, seed, status, valid[lr][seed], final[lr][seed]))
    rows += [("lstm", 20, 3e-3, seed, "done", 0.4, 0.4) for seed in (0, 1)]
    columns = ["model", "gap", "lr", "seed", "status", "final_valid_metric", "final_metric"]
    runs = pd.DataFrame(rows, columns=columns).assign(task="copy", hidden=8, final_valid_loss=1.0)
    return runs.assign(run=[f"r{i}" for i in range(len(runs))])


def test_the_learning_rate_is_chosen_on_the_validation_metric():
    chosen = choose_lr(grid_runs()).set_index("gap")
    # 3e-3: mean 0.85; 1e-2: (0.95 + 0, diverged) / 2 = 0.475; 1e-3: 0.55 -- whatever the evaluation set says
    assert chosen.loc[10, "lr"] == 3e-3 and chosen.loc[10, "lrs"] == 3 and not chosen.loc[10, "lr_at_edge"]
    assert chosen.loc[10, "valid_metric"] == pytest.approx(0.85)
    assert chosen.loc[20, "lr"] == 3e-3 and chosen.loc[20, "lrs"] == 1 and not chosen.loc[20, "lr_at_edge"]
    runs = grid_runs()
    best = best_lr_runs(runs)
    assert sorted(best["lr"].unique()) == [3e-3] and len(best) == 4 and (best["lrs"] == [3, 3, 1, 1]).all()
    assert len(runs) == 8  # the raw per-lr runs stay where they were


def test_a_choice_at_the_grids_edge_is_flagged_and_ties_go_to_the_lower_validation_loss():
    runs = grid_runs()
    runs.loc[runs["lr"] == 1e-3, "final_valid_metric"] = 0.99  # the smallest lr now wins
    assert choose_lr(runs).set_index("gap").loc[10, "lr_at_edge"]
    runs.loc[runs["lr"] == 3e-3, "final_valid_metric"] = 0.99  # a tie between 1e-3 and 3e-3 ...
    runs.loc[runs["lr"] == 3e-3, "final_valid_loss"] = 0.5  # ... broken by the validation loss
    chosen = choose_lr(runs).set_index("gap").loc[10]
    assert chosen["lr"] == 3e-3 and not chosen["lr_at_edge"]


def test_several_learning_rates_without_a_validation_metric_cannot_be_chosen():
    with pytest.raises(ValueError, match="final_valid_metric"):
        choose_lr(grid_runs().drop(columns=["final_valid_metric", "final_valid_loss"]))
    single = grid_runs()[grid_runs()["lr"] == 3e-3].drop(columns=["final_valid_metric", "final_valid_loss"])
    assert choose_lr(single)["lr"].tolist() == [3e-3, 3e-3]  # stored studies of one lr: nothing to choose


def test_summary_reports_success_with_its_interval_at_the_chosen_learning_rate():
    runs = with_solved(grid_runs(), pd.DataFrame(), 0.75).assign(
        baseline_metric=0.1, decay_length_init=1.0, decay_length_final=1.0
    )
    runs["still_improving"] = runs["seed"] == 0
    table = summary(runs).set_index("gap")
    row = table.loc[10]  # lr 3e-3: final metrics 0.7, 0.7 -> none solved at 0.75
    assert (row["lr"], row["lrs"], row["seeds"], row["solved"], row["trained"]) == (3e-3, 3, 2, 0, 2)
    assert (row["success_lo"], row["success_hi"]) == wilson_interval(0, 1)  # seed 0 undecided: 0 of 1 decided
    assert row["still_improving"] == 1 and row["undecided"] == 1 and row["final_metric"] == pytest.approx(0.7)


def test_fit_line_recovers_a_line_and_refuses_too_few_points():
    from lrd.results import fit_line

    x = np.array([-0.3, -0.1, 0.0, 0.2, np.nan])
    fit = fit_line(x, 2 * x + 0.5)
    assert fit.slope == pytest.approx(2) and fit.intercept == pytest.approx(0.5) and fit.r == pytest.approx(1)
    assert fit.n == 4  # the NaN pair left out
    assert np.isnan(fit_line([1.0, 2.0], [1.0, 2.0]).slope)


def test_growth_and_exponent_pairs_first_and_last_trained_steps_and_takes_the_largest_exponent():
    """Two runs, one stopped at step 100 of 300: its final stage is step 100, not the frozen steps after it."""
    from lrd.results import growth_and_exponent

    runs = pd.DataFrame(
        {
            "run": ["a", "b"],
            "model": ["rnn", "lstm"],
            "gap": [10, 10],
            "status": ["done", "done"],
            "steps": [300, 300],
            "steps_trained": [300, 100],
            "diverged_step": [-1, -1],
        }
    )
    steps = [0, 100, 200, 300]
    curves = pd.DataFrame(
        [
            (run, s, rate)
            for run, rates in {"a": [-0.2, -0.15, -0.1, -0.05], "b": [0.1, 0.0, 9.0, 9.0]}.items()
            for s, rate in zip(steps, rates)
        ],
        columns=["run", "step", "growth_rate"],
    )
    # two exponents per log point, in QR order: the larger is not always the first
    exponents = {
        "a": [(-0.3, -0.2), (-0.15, -0.4), (-0.1, -0.5), (-0.6, -0.05)],
        "b": [(0.1, 0.0), (-0.1, 0.0), (9, 9), (9, 9)],
    }
    dynamics = pd.DataFrame(
        [
            (run, s, "lyapunov", "", i + 1, v)
            for run, rows in exponents.items()
            for s, pair in zip(steps, rows)
            for i, v in enumerate(pair)
        ],
        columns=["run", "step", "quantity", "gate", "index", "value"],
    )
    table = growth_and_exponent(runs, curves, dynamics).set_index(["run", "stage"])
    assert table.loc[("a", "init"), ["step", "growth_rate", "top_exponent"]].tolist() == [0, -0.2, -0.2]
    assert table.loc[("a", "final"), ["step", "growth_rate", "top_exponent"]].tolist() == [300, -0.05, -0.05]
    assert table.loc[("b", "final"), ["step", "growth_rate", "top_exponent"]].tolist() == [100, 0.0, 0.0]
    assert len(table) == 4


def test_rank_auc_counts_pairs_and_gives_hanley_mcneil_interval():
    from lrd.results import rank_auc

    assert rank_auc([1, 2, 3, 4], [False, False, True, True]).auc == 1.0
    assert rank_auc([4, 3, 2, 1], [False, False, True, True]).auc == 0.0
    assert rank_auc([1, 1, 1, 1], [False, True, False, True]).auc == 0.5  # ties count half
    got = rank_auc([1, 2, 3, 4], [False, True, False, True])  # pairs (2>1), (2<3), (4>1), (4>3): 3 of 4
    se = math.sqrt((0.75 * 0.25 + (0.75 / 1.25 - 0.75**2) + (2 * 0.75**2 / 1.75 - 0.75**2)) / 4)  # Hanley-McNeil
    assert got.auc == 0.75 and got.lo == pytest.approx(max(0, 0.75 - 1.959964 * se)) and got.hi == 1.0
    assert math.isnan(rank_auc([1, 2], [True, True]).auc)


def test_summary_gives_a_row_per_task_parameter_that_varies_within_a_task():
    """Two groups of one task (a grid over a task parameter) are two rows, not one mixing their seeds."""
    runs = pd.concat(
        [runs_table().assign(task_group=group, final_metric=metric) for group, metric in (("z2", 1.0), ("s3", 0.2))],
        ignore_index=True,
    )
    runs["run"] = [f"r{i}" for i in range(len(runs))]
    table = summary(runs)
    labels = sorted(table["task"].unique())
    assert labels == [f"{runs['task'].iloc[0]}, group=s3", f"{runs['task'].iloc[0]}, group=z2"]
    assert len(table) == 2 * len(summary(runs_table()))
    by_task = table.groupby("task")["final_metric"].mean()
    assert by_task[labels[0]] == pytest.approx(0.2) and by_task[labels[1]] == pytest.approx(1.0)
    assert summary(runs_table())["task"].tolist() == ["adding"]  # one set of parameters: the plain task name


def test_an_eigenvalue_range_is_a_setting_of_its_own():
    """deltanet at "[-1,1]" and at its default (stored as absent) are two configurations: two rows, lr chosen apart."""
    runs = pd.concat(
        [
            runs_table().assign(model="deltanet", eigen_range=r, final_metric=m)
            for r, m in (("[-1,1]", 1.0), (None, 0.5))
        ],
        ignore_index=True,
    )
    runs["run"] = [f"r{i}" for i in range(len(runs))]
    table = summary(runs)
    assert sorted(table["model"]) == ["deltanet, eigen_range=[-1,1]", "deltanet, eigen_range=[0,1]"]
    assert table.set_index("model")["final_metric"].to_dict() == {
        "deltanet, eigen_range=[-1,1]": 1.0,
        "deltanet, eigen_range=[0,1]": 0.5,
    }


def test_summary_gives_a_row_per_setting_that_varies_within_a_model():
    """A sweep over the tanh RNN's initial gain: one row per gain, named by it; a plain model keeps its name."""
    from lrd.results import summary

    rows = []
    for model, gains in (("rnn", (0.5, float("nan"))), ("lstm", (float("nan"),))):  # NaN: the default gain, 1
        for gain in gains:
            for seed in (0, 1):
                rows.append(
                    {
                        "run": f"{model}-{gain}-{seed}",
                        "task": "delayed_recall",
                        "gap": 20,
                        "model": model,
                        "cell": model,
                        "hidden": 32,
                        "recurrent_gain": gain,
                        "seed": seed,
                        "status": "done",
                        "final_metric": 0.2 if gain == 0.5 else 1.0,
                        "baseline_metric": 0.125,
                        "solved": gain != 0.5,
                        "solved_step": 100.0,
                        "growth_rate_init": -0.1,
                        "growth_rate_final": 0.0,
                    }
                )
    table = summary(pd.DataFrame(rows)).set_index("model")
    assert sorted(table.index) == ["lstm", "rnn, recurrent_gain=0.5", "rnn, recurrent_gain=1"]
    assert table.loc["rnn, recurrent_gain=0.5", "solved"] == 0 and table.loc["rnn, recurrent_gain=1", "solved"] == 2


def _dynamics(length: int, pmb: bool, gates: tuple[str, ...]) -> Dynamics:
    """Two members' diagnostics at one log point, with distinct values."""
    values = lambda *shape: np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 7
    return Dynamics(
        sigma_max=values(2, length),
        pmb_bound=values(2, length) if pmb else np.full((2, length), np.nan, np.float32),
        lyapunov=values(2, 3),
        lyapunov_roundoff=values(2, 3) / 10,
        quantiles={gate: values(2, 5) + i for i, gate in enumerate(gates)},
        saturated={gate: values(2) + i for i, gate in enumerate(gates)},
        time_constant=values(2, 5) if gates else np.full((2, 5), np.nan, np.float32),
    )


@pytest.mark.parametrize(
    ("pmb", "gates", "profile"), [(True, (), True), (False, ("f", "i"), True), (False, ("z",), False)]
)
def test_the_dynamics_rows_are_those_of_a_table_per_quantity(pmb, gates, profile):
    """Built as one table, the rows equal a table per quantity and step, concatenated (as written before)."""
    steps = [(0, _dynamics(6, pmb, gates)), (50, _dynamics(6, pmb, gates))]
    built = pd.concat([dynamics_table(d, 1, step, profile) for step, d in steps], ignore_index=True)
    expected = []
    for step, d in steps:
        quantities = [("sigma_max", d.sigma_max[1], np.arange(6), "")] if profile else []
        if profile and pmb:
            quantities.append(("pmb_bound", d.pmb_bound[1], np.arange(6), ""))
        quantities += [
            ("lyapunov", d.lyapunov[1], [1, 2, 3], ""),
            ("lyapunov_roundoff", d.lyapunov_roundoff[1], [1, 2, 3], ""),
        ]
        for gate in gates:
            quantities += [("gate_quantile", d.quantiles[gate][1], [5, 25, 50, 75, 95], gate)]
            quantities += [("saturated", [d.saturated[gate][1]], [0], gate)]
        if gates:
            quantities.append(("time_constant", d.time_constant[1], [5, 25, 50, 75, 95], ""))
        for quantity, values, positions, gate in quantities:
            frame = pd.DataFrame(
                {"quantity": quantity, "gate": gate, "index": positions, "value": np.asarray(values, np.float64)}
            )
            frame.insert(0, "step", step)
            expected.append(frame.astype({"index": np.int64}))
    pd.testing.assert_frame_equal(built, pd.concat(expected, ignore_index=True), check_exact=True)


def test_a_stacked_table_is_the_concatenation_of_a_table_per_part():
    parts = [
        {"step": s, "state": state, "timestep": np.arange(4), "norm": np.arange(4) * (s + 1.5), "low": np.arange(4) > 1}
        for s in (0, 50)
        for state in ("h", "c")
    ]
    expected = pd.concat([pd.DataFrame(part) for part in parts], ignore_index=True)
    pd.testing.assert_frame_equal(_stacked(parts), expected, check_exact=True)
