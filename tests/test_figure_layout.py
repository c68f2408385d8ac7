"""Every registered figure, drawn at its default size, keeps its text on the canvas and no two texts overlap.

The figures are drawn as ``write_figures`` draws them (the learning-rate note included) from
hand-made tables (``test_plots.make_results``) made to carry what real folders carry: three
models, a learning-rate grid, a run stopped early, a run still improving, test gaps and the
real task convention. The texts checked: every visible Text artist with text (titles,
axis labels, the tick labels the axes draw, legend entries, colorbar labels, notes).
"""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from test_plots import make_results

from lrd.plots import FIGURE_NAMES, writing
from lrd.schema import Results
from lrd.tasks.delayed_recall import DelayedRecall

DPI = writing.DPI  # write_figures' default
SLACK = 0.5  # pixels: rounding of the text extents


def folder() -> Results:
    """Three models at gaps 3 and 6, two learning rates, test gaps, one run stopped at step 10."""
    base = make_results(models=("rnn", "lstm", "gru"))
    runs = base.runs.assign(
        task_convention=DelayedRecall(gap=3).convention,
        final_valid_metric=0.9,
        final_valid_loss=1.0,
        steps_trained=20.0,
        still_improving=False,
    )
    stopped = runs["run"] == "lstm-g3-s0"
    runs.loc[stopped, "steps_trained"] = 10.0  # its rows at step 20 are its frozen state
    runs.loc[runs["run"] == "rnn-g3-s1", "still_improving"] = True
    high = runs.assign(run=runs["run"] + "-hi", lr=1e-2, final_valid_metric=0.1)
    runs = pd.concat([runs, high], ignore_index=True)
    double = lambda table: pd.concat([table, table.assign(run=table["run"] + "-hi")], ignore_index=True)
    done = runs[runs["status"] == "done"]
    eval_gaps = pd.DataFrame(
        [
            {"run": run, "test_gap": test_gap, "loss": 1.0, "metric": 0.5 + 0.01 * test_gap}
            for run in done["run"]
            for test_gap in (3, 6, 12, 24)
        ]
    )
    return Results(runs, double(base.curves), double(base.grad_norms), eval_gaps, double(base.dynamics))


def gain_folder() -> Results:
    """The tanh RNN runs of ``folder`` at two initial gains (seed 0: 0.8, seed 1: 1.2), with Pascanu's bound."""
    tables = folder()
    runs = tables.runs[tables.runs["model"] == "rnn"]
    runs = runs.assign(recurrent_gain=0.8 + 0.4 * runs["seed"], growth_rate_init=-0.1 + 0.05 * runs["seed"])
    gains = runs.set_index("run")["recurrent_gain"]
    steps = tables.dynamics[tables.dynamics["run"].isin(runs["run"])][["run", "step"]].drop_duplicates()
    bound = pd.DataFrame(
        [
            {"run": r, "step": s, "quantity": "pmb_bound", "gate": "", "index": t, "value": 0.95 * gains[r]}
            for r, s in steps.itertuples(index=False)
            for t in range(5)
        ]
    )
    ids = runs["run"]
    return Results(
        runs,
        tables.curves[tables.curves["run"].isin(ids)],
        tables.grad_norms[tables.grad_norms["run"].isin(ids)],
        tables.eval_gaps[tables.eval_gaps["run"].isin(ids)],
        pd.concat([tables.dynamics[tables.dynamics["run"].isin(ids)], bound], ignore_index=True),
    )


def drawn_figures(tables: Results, monkeypatch, tmp_path) -> dict:
    """{figure name: Figure} as write_figures draws them (nothing written)."""
    figures: dict = {}
    monkeypatch.setattr(writing, "save_figure", lambda fig, path, dpi: figures.setdefault(path.stem, fig) and path)
    skipped: list = []
    writing.write_figures(tables, tmp_path, formats=("png",), on_skip=lambda stem, why: skipped.append((stem, why)))
    assert not skipped, skipped
    return {stem.removeprefix("delayed_recall_"): fig for stem, fig in figures.items()}


def texts(fig) -> list[Text]:
    """The visible, non-empty texts the figure draws (tick labels only of the ticks its axes draw)."""
    labels, drawn = set(), set()
    for ax in fig.axes:
        for axis in ax._axis_map.values():
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                labels.update((id(tick.label1), id(tick.label2)))
            for tick in axis._update_ticks():  # the ticks inside the view: those drawn
                drawn.update((id(tick.label1), id(tick.label2)))
    return [
        text
        for text in fig.findobj(Text)
        if text.get_visible()
        and text.get_text().strip()
        and (text.axes is None or text.axes.get_visible())  # an unused panel, hidden, hides its texts
        and (id(text) not in labels or id(text) in drawn)
    ]


def inside(box: Bbox, canvas: Bbox) -> bool:
    return (
        box.x0 >= canvas.x0 - SLACK
        and box.y0 >= canvas.y0 - SLACK
        and box.x1 <= canvas.x1 + SLACK
        and box.y1 <= canvas.y1 + SLACK
    )


def describe(text: Text) -> str:
    return repr(text.get_text()[:60])


def drawn(fig):
    fig.set_dpi(DPI)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def outside(fig) -> list[str]:
    """The texts that fall outside the canvas, and the figure's tight box when it does."""
    renderer = drawn(fig)
    found = [describe(t) for t in texts(fig) if not inside(t.get_window_extent(renderer), fig.bbox)]
    tight = fig.get_tightbbox(renderer)  # inches
    width, height = fig.get_size_inches()
    if not inside(Bbox(tight.get_points() * DPI), Bbox.from_bounds(0, 0, width * DPI, height * DPI)):
        found.append(f"tight bbox {tight} of a {width:g} x {height:g} in canvas")
    return found


def overlaps(fig) -> list[str]:
    """Every pair of texts whose boxes overlap by more than SLACK pixels both ways."""
    renderer = drawn(fig)
    boxes = [(t, t.get_window_extent(renderer)) for t in texts(fig)]
    found = []
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if width > SLACK and height > SLACK:
            found.append(f"{describe(a)} and {describe(b)}")
    return found


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        figures = drawn_figures(folder(), patch, tmp_path_factory.mktemp("figures"))
    # the Pascanu figure needs a sweep over the tanh RNN's initial gain, which the folder above lacks
    assert "pascanu" not in figures
    figures["pascanu"] = writing.FIGURES["pascanu"](gain_folder(), {})
    return figures


def test_every_registered_figure_is_drawn(figures):
    assert set(figures) == set(FIGURE_NAMES)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_no_text_falls_outside_the_canvas(figures, name):
    assert not outside(figures[name]), f"{name}: {outside(figures[name])}"


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_no_two_texts_overlap(figures, name):
    fig = figures[name]
    assert len(texts(fig)) > 10  # titles, labels, ticks, legend: the check has something to check
    assert not overlaps(fig), f"{name}: {overlaps(fig)}"


def test_the_checks_find_an_overlap_and_a_text_off_the_canvas():
    """The checks can fail: a text drawn over another, and one running off the right edge, are found."""
    from lrd.plots.base import new_figure

    fig = new_figure(4, 3)
    ax = fig.subplots()
    ax.set_xlabel("training step")
    assert not outside(fig) and not overlaps(fig)
    fig.text(0.5, 0.02, "training step, again", ha="center")  # where the x label is
    assert overlaps(fig) and not outside(fig)
    fig.text(0.9, 0.5, "a note that runs off the canvas")
    assert any("runs off" in t for t in outside(fig))
    hidden = fig.text(0.9, 0.9, "hidden, not drawn")
    hidden.set_visible(False)
    assert not any("hidden" in t for t in outside(fig))
