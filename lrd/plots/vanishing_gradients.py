"""Figure 1: ||dL/d state_t|| against distance from the loss, at initialisation and after training."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lrd.plots.base import (
    DIRECTION,
    FigureSkipped,
    check_table,
    count_text,
    diverged_note,
    join,
    legend,
    log_stats,
    new_figure,
    runs_at,
    title,
    until_stop,
)
from lrd.plots.style import (
    STATE_LINESTYLES,
    SeriesStyle,
    line_kwargs,
    prepare,
)
from lrd.schema import FLOOR, GRAD_COLUMNS

# what the figure shows, for a reader who sees it alone (the report prints it under the figure)
CAPTION = (
    "Vanishing gradients: the norm of the gradient of the loss with respect to the model's state, ||dL/d state_t||,"
    " against the distance (in timesteps) from the first scored position, at initialisation (left) and after "
    "training (right: each run's last trained step, its stop for a run stopped when solved), on a fixed probe "
    "batch. Lines: geometric mean over finished seeds; bands: min to max over "
    "seeds; hatched: below float32's smallest normal number, where the norm was not measured. A straight falling "
    "line on this log scale is an exponential decay of the learning signal with distance."
)


def vanishing_gradients(
    runs: pd.DataFrame,
    grad_norms: pd.DataFrame,
    *,
    gap: int | None = None,
    layer: int = 0,
    direction: str = "fwd",
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """||dL/d state_t|| against distance from the loss, at initialisation and after training.

    One line per series: the geometric mean over finished seeds of the norm at each
    distance >= 0 (steps before the first scored position), with a min-max band over
    seeds; for the LSTM h solid and c dashed. Left panel: each run's first logged
    step (step 0); right: its last. ``gap`` defaults to ``default_gap``.

    Artists carry gids ``mean:<series>:<state>:<panel>``, ``band:...`` and
    ``below_floor:...`` (panel 0 or 1) so tests and users can read the data back.
    """
    runs, order, styles = prepare(runs, (), styles)
    check_table(grad_norms, "grad_norms", GRAD_COLUMNS)
    gap, done, at = runs_at(runs, gap)
    rows = until_stop(join(grad_norms, done, "grad_norms"), done)  # "after training": each run's last trained step
    rows = rows[(rows["layer"] == layer) & (rows["direction"] == direction) & (rows["distance"] >= 0)]
    if rows.empty:
        raise FigureSkipped(f"no gradient norms at distance >= 0 for layer {layer}, direction {direction!r}, gap {gap}")
    first = rows["step"] == rows.groupby("run")["step"].transform("min")
    last = rows["step"] == rows.groupby("run")["step"].transform("max")

    fig = new_figure(11, 4.6)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    any_below = False
    panels = ((first, "at initialisation"), (last, "after training"))
    for panel, (ax, (selected, when)) in enumerate(zip(axes, panels)):
        panel_rows = rows[selected]
        steps = sorted(panel_rows["step"].unique())
        ax.set_title(f"{when} (step {steps[0]})" if len(steps) == 1 else f"{when} (steps {steps[0]} to {steps[-1]})")
        stats = log_stats(panel_rows, ["series", "state", "distance"])
        for series in order:
            style = styles[series]
            for state in sorted(stats.loc[stats["series"] == series, "state"].unique(), key=lambda s: s != "h"):
                s = stats[(stats["series"] == series) & (stats["state"] == state)]
                x = s["distance"].to_numpy(float)
                measured = ~s["below"].to_numpy()
                y = np.where(measured, 10 ** s["mean"].to_numpy(), np.nan)
                tag = f"{series}:{state}:{panel}"
                ax.plot(
                    x,
                    y,
                    linestyle=STATE_LINESTYLES.get(state, ":"),
                    linewidth=1.6,
                    gid=f"mean:{tag}",
                    **line_kwargs(style, len(x)),
                )
                band = ax.fill_between(
                    x,
                    10 ** s["min"].to_numpy(),
                    10 ** s["max"].to_numpy(),
                    where=measured,
                    color=style.colour,
                    alpha=0.15,
                    linewidth=0,
                )
                band.set_gid(f"band:{tag}")
                if (~measured).any():
                    any_below = True
                    ax.scatter(
                        x[~measured],
                        np.full((~measured).sum(), FLOOR),
                        marker="v",
                        s=18,
                        facecolors="none",
                        edgecolors=style.colour,
                        linewidths=1,
                        gid=f"below_floor:{tag}",
                        zorder=3,
                    )
        ax.set_yscale("log")
        ax.set_xlabel("distance from the loss (timesteps)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(r"$\|\partial L/\partial\,\mathrm{state}_t\|$ (Frobenius over batch and units)")

    handles: list[Artist] = [
        Line2D([], [], label=s, **line_kwargs(styles[s], 16)) for s in order if s in set(rows["series"])
    ]
    states = sorted(rows["state"].unique(), key=lambda s: s != "h")
    if len(states) > 1:
        handles += [
            Line2D([], [], color="0.3", linestyle=STATE_LINESTYLES.get(s, ":"), label=f"state {s}") for s in states
        ]
    if any_below:
        for ax in axes:
            bottom = FLOOR / 30
            ax.axhspan(bottom, FLOOR, facecolor="none", edgecolor="0.5", hatch="///", linewidth=0, gid="floor_band")
            ax.axhline(FLOOR, color="0.5", linewidth=0.8)
            ax.set_ylim(bottom=bottom)
        floor_label = f"below float32 range (< {FLOOR:.1e})"
        handles.append(Patch(facecolor="none", edgecolor="0.5", hatch="///", label=floor_label))
        handles.append(
            Line2D(
                [],
                [],
                marker="v",
                linestyle="none",
                markerfacecolor="none",
                color="0.3",
                label="a seed below float32 range",
            )
        )
    handles.append(Patch(facecolor="0.5", alpha=0.3, label="min to max over seeds"))
    legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"||dL/d state_t|| against distance from the loss at gap {gap}",
        [
            f"layer {layer}, {DIRECTION.get(direction, direction)} direction; "
            "distance: timesteps before the first scored position; "
            f"line: geometric mean over {count_text(n_seeds)} seeds; band: min to max over seeds",
            diverged_note(at),
        ],
    )
    return fig
