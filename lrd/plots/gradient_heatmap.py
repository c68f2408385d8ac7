"""Figure 2: log10 ||dL/dh_t|| over (timestep, training step), one panel per series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from lrd.plots.base import (
    DIRECTION,
    FigureSkipped,
    check_table,
    count_text,
    diverged_note,
    join,
    log_stats,
    new_figure,
    runs_at,
    title,
    until_stop,
)
from lrd.plots.style import (
    BELOW_FLOOR_GREY,
    HEATMAP_CMAP,
    SeriesStyle,
    prepare,
)
from lrd.results import last_trained_step, stopped_early
from lrd.schema import GRAD_COLUMNS


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half-way between neighbours)."""
    centres = np.asarray(centres, float)
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


# what the figure shows, for a reader who sees it alone (the report prints it under the figure)
CAPTION = (
    "Gradient norms during training: log10 ||dL/dh_t|| for every timestep (x) and logged training step (y), mean "
    "over the finished seeds still training at that step, one panel per model; a panel ends at its last seed's "
    "stop, and a triangle right of it marks each seed's stop; grey where a seed's norm was below float32's range; "
    "the triangle above each panel marks the first scored position. It shows whether training opens a path for "
    "the gradient across the gap."
)


def gradient_heatmap(
    runs: pd.DataFrame,
    grad_norms: pd.DataFrame,
    *,
    gap: int | None = None,
    layer: int = 0,
    direction: str = "fwd",
    state: str = "h",
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """log10 ||dL/dh_t|| over (timestep, training step), one panel per series.

    Each cell is the mean of log10 norm over the finished seeds still training at that step
    (rows cut at each run's stop, ``until_stop``): a panel ends at its last seed's stop, and
    a triangle right of it marks each seed's stop (gid ``stop:<series>``). Cells where any
    seed was below float32's range are masked (grey). One colour scale and colorbar for all
    panels; a triangle above each panel marks the first scored position (distance 0; gid
    ``scored:<series>``), which may lie at the panel's edge. Meshes carry gids ``heatmap:<series>``.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(grad_norms, "grad_norms", GRAD_COLUMNS)
    gap, done, at = runs_at(runs, gap)
    rows = until_stop(join(grad_norms, done, "grad_norms"), done)
    rows = rows[(rows["layer"] == layer) & (rows["direction"] == direction) & (rows["state"] == state)]
    if rows.empty:
        raise FigureSkipped(f"no gradient norms for layer {layer}, direction {direction!r}, state {state!r}, gap {gap}")
    stats = log_stats(rows, ["series", "step", "timestep"])
    measured = stats.loc[~stats["below"], "mean"]
    if measured.empty:
        raise FigureSkipped(f"every gradient norm at gap {gap} is below float32 range")
    norm = Normalize(vmin=float(measured.min()), vmax=float(measured.max()))
    present = [s for s in order if s in set(stats["series"])]

    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = new_figure(3.6 * ncols + 1.2, 3.0 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    mesh = None
    zero = rows.loc[rows["distance"] == 0, "timestep"].unique()
    for ax, series in zip(axes, present):
        s = stats[stats["series"] == series]
        values = s.pivot(index="step", columns="timestep", values="mean")
        below = s.assign(below=s["below"].astype(float)).pivot(index="step", columns="timestep", values="below")
        image = np.ma.masked_array(values.to_numpy(float), mask=below.to_numpy(float) != 0)  # NaN (missing) too
        mesh = ax.pcolormesh(
            _edges(values.columns.to_numpy()),
            _edges(values.index.to_numpy()),
            image,
            cmap=HEATMAP_CMAP,
            norm=norm,
            rasterized=True,
            gid=f"heatmap:{series}",
        )
        ax.set_facecolor(BELOW_FLOOR_GREY)
        # the first scored position: a triangle above the panel (a line there may sit on the panel's edge)
        ax.plot(
            zero,
            np.ones(len(zero)),
            marker="v",
            markersize=6,
            color="black",
            linestyle="none",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            gid=f"scored:{series}",
        )
        stopped = done[stopped_early(done) & (done["series"] == series)]
        if len(stopped):  # each seed's stop: a triangle right of the panel
            ax.plot(
                np.ones(len(stopped)),
                last_trained_step(stopped).to_numpy(float),
                marker="<",
                markersize=5,
                color="black",
                linestyle="none",
                transform=ax.get_yaxis_transform(),
                clip_on=False,
                gid=f"stop:{series}",
            )
        ax.set_title(series, color=styles[series].colour, fontsize=10)
        ax.set_xlabel("timestep")
        ax.set_ylabel("training step")
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    assert mesh is not None  # at least one panel is drawn
    fig.colorbar(mesh, ax=axes[: len(present)].tolist(), label=rf"$\log_{{10}}\|\partial L/\partial {state}_t\|$")
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"log10 ||dL/d{state}_t|| over timestep and training step at gap {gap}",
        [
            f"layer {layer}, {DIRECTION.get(direction, direction)} direction, state {state}; "
            f"mean over the {count_text(n_seeds)} finished seeds still training",
            diverged_note(at),
        ],
    )
    return fig
