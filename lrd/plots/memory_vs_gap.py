"""Figure 3, the headline: final metric against gap, with bootstrap intervals over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
from matplotlib.transforms import ScaledTranslation

from lrd.plots.base import (
    FigureSkipped,
    count_text,
    diverged_note,
    legend,
    new_figure,
    title,
)
from lrd.plots.style import (
    SeriesStyle,
    prepare,
)


def bootstrap_interval(values, *, ci: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, ch. 13).

    Deterministic: resamples with ``numpy.random.default_rng(seed)``. A single value
    gives a zero-width interval.
    """
    values = np.asarray(values, float)
    if values.size == 0:
        return (math.nan, math.nan)
    if values.size == 1:
        return (float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def _gap_axis(ax, gaps) -> None:
    gaps = sorted(set(int(g) for g in gaps))
    if gaps[0] > 0 and gaps[-1] / gaps[0] >= 8:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(gaps))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def memory_vs_gap(
    runs: pd.DataFrame,
    *,
    ci: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    styles: dict[str, SeriesStyle] | None = None,
) -> Figure:
    """Final metric against gap, one line per series (the headline figure).

    Line: mean over finished seeds; vertical bar: ``ci`` percentile-bootstrap interval
    of that mean; dots: the seeds; 'x': diverged runs, placed at the baseline metric.
    Grey dashed: memoryless baseline; dotted: the solve threshold. Artists carry gids
    ``mean:<series>``, ``interval:<series>``, ``seeds:<series>``, ``diverged:<series>``,
    ``baseline`` and ``threshold``.
    """
    runs, order, styles = prepare(runs, ("final_metric", "baseline_metric", "solve_threshold"), styles)
    gaps = sorted(runs["gap"].unique())
    if len(gaps) < 2:
        raise FigureSkipped(f"memory vs gap needs at least two gaps; the runs have only gap {gaps[0]}")
    metric_name = str(runs["metric_name"].iloc[0]) if "metric_name" in runs else "metric"

    fig = new_figure(8.5, 5.0)
    ax = fig.subplots()
    done = runs[runs["status"] == "done"]
    diverged = runs[runs["status"] == "diverged"]
    for i, series in enumerate(order):
        style = styles[series]
        # dodge the series sideways by a few points on screen (the data stay at the gap), so
        # models with equal values at a gap (e.g. all solved) do not hide one another
        dodge = ax.transData + ScaledTranslation((i - (len(order) - 1) / 2) * 5 / 72, 0, fig.dpi_scale_trans)
        mine = done[done["series"] == series]
        stat_rows = []
        for g in gaps:
            values = mine.loc[mine["gap"] == g, "final_metric"].to_numpy(float)
            values = values[np.isfinite(values)]
            mean = values.mean() if values.size else math.nan
            stat_rows.append((g, mean, *bootstrap_interval(values, ci=ci, n_boot=n_boot, seed=seed)))
        stats = np.array(stat_rows, float)  # (gaps, 4): gap, mean, lo, hi
        ax.plot(
            stats[:, 0],
            stats[:, 1],
            color=style.colour,
            marker=style.marker,
            markersize=6,
            markerfacecolor="white" if style.bidirectional else style.colour,
            label=series,
            gid=f"mean:{series}",
            zorder=3,
            transform=dodge,
        )
        ok = np.isfinite(stats[:, 1])
        ax.vlines(
            stats[ok, 0],
            stats[ok, 2],
            stats[ok, 3],
            color=style.colour,
            linewidth=2.5,
            alpha=0.5,
            gid=f"interval:{series}",
            transform=dodge,
        )
        ax.scatter(
            mine["gap"].to_numpy(float),
            mine["final_metric"].to_numpy(float),
            s=12,
            color=style.colour,
            alpha=0.6,
            linewidths=0,
            gid=f"seeds:{series}",
            zorder=2,
            transform=dodge,
        )
        bad = diverged[diverged["series"] == series]
        if len(bad):
            ax.scatter(
                bad["gap"].to_numpy(float),
                bad["baseline_metric"].to_numpy(float),
                marker="x",
                s=45,
                color=style.colour,
                linewidths=1.5,
                gid=f"diverged:{series}",
                zorder=4,
                transform=dodge,
            )
    base = runs.groupby("gap")["baseline_metric"].first()
    ax.plot(
        base.index.to_numpy(float),
        base.to_numpy(float),
        color="0.4",
        linestyle="--",
        linewidth=1.2,
        label="memoryless baseline",
        gid="baseline",
    )
    handles, _ = ax.get_legend_handles_labels()
    for threshold in sorted(runs["solve_threshold"].unique()):
        ax.axhline(threshold, color="0.4", linestyle=":", linewidth=1.2, gid="threshold")
        handles.append(Line2D([], [], color="0.4", linestyle=":", label=f"solved: {metric_name} >= {threshold:g}"))
    if len(diverged):
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="none", label="diverged (at baseline)"))
    handles.append(Line2D([], [], color="0.3", marker="o", markersize=3, linestyle="none", label="one seed"))
    _gap_axis(ax, gaps)
    ax.set_xlabel("gap (timesteps)")
    ax.set_ylabel(f"final {metric_name}")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    legend(fig, handles)
    n_seeds = done.groupby(["series", "gap"])["seed"].nunique()
    title(
        fig,
        runs,
        "Memory vs gap",
        [
            f"line: mean over finished seeds ({count_text(n_seeds)} per point); bar: {ci:.0%} bootstrap interval; "
            "dots: seeds",
            diverged_note(runs),
        ],
    )
    return fig
