"""Figure 8: pre-clip gradient norms and the fraction of clipped steps (``lrd.dynamics``) against training step."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

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
    title,
    until_stop,
)
from lrd.plots.style import SeriesStyle, line_kwargs, prepare
from lrd.schema import BLOCK_COLUMNS, CURVE_KEY

BEFORE_BLOCKS = (
    "the curves have no clipping statistics (grad_norm_max, clipped_fraction): results from before the "
    "exploding-gradient instrumentation; run the experiment again to draw it"
)

CAPTION = (
    "Exploding gradients: left, the largest (solid) and mean (dashed) pre-clip global gradient norm over each "
    "block of training steps between log points, with the clipping threshold (dotted); right, the fraction of "
    "the block's steps that were clipped; both against training step (means over the finished seeds still "
    "training at each step: a run's series ends at its stop; loss spikes counted in the note below). Norm spikes "
    "that clipping absorbs show as a clipped fraction above 0."
)


def clipping_curves(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Left: the maximum (solid) and mean (dashed) pre-clip gradient norm of each log block, with the clipping
    threshold (dotted); right: the fraction of the block's steps that were clipped; both against step.

    Lines: means over the finished seeds still training at each step (``until_stop``); loss
    spikes are counted in a note. Gids ``max:<series>``,
    ``mean:<series>``, ``clipped:<series>``, ``clip``.
    """
    runs, order, styles = prepare(runs, ("clip",), styles)
    check_table(curves, "curves", CURVE_KEY)
    if not set(BLOCK_COLUMNS) <= set(curves):
        raise FigureSkipped(BEFORE_BLOCKS)
    gap, done, at = runs_at(runs, gap)
    rows = until_stop(join(curves, done, "curves"), done).dropna(subset=["grad_norm_max"])  # step 0 has no block
    if rows.empty:
        raise FigureSkipped(f"no training blocks logged at gap {gap}")
    fig = new_figure(11, 4.6)
    left, right = fig.subplots(1, 2, sharex=True)
    handles = []
    for series in order:
        mine = rows[rows["series"] == series]
        if mine.empty:
            continue
        kwargs = line_kwargs(styles[series], mine["step"].nunique())
        for column, gid, style, ax in (
            ("grad_norm_max", "max", "-", left),
            ("grad_norm_mean", "mean", "--", left),
            ("clipped_fraction", "clipped", "-", right),
        ):
            mean = present_mean(mine, column)
            ax.plot(mean.index, mean.to_numpy(), linestyle=style, linewidth=1.4, gid=f"{gid}:{series}", **kwargs)
        handles.append(Line2D([], [], linewidth=1.4, label=series, **kwargs))
    clips = sorted(set(done["clip"].astype(float)))
    for clip in clips:
        if clip > 0:
            left.axhline(clip, color="0.3", linestyle=":", linewidth=1.0, gid="clip")
    left.set_yscale("log")
    left.set_ylabel("pre-clip global gradient norm (dimensionless)")
    left.set_title("per log block: max (solid) and mean (dashed)", fontsize=9)
    right.set_ylabel("fraction of the block's steps clipped")
    right.set_ylim(-0.03, 1.03)
    for ax in (left, right):
        ax.set_xlabel("training step (end of the block)")
        ax.grid(True, alpha=0.3)
    handles.append(Line2D([], [], color="0.3", linestyle=":", label="clipping threshold"))
    legend(fig, handles)
    spikes = rows.groupby("series")["loss_spikes"].sum()
    spike_note = "loss spikes (a step's loss above spike_factor x its block's median), all seeds: " + ", ".join(
        f"{s} {int(n)}" for s, n in spikes.items()
    )
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Pre-clip gradient norm and clipping at gap {gap}",
        [
            f"training batches, every step of each log block; lines: mean over the {count_text(n_seeds)} finished "
            "seeds still training",
            spike_note,
            diverged_note(at),
        ],
    )
    return fig
