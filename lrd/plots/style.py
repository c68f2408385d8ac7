"""How series look: a series per model configuration, its colour and marker, the same in every figure.

A *series* is a model label ("lstm", "bi-gru"); when runs of one label differ in
another model or training setting (e.g. ``hidden`` or ``recurrent_init``), the
differing settings are appended ("rnn, recurrent_init=identity"), so different
configurations are never averaged together as if they were seeds.

Colours come from the Okabe-Ito colour-blind-safe palette. The classic cells have
a colour of their own (rnn vermillion, lstm blue, gru green) and are drawn first,
in that order; every other cell follows by name and takes the next unused palette
colour, so a newly registered cell draws deterministically without an entry here.
A cell's bidirectional variant shares its colour and is told apart by square markers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

import pandas as pd

from lrd.plots.base import PlotError, check_table, fmt, single_task, sort_value, split_runs
from lrd.schema import CONFIG_COLUMNS, RUN_KEY

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
CELL_ORDER = tuple(CELL_COLOURS)  # drawn first, in this order; other cells follow by name

STATE_LINESTYLES: dict[str, Literal["-", "--", ":"]] = {"h": "-", "c": "--"}
GAP_CMAP = "viridis"  # sequential, colour-blind safe: gaps in learning curves
HEATMAP_CMAP = "viridis"
BELOW_FLOOR_GREY = "0.82"


class SeriesStyle(NamedTuple):
    """How one series (model label) is drawn in every figure."""

    colour: str
    marker: str  # "o" unidirectional, "s" bidirectional
    bidirectional: bool


def cell_of(model: str) -> str:
    return model.removeprefix("bi-")


def with_series(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``runs`` with a ``series`` column (see module docstring) and the series in drawing order.

    Order: cell (rnn, lstm, gru, then others by name), unidirectional before
    bidirectional, then the differing settings in increasing order.
    """
    from lrd.models.network import LATER_DEFAULTS

    runs = runs.copy()
    config = [c for c in CONFIG_COLUMNS if c in runs.columns]
    labels = pd.Series(runs["model"].astype(str), index=runs.index)
    order_keys = {}
    # an option stored only away from its default (recurrent_gain) is absent, NaN, at the default
    named = runs.fillna({c: v for c, v in LATER_DEFAULTS.items() if c in runs})
    for model, group in named.groupby("model", sort=True):
        varying = [c for c in config if group[c].astype(str).nunique() > 1]
        for idx, row in group.iterrows():
            label = ", ".join([str(model)] + [f"{c}={fmt(row[c])}" for c in varying])
            labels[idx] = label
            cell = cell_of(str(model))
            order_keys[label] = (
                CELL_ORDER.index(cell) if cell in CELL_ORDER else len(CELL_ORDER),
                cell,
                str(model).startswith("bi-"),
                tuple(sort_value(row[c]) for c in varying),
            )
    runs["series"] = labels
    return runs, sorted(order_keys, key=order_keys.__getitem__)


def series_styles(labels: Iterable[str]) -> dict[str, SeriesStyle]:
    """A style per series label: a fixed Okabe-Ito colour per cell, shared by its bi- variant.

    Labels that share a cell but differ in settings get the next unused palette colours,
    in the order given; past eight distinct colours the palette repeats.
    """
    styles: dict[str, SeriesStyle] = {}
    used: list[str] = []
    by_key: dict = {}
    palette = list(OKABE_ITO.values())
    for label in labels:
        model = label.split(",")[0]
        key = label.removeprefix("bi-")  # colour key: the bi- variant shares the colour
        if key not in by_key:
            preferred = CELL_COLOURS.get(cell_of(model))
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
    check_table(runs, "runs", RUN_KEY)
    labels = []
    for tables in split_runs(runs).values():
        labels += [s for s in with_series(tables)[1] if s not in labels]
    return series_styles(labels)


def prepare(runs: pd.DataFrame, required: Iterable[str], styles) -> tuple[pd.DataFrame, list[str], dict]:
    check_table(runs, "runs", tuple(RUN_KEY) + tuple(required))
    runs, order = with_series(single_task(runs))
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


def line_kwargs(style: SeriesStyle, n_points: int) -> dict:
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
