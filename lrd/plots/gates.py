"""Figure 7: the distributions of the gate activations (``lrd.dynamics``) at initialisation and at the end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lrd.plots.base import (
    FigureSkipped,
    count_text,
    diverged_note,
    join,
    legend,
    new_figure,
    runs_at,
    title,
    until_stop,
)
from lrd.plots.spectrum import dynamics_rows
from lrd.plots.style import SeriesStyle, prepare

WHEN = {"init": ("0.55", -0.15), "end": ("black", 0.15)}  # colour, x offset
CAPTION = (
    "Gate activations of layer 0 on the probe batch, at initialisation (grey) and at the end (black): per gate, "
    "the quantiles over sequences, timesteps and units (thin bar 5-95%, thick 25-75%, dot the median; means "
    "over finished seeds; the end is each run's last trained step, its stop for a run stopped when solved); the x "
    "labels give each gate's fraction of saturated activations (derivative below the saturation threshold x its "
    "maximum), initialisation → end, and the panel titles the median time constant 1/(1-k) of the gate that keeps "
    "the state. Gates pinned near 0 or 1 pass no gradient through their own derivative."
)


def _mark_ends(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` at each run's first ("init") and last ("end") logged step, with a ``when`` column."""
    first = rows["step"] == rows.groupby("run")["step"].transform("min")
    last = rows["step"] == rows.groupby("run")["step"].transform("max")
    return pd.concat([rows[first].assign(when="init"), rows[last].assign(when="end")])


def _steps(steps: pd.Series) -> str:
    lo, hi = steps.min(), steps.max()
    return f"step {lo:.0f}" if lo == hi else f"steps {lo:.0f}-{hi:.0f}"


def gate_distributions(
    runs: pd.DataFrame,
    dynamics: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Per series with gates, one panel: each gate's quantiles over the probe batch, timesteps and units, at
    the first and the last logged step (thin bar: 5-95%, thick: 25-75%, dot: median; means over finished
    seeds), with the fraction of saturated activations in the x labels and the median time constant in the
    panel titles. The end is each run's last trained step (``until_stop``).

    Gids ``gate:<series>:<gate>:<init|end>`` (the median's marker; its data is (x, median)).
    """
    runs, order, styles = prepare(runs, (), styles)
    quantiles = dynamics_rows(dynamics, "gate_quantile", runs)
    gap, done, at = runs_at(runs, gap)
    if quantiles.empty:
        raise FigureSkipped("no gate statistics (the cells have no gates to record)")
    rows = until_stop(join(quantiles, done, "dynamics"), done)  # each run's rows up to its stop
    saturated = until_stop(dynamics_rows(dynamics, "saturated").merge(done[["run", "series", "seed"]], on="run"), done)
    tau = until_stop(dynamics_rows(dynamics, "time_constant").merge(done[["run", "series", "seed"]], on="run"), done)
    present = [s for s in order if s in set(rows["series"])]
    if not present:
        raise FigureSkipped(f"no gate statistics at gap {gap}")
    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = new_figure(4.2 * ncols + 1.0, 3.4 * nrows + 1.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    # each run's own first and last log point (a run stopped when solved ends before the budget)
    rows, saturated, tau = (_mark_ends(t) for t in (rows, saturated, tau))
    first, last = rows.loc[rows["when"] == "init", "step"], rows.loc[rows["when"] == "end", "step"]
    for ax, series in zip(axes, present):
        mine = rows[rows["series"] == series]
        gates = list(dict.fromkeys(mine["gate"]))
        labels = []
        for x, gate in enumerate(gates):
            for when in ("init", "end"):
                colour, offset = WHEN[when]
                at_step = mine[(mine["gate"] == gate) & (mine["when"] == when)]
                q = at_step.groupby("index")["value"].mean()  # mean over seeds, per quantile (percent)
                if q.empty:
                    continue
                xs = x + offset
                ax.plot([xs, xs], [q[5], q[95]], color=colour, linewidth=1.0, gid=f"range:{series}:{gate}:{when}")
                ax.plot([xs, xs], [q[25], q[75]], color=colour, linewidth=4.0, solid_capstyle="butt")
                ax.plot([xs], [q[50]], "o", color="white", markeredgecolor=colour, gid=f"gate:{series}:{gate}:{when}")
            sat = saturated[(saturated["series"] == series) & (saturated["gate"] == gate)]
            sat = sat.groupby("when")["value"].mean()
            labels.append(f"{gate}\nsat. {sat.get('init', np.nan):.0%}→{sat.get('end', np.nan):.0%}")
        ax.set_xticks(range(len(gates)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(gates) - 0.4)
        ax.set_ylabel("activation (dimensionless)")
        mine_tau = tau[(tau["series"] == series) & (tau["index"] == 50)].groupby("when")["value"].mean()
        heading = series
        if len(mine_tau):
            heading += f": median tau {mine_tau.get('init', np.nan):.3g} → {mine_tau.get('end', np.nan):.3g} steps"
        ax.set_title(heading, color=styles[series].colour, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=WHEN["init"][0], linewidth=4, label=f"step {first.min():.0f} (initialisation)"),
        Line2D([], [], color=WHEN["end"][0], linewidth=4, label=f"end: each run's last log point ({_steps(last)})"),
    ]
    legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Gate activations at initialisation and at the end, gap {gap}",
        [
            f"bars: 5-95% and 25-75% quantiles, dot: median, layer 0 forward; means over {count_text(n_seeds)} seeds",
            diverged_note(at),
        ],
    )
    return fig
