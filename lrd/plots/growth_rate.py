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
    runs_at,
    title,
)
from lrd.plots.style import SeriesStyle, line_kwargs, prepare
from lrd.schema import CURVE_KEY

BEFORE_GROWTH_RATE = (
    "the curves have no growth_rate column: results from before the signed growth rate "
    "(their decay_length is left out); run the experiment again to draw it"
)

CAPTION = (
    "Signed growth rate of the gradient norm ||dL/dh_t|| with distance from the loss (1/step, fitted on the "
    "probe batch) against training step, mean over finished seeds. Below 0 the gradient vanishes with distance "
    "(its e-folding length is -1/rate), above 0 it explodes; 0 (dotted) carries it unchanged; dashed: "
    "-1/gap, the rate at which the gradient falls by a factor e across the gap."
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
    line per series: mean over finished seeds at the steps where every seed has a fit
    (steps without one are counted in the title). Dotted: zero; dashed: -1/gap, the
    rate at which the gradient falls by a factor e across the gap. Gids ``mean:<series>``,
    ``zero``, ``gap``. FigureSkipped for results from before the growth rate.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(curves, "curves", CURVE_KEY)
    if "growth_rate" not in curves:
        raise FigureSkipped(BEFORE_GROWTH_RATE)
    gap, done, at = runs_at(runs, gap)
    rows = join(curves, done, "curves")
    fig = new_figure(8.5, 4.8)
    ax = fig.subplots()
    skipped, drawn = {}, 0
    for series in order:
        mine = rows[rows["series"] == series]
        if mine.empty:
            continue
        values = mine.pivot(index="step", columns="seed", values="growth_rate")  # missing: NaN
        table = values.to_numpy(float)  # (steps, seeds)
        finite = np.isfinite(table).all(axis=1)
        if (~finite).any():
            skipped[series] = int((~finite).sum())
        mean = np.full(len(table), np.nan)
        mean[finite] = table[finite].mean(axis=1)
        drawn += int(finite.sum())
        ax.plot(
            values.index.to_numpy(float),
            mean,
            label=series,
            linewidth=1.6,
            gid=f"mean:{series}",
            **line_kwargs(styles[series], len(mean)),
        )
    if drawn == 0:
        raise FigureSkipped(f"no growth rate could be fitted at any logged step at gap {gap} (too short a window)")
    ax.axhline(0.0, color="0.2", linestyle=":", linewidth=1.0, label="0: neither vanishing nor growing", gid="zero")
    ax.axhline(
        -1.0 / gap, color="0.4", linestyle="--", linewidth=1.0, label=f"-1/gap: factor e over {gap} steps", gid="gap"
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("growth rate of ln ||dL/dh_t|| (1/timestep)")
    ax.grid(True, which="major", alpha=0.3)
    legend(fig, ax.get_legend_handles_labels()[0])
    note = ""
    if skipped:
        note = "skipped where a seed has no fit: " + ", ".join(
            f"{s} {n} step{'s' if n != 1 else ''}" for s, n in skipped.items()
        )
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Growth rate of the gradient norm with distance from the loss at gap {gap} (< 0 vanishing, > 0 exploding)",
        [
            "slope of the log geometric mean over the probe batch of ||dL/dh_t|| against distance, layer 0 forward, "
            f"readout term and initial transient left out; line: mean over {count_text(n_seeds)} seeds",
            note,
            diverged_note(at),
        ],
    )
    return fig
