"""Figure 7: the distributions of the gate activations (``lrd.dynamics``) at initialisation and at the end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lrd.plots.base import FigureSkipped, count_text, diverged_note, join, legend, new_figure, runs_at, title
from lrd.plots.spectrum import dynamics_rows
from lrd.plots.style import SeriesStyle, prepare

WHEN = {"init": ("0.55", -0.15), "end": ("black", 0.15)}  # colour, x offset
CAPTION = (
    "Gate activations of layer 0 on the probe batch, at initialisation (grey) and at the end (black): per gate, "
    "the quantiles over sequences, timesteps and units (thin bar 5-95%, thick 25-75%, dot the median; means "
    "over finished seeds); the x labels give the fraction of saturated activations and the median time "
    "constant. Gates pinned near 0 or 1 pass no gradient through their own derivative."
)


def gate_distributions(
    runs: pd.DataFrame,
    dynamics: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Per series with gates, one panel: each gate's quantiles over the probe batch, timesteps and units, at
    the first and the last logged step (thin bar: 5-95%, thick: 25-75%, dot: median; means over finished
    seeds), with the fraction of saturated activations and the median time constant in the x labels.

    Gids ``gate:<series>:<gate>:<init|end>`` (the median's marker; its data is (x, median)).
    """
    runs, order, styles = prepare(runs, (), styles)
    quantiles = dynamics_rows(dynamics, "gate_quantile", runs)
    gap, done, at = runs_at(runs, gap)
    if quantiles.empty:
        raise FigureSkipped("no gate statistics (the cells have no gates to record)")
    rows = join(quantiles, done, "dynamics")
    saturated = dynamics_rows(dynamics, "saturated").merge(done[["run", "series", "seed"]], on="run")
    tau = dynamics_rows(dynamics, "time_constant").merge(done[["run", "series", "seed"]], on="run")
    present = [s for s in order if s in set(rows["series"])]
    if not present:
        raise FigureSkipped(f"no gate statistics at gap {gap}")
    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = new_figure(4.2 * ncols + 1.0, 3.4 * nrows + 1.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    first, last = rows["step"].min(), rows["step"].max()
    for ax, series in zip(axes, present):
        mine = rows[rows["series"] == series]
        gates = list(dict.fromkeys(mine["gate"]))
        labels = []
        for x, gate in enumerate(gates):
            for when, step in (("init", first), ("end", last)):
                colour, offset = WHEN[when]
                at_step = mine[(mine["gate"] == gate) & (mine["step"] == step)]
                q = at_step.groupby("index")["value"].mean()  # mean over seeds, per quantile (percent)
                if q.empty:
                    continue
                xs = x + offset
                ax.plot([xs, xs], [q[5], q[95]], color=colour, linewidth=1.0, gid=f"range:{series}:{gate}:{when}")
                ax.plot([xs, xs], [q[25], q[75]], color=colour, linewidth=4.0, solid_capstyle="butt")
                ax.plot([xs], [q[50]], "o", color="white", markeredgecolor=colour, gid=f"gate:{series}:{gate}:{when}")
            sat = saturated[(saturated["series"] == series) & (saturated["gate"] == gate)]
            sat = sat.groupby("step")["value"].mean()
            labels.append(f"{gate}\nsat. {sat.get(first, np.nan):.0%}→{sat.get(last, np.nan):.0%}")
        ax.set_xticks(range(len(gates)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(gates) - 0.4)
        ax.set_ylabel("activation (dimensionless)")
        mine_tau = tau[(tau["series"] == series) & (tau["index"] == 50)].groupby("step")["value"].mean()
        heading = series
        if len(mine_tau):
            heading += (
                f": median tau = 1/(1-k) {mine_tau.get(first, np.nan):.3g} → {mine_tau.get(last, np.nan):.3g} steps"
            )
        ax.set_title(heading, color=styles[series].colour, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=WHEN["init"][0], linewidth=4, label=f"step {first:.0f} (initialisation)"),
        Line2D([], [], color=WHEN["end"][0], linewidth=4, label=f"step {last:.0f} (end)"),
    ]
    legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Gate activations over the probe batch, timesteps and units at gap {gap}",
        [
            "bars: 5-95% and 25-75% quantiles, dot: median, layer 0 forward; sat.: fraction with derivative below "
            f"the saturation threshold x its maximum; means over {count_text(n_seeds)} seeds",
            diverged_note(at),
        ],
    )
    return fig
