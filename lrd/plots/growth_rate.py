"""Figure 5: the signed growth rate of the gradient norm with distance (``lrd.dynamics``) against training step."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lrd.plots.base import (
    FigureSkipped,
    check_table,
    count_text,
    diverged_note,
    join,
    legend,
    new_figure,
    present_mean,
    runs_at,
    stop_handle,
    stop_marks,
    title,
    until_stop,
)
from lrd.plots.style import SeriesStyle, line_kwargs, prepare
from lrd.schema import CURVE_KEY

BEFORE_GROWTH_RATE = (
    "the curves have no growth_rate column: results from before the signed growth rate "
    "(their decay_length is left out); run the experiment again to draw it"
)

CAPTION = (
    "Signed growth rate of the gradient norm ||dL/dh_t|| with distance from the loss (1/timestep: the slope of the "
    "log geometric mean over the probe batch against distance, layer 0 forward, readout term and initial transient "
    "left out) against training step. Line: mean over the finished seeds still training at that step (a bar marks a "
    "seed's stop; steps where a present seed has no fit are left out). Below 0 the gradient vanishes with distance "
    "(its e-folding length is -1/rate), above 0 it explodes; dotted: 0, which carries it unchanged; dashed: -1/gap, "
    "the rate at which the gradient falls by a factor e across the gap. The y axis is linear within 1/(2 gap) of 0 "
    "and logarithmic beyond (symlog), so that -1/gap stands apart from 0."
)


def growth_rate_curves(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Signed per-step log growth rate of ||dL/dh_t|| with distance (``lrd.dynamics.growth_rate``) against step.

    Negative: the gradient vanishes with distance; positive: it grows (explodes). One
    line per series: mean over the finished seeds still training at each step (rows cut at
    each run's stop, ``until_stop``), at the steps where every such seed has a fit (steps
    without one are counted in a note); a bar marks a seed's stop. Dotted: zero; dashed:
    -1/gap, the rate at which the gradient falls by a factor e across the gap; a symlog y
    axis (linear within 1/(2 gap) of 0) keeps the two apart. Gids ``mean:<series>``,
    ``stop:<series>``, ``zero``, ``gap``. FigureSkipped for results from before the growth rate.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(curves, "curves", CURVE_KEY)
    if "growth_rate" not in curves:
        raise FigureSkipped(BEFORE_GROWTH_RATE)
    gap, done, at = runs_at(runs, gap)
    rows = until_stop(join(curves, done, "curves"), done)
    fig = new_figure(8.5, 4.8)
    ax = fig.subplots()
    skipped, drawn, stops = {}, 0, 0
    for series in order:
        mine = rows[rows["series"] == series]
        if mine.empty:
            continue
        mean = present_mean(mine, "growth_rate")  # NaN where a present seed has no fit
        finite = np.isfinite(mean.to_numpy(float))
        if (~finite).any():
            skipped[series] = int((~finite).sum())
        drawn += int(finite.sum())
        kwargs = line_kwargs(styles[series], len(mean))
        ax.plot(
            mean.index.to_numpy(float),
            mean.to_numpy(float),
            label=series,
            linewidth=1.6,
            gid=f"mean:{series}",
            **kwargs,
        )
        stops += stop_marks(ax, mine, done, "growth_rate", styles[series].colour, f"stop:{series}")
    if drawn == 0:
        raise FigureSkipped(f"no growth rate could be fitted at any logged step at gap {gap} (too short a window)")
    ax.axhline(0.0, color="0.2", linestyle=":", linewidth=1.0, label="0: neither vanishing nor growing", gid="zero")
    ax.axhline(
        -1.0 / gap, color="0.4", linestyle="--", linewidth=1.2, label=f"-1/gap: factor e over {gap} steps", gid="gap"
    )
    ax.set_yscale("symlog", linthresh=1.0 / (2 * gap), linscale=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("growth rate of ln ||dL/dh_t|| (1/timestep)")
    ax.grid(True, which="major", alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + ([stop_handle()] if stops else [])
    legend(fig, handles)
    note = ""
    if skipped:
        note = "left out where a seed has no fit: " + ", ".join(
            f"{s} {n} step{'s' if n != 1 else ''}" for s, n in skipped.items()
        )
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Growth rate of ||dL/dh_t|| with distance at gap {gap}",
        [f"line: mean over the {count_text(n_seeds)} finished seeds still training", note, diverged_note(at)],
    )
    return fig
