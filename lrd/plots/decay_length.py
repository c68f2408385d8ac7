"""Figure 5: the fitted decay length of the gradient norm (``lrd.results``) against training step."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

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
from lrd.plots.style import (
    SeriesStyle,
    line_kwargs,
    prepare,
)
from lrd.schema import CURVE_KEY


def decay_length_curves(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Fitted decay length of ||dL/dh_t|| (``lrd.probes.decay_length``) against training step.

    One line per series: mean over finished seeds at the steps where every seed's
    decay length is finite; steps where a seed's value is inf (no decay) or NaN (no
    fit) are skipped and counted in the title. Dotted: the gap, for scale. Gids
    ``mean:<series>`` and ``gap``.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(curves, "curves", (*CURVE_KEY, "decay_length"))
    gap, done, at = runs_at(runs, gap)
    rows = join(curves, done, "curves")
    fig = new_figure(8.5, 4.8)
    ax = fig.subplots()
    skipped, drawn = {}, 0
    for series in order:
        mine = rows[rows["series"] == series]
        if mine.empty:
            continue
        values = mine.pivot(index="step", columns="seed", values="decay_length")  # missing: NaN
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
        raise FigureSkipped(f"the decay length is inf or NaN at every logged step at gap {gap}")
    ax.axhline(gap, color="0.4", linestyle=":", linewidth=1.2, label=f"gap ({gap} timesteps)", gid="gap")
    shown = np.concatenate([line.get_ydata() for line in ax.get_lines()] + [[gap]])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.max() / shown.min() > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("training step")
    ax.set_ylabel("decay length (timesteps per factor e)")
    ax.grid(True, which="major", alpha=0.3)
    legend(fig, ax.get_legend_handles_labels()[0])
    note = ""
    if skipped:
        note = "skipped where a seed's decay length is inf (no decay) or NaN (no fit): " + ", ".join(
            f"{s} {n} step{'s' if n != 1 else ''}" for s, n in skipped.items()
        )
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Decay length of the gradient norm at gap {gap}",
        [
            f"fit of ln ||dL/dh_t|| against distance, layer 0 forward; line: mean over {count_text(n_seeds)} seeds",
            note,
            diverged_note(at),
        ],
    )
    return fig
