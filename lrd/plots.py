"""Figures of a results store: DataFrames in, matplotlib Figures out, nothing else.

Every figure function takes the tables of ``lrd.store.load`` (``runs`` and, where
needed, ``curves`` or ``grad_norms``) for ONE task configuration and returns a
``matplotlib.figure.Figure`` (created without pyplot, so no global figure state):

  vanishing_gradients   ||dL/dh_t|| against distance from the loss, at init and after training
  gradient_heatmap      log10 ||dL/dh_t|| over (timestep, training step), one panel per model
  memory_vs_gap         final metric against gap: the headline figure
  learning_curves       loss against training step, one panel per model, one line per gap
  decay_length_curves   fitted e-folding length of ||dL/dh_t|| against training step

``write_figures`` splits a store's tables by task configuration and writes every
figure the data allows as PNG and PDF, byte-identical from one call to the next.

Conventions shared by all figures:

- A *series* is a model label ("lstm", "bi-gru"); when runs of one label differ in
  another model or training setting (e.g. ``hidden`` or ``recurrent_init``), the
  differing settings are appended ("rnn, recurrent_init=identity"), so different
  configurations are never averaged together as if they were seeds.
- Colours come from the Okabe-Ito colour-blind-safe palette, fixed per cell (rnn
  vermillion, lstm blue, gru green) and shared by a cell's bidirectional variant,
  which is told apart by square markers.
- Aggregates over seeds use finished runs (status "done"); diverged runs are shown
  as distinct markers or lines and counted in the title, never silently dropped.
  Failed runs (never trained, see ``lrd.store``) have nothing to draw and are left
  out by ``write_figures``; ``lrd plot`` says how many.
- Gradient norms below float32's smallest normal number were not measured (see
  ``lrd.probes``): a (series, timestep) point where any seed is below that floor is
  not drawn as data but marked in a hatched "below float32 range" band (figure 1) or
  left grey (figure 2).
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
from matplotlib.transforms import ScaledTranslation

log = logging.getLogger(__name__)

# float32's smallest normal number; equals lrd.probes.FLOOR (not imported: that module needs JAX).
FLOOR = float(np.finfo(np.float32).tiny)

# Okabe & Ito (2008), "Color universal design"; yellow last (weak on white).
OKABE_ITO = {
    "vermillion": "#D55E00",
    "blue": "#0072B2",
    "bluish green": "#009E73",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "reddish purple": "#CC79A7",
    "black": "#000000",
    "yellow": "#F0E442",
}
CELL_COLOURS = {"rnn": OKABE_ITO["vermillion"], "lstm": OKABE_ITO["blue"], "gru": OKABE_ITO["bluish green"]}
CELL_ORDER = ("rnn", "lstm", "gru")
_DIRECTION = {"fwd": "forward", "bwd": "backward"}
STATE_LINESTYLES = {"h": "-", "c": "--"}
GAP_CMAP = "viridis"  # sequential, colour-blind safe: gaps in learning curves
HEATMAP_CMAP = "viridis"
BELOW_FLOOR_GREY = "0.82"

# Columns of the runs table that define a configuration besides the task and the seed.
CONFIG_COLUMNS = (
    "cell",
    "hidden",
    "layers",
    "bidirectional",
    "merge",
    "recurrent_init",
    "forget_bias",
    "time_loop",
    "steps",
    "batch_size",
    "optimizer",
    "lr",
    "clip",
    "log_every",
    "eval_size",
    "probe_size",
)
# task_* columns that follow from the parameters and so do not identify a configuration.
DERIVED_TASK_COLUMNS = ("task_length", "task_convention", "task_source")

RUN_COLUMNS = ("run", "task", "gap", "model", "seed", "status")
CURVE_COLUMNS = ("run", "step")
GRAD_COLUMNS = ("run", "step", "layer", "direction", "state", "timestep", "distance", "norm", "below_floor")

# what savefig would otherwise stamp into a file: versions and dates
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}


class PlotError(ValueError):
    """Tables a figure cannot be drawn from; the message is one line."""


class FigureSkipped(PlotError):
    """Valid tables that do not hold what this figure needs (e.g. a single gap)."""


class SeriesStyle(NamedTuple):
    """How one series (model label) is drawn in every figure."""

    colour: str
    marker: str  # "o" unidirectional, "s" bidirectional
    bidirectional: bool


class Tables(NamedTuple):
    """The three tables of one task configuration (same fields as ``lrd.store.Results``)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    grad_norms: pd.DataFrame


# --- input checks ------------------------------------------------------------------------------
def check_table(table, name: str, required: Iterable[str]) -> pd.DataFrame:
    """``table`` itself if it is a non-empty DataFrame with the ``required`` columns; PlotError otherwise."""
    if not isinstance(table, pd.DataFrame):
        raise PlotError(f"the {name} table must be a pandas DataFrame, not {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise PlotError(f"the {name} table lacks column(s) {', '.join(missing)} (expected a table from lrd.store.load)")
    if table.empty:
        raise PlotError(f"the {name} table is empty: nothing to plot (have any runs finished?)")
    return table


def _task_columns(runs: pd.DataFrame) -> list[str]:
    return ["task"] + [c for c in runs.columns if c.startswith("task_") and c not in DERIVED_TASK_COLUMNS]


def _task_description(row: pd.Series, columns: list[str]) -> str:
    params = [f"{c.removeprefix('task_')}={_fmt(row[c])}" for c in columns[1:] if not _isnan(row[c])]
    return f"{row['task']} ({', '.join(params)})" if params else str(row["task"])


def _single_task(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with duplicate run ids dropped, checked to hold one task configuration."""
    runs = runs.drop_duplicates("run").reset_index(drop=True)
    columns = _task_columns(runs)
    configs = runs[columns].astype(str).drop_duplicates()
    if len(configs) > 1:
        found = "; ".join(_task_description(row, columns) for _, row in runs.loc[configs.index].iterrows())
        raise PlotError(
            f"the runs table holds {len(configs)} task configurations ({found}); "
            "plot one at a time (write_figures and split_by_task split them)"
        )
    return runs


# --- series and styles ---------------------------------------------------------------------------
def _fmt(value) -> str:
    if _isnan(value):
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _isnan(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _cell_of(model: str) -> str:
    return model.removeprefix("bi-")


def _sort_value(value):
    """A key that orders mixed numbers, strings and missing values without TypeError."""
    if _isnan(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating, bool, np.bool_)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def with_series(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``runs`` with a ``series`` column (see module docstring) and the series in drawing order.

    Order: cell (rnn, lstm, gru, then others by name), unidirectional before
    bidirectional, then the differing settings in increasing order.
    """
    runs = runs.copy()
    config = [c for c in CONFIG_COLUMNS if c in runs.columns]
    labels = pd.Series(runs["model"].astype(str), index=runs.index)
    order_keys = {}
    for model, group in runs.groupby("model", sort=True):
        varying = [c for c in config if group[c].astype(str).nunique() > 1]
        for idx, row in group.iterrows():
            label = ", ".join([str(model)] + [f"{c}={_fmt(row[c])}" for c in varying])
            labels[idx] = label
            cell = _cell_of(str(model))
            order_keys[label] = (
                CELL_ORDER.index(cell) if cell in CELL_ORDER else len(CELL_ORDER),
                cell,
                str(model).startswith("bi-"),
                tuple(_sort_value(row[c]) for c in varying),
            )
    runs["series"] = labels
    return runs, sorted(order_keys, key=order_keys.__getitem__)


def series_styles(labels: Iterable[str]) -> dict[str, SeriesStyle]:
    """A style per series label: a fixed Okabe-Ito colour per cell, shared by its bi- variant.

    Labels that share a cell but differ in settings get the next unused palette colours,
    in the order given; past eight distinct colours the palette repeats.
    """
    styles, used, by_key = {}, [], {}
    palette = list(OKABE_ITO.values())
    for label in labels:
        model = label.split(",")[0]
        key = label.removeprefix("bi-")  # colour key: the bi- variant shares the colour
        if key not in by_key:
            preferred = CELL_COLOURS.get(_cell_of(model))
            if preferred is not None and preferred not in used:
                colour = preferred
            else:
                free = [c for c in palette if c not in used]
                colour = free[0] if free else palette[len(used) % len(palette)]
            used.append(colour)
            by_key[key] = colour
        bidirectional = model.startswith("bi-")
        styles[label] = SeriesStyle(by_key[key], "s" if bidirectional else "o", bidirectional)
    return styles


def model_styles(runs: pd.DataFrame) -> dict[str, SeriesStyle]:
    """Styles of every series of ``runs`` (all task configurations), for consistent colours."""
    check_table(runs, "runs", RUN_COLUMNS)
    labels = []
    for tables in _split_runs(runs).values():
        labels += [s for s in with_series(tables)[1] if s not in labels]
    return series_styles(labels)


def _prepare(runs: pd.DataFrame, required: Iterable[str], styles) -> tuple[pd.DataFrame, list[str], dict]:
    check_table(runs, "runs", tuple(RUN_COLUMNS) + tuple(required))
    runs, order = with_series(_single_task(runs))
    repeated = runs[runs.duplicated(["series", "gap", "seed"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        same = repeated.merge(first[["series", "gap", "seed"]].to_frame().T, on=["series", "gap", "seed"])
        raise PlotError(
            f"runs {', '.join(same['run'].astype(str))} are all {first['series']} at gap {first['gap']} with seed "
            f"{first['seed']}; they differ in a setting the figures do not separate: plot them apart"
        )
    styles = dict(styles) if styles is not None else {}
    missing = [s for s in order if s not in styles]
    if missing:
        fresh = series_styles(list(styles) + missing)
        styles.update({s: fresh[s] for s in missing})
    return runs, order, styles


def _line_kwargs(style: SeriesStyle, n_points: int) -> dict:
    """Line style of a series: bidirectional series carry hollow square markers."""
    if not style.bidirectional:
        return {"color": style.colour}
    return {
        "color": style.colour,
        "marker": "s",
        "markerfacecolor": "white",
        "markersize": 4,
        "markevery": max(1, n_points // 8),
    }


# --- titles ----------------------------------------------------------------------------------------
def _baseline_text(runs: pd.DataFrame) -> str:
    metric = str(runs["metric_name"].iloc[0]) if "metric_name" in runs else "metric"
    parts = []
    for column, name in (("baseline_loss", "loss"), ("baseline_metric", metric)):
        if column not in runs:
            continue
        values = np.unique(np.round(runs[column].to_numpy(float), 12))
        values = values[np.isfinite(values)]
        if len(values) == 1:
            parts.append(f"{name} {values[0]:.4g}")
        elif len(values) > 1:
            parts.append(f"{name} {values.min():.4g} to {values.max():.4g} (depends on gap)")
    return "memoryless baseline: " + (", ".join(parts) if parts else "not recorded")


def _title(fig: Figure, runs: pd.DataFrame, heading: str, notes: Iterable[str] = ()) -> None:
    """Suptitle: heading and task, its convention, its baseline, then notes on the data."""
    row = runs.iloc[0]
    convention = str(row["task_convention"]) if "task_convention" in runs else "not recorded"
    lines = [f"{heading}: {_task_description(row, _task_columns(runs))}"]
    lines += textwrap.wrap(f"convention: {convention}", 120)
    lines.append(_baseline_text(runs))
    lines += [n for n in notes if n]
    fig.suptitle("\n".join(lines), fontsize=9)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure, handles: list) -> None:
    """One legend for the whole figure, below the axes (the title block owns the top)."""
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)


def _diverged_note(runs: pd.DataFrame) -> str:
    n = int((runs["status"] == "diverged").sum())
    return f"{n} diverged run{'s' if n != 1 else ''} (not in the averages)" if n else ""


# --- choosing data -----------------------------------------------------------------------------
def default_gap(runs: pd.DataFrame) -> int:
    """The largest gap at which some run solved the task, else the largest gap."""
    gaps = runs["gap"]
    if "solved" in runs:
        solved = runs["solved"].eq(True)
        if solved.any():
            return int(gaps[solved].max())
    return int(gaps.max())


def _runs_at(runs: pd.DataFrame, gap: int | None) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    """(gap, finished runs at it, all runs at it); ``gap`` None picks ``default_gap``."""
    gap = default_gap(runs) if gap is None else int(gap)
    at = runs[runs["gap"] == gap]
    if at.empty:
        raise PlotError(f"no runs at gap {gap}; gaps present: {', '.join(map(str, sorted(runs['gap'].unique())))}")
    done = at[at["status"] == "done"]
    if done.empty:
        raise FigureSkipped(f"no finished runs at gap {gap} (all {len(at)} diverged)")
    return gap, done, at


def _join(table: pd.DataFrame, runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of ``table`` belonging to ``runs``, with their series and seed."""
    joined = table.merge(runs[["run", "series", "seed"]], on="run", how="inner")
    if joined.empty:
        raise PlotError(f"the {name} table has no rows for the {len(runs)} selected run(s)")
    return joined


def _log_stats(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: mean, min and max over seeds of log10 norm, and whether any seed was below floor."""
    norm = rows["norm"].to_numpy(float)
    below = rows["below_floor"].to_numpy(bool) | (norm < FLOOR)  # a zero from elsewhere is no measurement either
    rows = rows.assign(log10=np.log10(np.maximum(norm, FLOOR)), below=below)
    grouped = rows.groupby(keys, sort=True)
    stats = grouped["log10"].agg(["mean", "min", "max", "count"])
    stats["below"] = grouped["below"].any()
    return stats.reset_index()


# --- 1. vanishing gradients ---------------------------------------------------------------------
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
    runs, order, styles = _prepare(runs, (), styles)
    check_table(grad_norms, "grad_norms", GRAD_COLUMNS)
    gap, done, at = _runs_at(runs, gap)
    rows = _join(grad_norms, done, "grad_norms")
    rows = rows[(rows["layer"] == layer) & (rows["direction"] == direction) & (rows["distance"] >= 0)]
    if rows.empty:
        raise FigureSkipped(f"no gradient norms at distance >= 0 for layer {layer}, direction {direction!r}, gap {gap}")
    first = rows["step"] == rows.groupby("run")["step"].transform("min")
    last = rows["step"] == rows.groupby("run")["step"].transform("max")

    fig = _new_figure(11, 4.6)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    any_below = False
    panels = ((first, "at initialisation"), (last, "after training"))
    for panel, (ax, (selected, when)) in enumerate(zip(axes, panels)):
        panel_rows = rows[selected]
        steps = sorted(panel_rows["step"].unique())
        ax.set_title(f"{when} (step {steps[0]})" if len(steps) == 1 else f"{when} (steps {steps[0]} to {steps[-1]})")
        stats = _log_stats(panel_rows, ["series", "state", "distance"])
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
                    **_line_kwargs(style, len(x)),
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

    handles = [Line2D([], [], label=s, **_line_kwargs(styles[s], 16)) for s in order if s in set(rows["series"])]
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
    _legend(fig, handles)
    n_seeds = done.groupby("series")["seed"].nunique()
    _title(
        fig,
        at,
        f"Vanishing gradients at gap {gap}",
        [
            f"layer {layer}, {_DIRECTION.get(direction, direction)} direction; "
            "distance: timesteps before the first scored position; "
            f"line: geometric mean over {_count_text(n_seeds)} seeds; band: min to max over seeds",
            _diverged_note(at),
        ],
    )
    return fig


def _count_text(counts: pd.Series) -> str:
    """'2' when every group has 2 seeds, '1 to 2' when they differ."""
    values = sorted(set(int(v) for v in counts)) or [0]
    return str(values[0]) if len(values) == 1 else f"{values[0]} to {values[-1]}"


# --- 2. gradient heatmap ------------------------------------------------------------------------
def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half-way between neighbours)."""
    centres = np.asarray(centres, float)
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


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
    runs, order, styles = _prepare(runs, (), styles)
    check_table(grad_norms, "grad_norms", GRAD_COLUMNS)
    gap, done, at = _runs_at(runs, gap)
    rows = _join(grad_norms, done, "grad_norms")
    rows = rows[(rows["layer"] == layer) & (rows["direction"] == direction) & (rows["state"] == state)]
    if rows.empty:
        raise FigureSkipped(f"no gradient norms for layer {layer}, direction {direction!r}, state {state!r}, gap {gap}")
    stats = _log_stats(rows, ["series", "step", "timestep"])
    measured = stats.loc[~stats["below"], "mean"]
    if measured.empty:
        raise FigureSkipped(f"every gradient norm at gap {gap} is below float32 range")
    norm = Normalize(vmin=float(measured.min()), vmax=float(measured.max()))
    present = [s for s in order if s in set(stats["series"])]

    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = _new_figure(3.6 * ncols + 1.2, 3.0 * nrows + 1.0)
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
    fig.colorbar(mesh, ax=axes[: len(present)].tolist(), label=rf"$\log_{{10}}\|\partial L/\partial {state}_t\|$")
    n_seeds = done.groupby("series")["seed"].nunique()
    _title(
        fig,
        at,
        f"Gradient norm over training at gap {gap}",
        [
            f"layer {layer}, {_DIRECTION.get(direction, direction)} direction, state {state}; "
            f"mean over {_count_text(n_seeds)} seeds of log10 norm; grey: below float32 range in some seed; "
            "dashed: first scored position",
            _diverged_note(at),
        ],
    )
    return fig


# --- 3. memory vs gap -----------------------------------------------------------------------------
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
    runs, order, styles = _prepare(runs, ("final_metric", "baseline_metric", "solve_threshold"), styles)
    gaps = sorted(runs["gap"].unique())
    if len(gaps) < 2:
        raise FigureSkipped(f"memory vs gap needs at least two gaps; the runs have only gap {gaps[0]}")
    metric_name = str(runs["metric_name"].iloc[0]) if "metric_name" in runs else "metric"

    fig = _new_figure(8.5, 5.0)
    ax = fig.subplots()
    done = runs[runs["status"] == "done"]
    diverged = runs[runs["status"] == "diverged"]
    for i, series in enumerate(order):
        style = styles[series]
        # dodge the series sideways by a few points on screen (the data stay at the gap), so
        # models with equal values at a gap (e.g. all solved) do not hide one another
        dodge = ax.transData + ScaledTranslation((i - (len(order) - 1) / 2) * 5 / 72, 0, fig.dpi_scale_trans)
        mine = done[done["series"] == series]
        stats = []
        for g in gaps:
            values = mine.loc[mine["gap"] == g, "final_metric"].to_numpy(float)
            values = values[np.isfinite(values)]
            mean = values.mean() if values.size else math.nan
            stats.append((g, mean, *bootstrap_interval(values, ci=ci, n_boot=n_boot, seed=seed)))
        stats = np.array(stats, float)  # (gaps, 4): gap, mean, lo, hi
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
    _legend(fig, handles)
    n_seeds = done.groupby(["series", "gap"])["seed"].nunique()
    _title(
        fig,
        runs,
        "Memory vs gap",
        [
            f"line: mean over finished seeds ({_count_text(n_seeds)} per point); bar: {ci:.0%} bootstrap interval; "
            "dots: seeds",
            _diverged_note(runs),
        ],
    )
    return fig


# --- 4. learning curves ------------------------------------------------------------------------
def learning_curves(
    runs: pd.DataFrame, curves: pd.DataFrame, *, styles: dict[str, SeriesStyle] | None = None
) -> Figure:
    """Loss against training step, one panel per series, one line per gap.

    Solid: mean over finished seeds; thin line ending in 'x': a diverged run, up to its
    divergence; dashed: the memoryless baseline loss. Gids: ``mean:<series>:<gap>``,
    ``diverged:<series>:<gap>:<seed>``, ``baseline:<series>[:<gap>]``.
    """
    runs, order, styles = _prepare(runs, ("baseline_loss",), styles)
    check_table(curves, "curves", (*CURVE_COLUMNS, "loss"))
    rows = _join(curves, runs, "curves").merge(runs[["run", "gap", "status"]], on="run")
    present = [s for s in order if s in set(rows["series"])]
    gaps = sorted(runs["gap"].unique())
    cmap = colormaps[GAP_CMAP]
    gap_colour = {g: cmap(0.85 * i / max(1, len(gaps) - 1)) for i, g in enumerate(gaps)}

    ncols = min(len(present), 3)
    nrows = math.ceil(len(present) / ncols)
    fig = _new_figure(3.8 * ncols + 1.6, 3.1 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    positive = bool((rows["loss"].dropna() > 0).all())
    for ax, series in zip(axes, present):
        mine = rows[rows["series"] == series]
        for g in gaps:
            at = mine[mine["gap"] == g]
            done = at[at["status"] == "done"]
            if len(done):
                mean = done.groupby("step")["loss"].mean()
                ax.plot(
                    mean.index.to_numpy(float),
                    mean.to_numpy(float),
                    color=gap_colour[g],
                    linewidth=1.5,
                    gid=f"mean:{series}:{g}",
                )
            for (seed,), run in at[at["status"] == "diverged"].groupby(["seed"]):
                run = run.sort_values("step")
                ax.plot(
                    run["step"].to_numpy(float),
                    run["loss"].to_numpy(float),
                    color=gap_colour[g],
                    linewidth=0.7,
                    alpha=0.8,
                    marker="x",
                    markevery=[len(run) - 1],
                    gid=f"diverged:{series}:{g}:{seed}",
                )
        base = runs[runs["series"] == series].groupby("gap")["baseline_loss"].first()
        if base.nunique() == 1:
            ax.axhline(base.iloc[0], color="0.4", linestyle="--", linewidth=1, gid=f"baseline:{series}")
        else:
            for g, value in base.items():
                ax.axhline(value, color=gap_colour[g], linestyle="--", linewidth=1, gid=f"baseline:{series}:{g}")
        ax.set_title(series, color=styles[series].colour, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.grid(True, alpha=0.3)
        if positive:
            ax.set_yscale("log")
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=gap_colour[g], label=f"gap {g}") for g in gaps]
    handles.append(Line2D([], [], color="0.4", linestyle="--", label="memoryless baseline"))
    if (runs["status"] == "diverged").any():
        label = "diverged run (until divergence)"
        handles.append(Line2D([], [], color="0.3", linewidth=0.7, marker="x", label=label))
    _legend(fig, handles)
    n_seeds = runs[runs["status"] == "done"].groupby(["series", "gap"])["seed"].nunique()
    _title(
        fig,
        runs,
        "Learning curves",
        [
            f"loss on the probe batch; line: mean over finished seeds ({_count_text(n_seeds)} per line)",
            _diverged_note(runs),
        ],
    )
    return fig


# --- 5. decay length ------------------------------------------------------------------------------
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
    runs, order, styles = _prepare(runs, (), styles)
    check_table(curves, "curves", (*CURVE_COLUMNS, "decay_length"))
    gap, done, at = _runs_at(runs, gap)
    rows = _join(curves, done, "curves")
    fig = _new_figure(8.5, 4.8)
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
            **_line_kwargs(styles[series], len(mean)),
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
    _legend(fig, ax.get_legend_handles_labels()[0])
    note = ""
    if skipped:
        note = "skipped where a seed's decay length is inf (no decay) or NaN (no fit): " + ", ".join(
            f"{s} {n} step{'s' if n != 1 else ''}" for s, n in skipped.items()
        )
    n_seeds = done.groupby("series")["seed"].nunique()
    _title(
        fig,
        at,
        f"Decay length of the gradient norm at gap {gap}",
        [
            f"fit of ln ||dL/dh_t|| against distance, layer 0 forward; line: mean over {_count_text(n_seeds)} seeds",
            note,
            _diverged_note(at),
        ],
    )
    return fig


# --- writing -----------------------------------------------------------------------------------
def _split_runs(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs of each (experiment, task configuration), keyed by a file-name-safe slug."""
    runs = runs.drop_duplicates("run").reset_index(drop=True)
    columns = _task_columns(runs)
    keys = (["experiment"] if "experiment" in runs and runs["experiment"].nunique() > 1 else []) + columns
    as_text = runs[keys].astype(str)
    # the slug names the experiment when several, the task, and the task parameters that differ
    varying = [c for c in columns[1:] if as_text.groupby("task")[c].nunique().max() > 1]
    slugs = {}
    for i, index in enumerate(as_text.groupby(keys, sort=True).groups.values()):
        group = runs.loc[index]
        row = group.iloc[0]
        parts = ([str(row["experiment"])] if keys[0] == "experiment" else []) + [str(row["task"])]
        parts += [f"{c.removeprefix('task_')}={_fmt(row[c])}" for c in varying]
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))
        while slug in slugs:
            slug += f"-{i}"
        slugs[slug] = group
    return slugs


def split_by_task(results) -> dict[str, Tables]:
    """``results`` (anything with ``runs``, ``curves``, ``grad_norms``) split by task configuration.

    Keys are file-name-safe: the task name, preceded by the experiment when the runs
    come from several, followed by any task parameters that differ (``adding-variant=le2015``).
    """
    for name in ("runs", "curves", "grad_norms"):
        if not hasattr(results, name):
            raise PlotError(f"results must have runs, curves and grad_norms tables (lrd.store.Results); missing {name}")
    runs = check_table(results.runs, "runs", RUN_COLUMNS)
    runs = runs[runs["status"] != "failed"]  # never trained: nothing to draw
    if runs.empty:
        raise PlotError("no finished runs to draw: every run failed")
    curves = check_table(results.curves, "curves", CURVE_COLUMNS)
    grads = check_table(results.grad_norms, "grad_norms", GRAD_COLUMNS)
    return {
        slug: Tables(group, curves[curves["run"].isin(group["run"])], grads[grads["run"].isin(group["run"])])
        for slug, group in _split_runs(runs).items()
    }


# write_figures draws these, in this order: file stem -> figure of one task configuration
FIGURES: dict[str, Callable[[Tables, dict[str, SeriesStyle]], Figure]] = {
    "vanishing_gradients": lambda t, st: vanishing_gradients(t.runs, t.grad_norms, styles=st),
    "gradient_heatmap": lambda t, st: gradient_heatmap(t.runs, t.grad_norms, styles=st),
    "memory_vs_gap": lambda t, st: memory_vs_gap(t.runs, styles=st),
    "learning_curves": lambda t, st: learning_curves(t.runs, t.curves, styles=st),
    "decay_length": lambda t, st: decay_length_curves(t.runs, t.curves, styles=st),
}
FIGURE_NAMES = tuple(FIGURES)


def save_figure(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` (png, pdf or svg, from the suffix) with no dates or versions, so bytes repeat."""
    path = Path(path)
    fmt = path.suffix.removeprefix(".").lower()
    if fmt not in METADATA:
        raise PlotError(f"cannot write {path.name}: formats are {', '.join(METADATA)}")
    with rc_context({"svg.hashsalt": "lrd"}):  # svg ids are random otherwise
        fig.savefig(path, format=fmt, dpi=dpi, metadata=dict(METADATA[fmt]))
    return path


def write_figures(
    results,
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = ("png", "pdf"),
    dpi: int = 150,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[Path]:
    """Write every figure the data allows, per task configuration, as ``<slug>_<figure>.<fmt>``.

    A figure the data cannot support (e.g. memory vs gap with a single gap) is skipped:
    ``on_skip(stem, reason)`` is called (default: a logged warning). Tables that are
    empty or lack columns raise PlotError. Returns the written paths, in order.
    """
    tables = split_by_task(results)
    unknown = [f for f in formats if f not in METADATA]
    if unknown:
        raise PlotError(f"unknown figure format(s) {', '.join(unknown)}; formats are {', '.join(METADATA)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = []
    for t in tables.values():
        labels += [s for s in with_series(t.runs)[1] if s not in labels]
    styles = series_styles(labels)
    report = on_skip or (lambda stem, reason: log.warning("skipped %s: %s", stem, reason))
    written = []
    for slug, t in tables.items():
        for name, draw in FIGURES.items():
            stem = f"{slug}_{name}"
            try:
                fig = draw(t, styles)
            except FigureSkipped as skipped:
                report(stem, str(skipped))
                continue
            written += [save_figure(fig, out_dir / f"{stem}.{fmt}", dpi) for fmt in formats]
    return written
