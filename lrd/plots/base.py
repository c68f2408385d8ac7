"""What every figure shares: the errors, table checks, choosing the runs to draw, titles and legends.

Figure functions take the tables of ``lrd.store.load`` for ONE task configuration;
``split_runs`` splits a store's runs table by task configuration.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from lrd.schema import DERIVED_TASK_COLUMNS, FLOOR, TASK_PREFIX

DIRECTION = {"fwd": "forward", "bwd": "backward"}


class PlotError(ValueError):
    """Tables a figure cannot be drawn from; the message is one line."""


class FigureSkipped(PlotError):
    """Valid tables that do not hold what this figure needs (e.g. a single gap)."""


class NotAskedFor(FigureSkipped):
    """A measurement the experiment did not ask for (e.g. no ``[train] eval_gaps``): not drawn, not reported."""


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


def task_columns(runs: pd.DataFrame) -> list[str]:
    return ["task"] + [c for c in runs.columns if c.startswith(TASK_PREFIX) and c not in DERIVED_TASK_COLUMNS]


def task_description(row: pd.Series, columns: list[str]) -> str:
    params = [f"{c.removeprefix(TASK_PREFIX)}={fmt(row[c])}" for c in columns[1:] if not isnan(row[c])]
    return f"{row['task']} ({', '.join(params)})" if params else str(row["task"])


def single_task(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with duplicate run ids dropped, checked to hold one task configuration."""
    runs = runs.drop_duplicates("run").reset_index(drop=True)
    columns = task_columns(runs)
    configs = runs[columns].astype(str).drop_duplicates()
    if len(configs) > 1:
        found = "; ".join(task_description(row, columns) for _, row in runs.loc[configs.index].iterrows())
        raise PlotError(
            f"the runs table holds {len(configs)} task configurations ({found}); "
            "plot one at a time (write_figures and split_by_task split them)"
        )
    return runs


def fmt(value) -> str:
    """``lrd.results.setting_text``: the one spelling of a setting's value in tables and figures."""
    from lrd.results import setting_text

    return setting_text(value)


def isnan(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def sort_value(value):
    """A key that orders mixed numbers, strings and missing values without TypeError."""
    if isnan(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating, bool, np.bool_)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


# --- titles ----------------------------------------------------------------------------------------
def baseline_text(runs: pd.DataFrame) -> str:
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


def task_caption(runs: pd.DataFrame) -> str:
    """The task, its convention and its memoryless baseline: the part of every caption that depends on the task."""
    row = runs.iloc[0]
    convention = str(row["task_convention"]) if "task_convention" in runs else "not recorded"
    return f"Task: {task_description(row, task_columns(runs))}; convention: {convention}; {baseline_text(runs)}."


def title(fig: Figure, runs: pd.DataFrame, heading: str, notes: Iterable[str] = ()) -> None:
    """The suptitle, two lines: what is plotted (``heading``, one line) and the task; ``notes`` go below (``note``).

    The task's convention and memoryless baseline are not repeated here: they are in the
    caption (``task_caption``), with what the figure shows (each module's ``CAPTION``).
    """
    fig.suptitle(f"{heading}\n{task_description(runs.iloc[0], task_columns(runs))}", fontsize=9)
    for text in notes:
        note(fig, text)


NOTE_SIZE = 7  # points: the notes under a figure
NOTE_CHARS_PER_INCH = 72 / (0.62 * NOTE_SIZE)  # a wide character is about 0.62 em


def note(fig: Figure, text: str) -> None:
    """Add ``text`` (a note on the data: seeds per line, diverged runs, the learning rate) below the figure.

    Notes head the figure's legend, below the axes (the layout keeps it clear of them),
    wrapped to the figure's width; a figure without a legend carries them as its footer.
    """
    if not text:
        return
    width = int(fig.get_figwidth() * NOTE_CHARS_PER_INCH)
    lines = textwrap.wrap(text, width)
    if fig.legends:
        box = fig.legends[0]
        old = box.get_title().get_text()
        box.set_title("\n".join(([old] if old else []) + lines), prop=FontProperties(size=NOTE_SIZE))
        box.get_title().set_color("0.25")
        return
    old = fig.get_supxlabel()
    fig.supxlabel("\n".join(([old] if old else []) + lines), fontsize=NOTE_SIZE, color="0.25")


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def legend(fig: Figure, handles: list) -> None:
    """One legend for the whole figure, below the axes (the title block owns the top)."""
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)


# a run's stop (stop_when_solved): a vertical bar at its last trained point
STOP_MARKER = dict(marker="|", markersize=9, markeredgewidth=1.6, linestyle="none")


def until_stop(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``lrd.results.until_stop``: the rows of ``runs`` up to each run's last trained step."""
    from lrd.results import until_stop as cut

    return cut(table, runs)


def stop_marks(ax, rows: pd.DataFrame, runs: pd.DataFrame, value: str, colour, gid: str, **kwargs) -> int:
    """Mark each run of ``runs`` that stopped before its budget at its last point in ``rows``; returns how many.

    ``rows``: the runs' per-step rows, already cut at their stops (``until_stop``).
    """
    from lrd.results import stopped_early

    stopped = runs.loc[stopped_early(runs), "run"]
    last = rows[rows["run"].isin(stopped)].sort_values("step").groupby("run").tail(1)
    last = last[np.isfinite(last[value].to_numpy(float))]
    if len(last):
        ax.plot(
            last["step"].to_numpy(float), last[value].to_numpy(float), color=colour, gid=gid, **STOP_MARKER, **kwargs
        )
    return len(last)


def stop_handle():
    """The legend entry of ``stop_marks``."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", label="a seed's stop (stopped when solved)", **STOP_MARKER)


def present_mean(rows: pd.DataFrame, value: str, how: str = "mean") -> pd.Series:
    """Per step: the mean (or median) of ``value`` over the runs present at that step (rows cut at their stops).

    NaN where a present run's value is NaN (no value is dropped silently).
    """
    reduce = (lambda v: v.mean()) if how == "mean" else (lambda v: float(np.median(v)))
    stats = rows.groupby("step")[value].agg(lambda v: reduce(v.to_numpy(float)))
    return stats.sort_index()


def present_counts(rows: pd.DataFrame) -> pd.Series:
    """Per (series, step): the runs present, for the notes' 'n to m seeds'."""
    return rows.groupby(["series", "step"])["run"].nunique()


def diverged_note(runs: pd.DataFrame) -> str:
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


def runs_at(runs: pd.DataFrame, gap: int | None) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    """(gap, finished runs at it, all runs at it); ``gap`` None picks ``default_gap``."""
    gap = default_gap(runs) if gap is None else int(gap)
    at = runs[runs["gap"] == gap]
    if at.empty:
        raise PlotError(f"no runs at gap {gap}; gaps present: {', '.join(map(str, sorted(runs['gap'].unique())))}")
    done = at[at["status"] == "done"]
    if done.empty:
        raise FigureSkipped(f"no finished runs at gap {gap} (all {len(at)} diverged)")
    return gap, done, at


def join(table: pd.DataFrame, runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of ``table`` belonging to ``runs``, with their series and seed."""
    joined = table.merge(runs[["run", "series", "seed"]], on="run", how="inner")
    if joined.empty:
        raise PlotError(f"the {name} table has no rows for the {len(runs)} selected run(s)")
    return joined


def log_stats(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: mean, min and max over seeds of log10 norm, and whether any seed was below floor."""
    norm = rows["norm"].to_numpy(float)
    below = rows["below_floor"].to_numpy(bool) | (norm < FLOOR)  # a zero from elsewhere is no measurement either
    rows = rows.assign(log10=np.log10(np.maximum(norm, FLOOR)), below=below)
    grouped = rows.groupby(keys, sort=True)
    stats = grouped["log10"].agg(["mean", "min", "max", "count"])
    stats["below"] = grouped["below"].any()
    return stats.reset_index()


def count_text(counts: pd.Series) -> str:
    """'2' when every group has 2 seeds, '1 to 2' when they differ."""
    values = sorted(set(int(v) for v in counts)) or [0]
    return str(values[0]) if len(values) == 1 else f"{values[0]} to {values[-1]}"


def split_runs(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs of each (experiment, task configuration), keyed by a file-name-safe slug."""
    runs = runs.drop_duplicates("run").reset_index(drop=True)
    columns = task_columns(runs)
    keys = (["experiment"] if "experiment" in runs and runs["experiment"].nunique() > 1 else []) + columns
    as_text = runs[keys].astype(str)
    # the slug names the experiment when several, the task, and the task parameters that differ
    varying = [c for c in columns[1:] if as_text.groupby("task")[c].nunique().max() > 1]
    slugs = {}
    for i, index in enumerate(as_text.groupby(keys, sort=True, dropna=False).groups.values()):
        group = runs.loc[index]
        row = group.iloc[0]
        parts = ([str(row["experiment"])] if keys[0] == "experiment" else []) + [str(row["task"])]
        parts += [f"{c.removeprefix(TASK_PREFIX)}={fmt(row[c])}" for c in varying]
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))
        while slug in slugs:
            slug += f"-{i}"
        slugs[slug] = group
    return slugs


def at_chosen_lr(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs at each configuration's chosen learning rate (``lrd.results.best_lr_runs``) and a note saying so.

    With a single learning rate the runs are returned as they are, with no note. With a
    grid the ``lr`` column is dropped from the result (the chosen value may differ by gap,
    and a series is a model, not a learning rate); the note names the choices and how many
    lie at the grid's edge.
    """
    from lrd.results import best_lr_runs

    if "lr" not in runs or runs["lr"].nunique() <= 1:
        return runs, ""
    best = best_lr_runs(runs)
    trained = best[best["status"] != "failed"]
    chosen = "; ".join(
        f"{model} {', '.join(f'{lr:g}' for lr in sorted(g['lr'].unique()))}" for model, g in trained.groupby("model")
    )
    edges = trained.drop_duplicates(["model", "gap"])["lr_at_edge"].sum()
    edge = f"; {edges} at the grid's edge: widen it" if edges else ""
    note = f"learning rate chosen per gap and model on the validation metric, of {runs['lr'].nunique()}: {chosen}{edge}"
    return best.drop(columns=["lr"]), note
