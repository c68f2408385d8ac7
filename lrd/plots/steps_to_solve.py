"""Steps to solve against gap: how much of the budget learning a dependency takes, censored runs shown.

A run that solved (the tables' rule, ``lrd.results.outcome``: its final evaluation metric
reaches the threshold) is drawn at its ``solved_step`` (the first logged step whose probe
metric reached the solve threshold; at the steps it trained if its probe never did); a run
that did not is *censored*: all we know is
that it needs more than its budget, so it is drawn as an upward triangle at the steps it
trained (``steps_trained``, else ``steps``; a diverged run at its divergence), never as a
value. The line joins the (lower) median over the seeds where at least half solved (the median
is then known despite the censoring), so a gap where most seeds ran out of budget has no
line point. With a learning-rate grid each (gap, model) is drawn at its chosen rate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation

from lrd.plots.base import FigureSkipped, at_chosen_lr, legend, new_figure, title
from lrd.plots.memory_vs_gap import gap_axis
from lrd.plots.style import SeriesStyle, prepare
from lrd.results import OUTCOME_RULE, SOLVED, last_trained_step, outcome

CAPTION = (
    "Steps to solve against gap: a dot per solved seed at the first logged step whose probe metric reached the "
    "solve threshold (at the steps it trained if its probe never did), the line their (lower) median where at least "
    "half the seeds solved; a triangle per seed that did not solve, at the steps it trained (censored: it would "
    "need more, if it can at all); dashed: the largest budget. Solved is the tables' rule: " + OUTCOME_RULE
)


def budget(runs: pd.DataFrame) -> pd.Series:
    """The steps each run trained: ``lrd.results.last_trained_step``."""
    return last_trained_step(runs)


def steps_to_solve(runs: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None) -> Figure:
    """Steps to solve (log scale) against gap, one series per model, censored runs as triangles at their budget.

    Artists carry gids ``solved:<series>`` (dots), ``censored:<series>`` (triangles),
    ``median:<series>`` (line) and ``budget`` (the largest budget, dashed).
    """
    runs, lr_note = at_chosen_lr(runs)
    runs, order, styles = prepare(runs, ("solved_step", "solved", "steps"), styles)
    runs = runs[runs["status"] != "failed"]
    gaps = sorted(runs["gap"].unique())
    if len(gaps) < 2:
        raise FigureSkipped(f"steps to solve needs at least two gaps; the runs have only gap {gaps[0]}")
    reached = outcome(runs).eq(SOLVED)  # the tables' rule: the final evaluation metric reaches the threshold
    if not reached.any():
        raise FigureSkipped("steps to solve: no run solved")
    runs = runs.assign(budget=budget(runs), reached=reached)
    runs = runs.assign(solved_step=runs["solved_step"].where(runs["solved_step"].notna(), runs["budget"]))

    fig = new_figure(8.5, 5.0)
    ax = fig.subplots()
    for i, series in enumerate(order):
        style = styles[series]
        dodge = ax.transData + ScaledTranslation((i - (len(order) - 1) / 2) * 5 / 72, 0, fig.dpi_scale_trans)
        mine = runs[runs["series"] == series]
        hit, censored = mine[mine["reached"]], mine[~mine["reached"]]
        # solved_step 0: solved at initialisation; drawn at 1 on the log axis
        ax.scatter(
            hit["gap"].to_numpy(float),
            np.maximum(hit["solved_step"].to_numpy(float), 1.0),
            s=16,
            color=style.colour,
            alpha=0.7,
            linewidths=0,
            gid=f"solved:{series}",
            zorder=3,
            transform=dodge,
        )
        if len(censored):
            ax.scatter(
                censored["gap"].to_numpy(float),
                censored["budget"].to_numpy(float),
                marker="^",
                s=40,
                facecolors="none",
                edgecolors=style.colour,
                linewidths=1.2,
                gid=f"censored:{series}",
                zorder=3,
                transform=dodge,
            )
        median_rows: list[tuple] = []
        for g in gaps:
            at = mine[mine["gap"] == g]
            if len(at) and 2 * at["reached"].sum() >= len(at):  # at least half solved: the median is observed
                times = np.where(at["reached"], at["solved_step"], np.inf)  # a censored run: later than any solve
                median_rows.append((g, max(float(np.sort(times)[(len(at) - 1) // 2]), 1.0)))  # the lower median
            else:
                median_rows.append((g, math.nan))
        medians = np.array(median_rows, float)  # (gaps, 2)
        ax.plot(
            *medians.T,
            color=style.colour,
            marker=style.marker,
            markersize=5,
            label=series,
            markerfacecolor="white" if style.bidirectional else style.colour,
            gid=f"median:{series}",
            zorder=2,
            transform=dodge,
        )
    top = float(runs["budget"].max())
    ax.axhline(top, color="0.4", linestyle="--", linewidth=1.0, gid="budget")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", marker="o", markersize=4, linestyle="none", label="one seed, solved"))
    handles.append(
        Line2D(
            [], [], color="0.3", marker="^", markerfacecolor="none", linestyle="none", label="never solved (censored)"
        )
    )
    handles.append(Line2D([], [], color="0.4", linestyle="--", label=f"budget ({top:.0f} steps)"))
    gap_axis(ax, gaps)
    ax.set_yscale("log")
    # the points are drawn through a dodging transform, which autoscaling ignores: set the limits
    log_x = ax.get_xscale() == "log"
    ax.set_xlim(
        *(
            (gaps[0] / 1.25, gaps[-1] * 1.25)
            if log_x
            else (gaps[0] - 0.06 * (gaps[-1] - gaps[0]), gaps[-1] + 0.06 * (gaps[-1] - gaps[0]))
        )
    )
    low = float(np.maximum(runs.loc[runs["reached"], "solved_step"], 1.0).min())
    ax.set_ylim(low / 1.6, top * 1.6)
    ax.set_xlabel("gap (timesteps)")
    ax.set_ylabel("steps to solve (first log point at the threshold)")
    ax.grid(True, alpha=0.3)
    legend(fig, handles)
    title(fig, runs, "Steps to solve against gap", ["triangles: not solved, at the steps trained (censored)", lr_note])
    return fig
