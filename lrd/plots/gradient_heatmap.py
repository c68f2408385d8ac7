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
)
from lrd.plots.style import (
    BELOW_FLOOR_GREY,
    HEATMAP_CMAP,
    SeriesStyle,
    prepare,
)
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
    "over finished seeds, one panel per model; grey where a seed's norm was below float32's range; the dashed line "
    "marks the first scored position. It shows whether training opens a path for the gradient across the gap."
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

    Each cell is the mean over finished seeds of log10 norm; cells where any seed was
    below float32's range are masked (grey). One colour scale and colorbar for all
    panels; a dashed white line marks the first scored position (distance 0).
    Meshes carry gids ``heatmap:<series>``.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(grad_norms, "grad_norms", GRAD_COLUMNS)
    gap, done, at = runs_at(runs, gap)
    rows = join(grad_norms, done, "grad_norms")
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
        for t in zero:
            ax.axvline(t, color="white", linestyle="--", linewidth=0.8)
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
        f"Gradient norm over training at gap {gap}",
        [
            f"layer {layer}, {DIRECTION.get(direction, direction)} direction, state {state}; "
            f"mean over {count_text(n_seeds)} seeds of log10 norm; grey: below float32 range in some seed; "
            "dashed: first scored position",
            diverged_note(at),
        ],
    )
    return fig
