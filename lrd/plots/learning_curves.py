"""Figure 4: loss against training step, one panel per series, one line per gap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lrd.plots.base import (
    check_table,
    count_text,
    diverged_note,
    join,
    legend,
    new_figure,
    present_mean,
    stop_handle,
    stop_marks,
    title,
    until_stop,
)
from lrd.plots.style import (
    GAP_CMAP,
    SeriesStyle,
    prepare,
)
from lrd.schema import CURVE_KEY

# what the figure shows, for a reader who sees it alone (the report prints it under the figure)
CAPTION = (
    "Learning curves: the training loss on the probe batch against training step, one panel per model, one line per"
    " gap. A run's curve ends where its training ended: a bar marks a seed that stopped when solved (its loss there),"
    " and the line is the mean over the finished seeds still training at each step, so it ends at the last stop and"
    " may jump where a seed leaves it; thin lines ending in x are diverged runs; dashed: the memoryless baseline "
    "loss. A curve that stays at the baseline never learned the dependency."
)


def learning_curves(
    runs: pd.DataFrame, curves: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None
) -> Figure:
    """Loss against training step, one panel per series, one line per gap.

    Every run's rows end at its last trained step (``lrd.results.until_stop``). Solid: mean
    over the finished seeds still training at each step; a bar: a seed's stop; thin line
    ending in 'x': a diverged run, up to its divergence; dashed: the memoryless baseline
    loss. Gids: ``mean:<series>:<gap>``, ``stop:<series>:<gap>``,
    ``diverged:<series>:<gap>:<seed>``, ``baseline:<series>[:<gap>]``.
    """
    runs, order, styles = prepare(runs, ("baseline_loss",), styles)
    check_table(curves, "curves", (*CURVE_KEY, "loss"))
    rows = until_stop(join(curves, runs, "curves"), runs).merge(runs[["run", "gap", "status"]], on="run")
    present = [s for s in order if s in set(rows["series"])]
    gaps = sorted(runs["gap"].unique())
    cmap = colormaps[GAP_CMAP]
    gap_colour = {g: cmap(0.85 * i / max(1, len(gaps) - 1)) for i, g in enumerate(gaps)}

    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = new_figure(3.8 * ncols + 1.6, 3.1 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    positive = bool((rows["loss"].dropna() > 0).all())
    stops = 0
    for ax, series in zip(axes, present):
        mine = rows[rows["series"] == series]
        for g in gaps:
            at = mine[mine["gap"] == g]
            done = at[at["status"] == "done"]
            if len(done):
                mean = present_mean(done, "loss")
                ax.plot(
                    mean.index.to_numpy(float),
                    mean.to_numpy(float),
                    color=gap_colour[g],
                    linewidth=1.5,
                    gid=f"mean:{series}:{g}",
                )
                stops += stop_marks(ax, done, runs, "loss", gap_colour[g], f"stop:{series}:{g}")
            for (seed,), run in at[at["status"] == "diverged"].groupby(["seed"]):
                run = run.sort_values("step")
                ax.plot(
                    run["step"].to_numpy(float),
                    run["loss"].to_numpy(float),
                    color=gap_colour[g],
                    linewidth=0.7,
                    alpha=0.8,
                    marker="x",
                    markevery=[len(run) - 1],
                    gid=f"diverged:{series}:{g}:{seed}",
                )
        base = runs[runs["series"] == series].groupby("gap")["baseline_loss"].first()
        if base.nunique() == 1:
            ax.axhline(base.iloc[0], color="0.4", linestyle="--", linewidth=1, gid=f"baseline:{series}")
        else:
            for g, value in base.items():
                ax.axhline(value, color=gap_colour[g], linestyle="--", linewidth=1, gid=f"baseline:{series}:{g}")
        ax.set_title(series, color=styles[series].colour, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.grid(True, alpha=0.3)
        if positive:
            ax.set_yscale("log")
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=gap_colour[g], label=f"gap {g}") for g in gaps]
    handles.append(Line2D([], [], color="0.4", linestyle="--", label="memoryless baseline"))
    if stops:
        handles.append(stop_handle())
    if (runs["status"] == "diverged").any():
        label = "diverged run (until divergence)"
        handles.append(Line2D([], [], color="0.3", linewidth=0.7, marker="x", label=label))
    legend(fig, handles)
    n_seeds = runs[runs["status"] == "done"].groupby(["series", "gap"])["seed"].nunique()
    present = rows[rows["status"] == "done"].groupby(["series", "gap", "step"])["run"].nunique()
    still = f", {count_text(present)} still training at a step" if stops else ""
    title(
        fig,
        runs,
        "Training loss on the probe batch against step",
        [
            f"line: mean over the finished seeds still training ({count_text(n_seeds)} per line{still})",
            diverged_note(runs),
        ],
    )
    return fig
