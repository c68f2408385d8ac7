"""Figure 6: the Jacobian spectrum along the probe trajectory (``lrd.dynamics``) against training step."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lrd.plots.base import (
    FigureSkipped,
    NotAskedFor,
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
from lrd.schema import DYNAMICS_COLUMNS

NO_DYNAMICS = (
    "no dynamics table: trained with diagnostics = false (the default) or before the diagnostics; "
    "run the experiment with diagnostics = true to draw it"
)
CAPTION = (
    "Jacobian spectrum along the probe trajectory of layer 0 against training step (mean over finished seeds): "
    "the top Lyapunov exponent (mean ln growth per step of a perturbation of the state) and the mean over "
    "timesteps of ln sigma_max(J_t), the largest singular value of the state-to-state Jacobian (dashed, for "
    "the tanh RNN: Pascanu et al.'s bound on it). Above 0: "
    "perturbations, and gradients flowing back, grow; below 0: they vanish."
)


def dynamics_rows(dynamics: pd.DataFrame, quantity: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of one quantity; NotAskedFor when no run asked for diagnostics, FigureSkipped when they lack them."""
    if dynamics is None or (isinstance(dynamics, pd.DataFrame) and dynamics.empty):
        asked = runs is not None and "diagnostics" in runs and runs["diagnostics"].fillna(False).astype(bool).any()
        if asked:
            raise FigureSkipped("no dynamics table, although the runs were trained with diagnostics = true")
        raise NotAskedFor(NO_DYNAMICS)
    check_table(dynamics, "dynamics", DYNAMICS_COLUMNS)
    return dynamics[dynamics["quantity"] == quantity]


def seed_mean(rows: pd.DataFrame, value: str = "value") -> pd.Series:
    """Per step: the mean over seeds of ``value``, NaN where a seed lacks it."""
    table = rows.pivot_table(index="step", columns="seed", values=value, aggfunc="first", dropna=False)
    return pd.Series(table.to_numpy(float).mean(axis=1), index=table.index.to_numpy(float))


def spectrum_curves(
    runs: pd.DataFrame,
    dynamics: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Left: the top Lyapunov exponent of the product of J_t = d s_t / d s_{t-1}; right: the mean over
    timesteps of ln sigma_max(J_t), and for the tanh RNN Pascanu et al.'s bound (dashed); both against step.

    Layer 0 forward; lines: means over finished seeds. Gids ``lyapunov:<series>``,
    ``sigma:<series>``, ``bound:<series>``, ``zero``.
    """
    runs, order, styles = prepare(runs, (), styles)
    lyapunov = dynamics_rows(dynamics, "lyapunov", runs)
    gap, done, at = runs_at(runs, gap)
    top = join(lyapunov[lyapunov["index"] == 1], done, "dynamics")
    sigma = join(dynamics_rows(dynamics, "sigma_max"), done, "dynamics")
    bound = dynamics_rows(dynamics, "pmb_bound").merge(done[["run", "series", "seed"]], on="run")
    fig = new_figure(11, 4.6)
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    handles = []
    for series in order:
        mine = top[top["series"] == series]
        if mine.empty:
            continue
        mean = seed_mean(mine)
        kwargs = line_kwargs(styles[series], len(mean))
        left.plot(mean.index, mean.to_numpy(), linewidth=1.6, gid=f"lyapunov:{series}", **kwargs)
        handles.append(Line2D([], [], linewidth=1.6, label=series, **kwargs))
        for table, gid, style in ((sigma, "sigma", "-"), (bound, "bound", "--")):
            rows = table[table["series"] == series]
            if rows.empty:
                continue
            per_run = rows.assign(value=np.log(rows["value"].to_numpy(float)))  # ln sigma per timestep
            per_run = per_run.groupby(["run", "step", "seed"], as_index=False)["value"].mean()
            mean = seed_mean(per_run)
            right.plot(mean.index, mean.to_numpy(), linestyle=style, linewidth=1.4, gid=f"{gid}:{series}", **kwargs)
    if not handles:
        raise FigureSkipped(f"no Lyapunov exponents at gap {gap}")
    for ax in (left, right):
        ax.axhline(0.0, color="0.2", linestyle=":", linewidth=1.0, gid="zero")
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_tick_params(labelleft=True)
    left.set_ylabel("top Lyapunov exponent (1/timestep)")
    left.set_title("lambda_1 of the product J_T ... J_1 (QR iteration)", fontsize=9)
    right.set_ylabel("mean over t of ln sigma_max(J_t) (1/timestep)")
    right.set_title("largest singular value per step (power iteration)", fontsize=9)
    if len(bound):
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="tanh RNN: ln(sigma_max(U) max|tanh'|) bound"))
    handles.append(Line2D([], [], color="0.2", linestyle=":", label="0: volumes neither shrink nor grow"))
    legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Jacobian spectrum of the recurrence along the probe batch at gap {gap} (< 0: gradients shrink per step)",
        [
            f"J_t = d s_t / d s_(t-1), layer 0 forward (LSTM: s = (c, h)); line: mean over {count_text(n_seeds)} seeds",
            diverged_note(at),
        ],
    )
    return fig
