"""Figures of a results store: DataFrames in, matplotlib Figures out, nothing else.

One file per figure, like ``lrd/tasks/``. Every figure function takes the tables
of ``lrd.store.load`` (``runs`` and, where needed, ``curves`` or ``grad_norms``)
for ONE task configuration and returns a ``matplotlib.figure.Figure`` (created
without pyplot, so no global figure state):

  vanishing_gradients   ||dL/dh_t|| against distance from the loss, at init and after training
  gradient_heatmap      log10 ||dL/dh_t|| over (timestep, training step), one panel per model
  memory_vs_gap         final metric and fraction solved (Wilson 95%) against gap: the headline figure
  steps_to_solve        first step at the solve threshold against gap, unsolved runs censored at their budget
  learning_curves       loss against training step, one panel per model, one line per gap
  growth_rate_curves    signed growth rate of ||dL/dh_t|| with distance against training step
  spectrum_curves       top Lyapunov exponent and ln sigma_max(J_t) against training step
  gate_distributions    gate activation quantiles at initialisation and at the end
  clipping_curves       pre-clip gradient norm and clipped fraction against training step
  eval_gaps_curves      metric at the test gaps of [train] eval_gaps, one line per training gap

The growth rate and clipping figures need columns that results from before the diagnostics
lack: for those ``write_figures`` skips them with a reason (``lrd plot`` prints it). The
spectrum and gates figures need the dynamics table of runs trained with ``diagnostics = true``
(off by default); without it they are not asked for (``NotAskedFor``): left out, not reported.

Each figure's module also holds its ``CAPTION`` (what it shows, for a reader who sees it
alone); ``CAPTIONS`` maps each figure name to it (the report prints them).

Shared by all: ``base`` (errors, table checks, choosing runs, titles), ``style``
(series and their colours, see there) and ``writing`` (``write_figures`` splits a
store's tables by task configuration and writes every figure the data allows as
PNG and PDF, byte-identical from one call to the next; ``FIGURES`` lists them).

Conventions shared by all figures:

- Aggregates over seeds use finished runs (status "done"); diverged runs are shown
  as distinct markers or lines and counted in the title, never silently dropped.
  Failed runs (never trained, see ``lrd.store``) have nothing to draw and are left
  out by ``write_figures``; ``lrd plot`` says how many.
- Gradient norms below float32's smallest normal number (``lrd.schema.FLOOR``) were
  not measured (see ``lrd.probes``): a (series, timestep) point where any seed is
  below that floor is not drawn as data but marked in a hatched "below float32
  range" band (figure 1) or left grey (figure 2).
"""

from lrd.plots.base import FigureSkipped, NotAskedFor, PlotError, default_gap
from lrd.plots.clipping import clipping_curves
from lrd.plots.eval_gaps import eval_gaps_curves
from lrd.plots.gates import gate_distributions
from lrd.plots.gradient_heatmap import gradient_heatmap
from lrd.plots.growth_rate import growth_rate_curves
from lrd.plots.learning_curves import learning_curves
from lrd.plots.memory_vs_gap import memory_vs_gap
from lrd.plots.spectrum import spectrum_curves
from lrd.plots.steps_to_solve import steps_to_solve
from lrd.plots.style import OKABE_ITO, SeriesStyle, model_styles, series_styles, with_series
from lrd.plots.vanishing_gradients import vanishing_gradients
from lrd.plots.writing import CAPTIONS, FIGURE_NAMES, FIGURES, save_figure, split_by_task, write_figures

__all__ = [
    "CAPTIONS",
    "FIGURES",
    "FIGURE_NAMES",
    "OKABE_ITO",
    "FigureSkipped",
    "NotAskedFor",
    "PlotError",
    "SeriesStyle",
    "clipping_curves",
    "default_gap",
    "eval_gaps_curves",
    "gate_distributions",
    "gradient_heatmap",
    "growth_rate_curves",
    "learning_curves",
    "memory_vs_gap",
    "model_styles",
    "save_figure",
    "series_styles",
    "spectrum_curves",
    "split_by_task",
    "steps_to_solve",
    "vanishing_gradients",
    "with_series",
    "write_figures",
]
