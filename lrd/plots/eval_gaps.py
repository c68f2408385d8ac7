"""Figure 6: length generalisation, the metric of each trained model at the test gaps of ``[train] eval_gaps``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from lrd.plots.base import FigureSkipped, NotAskedFor, check_table, count_text, diverged_note, legend, new_figure, title
from lrd.plots.memory_vs_gap import gap_axis
from lrd.plots.style import SeriesStyle, prepare
from lrd.schema import EVAL_GAP_KEY

CAPTION = (
    "Length generalisation: each model is trained at one gap and then evaluated, without retraining, on the "
    "same task at the test gaps of [train] eval_gaps (the eval_gaps table). One panel per model, one line per "
    "training gap (mean over finished seeds, dots: the seeds); the large marker is the training gap itself. "
    "A line that stays high right of its marker extrapolates to longer dependencies."
)


def eval_gaps_curves(
    runs: pd.DataFrame,
    eval_gaps: pd.DataFrame,
    *,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Final metric against test gap, one panel per series, one line per training gap.

    Line: mean over finished seeds at each test gap; dots: the seeds; a large marker at
    the training gap. Dashed grey: the memoryless baseline where it is the same at every
    gap of the runs (it is recomputed per gap only for trained gaps, so it is not drawn
    otherwise). Gids ``mean:<series>:<gap>`` and ``seeds:<series>:<gap>``. Skipped
    (FigureSkipped) when the runs have no eval_gaps rows.
    """
    runs, order, styles = prepare(runs, ("baseline_metric",), styles)
    if eval_gaps is None or eval_gaps.empty:
        raise NotAskedFor("no eval_gaps data: the experiment has no [train] eval_gaps")
    check_table(eval_gaps, "eval_gaps", (*EVAL_GAP_KEY, "metric"))
    done = runs[runs["status"] == "done"]
    rows = eval_gaps.merge(done[["run", "series", "gap", "seed"]], on="run")  # finished runs only
    if rows.empty:
        raise FigureSkipped("no finished run has eval_gaps data")
    metric_name = str(runs["metric_name"].iloc[0]) if "metric_name" in runs else "metric"
    train_gaps = sorted(rows["gap"].unique())
    colours = colormaps["viridis"](np.linspace(0.0, 0.85, len(train_gaps)))  # (gaps, 4) RGBA, light end left out
    shown = [s for s in order if s in set(rows["series"])]
    fig = new_figure(max(8.5, 4.2 * len(shown) + 1.0), 4.8)  # wide enough for the title block
    axes = np.atleast_1d(fig.subplots(1, len(shown), sharey=True, squeeze=False)[0])
    handles: dict[str, object] = {}  # one legend entry per training gap
    for ax, series in zip(axes, shown):
        mine = rows[rows["series"] == series]
        for colour, gap in zip(colours, train_gaps):
            at = mine[mine["gap"] == gap]
            if at.empty:
                continue
            mean = at.groupby("test_gap")["metric"].mean()
            (line,) = ax.plot(
                mean.index.to_numpy(float),
                mean.to_numpy(float),
                color=colour,
                marker="o",
                markersize=4,
                label=f"trained at gap {gap}",
                gid=f"mean:{series}:{gap}",
            )
            handles.setdefault(line.get_label(), line)
            ax.scatter(
                at["test_gap"].to_numpy(float),
                at["metric"].to_numpy(float),
                s=10,
                color=colour,
                alpha=0.5,
                linewidths=0,
                gid=f"seeds:{series}:{gap}",
            )
            if gap in mean.index:
                ax.plot([gap], [mean[gap]], marker="o", markersize=10, color=colour, markerfacecolor="none")
        base = runs["baseline_metric"].unique()
        if len(base) == 1:
            ax.axhline(float(base[0]), color="0.4", linestyle="--", linewidth=1.2, gid="baseline")
        gap_axis(ax, mine["test_gap"].unique())
        ax.set_title(series, fontsize=9, color=styles[series].colour)
        ax.set_xlabel("test gap (timesteps)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"{metric_name} at the test gap")
    legend(fig, list(handles.values()))
    n_seeds = rows.groupby(["series", "gap", "test_gap"])["seed"].nunique()
    title(
        fig,
        runs,
        f"{metric_name} at test gaps, without retraining",
        [
            f"line: mean over finished seeds ({count_text(n_seeds)} per point); ring: the training gap; "
            "no retraining at the test gaps",
            diverged_note(runs),
        ],
    )
    return fig
