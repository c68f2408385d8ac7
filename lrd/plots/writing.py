"""Writing figures: every figure of a store's tables, per task configuration, as byte-repeatable files."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from lrd.plots.base import FigureSkipped, NotAskedFor, PlotError, at_chosen_lr, check_table, note, split_runs
from lrd.plots.clipping import CAPTION as CLIPPING_CAPTION
from lrd.plots.clipping import clipping_curves
from lrd.plots.eval_gaps import CAPTION as EVAL_GAPS_CAPTION
from lrd.plots.eval_gaps import eval_gaps_curves
from lrd.plots.gates import CAPTION as GATES_CAPTION
from lrd.plots.gates import gate_distributions
from lrd.plots.gradient_heatmap import CAPTION as GRADIENT_HEATMAP_CAPTION
from lrd.plots.gradient_heatmap import gradient_heatmap
from lrd.plots.growth_rate import CAPTION as GROWTH_RATE_CAPTION
from lrd.plots.growth_rate import growth_rate_curves
from lrd.plots.learning_curves import CAPTION as LEARNING_CURVES_CAPTION
from lrd.plots.learning_curves import learning_curves
from lrd.plots.memory_vs_gap import CAPTION as MEMORY_VS_GAP_CAPTION
from lrd.plots.memory_vs_gap import memory_vs_gap
from lrd.plots.spectrum import CAPTION as SPECTRUM_CAPTION
from lrd.plots.spectrum import spectrum_curves
from lrd.plots.steps_to_solve import CAPTION as STEPS_TO_SOLVE_CAPTION
from lrd.plots.steps_to_solve import steps_to_solve
from lrd.plots.style import SeriesStyle, series_styles, with_series
from lrd.plots.theory_checks import (
    EARLY_CAPTION,
    ENGELKEN_CAPTION,
    PASCANU_CAPTION,
    early_prediction,
    growth_vs_exponent,
    pascanu_figure,
)
from lrd.plots.vanishing_gradients import CAPTION as VANISHING_GRADIENTS_CAPTION
from lrd.plots.vanishing_gradients import vanishing_gradients
from lrd.schema import CURVE_KEY, DYNAMICS_COLUMNS, GRAD_COLUMNS, RUN_KEY, Results

log = logging.getLogger(__name__)

# what savefig would otherwise stamp into a file: versions and dates
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}


def split_by_task(results) -> dict[str, Results]:
    """``results`` (anything with ``runs``, ``curves``, ``grad_norms``; ``dynamics`` if it has one) split by task.

    Keys are file-name-safe: the task name, preceded by the experiment when the runs
    come from several, followed by any task parameters that differ (``adding-variant=le2015``).
    """
    for name in ("runs", "curves", "grad_norms"):
        if not hasattr(results, name):
            raise PlotError(
                f"results must have runs, curves and grad_norms tables (lrd.schema.Results); missing {name}"
            )
    runs = check_table(results.runs, "runs", RUN_KEY)
    runs = runs[runs["status"] != "failed"]  # never trained: nothing to draw
    if runs.empty:
        raise PlotError("no finished runs to draw: every run failed")
    curves = check_table(results.curves, "curves", CURVE_KEY)
    grads = check_table(results.grad_norms, "grad_norms", GRAD_COLUMNS)
    at_gaps = getattr(results, "eval_gaps", None)
    at_gaps = at_gaps if at_gaps is not None and not at_gaps.empty else pd.DataFrame({"run": []})
    dynamics = getattr(results, "dynamics", None)
    if dynamics is None or (isinstance(dynamics, pd.DataFrame) and dynamics.empty):
        dynamics = pd.DataFrame({c: [] for c in DYNAMICS_COLUMNS})  # results from before the diagnostics
    else:
        dynamics = check_table(dynamics, "dynamics", DYNAMICS_COLUMNS)
    return {
        slug: Results(
            group,
            curves[curves["run"].isin(group["run"])],
            grads[grads["run"].isin(group["run"])],
            at_gaps[at_gaps["run"].isin(group["run"])],
            dynamics[dynamics["run"].isin(group["run"])],
        )
        for slug, group in split_runs(runs).items()
    }


# write_figures draws these, in this order: file stem -> figure of one task configuration
FIGURES: dict[str, Callable[[Results, dict[str, SeriesStyle]], Figure]] = {
    "vanishing_gradients": lambda t, st: vanishing_gradients(t.runs, t.grad_norms, styles=st),
    "gradient_heatmap": lambda t, st: gradient_heatmap(t.runs, t.grad_norms, styles=st),
    "memory_vs_gap": lambda t, st: memory_vs_gap(t.runs, styles=st),
    "steps_to_solve": lambda t, st: steps_to_solve(t.runs, styles=st),
    "learning_curves": lambda t, st: learning_curves(t.runs, t.curves, styles=st),
    "growth_rate": lambda t, st: growth_rate_curves(t.runs, t.curves, styles=st),
    "jacobian_spectrum": lambda t, st: spectrum_curves(t.runs, t.dynamics, styles=st),
    "gates": lambda t, st: gate_distributions(t.runs, t.dynamics, styles=st),
    "clipping": lambda t, st: clipping_curves(t.runs, t.curves, styles=st),
    "eval_gaps": lambda t, st: eval_gaps_curves(t.runs, t.eval_gaps, styles=st),
    "growth_vs_exponent": lambda t, st: growth_vs_exponent(t.runs, t.curves, t.dynamics, styles=st),
    "early_prediction": lambda t, st: early_prediction(t.runs, t.dynamics, styles=st),
    "pascanu": lambda t, st: pascanu_figure(t.runs, t.dynamics, styles=st),
}
FIGURE_NAMES = tuple(FIGURES)
# figures that choose among a learning-rate grid themselves (per gap and model); the others are drawn
# from the runs at each configuration's chosen learning rate (``at_chosen_lr``), one series per model
# (the theory checks draw every run: each learning rate and seed is a point of the comparison)
CHOOSING_LR = ("memory_vs_gap", "steps_to_solve", "growth_vs_exponent", "early_prediction", "pascanu")


def at_chosen_lr_tables(tables: Results) -> tuple[Results, str]:
    """``tables`` narrowed to the runs at each configuration's chosen learning rate, and a note saying so."""
    runs, note = at_chosen_lr(tables.runs)
    if not note:
        return tables, ""
    ids = runs["run"]
    return Results(
        runs,
        tables.curves[tables.curves["run"].isin(ids)],
        tables.grad_norms[tables.grad_norms["run"].isin(ids)],
        tables.eval_gaps[tables.eval_gaps["run"].isin(ids)],
        tables.dynamics[tables.dynamics["run"].isin(ids)],
    ), note


# what each figure shows, for a reader who sees it alone (the report prints it under the figure);
# written next to each figure's code, as its module's CAPTION
CAPTIONS: dict[str, str] = {
    "vanishing_gradients": VANISHING_GRADIENTS_CAPTION,
    "gradient_heatmap": GRADIENT_HEATMAP_CAPTION,
    "memory_vs_gap": MEMORY_VS_GAP_CAPTION,
    "steps_to_solve": STEPS_TO_SOLVE_CAPTION,
    "learning_curves": LEARNING_CURVES_CAPTION,
    "growth_rate": GROWTH_RATE_CAPTION,
    "jacobian_spectrum": SPECTRUM_CAPTION,
    "gates": GATES_CAPTION,
    "clipping": CLIPPING_CAPTION,
    "eval_gaps": EVAL_GAPS_CAPTION,
    "growth_vs_exponent": ENGELKEN_CAPTION,
    "early_prediction": EARLY_CAPTION,
    "pascanu": PASCANU_CAPTION,
}


# pixels per inch of the written PNGs: 110 keeps a figure's text readable on a screen and the committed figures of
# every study together under 3 MB (150 before: 3.7 MB, which pushed results/ past its 20 MB)
DPI = 110


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Save ``fig`` to ``path`` (png, pdf or svg, from the suffix) with no dates or versions, so bytes repeat."""
    path = Path(path)
    fmt = path.suffix.removeprefix(".").lower()
    if fmt not in METADATA:
        raise PlotError(f"cannot write {path.name}: formats are {', '.join(METADATA)}")
    buffer = io.BytesIO()
    with rc_context({"svg.hashsalt": "lrd"}):  # svg ids are random otherwise
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=dict(METADATA[fmt]))
    data = _palette_png(buffer.getvalue()) if fmt == "png" else buffer.getvalue()
    if not (path.is_file() and path.read_bytes() == data):  # unchanged figures are not rewritten (read-only folders)
        path.write_bytes(data)
    return path


def _palette_png(data: bytes) -> bytes:
    """The PNG in 256 colours (a palette): about a third of the bytes of the RGB image.

    matplotlib's PNG is RGBA. A figure is mostly white, a few line colours and their
    antialiased edges; octree quantisation without dithering keeps every flat colour and
    moves an edge pixel by at most a few levels, and is deterministic, so a redrawn
    figure repeats byte for byte. A figure with transparent pixels is left as drawn.
    """
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(io.BytesIO(data))
    if image.mode != "RGBA" or image.getchannel("A").getextrema() != (255, 255):
        return data
    palette = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_figures(
    results,
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = ("png",),
    dpi: int = DPI,
    on_skip: Callable[[str, str], None] | None = None,
    overridden: str = "",
) -> list[Path]:
    """Write every figure the data allows, per task configuration, as ``<slug>_<figure>.<fmt>``.

    A figure the data cannot support (e.g. memory vs gap with a single gap) is skipped:
    ``on_skip(stem, reason)`` is called (default: a logged warning). Tables that are
    empty or lack columns raise PlotError. Returns the written paths, in order.
    ``overridden`` ("overridden: KEY=VALUE ...", ``lrd.experiment.overridden_part`` of the stored
    description) heads every figure's notes, so a figure of an overridden sweep says so.
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
        chosen, lr_note = at_chosen_lr_tables(t)
        for name, draw in FIGURES.items():
            stem = f"{slug}_{name}"
            narrowed = name not in CHOOSING_LR and lr_note
            try:
                fig = draw(chosen if narrowed else t, styles)
            except NotAskedFor:
                continue
            except FigureSkipped as skipped:
                report(stem, str(skipped))
                continue
            note(fig, overridden)
            if narrowed:
                note(fig, lr_note)
            written += [save_figure(fig, out_dir / f"{stem}.{fmt}", dpi) for fmt in formats]
    return written
