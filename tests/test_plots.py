"""Figures read back from their matplotlib artists equal the values of tiny hand-made tables.

The tables: delayed recall, models rnn and lstm, gaps 3 and 6, seeds 0 and 1, log
points at steps 0, 10, 20. The gradient norm has a closed form,
norm = BASE[model, state]**distance * (1 + seed) * (1 + step / 10), so the
geometric mean over the two seeds is BASE**d * sqrt(2) * (1 + step / 10); the
expected values below come from that formula, not from the plotting code's path.
rnn at gap 6 seed 1 diverges at step 10; rnn at gap 6 seed 0 has its t = 0 norm
below float32's floor at step 20. The growth rate, block statistics and dynamics rows
likewise follow closed forms (``rate``, ``block``, ``lyapunov``, ``forget_quantiles``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrd import plots
from lrd.plots import FigureSkipped, PlotError, writing
from lrd.plots.style import CELL_COLOURS
from lrd.results import wilson_interval
from lrd.schema import FLOOR, Results

GAPS = (3, 6)
SEEDS = (0, 1)
STEPS = (0, 10, 20)
BASE = {("rnn", "h"): 0.5, ("lstm", "h"): 0.9, ("lstm", "c"): 0.8, ("gru", "h"): 0.7}
STATES = {"rnn": ("h",), "lstm": ("c", "h"), "gru": ("h",)}
FINAL = {("rnn", 3): (0.6, 0.8), ("rnn", 6): (0.2, math.nan), ("lstm", 3): (1.0, 0.98), ("lstm", 6): (0.97, 0.9)}
BASELINE_LOSS, BASELINE_METRIC = math.log(8), 0.125
DIVERGED = ("rnn", 6, 1, 10)  # model, gap, seed, step
BELOW = ("rnn", 6, 0, 20, 0)  # model, gap, seed, step, timestep
GROWING = ("lstm", 6, 1, 10)  # model, gap, seed, step whose gradient grows with distance
QUANTILE_PERCENT = (5, 25, 50, 75, 95)


def run_id(model, gap, seed) -> str:
    return f"{model}-g{gap}-s{seed}"


def length(gap) -> int:
    return gap + 2


def distance(gap, t) -> int:
    return (length(gap) - 2) - t  # scored window: the last two positions


def norm(model, state, gap, seed, step, t) -> float:
    return BASE[model, state] ** distance(gap, t) * (1 + seed) * (1 + step / 10)


def rate(model, gap, seed, step) -> float:
    return 0.2 if (model, gap, seed, step) == GROWING else -1.0 / (5.0 + gap + step / 10 + seed)


def block(step, seed) -> dict:
    if step == 0:  # no block before the first log point
        return {
            "grad_norm_max": math.nan,
            "grad_norm_mean": math.nan,
            "clipped_fraction": math.nan,
            "loss_spikes": math.nan,
        }
    return {
        "grad_norm_max": 2 + step / 10 + seed,
        "grad_norm_mean": 1 + seed,
        "clipped_fraction": 0.5 * seed,
        "loss_spikes": float(seed),
    }


def lyapunov(model, seed, step) -> float:
    return -0.1 * (1 + seed) + step / 100 + (0.05 if model == "lstm" else 0.0)


def forget_quantiles(seed, step) -> list[float]:
    return [0.6 + 0.05 * i + step / 1000 + seed / 100 for i in range(5)]


def loss(model, gap, seed, step) -> float:
    return BASELINE_LOSS * math.exp(-step / (10 * gap)) * (1.5 if model == "rnn" else 1.0) + 0.01 * seed


def make_results(gaps=GAPS, models=("rnn", "lstm"), task="delayed_recall") -> Results:
    runs, curves, grads, dynamics = [], [], [], []
    for model in models:
        cell = model.removeprefix("bi-")
        for gap in gaps:
            for seed in SEEDS:
                diverged = (model, gap, seed) == DIVERGED[:3]
                steps = [s for s in STEPS if not diverged or s <= DIVERGED[3]]
                final = FINAL.get((model, gap), (0.5, 0.5))[seed]
                rid = run_id(model, gap, seed)
                runs.append(
                    {
                        "run": rid,
                        "experiment": "toy",
                        "task": task,
                        "gap": gap,
                        "task_length": length(gap),
                        "metric_name": "accuracy",
                        "task_source": "hand-made",
                        "task_convention": "one symbol, gap distractors, a cue",
                        "task_n_symbols": 8,
                        "task_distractor": "random",
                        "model": model,
                        "cell": cell,
                        "hidden": 16,
                        "layers": 1,
                        "bidirectional": model.startswith("bi-"),
                        "merge": "concat",
                        "recurrent_init": "orthogonal",
                        "forget_bias": 1.0 if cell == "lstm" else math.nan,
                        "seed": seed,
                        "steps": 20,
                        "batch_size": 8,
                        "optimizer": "adam",
                        "lr": 1e-3,
                        "clip": 1.0,
                        "log_every": 10,
                        "eval_size": 64,
                        "probe_size": 8,
                        "status": "diverged" if diverged else "done",
                        "diverged_step": float(DIVERGED[3]) if diverged else math.nan,
                        "final_loss": math.nan if diverged else loss(model, gap, seed, 20),
                        "final_metric": math.nan if diverged else final,
                        "baseline_loss": BASELINE_LOSS,
                        "baseline_metric": BASELINE_METRIC,
                        "solve_threshold": 0.95,
                        "solved": (not diverged) and final >= 0.95,
                        "solved_step": 10.0 if (not diverged) and final >= 0.95 else math.nan,
                        "growth_rate_init": -1.0,
                        "growth_rate_final": -1.0,
                        "wall_time_s": 0.1,
                        "group_size": 2,
                    }
                )
                for step in steps:
                    curves.append(
                        {
                            "run": rid,
                            "step": step,
                            "loss": loss(model, gap, seed, step),
                            "metric": 0.5,
                            "grad_norm": 1.0,
                            "growth_rate": rate(model, gap, seed, step),
                            "e_folding_length": math.nan,
                            **block(step, seed),
                        }
                    )
                    dyn = [("lyapunov", "", 1, lyapunov(cell, seed, step)), ("lyapunov", "", 2, -1.0)]
                    dyn += [("sigma_max", "", t, math.exp(lyapunov(cell, seed, step))) for t in range(length(gap))]
                    if cell == "lstm":
                        for p, q in zip(QUANTILE_PERCENT, forget_quantiles(seed, step)):
                            dyn += [("gate_quantile", "forget", p, q), ("time_constant", "", p, 1 / (1 - q))]
                        dyn.append(("saturated", "forget", 0, 0.1 * seed))
                    dynamics += [
                        {"run": rid, "step": step, "quantity": q, "gate": g, "index": i, "value": v}
                        for q, g, i, v in dyn
                    ]
                    for state in STATES[cell]:
                        for t in range(length(gap)):
                            below = (model, gap, seed, step, t) == BELOW and state == "h"
                            value = FLOOR if below else norm(cell, state, gap, seed, step, t)
                            grads.append(
                                {
                                    "run": rid,
                                    "step": step,
                                    "layer": 0,
                                    "direction": "fwd",
                                    "state": state,
                                    "timestep": t,
                                    "distance": distance(gap, t),
                                    "norm": value,
                                    "below_floor": below,
                                }
                            )
    return Results(pd.DataFrame(runs), pd.DataFrame(curves), pd.DataFrame(grads), dynamics=pd.DataFrame(dynamics))


@pytest.fixture(scope="module")
def results() -> Results:
    return make_results()


def artists(fig, gid):
    """Every artist of ``fig`` with this gid, in drawing order."""
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


def notes(fig) -> str:
    """The notes on the data under a figure (its legend's heading), one line."""
    return " ".join(fig.legends[0].get_title().get_text().split())


def one(fig, gid):
    found = artists(fig, gid)
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


# --- 1. vanishing gradients -------------------------------------------------------------------------
def test_vanishing_gradients_plots_geometric_mean_over_seeds(results):
    fig = plots.vanishing_gradients(results.runs, results.grad_norms)  # default gap: 6, where lstm solved
    d = np.arange(distance(6, 0), -1, -1)[::-1]  # distances 0..6, increasing
    for model, state in [k for k in BASE if k[0] != "gru"]:
        for panel, step in ((0, 0), (1, 20)):
            xy = one(fig, f"mean:{model}:{state}:{panel}").get_xydata()
            np.testing.assert_array_equal(xy[:, 0], d)
            if model == "lstm":  # both seeds: geometric mean of (1 + seed) is sqrt(2)
                expected = BASE[model, state] ** d * math.sqrt(2) * (1 + step / 10)
            else:  # rnn: seed 1 diverged, so seed 0 only
                expected = BASE[model, state] ** d * (1 + step / 10)
            if (model, panel) == ("rnn", 1):  # t = 0 (distance 6) is below the floor: no data point
                expected[-1] = np.nan
            np.testing.assert_allclose(xy[:, 1], expected, rtol=1e-12)
    # lstm band: min and max over seeds, i.e. seed 0 and seed 1 (twice as large)
    band = one(fig, "band:lstm:h:0").get_paths()[0].vertices
    np.testing.assert_allclose(band[:, 1].min(), 0.9**6, rtol=1e-12)
    np.testing.assert_allclose(band[:, 1].max(), 2.0, rtol=1e-12)
    # the below-floor point is marked on the floor, not drawn as data
    np.testing.assert_array_equal(one(fig, "below_floor:rnn:h:1").get_offsets(), [[6, FLOOR]])
    assert not artists(fig, "below_floor:rnn:h:0")
    assert len(artists(fig, "floor_band")) == 2
    assert "below float32 range" in [t.get_text() for t in fig.legends[0].get_texts()][-3]
    title = fig._suptitle.get_text()
    assert "gap 6" in title and "delayed_recall" in title and len(title.splitlines()) <= 2
    assert "convention" not in title and "baseline" not in title  # in the caption, not the title
    caption = plots.base.task_caption(results.runs)
    assert "one symbol, gap distractors" in caption and "loss 2.079" in caption and "accuracy 0.125" in caption
    assert "1 diverged run" in notes(fig)


def test_vanishing_gradients_at_a_chosen_gap_without_floor(results):
    fig = plots.vanishing_gradients(results.runs, results.grad_norms, gap=3)
    xy = one(fig, "mean:rnn:h:1").get_xydata()
    np.testing.assert_allclose(xy[:, 1], 0.5 ** np.arange(4) * math.sqrt(2) * 3, rtol=1e-12)
    assert not artists(fig, "floor_band")
    with pytest.raises(PlotError, match="no runs at gap 7; gaps present: 3, 6"):
        plots.vanishing_gradients(results.runs, results.grad_norms, gap=7)


# --- 2. heatmap ---------------------------------------------------------------------------------
def test_gradient_heatmap_is_mean_log10_with_shared_scale(results):
    fig = plots.gradient_heatmap(results.runs, results.grad_norms)
    steps, t = np.array(STEPS)[:, None], np.arange(length(6))[None, :]
    lstm = one(fig, "heatmap:lstm").get_array()
    expected = np.log10(0.9 ** distance(6, t) * math.sqrt(2) * (1 + steps / 10))  # (steps, timesteps)
    np.testing.assert_allclose(lstm, expected, rtol=1e-12)
    assert not np.ma.getmaskarray(lstm).any()
    rnn = one(fig, "heatmap:rnn").get_array()
    np.testing.assert_allclose(rnn[:2], np.log10(0.5 ** distance(6, t) * (1 + steps[:2] / 10)), rtol=1e-12)
    assert np.ma.getmaskarray(rnn).tolist()[2] == [True] + [False] * (length(6) - 1)  # the below-floor cell
    meshes = [artists(fig, f"heatmap:{m}")[0] for m in ("rnn", "lstm")]
    assert meshes[0].norm is meshes[1].norm  # one colour scale
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    # the scale spans the measured values only, never the floor
    assert meshes[0].norm.vmin == pytest.approx(np.log10(0.5**6))  # rnn, step 0, t = 0


# --- 3. memory vs gap ---------------------------------------------------------------------------
def test_memory_vs_gap_means_seeds_diverged_baseline_threshold(results):
    fig = plots.memory_vs_gap(results.runs)
    np.testing.assert_allclose(one(fig, "mean:lstm").get_xydata(), [[3, 0.99], [6, 0.935]])
    np.testing.assert_allclose(one(fig, "mean:rnn").get_xydata(), [[3, 0.7], [6, 0.2]])
    assert sorted(map(tuple, one(fig, "seeds:rnn").get_offsets().tolist())) == [(3, 0.6), (3, 0.8), (6, 0.2)]
    np.testing.assert_array_equal(one(fig, "diverged:rnn").get_offsets(), [[6, BASELINE_METRIC]])
    assert not artists(fig, "diverged:lstm")
    np.testing.assert_allclose(one(fig, "baseline").get_xydata(), [[3, 0.125], [6, 0.125]])
    np.testing.assert_allclose(one(fig, "threshold").get_ydata(), [0.95, 0.95])
    assert one(fig, "mean:lstm").get_color() == CELL_COLOURS["lstm"]
    assert not artists(fig, "improving:lstm")  # the fixture has no still_improving column: nothing ringed


def test_memory_vs_gap_draws_the_fraction_solved_with_wilson_intervals(results):
    """No interval around the mean metric; the success rate's Wilson 95% interval per gap, over the trained seeds."""
    fig = plots.memory_vs_gap(results.runs)
    assert len(fig.axes) == 2
    # lstm: gap 3 both solved (1.0, 0.98), gap 6 one of two (0.97, 0.9)
    np.testing.assert_allclose(one(fig, "success:lstm").get_xydata(), [[3, 1.0], [6, 0.5]])
    lo_hi = {round(s[0, 0]): (s[0, 1], s[1, 1]) for s in one(fig, "interval:lstm").get_segments()}
    assert lo_hi[3] == pytest.approx(wilson_interval(2, 2)) and lo_hi[6] == pytest.approx(wilson_interval(1, 2))
    # rnn at gap 6: one seed finished unsolved, one diverged: 0 of 2 trained
    rnn = {round(s[0, 0]): (s[0, 1], s[1, 1]) for s in one(fig, "interval:rnn").get_segments()}
    assert rnn[6] == pytest.approx(wilson_interval(0, 2))
    caption = plots.CAPTIONS["memory_vs_gap"]
    assert "Wilson 95% interval" in caption and "decided" in caption and "bootstrap" not in notes(fig)


def test_memory_vs_gap_rings_runs_still_improving_and_draws_the_chosen_learning_rate(results):
    runs = results.runs.assign(still_improving=results.runs["seed"] == 0)
    fig = plots.memory_vs_gap(runs)
    # the rings are the undecided runs (unsolved and still improving): rnn seed 0 at both gaps, not the lstm's
    # seed 0, which solved
    rings = one(fig, "improving:rnn").get_offsets()
    assert sorted(map(tuple, rings.tolist())) == [(3.0, 0.6), (6.0, 0.2)]
    assert not artists(fig, "improving:lstm")
    # and the fraction is over the decided runs, as the tables count: rnn gap 3, 0 of 1 (seed 0 undecided)
    rnn = {round(s[0, 0]): (s[0, 1], s[1, 1]) for s in one(fig, "interval:rnn").get_segments()}
    assert rnn[3] == pytest.approx(wilson_interval(0, 1)) and rnn[6] == pytest.approx(wilson_interval(0, 1))
    # a learning-rate grid: a copy of every run at lr 1e-2 that validates worse; the figure draws the chosen 1e-3
    low = runs.assign(final_valid_metric=0.9, final_valid_loss=1.0)
    high = low.assign(run=low["run"] + "-hi", lr=1e-2, final_valid_metric=0.1, final_metric=0.0)
    fig = plots.memory_vs_gap(pd.concat([low, high]))
    np.testing.assert_allclose(one(fig, "mean:lstm").get_xydata(), [[3, 0.99], [6, 0.935]])
    text = notes(fig)
    assert "learning rate chosen per gap and model on the validation metric, of 2" in text
    assert "at the grid's edge: widen it" in text  # 1e-3 is the grid's smallest (a wrapped line)


# --- 3b. steps to solve ---------------------------------------------------------------------------
def test_steps_to_solve_draws_unsolved_runs_censored_at_their_budget(results):
    runs = results.runs  # the fixture's solved runs reached the threshold at step 10
    fig = plots.steps_to_solve(runs)
    assert len(one(fig, "solved:lstm").get_offsets()) == int(runs.loc[runs["model"] == "lstm", "solved"].sum())
    rnn = runs[runs["model"] == "rnn"]  # never solved: censored, at 20 steps or, diverged, at step 10
    budgets = np.where(rnn["status"] == "diverged", rnn["diverged_step"], rnn["steps"]).astype(float)
    want = sorted(zip(rnn["gap"].astype(float), budgets))
    assert sorted(map(tuple, one(fig, "censored:rnn").get_offsets().tolist())) == want
    assert np.all(np.isnan(one(fig, "median:rnn").get_ydata()))  # no gap where half the rnn seeds solved
    np.testing.assert_allclose(one(fig, "median:lstm").get_ydata(), [10, 10])
    np.testing.assert_allclose(one(fig, "budget").get_ydata(), [20, 20])
    with pytest.raises(FigureSkipped, match="no run solved"):
        plots.steps_to_solve(results.runs.assign(solved=False))
    # solved is the tables' rule (the evaluation metric): a run whose probe reached the threshold but that
    # evaluates below it is censored, and a solved run whose probe never reached it is drawn at its budget
    edited = runs.assign(solved_step=np.where(runs["model"] == "rnn", 10.0, math.nan))
    fig = plots.steps_to_solve(edited)
    assert sorted(map(tuple, one(fig, "censored:rnn").get_offsets().tolist())) == want
    np.testing.assert_allclose(one(fig, "solved:lstm").get_offsets()[:, 1], 20.0)


# --- 4. learning curves ---------------------------------------------------------------------------
def test_learning_curves_mean_diverged_and_baseline(results):
    fig = plots.learning_curves(results.runs, results.curves)
    for model in ("rnn", "lstm"):
        for gap in GAPS:
            seeds = [s for s in SEEDS if (model, gap, s) != DIVERGED[:3]]
            expected = [np.mean([loss(model, gap, s, step) for s in seeds]) for step in STEPS]
            np.testing.assert_allclose(one(fig, f"mean:{model}:{gap}").get_xydata(), np.c_[STEPS, expected])
        np.testing.assert_allclose(one(fig, f"baseline:{model}").get_ydata(), [BASELINE_LOSS] * 2)
    diverged = one(fig, "diverged:rnn:6:1")
    np.testing.assert_allclose(diverged.get_xydata(), [[0, loss("rnn", 6, 1, 0)], [10, loss("rnn", 6, 1, 10)]])
    assert diverged.get_marker() == "x" and diverged.get_markevery() == [1]
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["rnn", "lstm"]


# --- 5. growth rate ----------------------------------------------------------------------------------
def test_growth_rate_draws_both_signs(results):
    fig = plots.growth_rate_curves(results.runs, results.curves)  # gap 6
    lstm = one(fig, "mean:lstm").get_xydata()
    want = [np.mean([rate("lstm", 6, s, step) for s in SEEDS]) for step in STEPS]
    np.testing.assert_allclose(lstm[:, 1], want)
    assert want[1] > 0 > want[0]  # the growing seed pulls the mean above zero at step 10: drawn, not skipped
    np.testing.assert_allclose(one(fig, "mean:rnn").get_xydata(), [[s, rate("rnn", 6, 0, s)] for s in STEPS])
    np.testing.assert_allclose(one(fig, "gap").get_ydata(), [-1 / 6, -1 / 6])
    np.testing.assert_allclose(one(fig, "zero").get_ydata(), [0, 0])
    assert "1/timestep" in fig.axes[0].get_ylabel()


# --- 6-8. Jacobian spectrum, gates, clipping --------------------------------------------------------
def test_spectrum_lines_are_seed_medians_of_the_quoted_statistic(results):
    fig = plots.spectrum_curves(results.runs, results.dynamics)  # gap 6
    for model in ("lstm", "rnn"):
        seeds = (0, 1) if model == "lstm" else (0,)  # rnn seed 1 diverged
        want = [np.mean([lyapunov(model, s, step) for s in seeds]) for step in STEPS]
        np.testing.assert_allclose(one(fig, f"lyapunov:{model}").get_ydata(), want)
        # the median over timesteps of sigma_max (exp(lambda) at every timestep), then over the seeds
        sigma = [np.median([math.exp(lyapunov(model, s, step)) for s in seeds]) for step in STEPS]
        np.testing.assert_allclose(one(fig, f"sigma:{model}").get_ydata(), sigma, rtol=1e-12)
    assert not artists(fig, "bound:rnn")  # no pmb_bound rows in these tables
    assert "(1/timestep)" in fig.axes[0].get_ylabel()


def test_gate_distributions_at_init_and_end(results):
    fig = plots.gate_distributions(results.runs, results.dynamics)
    for when, step in (("init", 0), ("end", 20)):
        median = np.mean([forget_quantiles(s, step)[2] for s in SEEDS])
        np.testing.assert_allclose(one(fig, f"gate:lstm:forget:{when}").get_ydata(), [median])
        lo, hi = (np.mean([forget_quantiles(s, step)[i] for s in SEEDS]) for i in (0, 4))
        np.testing.assert_allclose(one(fig, f"range:lstm:forget:{when}").get_ydata(), [lo, hi])
    assert [ax.get_visible() for ax in fig.axes] == [True]  # the rnn has no gates: no panel


def test_clipping_lines_are_block_statistics(results):
    fig = plots.clipping_curves(results.runs, results.curves)
    np.testing.assert_allclose(one(fig, "max:lstm").get_xydata(), [[10, 3.5], [20, 4.5]])  # mean of 2 + step/10 + seed
    np.testing.assert_allclose(one(fig, "clipped:lstm").get_ydata(), [0.25, 0.25])
    np.testing.assert_allclose(one(fig, "clip").get_ydata(), [1.0, 1.0])
    assert "lstm 2" in notes(fig)  # loss spikes: seed 1 has one per block, two blocks


def test_results_from_before_the_diagnostics_skip_the_new_figures(tmp_path):
    new = make_results()
    old = Results(
        new.runs.drop(columns=["growth_rate_init", "growth_rate_final"]),
        new.curves.drop(
            columns=[
                "growth_rate",
                "e_folding_length",
                "grad_norm_max",
                "grad_norm_mean",
                "clipped_fraction",
                "loss_spikes",
            ]
        ).assign(decay_length=3.0),
        new.grad_norms,
    )
    skipped = []
    written = plots.write_figures(old, tmp_path, formats=("png",), dpi=30, on_skip=lambda *s: skipped.append(s))
    assert [p.stem for p in written] == [f"delayed_recall_{f}" for f in plots.FIGURE_NAMES[:5]]
    reasons = dict(skipped)
    # the spectrum and gates were not asked for (diagnostics off, as for every run before them): not reported
    assert set(reasons) == {f"delayed_recall_{f}" for f in ("growth_rate", "clipping")}
    assert "before the signed growth rate" in reasons["delayed_recall_growth_rate"]
    assert "before the exploding-gradient instrumentation" in reasons["delayed_recall_clipping"]
    with pytest.raises(plots.NotAskedFor, match="diagnostics = true"):
        plots.gate_distributions(old.runs, old.dynamics)
    asked = old.runs.assign(diagnostics=True)  # asked for, yet no table: a reason, not silence
    with pytest.raises(plots.FigureSkipped, match="trained with diagnostics = true") as skip:
        plots.spectrum_curves(asked, old.dynamics)
    assert not isinstance(skip.value, plots.NotAskedFor)


# --- styles ---------------------------------------------------------------------------------------------
def test_styles_colour_per_cell_shared_by_bidirectional_and_split_variants():
    runs = make_results(gaps=(3,), models=("lstm", "bi-lstm", "gru")).runs
    styles = plots.model_styles(runs)
    assert styles["lstm"].colour == styles["bi-lstm"].colour == plots.OKABE_ITO["blue"]
    assert styles["gru"].colour == plots.OKABE_ITO["bluish green"]
    assert (styles["lstm"].marker, styles["bi-lstm"].marker) == ("o", "s")
    lstm = runs[runs.model == "lstm"]
    variants = pd.concat([lstm, lstm.assign(hidden=64, run=lstm.run + "h")])
    _, order = plots.with_series(variants)
    assert order == ["lstm, hidden=16", "lstm, hidden=64"]  # never averaged together as seeds
    colours = plots.series_styles(order)
    assert colours[order[0]].colour != colours[order[1]].colour


def test_cells_without_a_colour_of_their_own_draw_deterministically():
    runs = make_results(gaps=(3,), models=("lstm", "rnn")).runs
    new = [runs[runs.model == "lstm"].assign(model=m, cell=m, run=runs.run + m) for m in ("minlstm", "lru", "bi-lru")]
    runs = pd.concat([*new, runs])  # first seen: the new cells
    _, order = plots.with_series(runs)
    assert order == ["rnn", "lstm", "lru", "bi-lru", "minlstm"]  # own colour first, then by name
    styles = plots.model_styles(runs)
    assert styles == plots.model_styles(runs.sample(frac=1, random_state=0))  # whatever the row order
    # the first palette colour no series has yet (gru's green is free: no gru here), shared by the bi- variant
    assert styles["lru"].colour == styles["bi-lru"].colour == plots.OKABE_ITO["bluish green"]
    assert styles["minlstm"].colour == plots.OKABE_ITO["orange"]
    assert styles["rnn"].colour == CELL_COLOURS["rnn"]


# --- writing ---------------------------------------------------------------------------------------------
def test_write_figures_png_pdf_byte_identical(results, tmp_path):
    both = ("png", "pdf")
    first = plots.write_figures(results, tmp_path / "a", formats=both, dpi=40)
    second = plots.write_figures(results, tmp_path / "b", formats=both, dpi=40)
    names = [p.name for p in first]
    # skipped: these tables have no eval_gaps, and no sweep over the tanh RNN's initial gain
    drawn = [f for f in plots.FIGURE_NAMES if f not in ("eval_gaps", "pascanu")]
    assert names == [f"delayed_recall_{f}.{ext}" for f in drawn for ext in ("png", "pdf")]
    for a, b in zip(first, second):
        data = a.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if a.suffix == ".png" else data[:5] == b"%PDF-"
        assert data == b.read_bytes(), a.name
        assert b"CreationDate" not in data and b"Matplotlib v" not in data


def test_write_figures_draws_each_model_at_its_chosen_learning_rate(results, monkeypatch, tmp_path):
    # a grid: a copy of every run at lr 1e-2 with other dynamics that validates worse; the per-gap figures
    # draw one series per model, from the chosen 1e-3 runs only, and say so in the title
    runs = results.runs.assign(final_valid_metric=0.9, final_valid_loss=1.0)
    high = runs.assign(run=runs["run"] + "-hi", lr=1e-2, final_valid_metric=0.1)
    moved = results.dynamics.assign(run=results.dynamics["run"] + "-hi", value=results.dynamics["value"] + 5.0)
    grid = Results(
        pd.concat([runs, high]),
        pd.concat([results.curves, results.curves.assign(run=results.curves["run"] + "-hi")]),
        pd.concat([results.grad_norms, results.grad_norms.assign(run=results.grad_norms["run"] + "-hi")]),
        results.eval_gaps,
        pd.concat([results.dynamics, moved]),
    )
    drawn = {}
    monkeypatch.setattr(writing, "save_figure", lambda fig, path, dpi: drawn.setdefault(path.stem, fig) and path)
    writing.write_figures(grid, tmp_path, formats=("png",))
    fig = next(f for stem, f in drawn.items() if stem.endswith("jacobian_spectrum"))
    reference = plots.spectrum_curves(results.runs, results.dynamics)
    for model in ("lstm", "rnn"):
        np.testing.assert_allclose(
            one(fig, f"lyapunov:{model}").get_ydata(), one(reference, f"lyapunov:{model}").get_ydata()
        )
    assert not [a for a in fig.findobj() if "lr=" in str(a.get_gid() or "")]  # no per-lr series
    assert "learning rate chosen per gap and model on the validation metric, of 2" in notes(fig)


def test_tasks_with_different_parameters_split_into_their_own_figures():
    # two tasks in one folder (modern.toml): each has task columns the other lacks (NaN there)
    runs = pd.DataFrame(
        {
            "run": ["a", "b"],
            "task": ["delayed_recall", "selective_copy"],
            "task_n_distractors": [8.0, np.nan],
            "task_alphabet": [np.nan, 14.0],
        }
    )
    assert sorted(writing.split_runs(runs)) == ["delayed_recall", "selective_copy"]


def test_write_figures_skips_what_the_data_cannot_show(tmp_path, monkeypatch):
    monkeypatch.setattr(writing, "FIGURES", {k: writing.FIGURES[k] for k in ("memory_vs_gap", "growth_rate")})  # speed
    skipped = []
    written = plots.write_figures(
        make_results(gaps=(3,)),
        tmp_path,
        formats=("png",),
        dpi=30,
        on_skip=lambda stem, why: skipped.append((stem, why)),
    )
    reason = "memory vs gap needs at least two gaps; the runs have only gap 3"
    assert skipped == [("delayed_recall_memory_vs_gap", reason)]
    assert [p.name for p in written] == ["delayed_recall_growth_rate.png"]


def test_write_figures_splits_task_configurations(tmp_path, monkeypatch):
    monkeypatch.setattr(writing, "FIGURES", {"growth_rate": writing.FIGURES["growth_rate"]})  # speed
    a, b = make_results(gaps=(3,)), make_results(gaps=(3,), task="copy")
    mixed = Results(*(pd.concat([x, y.assign(run=y.run + "c")]) for x, y in zip(a[:3], b[:3])))  # no eval_gaps
    with pytest.raises(PlotError, match="holds 2 task configurations"):
        plots.memory_vs_gap(mixed.runs)
    assert sorted(plots.split_by_task(mixed)) == ["copy", "delayed_recall"]
    written = plots.write_figures(mixed, tmp_path, formats=("png",), dpi=30, on_skip=lambda *_: None)
    assert [p.name for p in written] == ["copy_growth_rate.png", "delayed_recall_growth_rate.png"]


# --- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r._replace(runs=r.runs.iloc[:0]), "the runs table is empty"),
        (lambda r: r._replace(runs=r.runs.drop(columns=["gap", "status"])), "runs table lacks column.s. gap, status"),
        (lambda r: r._replace(grad_norms=r.grad_norms.drop(columns="norm")), "grad_norms table lacks column.s. norm"),
        (lambda r: r._replace(curves=r.curves.iloc[:0]), "the curves table is empty"),
        (lambda r: r._replace(curves=[1, 2]), "must be a pandas DataFrame, not list"),
        (lambda r: r.runs, "results must have runs, curves and grad_norms"),
    ],
)
def test_bad_tables_raise_one_line_plot_error(results, tmp_path, edit, message):
    with pytest.raises(PlotError, match=message) as error:
        plots.write_figures(edit(results), tmp_path)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_runs_that_cannot_be_told_apart_are_refused(results):
    twin = results.runs.iloc[:1].assign(run="twin", optimizer_note="not a column the figures know")
    with pytest.raises(PlotError, match="runs rnn-g3-s0, twin are all rnn at gap 3 with seed 0"):
        plots.memory_vs_gap(pd.concat([results.runs, twin]))


def test_unknown_format_is_refused_before_writing(results, tmp_path):
    with pytest.raises(PlotError, match=r"unknown figure format.s. jpeg; formats are png, pdf, svg"):
        plots.write_figures(results, tmp_path, formats=("png", "jpeg"))
    assert not list(tmp_path.iterdir())


def test_figure_functions_check_their_own_tables(results):
    with pytest.raises(PlotError, match=r"runs table lacks column.s. final_metric"):
        plots.memory_vs_gap(results.runs.drop(columns="final_metric"))
    with pytest.raises(PlotError, match=r"curves table lacks column.s. step"):
        plots.growth_rate_curves(results.runs, results.curves.drop(columns="step"))
    with pytest.raises(PlotError, match=r"dynamics table lacks column.s. value"):
        plots.spectrum_curves(results.runs, results.dynamics.drop(columns="value"))
    with pytest.raises(PlotError, match="grad_norms table has no rows for the 4 selected run"):
        plots.gradient_heatmap(results.runs, results.grad_norms.assign(run="other"), gap=3)


# --- time: a run's series ends where its training ended ----------------------------------------------
def test_a_stopped_run_is_drawn_to_its_stop_and_left_out_of_the_means_after_it(results):
    """lstm gap 6 seed 1 stopped at step 10 (its rows at step 20 are its frozen state): every time series ends
    there, with a stop mark at its last value, and the means after step 10 are over seed 0 alone."""
    runs = results.runs.assign(steps_trained=20.0)
    stopped = (runs["model"] == "lstm") & (runs["gap"] == 6) & (runs["seed"] == 1)
    runs.loc[stopped, "steps_trained"] = 10.0
    fig = plots.learning_curves(runs, results.curves)
    means = [
        loss("lstm", 6, 0, 0) / 2 + loss("lstm", 6, 1, 0) / 2,
        loss("lstm", 6, 0, 10) / 2 + loss("lstm", 6, 1, 10) / 2,
    ]
    np.testing.assert_allclose(one(fig, "mean:lstm:6").get_ydata(), [*means, loss("lstm", 6, 0, 20)])
    np.testing.assert_allclose(one(fig, "stop:lstm:6").get_xydata(), [[10, loss("lstm", 6, 1, 10)]])
    assert not artists(fig, "stop:lstm:3")  # the others trained to the budget
    fig = plots.growth_rate_curves(runs, results.curves)  # gap 6
    want = [np.mean([rate("lstm", 6, s, step) for s in SEEDS]) for step in (0, 10)] + [rate("lstm", 6, 0, 20)]
    np.testing.assert_allclose(one(fig, "mean:lstm").get_ydata(), want)
    np.testing.assert_allclose(one(fig, "stop:lstm").get_xydata(), [[10, rate("lstm", 6, 1, 10)]])
    fig = plots.clipping_curves(runs, results.curves)
    np.testing.assert_allclose(one(fig, "max:lstm").get_xydata(), [[10, 3.5], [20, 4.0]])  # seed 0 alone at 20
    fig = plots.vanishing_gradients(runs, results.grad_norms)
    assert fig.axes[1].get_title() == "after training (steps 10 to 20)"  # each run's last trained step
    fig = plots.gradient_heatmap(runs, results.grad_norms)
    np.testing.assert_allclose(one(fig, "stop:lstm").get_ydata(), [10.0])
