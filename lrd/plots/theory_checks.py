"""The diagnostics checked against theory, over every run of a study (all learning rates and seeds).

Engelken's identity: the growth rate of ||dL/dh_t|| with the distance against the top
Lyapunov exponent, per run, at the first logged step and at the last trained one
(``lrd.results.growth_and_exponent``, ``fit_line``). Early prediction: the top exponent
at the first log point after initialisation against each decided run's outcome, per
cell and gap (``lrd.results.early_exponent``, ``rank_auc``). Both need the dynamics
table (``diagnostics = true``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from lrd.plots.base import FigureSkipped, check_table, legend, new_figure, single_task, title
from lrd.plots.spectrum import dynamics_rows
from lrd.plots.style import SeriesStyle, series_styles, with_series
from lrd.results import (
    best_lr_runs,
    early_exponent,
    fit_line,
    growth_and_exponent,
    outcome_counts,
    pascanu_condition,
    rank_auc,
)
from lrd.schema import RUN_KEY

ENGELKEN_CAPTION = (
    'Engelken\'s identity (Engelken 2023, "Gradient flossing"): the slope of ln ||dL/dh_t|| against the distance '
    "from the loss equals the largest Lyapunov exponent of the forward dynamics. One dot per run, every learning "
    "rate and seed: the gradient's growth rate (the probe's per-timestep norms, 1/step) against the top exponent "
    "(QR iteration through the Jacobians after a burn-in, 1/step), measured independently; left at the first "
    "logged step, right at the run's last trained one. Dotted: the identity; solid: the least-squares line, its "
    "slope and correlation r in the panel's title (lrd.results.growth_and_exponent, fit_line)."
)
EARLY_CAPTION = (
    "Early prediction (Vogt et al. 2022: Lyapunov spectra early in training predict the final outcome). One dot "
    "per decided run (solved: filled; failed: open; undecided runs left out), every learning rate and seed: the "
    "top Lyapunov exponent at the first log point after initialisation, per gap, one panel per cell. Above each "
    "gap: the area under the ROC curve of the exponent for solved against failed runs (0.5: no information; "
    "lrd.results.early_exponent, rank_auc)."
)


PASCANU_CAPTION = (
    "Pascanu, Mikolov & Bengio 2013 (sec. 3.1): for the tanh RNN, sigma_max(U) gamma < 1 (gamma = 1 bounds tanh') "
    "is sufficient for the long-term components of the gradient to vanish. x: the measured sigma_max(U) "
    "max tanh'(a_t) at initialisation (its largest over the timesteps, lrd.results.pascanu_condition), one "
    "initial gain of U per column of dots. Left: the gradient's growth rate at initialisation per run (below "
    "0: it vanishes). Right: the fraction of the decided runs at the chosen learning rate that solved, with its "
    "Wilson 95% interval, one line per gap. Dotted: sigma_max(U) gamma = 1."
)


def _by_model(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, SeriesStyle]]:
    """The runs of one task with ``series`` = the model alone (every learning rate and seed is a point of it)."""
    check_table(runs, "runs", RUN_KEY)
    runs = single_task(runs)
    _, order = with_series(runs.drop(columns=[c for c in ("lr",) if c in runs]).drop_duplicates("model"))
    runs = runs.assign(series=runs["model"].astype(str))
    order = [label.split(",")[0] for label in order]
    return runs, order, series_styles(order)


def growth_vs_exponent(
    runs: pd.DataFrame, curves: pd.DataFrame, dynamics: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None
):
    """Two panels (init, final): growth rate against top exponent, a dot per run, the identity and the fitted line.

    Gids ``runs:<stage>:<series>``, ``identity:<stage>``, ``fit:<stage>``.
    """
    del styles  # one colour per cell: the series here are models, every learning rate and seed a dot
    runs, order, styles = _by_model(runs)
    dynamics_rows(dynamics, "lyapunov", runs)  # NotAskedFor / FigureSkipped without diagnostics
    table = growth_and_exponent(runs, curves, dynamics)
    if table.empty:
        raise FigureSkipped("no run has both a growth rate and a Lyapunov exponent at the same step")
    table = table.merge(runs[["run", "series"]], on="run")
    fig = new_figure(10, 4.8)
    panels = fig.subplots(1, 2)
    handles = []
    for ax, (stage, words) in zip(panels, (("init", "first logged step"), ("final", "last trained step")), strict=True):
        rows = table[table["stage"] == stage]
        for series in order:
            mine = rows[rows["series"] == series]
            if mine.empty:
                continue
            colour = styles[series].colour
            ax.plot(mine["top_exponent"], mine["growth_rate"], "o", color=colour, markersize=3.5, alpha=0.7,
                    gid=f"runs:{stage}:{series}")  # fmt: skip
            if stage == "init":
                handles.append(Line2D([], [], marker="o", linestyle="none", color=colour, label=series))
        values = np.concatenate([rows["top_exponent"].to_numpy(float), rows["growth_rate"].to_numpy(float)])
        values = values[np.isfinite(values)]
        lo, hi = (values.min(), values.max()) if len(values) else (-1.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="0.2", linestyle=":", linewidth=1.0, gid=f"identity:{stage}")
        fit = fit_line(rows["top_exponent"], rows["growth_rate"])
        if np.isfinite(fit.slope):
            ax.plot([lo, hi], [fit.intercept + fit.slope * lo, fit.intercept + fit.slope * hi], color="0.35",
                    linewidth=1.2, gid=f"fit:{stage}")  # fmt: skip
            ax.set_title(f"{words}: slope {fit.slope:.2f}, r = {fit.r:.3f} ({fit.n} runs)", fontsize=9)
        else:
            ax.set_title(f"{words}: {fit.n} runs, too few for a line", fontsize=9)
        ax.set_xlabel("top Lyapunov exponent (1/step)")
        ax.set_ylabel("growth rate of ||dL/dh_t|| (1/step)")
        ax.grid(True, alpha=0.3)
    handles += [
        Line2D([], [], color="0.2", linestyle=":", label="identity"),
        Line2D([], [], color="0.35", label="least-squares line"),
    ]
    legend(fig, handles)
    title(fig, runs, "Growth rate of the gradient against the top Lyapunov exponent, per run")
    return fig


def early_prediction(runs: pd.DataFrame, dynamics: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None):
    """A panel per cell: the top exponent at the first log point after step 0 per gap, solved filled, failed open.

    Gids ``solved:<series>:<gap>``, ``failed:<series>:<gap>``.
    """
    del styles  # one colour per cell, as in growth_vs_exponent
    runs, order, styles = _by_model(runs)
    rows = dynamics_rows(dynamics, "lyapunov", runs)
    later = sorted(s for s in rows["step"].unique() if s > 0)
    if not later:
        raise FigureSkipped("no Lyapunov exponents after initialisation")
    step = int(later[0])
    table = early_exponent(runs, dynamics, step).merge(runs[["run", "series"]], on="run")
    if table.empty:
        raise FigureSkipped(f"no decided run with an exponent at step {step}")
    present = [s for s in order if (table["series"] == s).any()]
    gaps = sorted(table["gap"].unique())
    fig = new_figure(max(4.2 * len(present), 6.0), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(present), sharey=True))
    rng = np.random.default_rng(0)  # a fixed jitter: the figure repeats byte for byte
    for ax, series in zip(axes, present, strict=True):
        colour = styles[series].colour
        mine = table[table["series"] == series]
        labels = []
        for i, gap in enumerate(gaps):
            at = mine[mine["gap"] == gap]
            jitter = rng.uniform(-0.18, 0.18, len(at))
            solved = at["solved"].to_numpy(bool)
            y = at["top_exponent"].to_numpy(float)
            ax.plot(i + jitter[solved], y[solved], "o", color=colour, markersize=4, gid=f"solved:{series}:{gap}")
            ax.plot(i + jitter[~solved], y[~solved], "o", markerfacecolor="none", color=colour, markersize=4,
                    gid=f"failed:{series}:{gap}")  # fmt: skip
            auc = rank_auc(at["top_exponent"], at["solved"])
            score = "—" if np.isnan(auc.auc) else f"{auc.auc:.2f}"
            labels.append(f"{gap}\nAUC {score}\n{auc.positives}/{auc.positives + auc.negatives}")
        ax.set_xticks(range(len(gaps)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(gaps) - 0.4)
        ax.set_title(series, fontsize=9, color=colour)
        ax.set_xlabel("gap; AUC; solved/decided", fontsize=8)
        ax.axhline(0.0, color="0.2", linestyle=":", linewidth=1.0)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(f"top Lyapunov exponent at step {step} (1/step)")
    legend(
        fig,
        [
            Line2D([], [], marker="o", linestyle="none", color="0.3", label="solved"),
            Line2D([], [], marker="o", linestyle="none", color="0.3", markerfacecolor="none", label="failed"),
        ],
    )
    title(fig, runs, f"Top Lyapunov exponent at step {step} against the final outcome, per run")
    return fig


def pascanu_figure(runs: pd.DataFrame, dynamics: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None):
    """Growth rate and success of the tanh RNN against sigma_max(U) gamma at initialisation (a gain sweep).

    NotAskedFor without a tanh RNN whose initial gain varies; gids ``growth:<gap>``, ``success:<gap>``.
    """
    from lrd.plots.base import NotAskedFor

    del styles
    check_table(runs, "runs", RUN_KEY)
    runs = single_task(runs)
    rnn = runs[runs["model"] == "rnn"]
    gains = rnn["recurrent_gain"].astype(float).fillna(1.0).nunique() if "recurrent_gain" in rnn else 1
    if rnn.empty or gains < 2:
        raise NotAskedFor("no tanh RNN runs at two or more initial gains (model.recurrent_gain)")
    dynamics_rows(dynamics, "pmb_bound", rnn)
    table = pascanu_condition(rnn, dynamics)
    if table.empty:
        raise FigureSkipped("no Pascanu bound stored for the tanh RNN runs")
    chosen = set(best_lr_runs(rnn)["run"])
    fig = new_figure(10, 4.6)
    left, right = fig.subplots(1, 2)
    handles = []
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
    for i, (gap, rows) in enumerate(table.groupby("gap", sort=True)):
        colour = colours[i % len(colours)]
        left.plot(rows["sigma_gamma"], rows["growth_rate_init"], "o", color=colour, markersize=3.5, alpha=0.7,
                  gid=f"growth:{gap}")  # fmt: skip
        at_chosen = rows[rows["run"].isin(chosen)]
        x, y, lo, hi = [], [], [], []
        for _, group in at_chosen.groupby("gain", sort=True):
            counts = outcome_counts(rnn[rnn["run"].isin(group["run"])])
            if counts.decided == 0:
                continue
            x.append(float(group["sigma_gamma"].median()))
            y.append(counts.solved / counts.decided)
            lo.append(counts.solved / counts.decided - counts.lo)
            hi.append(counts.hi - counts.solved / counts.decided)
        right.errorbar(x, y, yerr=[lo, hi], marker="o", color=colour, capsize=3, linewidth=1.4, gid=f"success:{gap}")
        handles.append(Line2D([], [], color=colour, marker="o", label=f"gap {gap}"))
    for ax in (left, right):
        ax.axvline(1.0, color="0.2", linestyle=":", linewidth=1.0)
        ax.set_xlabel("sigma_max(U) max tanh' at initialisation")
        ax.grid(True, alpha=0.3)
    left.axhline(0.0, color="0.5", linewidth=0.8)
    left.set_ylabel("growth rate of ||dL/dh_t|| at init (1/step)")
    left.set_title("every run", fontsize=9)
    right.set_ylabel("fraction of decided runs solved")
    right.set_ylim(-0.05, 1.05)
    right.set_title("at the chosen learning rate, Wilson 95%", fontsize=9)
    handles.append(Line2D([], [], color="0.2", linestyle=":", label="sigma_max(U) gamma = 1"))
    legend(fig, handles)
    title(fig, runs, "The tanh RNN against Pascanu et al.'s vanishing condition")
    return fig
