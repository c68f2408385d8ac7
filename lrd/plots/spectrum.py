"""Figure 6: the Jacobian spectrum along the probe trajectory (``lrd.dynamics``) against training step."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lrd.plots.base import (
    FigureSkipped,
    NotAskedFor,
    check_table,
    count_text,
    diverged_note,
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
from lrd.results import spectrum_statistic
from lrd.schema import DYNAMICS_COLUMNS

NO_DYNAMICS = (
    "no dynamics table: trained with diagnostics = false (the default) or before the diagnostics; "
    "run the experiment with diagnostics = true to draw it"
)
CAPTION = (
    "Jacobian spectrum of the recurrence J_t = d s_t / d s_(t-1) (layer 0 forward; LSTM: s = (c, h)) along the "
    "probe trajectory against training step. Left: the top Lyapunov exponent of J_T ... J_1 (QR iteration; mean "
    "ln growth per step of a perturbation of the state); above 0 perturbations, and gradients flowing back, grow, "
    "below 0 they vanish. Right: the median over timesteps of sigma_max(J_t), the largest singular value (power "
    "iteration), on a log axis; above 1 a step can stretch a gradient, below 1 it shrinks every one (dashed, for "
    "the tanh RNN: Pascanu et al.'s bound sigma_max(U) max|tanh'| on it). Lines: the median over the finished seeds "
    "still training at each step (a bar marks a seed's stop), the statistics the README quotes "
    "(lrd.results.spectrum_statistic)."
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


def spectrum_curves(
    runs: pd.DataFrame,
    dynamics: pd.DataFrame,
    *,
    gap: int | None = None,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Left: the top Lyapunov exponent of the product of J_t = d s_t / d s_{t-1}; right: the median over
    timesteps of sigma_max(J_t), and for the tanh RNN Pascanu et al.'s bound (dashed); both against step.

    Layer 0 forward; per run the statistic of ``lrd.results.spectrum_statistic``, then the
    median over the finished seeds still training at each step (rows cut at each run's
    stop, ``until_stop``; a bar marks a stop). Gids ``lyapunov:<series>``, ``sigma:<series>``,
    ``bound:<series>``, ``stop:<series>``, ``zero``, ``one``.
    """
    runs, order, styles = prepare(runs, (), styles)
    dynamics_rows(dynamics, "lyapunov", runs)  # NotAskedFor / FigureSkipped without diagnostics
    gap, done, at = runs_at(runs, gap)
    ids = done[["run", "series", "seed"]]
    mine_rows = dynamics[dynamics["run"].isin(done["run"])]
    top = until_stop(spectrum_statistic(mine_rows, "lyapunov", index=1).merge(ids, on="run"), done)
    sigma = until_stop(spectrum_statistic(mine_rows, "sigma_max").merge(ids, on="run"), done)
    bound = until_stop(spectrum_statistic(mine_rows, "pmb_bound").merge(ids, on="run"), done)
    fig = new_figure(11, 4.6)
    left, right = fig.subplots(1, 2, sharex=True)
    handles, stops = [], 0
    for series in order:
        mine = top[top["series"] == series]
        if mine.empty:
            continue
        median = present_mean(mine, "value", how="median")
        kwargs = line_kwargs(styles[series], len(median))
        left.plot(median.index, median.to_numpy(), linewidth=1.6, gid=f"lyapunov:{series}", **kwargs)
        stops += stop_marks(left, mine, done, "value", styles[series].colour, f"stop:{series}")
        handles.append(Line2D([], [], linewidth=1.6, label=series, **kwargs))
        for table, gid, style in ((sigma, "sigma", "-"), (bound, "bound", "--")):
            rows = table[table["series"] == series]
            if rows.empty:
                continue
            median = present_mean(rows, "value", how="median")
            right.plot(median.index, median.to_numpy(), linestyle=style, linewidth=1.4, gid=f"{gid}:{series}", **kwargs)
            if gid == "sigma":
                stop_marks(right, rows, done, "value", styles[series].colour, f"stop:{series}")
    if not handles:
        raise FigureSkipped(f"no Lyapunov exponents at gap {gap}")
    left.axhline(0.0, color="0.2", linestyle=":", linewidth=1.0, gid="zero")
    right.axhline(1.0, color="0.2", linestyle=":", linewidth=1.0, gid="one")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
    left.set_ylabel("top Lyapunov exponent (1/timestep)")
    left.set_title("top Lyapunov exponent", fontsize=9)
    right.set_ylabel("median over t of sigma_max(J_t)")
    right.set_title("largest singular value per step", fontsize=9)
    if len(bound):
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="tanh RNN: sigma_max(U) max|tanh'| bound"))
    handles.append(Line2D([], [], color="0.2", linestyle=":", label="0 (left), 1 (right): neither shrink nor grow"))
    if stops:
        handles.append(stop_handle())
    legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    title(
        fig,
        at,
        f"Jacobian spectrum of the recurrence along the probe batch at gap {gap}",
        [f"lines: median over the {count_text(n_seeds)} finished seeds still training", diverged_note(at)],
    )
    return fig
