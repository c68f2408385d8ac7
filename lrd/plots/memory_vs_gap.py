"""Figure 3, the headline: final metric and success rate against gap, every seed drawn.

Upper panel: the final metric of every seed (dots), their mean (line), diverged runs
('x' at the baseline), undecided runs (unsolved, still improving at the end) ringed.
Lower panel: the fraction of the decided seeds that solved, with its Wilson 95% interval,
counted by the tables' rule (``lrd.results.outcome_counts``, ``OUTCOME_RULE``), the
interval a handful of seeds supports: no interval is drawn around the mean metric,
since with n = 3 a 95% percentile bootstrap interval is [min, max] (issue 12).
With a learning-rate grid each (gap, model) is drawn at its chosen learning rate
(``lrd.results.choose_lr``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
from matplotlib.transforms import ScaledTranslation

from lrd.plots.base import (
    FigureSkipped,
    at_chosen_lr,
    count_text,
    diverged_note,
    legend,
    new_figure,
    title,
)
from lrd.plots.style import (
    SeriesStyle,
    prepare,
)
from lrd.results import OUTCOME_RULE, UNDECIDED, outcome, outcome_counts


def gap_axis(ax, gaps) -> None:
    """The gaps as the x ticks, on a log axis when they span a factor of 8 or more."""
    gaps = sorted(set(int(g) for g in gaps))
    if gaps[0] > 0 and gaps[-1] / gaps[0] >= 8:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(gaps))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


# what the figure shows, for a reader who sees it alone (the report prints it under the figure)
CAPTION = (
    "Memory vs gap, the headline. Upper panel: the final evaluation metric of every seed (dots) and their mean over "
    "finished seeds (line, no interval: a handful of seeds supports none), diverged runs as 'x' at the baseline, "
    "undecided runs ringed. Lower panel: the fraction of the decided seeds that solved, with its Wilson 95% "
    "interval, as in the tables: " + OUTCOME_RULE + " Dashed: the memoryless baseline (the best predictor that "
    "ignores the past); dotted: the solve threshold, which a solved seed's dot reaches."
)


def memory_vs_gap(runs: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None) -> Figure:
    """Final metric and fraction solved against gap, one series per model (the headline figure).

    Upper panel: dots, the seeds' final metrics; line, their mean over finished seeds
    (no interval); 'x', diverged runs at the baseline metric; a black ring, an undecided
    run (``lrd.results.outcome``). Grey dashed: memoryless baseline; dotted: the solve
    threshold. Lower panel: solved / decided seeds with the Wilson 95% interval of the
    decided ones as a vertical bar (``lrd.results.outcome_counts``, the tables' counts).
    Artists carry gids ``mean:<series>``, ``seeds:<series>``, ``diverged:<series>``,
    ``improving:<series>``, ``success:<series>``, ``interval:<series>``,
    ``baseline`` and ``threshold``.
    """
    runs, lr_note = at_chosen_lr(runs)
    runs, order, styles = prepare(runs, ("final_metric", "baseline_metric", "solve_threshold", "solved"), styles)
    gaps = sorted(runs["gap"].unique())
    if len(gaps) < 2:
        raise FigureSkipped(f"memory vs gap needs at least two gaps; the runs have only gap {gaps[0]}")
    metric_name = str(runs["metric_name"].iloc[0]) if "metric_name" in runs else "metric"
    improving = outcome(runs).eq(UNDECIDED)

    fig = new_figure(8.5, 6.5)
    ax, ax_success = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    done = runs[runs["status"] == "done"]
    diverged = runs[runs["status"] == "diverged"]
    trained = runs[runs["status"] != "failed"]
    for i, series in enumerate(order):
        style = styles[series]
        # dodge the series sideways by a few points on screen (the data stay at the gap), so
        # models with equal values at a gap (e.g. all solved) do not hide one another
        offset = ScaledTranslation((i - (len(order) - 1) / 2) * 5 / 72, 0, fig.dpi_scale_trans)
        dodge, dodge_success = ax.transData + offset, ax_success.transData + offset
        mine = done[done["series"] == series]
        mean_rows: list[tuple] = []
        success_rows: list[tuple] = []
        for g in gaps:
            values = mine.loc[mine["gap"] == g, "final_metric"].to_numpy(float)
            values = values[np.isfinite(values)]
            mean_rows.append((g, values.mean() if values.size else math.nan))
            counts = outcome_counts(trained[(trained["series"] == series) & (trained["gap"] == g)])
            success_rows.append((g, counts.success, counts.lo, counts.hi))
        means, success = np.array(mean_rows, float), np.array(success_rows, float)  # (gaps, 2), (gaps, 4)
        marker = dict(
            marker=style.marker, markersize=6, markerfacecolor="white" if style.bidirectional else style.colour
        )
        ax.plot(*means.T, color=style.colour, **marker, label=series, gid=f"mean:{series}", zorder=3, transform=dodge)
        ax.scatter(
            mine["gap"].to_numpy(float),
            mine["final_metric"].to_numpy(float),
            s=12,
            color=style.colour,
            alpha=0.6,
            linewidths=0,
            gid=f"seeds:{series}",
            zorder=2,
            transform=dodge,
        )
        rising = mine[improving[mine.index]]
        if len(rising):
            ax.scatter(
                rising["gap"].to_numpy(float),
                rising["final_metric"].to_numpy(float),
                s=60,
                facecolors="none",
                edgecolors="black",
                linewidths=0.8,
                gid=f"improving:{series}",
                zorder=4,
                transform=dodge,
            )
        bad = diverged[diverged["series"] == series]
        if len(bad):
            ax.scatter(
                bad["gap"].to_numpy(float),
                bad["baseline_metric"].to_numpy(float),
                marker="x",
                s=45,
                color=style.colour,
                linewidths=1.5,
                gid=f"diverged:{series}",
                zorder=4,
                transform=dodge,
            )
        ok = np.isfinite(success[:, 1])  # no decided seed: no point
        ax_success.plot(
            success[ok, 0],
            success[ok, 1],
            color=style.colour,
            **marker,
            gid=f"success:{series}",
            transform=dodge_success,
        )
        ax_success.vlines(
            success[ok, 0],
            success[ok, 2],
            success[ok, 3],
            color=style.colour,
            linewidth=2.5,
            alpha=0.5,
            gid=f"interval:{series}",
            transform=dodge_success,
        )
    base = runs.groupby("gap")["baseline_metric"].first()
    ax.plot(
        base.index.to_numpy(float),
        base.to_numpy(float),
        color="0.4",
        linestyle="--",
        linewidth=1.2,
        label="memoryless baseline",
        gid="baseline",
    )
    handles, _ = ax.get_legend_handles_labels()
    for threshold in sorted(runs["solve_threshold"].unique()):
        ax.axhline(threshold, color="0.4", linestyle=":", linewidth=1.2, gid="threshold")
        handles.append(Line2D([], [], color="0.4", linestyle=":", label=f"solved: {metric_name} >= {threshold:g}"))
    if len(diverged):
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="none", label="diverged (at baseline)"))
    handles.append(Line2D([], [], color="0.3", marker="o", markersize=3, linestyle="none", label="one seed"))
    if improving[done.index].any():
        handles.append(
            Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="none", label="undecided")
        )
    gap_axis(ax_success, gaps)
    ax_success.set_xlabel("gap (timesteps)")
    ax.set_ylabel(f"final {metric_name}")
    ax_success.set_ylabel("solved / decided")
    ax.set_ylim(-0.03, 1.03)
    ax_success.set_ylim(-0.05, 1.05)
    for a in (ax, ax_success):
        a.grid(True, alpha=0.3)
    legend(fig, handles)
    n_seeds = trained.groupby(["series", "gap"])["seed"].nunique()
    n_undecided = int(improving[trained.index].sum())
    title(
        fig,
        runs,
        "Final metric and fraction solved against gap",
        [
            f"{count_text(n_seeds)} seeds per point, {n_undecided} undecided in all (ringed; not in the fractions)",
            lr_note,
            diverged_note(runs),
        ],
    )
    return fig
