"""One self-contained HTML page per results folder: ``DIR/report.html``.

The page holds everything needed to read the results without the folder: the
summary table (``lrd.results.summary``), every figure of ``DIR/figures`` as an
embedded PNG (a ``data:`` URI) under its caption (``lrd.plots.CAPTIONS``), the
evaluation at other gaps where the experiment asked for it, the experiment file
as it was run and the versions it ran with. It loads nothing from anywhere, so
it can be mailed, attached to a supplement or opened offline.

The figures are read from ``DIR/figures`` (``lrd plot`` or ``lrd run`` draws them);
a folder without figures is refused (``ReportError``) and nothing is written.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import uuid
from pathlib import Path

import pandas as pd

from lrd.plots import CAPTIONS
from lrd.plots.base import split_runs, task_caption
from lrd.results import summary_cells
from lrd.schema import Results

REPORT = "report.html"
FIGURES = "figures"


class ReportError(ValueError):
    """A folder no report can be made of; the message is one line."""


def figure_files(out_dir: Path) -> list[Path]:
    """The PNG figures of a results folder, in drawing order (task configuration, then ``lrd.plots.FIGURES``)."""
    folder = Path(out_dir) / FIGURES
    if not folder.is_dir():
        return []
    order = {name: i for i, name in enumerate(CAPTIONS)}
    files = [p for p in folder.glob("*.png") if p.is_file()]
    return sorted(files, key=lambda p: (_slug(p.stem), order.get(_figure_name(p.stem) or "", len(order)), p.name))


def _figure_name(stem: str) -> str | None:
    """The figure kind of a file stem ``<slug>_<figure>`` (None for a file lrd did not draw)."""
    return next((name for name in CAPTIONS if stem.endswith(f"_{name}")), None)


def _slug(stem: str) -> str:
    name = _figure_name(stem)
    return stem.removesuffix(f"_{name}") if name else stem


def write_report(out_dir: str | Path, results: Results) -> Path:
    """Write ``out_dir/report.html`` (atomically) from ``results`` (``lrd.store.load(out_dir)``) and its figures.

    ReportError when the folder has no figures (``DIR/figures/*.png``); nothing is written then.
    """
    out_dir = Path(out_dir)
    figures = figure_files(out_dir)
    if not figures:
        raise ReportError(f"{out_dir}: no figures in {out_dir / FIGURES} to report; run `lrd plot {out_dir}` first")
    page = render(out_dir, results, figures)
    path = out_dir / REPORT
    if path.is_file() and path.read_text(encoding="utf-8") == page:
        return path  # unchanged: a finished folder is checked without writing (it may be read-only)
    tmp = path.with_name(f".tmp-{REPORT}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render(out_dir: Path, results: Results, figures: list[Path]) -> str:
    """The report page as one HTML string (no external resources)."""
    resolved = _read_json(out_dir / "experiment.json")
    name = str(resolved.get("name", out_dir.name))
    description = str(resolved.get("description", ""))
    runs = results.runs
    sections = [
        f"<h1>{_e(name)}</h1>",
        f"<p>{_e(description)}</p>" if description else "",
        f"<p class='meta'>Results folder <code>{_e(out_dir)}</code>: {len(runs)} runs "
        f"({_status_counts(runs)}); solve threshold {_threshold(runs)}.</p>",
        "<h2>Summary</h2>",
        "<p>One row per task, gap and model, seeds aggregated at the chosen learning rate, as "
        "<code>lrd show --wide</code> prints it.</p>",
        _summary_html(runs),
    ]
    if not results.eval_gaps.empty:
        sections += [
            "<h2>Evaluation at other gaps</h2>",
            "<p>Final metric on the same task at each test gap (<code>[train] eval_gaps</code>), mean over "
            "finished seeds; rows: model and training gap.</p>",
            _eval_gaps_html(runs, results.eval_gaps),
        ]
    tests = [c for c in runs.columns if c.startswith("final_test_") and c.endswith("_metric")]
    if tests:
        sections += [
            "<h2>Test sets</h2>",
            "<p>Final metric on the task's test sets (other distributions at the same length, the task's "
            "<code>test_sets()</code>), mean over finished runs; rows: model and gap.</p>",
            _test_sets_html(runs, tests),
        ]
    sections.append("<h2>Figures</h2>")
    # the task's convention and baseline, in each figure's caption (the figures' titles leave them out)
    drawn = runs[runs["status"] != "failed"]
    tasks = {slug: task_caption(group) for slug, group in split_runs(drawn).items()} if len(drawn) else {}
    for path in figures:
        kind = _figure_name(path.stem)
        caption = " ".join(c for c in (CAPTIONS.get(kind, "") if kind else "", tasks.get(_slug(path.stem), "")) if c)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        sections.append(
            f"<figure id='{_e(path.stem)}'><img alt='{_e(path.stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_e(path.stem)}.</b> {_e(caption)}</figcaption></figure>"
        )
    sections += [
        "<h2>Experiment file, as run</h2>",
        f"<pre>{_e(_read_text(out_dir / 'experiment.toml'))}</pre>",
        "<h2>Versions</h2>",
        f"<pre>{_e(_read_text(out_dir / 'versions.json'))}</pre>",
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(name)}: lrd report</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;background:#fff}"
    "table{border-collapse:collapse;font-size:0.9em}th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}"
    "th{background:#e8eef6}td.l{text-align:left}figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}"
    "figcaption{font-size:0.9em;color:#444;max-width:900px}pre{background:#f4f4f4;padding:0.8em;overflow-x:auto}"
    ".meta{color:#555}"
)


def _summary_html(runs: pd.DataFrame) -> str:
    """The summary table as ``lrd show --wide`` prints it (``lrd.results.summary_cells``), its caption after it."""
    columns, rows, caption = summary_cells(runs, wide=True)
    lines = [
        "<table class='summary'><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in columns) + "</tr></thead><tbody>"
    ]
    for row in rows:
        cells = "".join(
            f"<td class='{'l' if column in ('task', 'model') else ''}'>{_e(value)}</td>"
            for column, value in zip(columns, row, strict=True)
        )
        lines.append(f"<tr>{cells}</tr>")
    return "\n".join([*lines, "</tbody></table>", f"<p class='meta'>{_e(caption)}</p>"])


def _eval_gaps_html(runs: pd.DataFrame, eval_gaps: pd.DataFrame) -> str:
    done = runs.loc[runs["status"] == "done", ["run", "task", "model", "hidden", "gap"]]
    rows = eval_gaps.merge(done, on="run")
    if rows.empty:
        return "<p>No finished run has evaluations at other gaps.</p>"
    table = rows.pivot_table(
        index=["task", "model", "hidden", "gap"], columns="test_gap", values="metric", aggfunc="mean"
    )
    head = ["task", "model", "hidden", "trained at gap", *(f"test gap {g}" for g in table.columns)]
    return _metric_table_html("eval-gaps", head, table)


def _test_sets_html(runs: pd.DataFrame, columns: list[str]) -> str:
    done = runs[runs["status"] == "done"]
    if done.empty:
        return "<p>No finished run has test-set scores.</p>"
    table = done.groupby(["task", "model", "hidden", "gap"])[columns].mean()
    names = [c.removeprefix("final_test_").removesuffix("_metric") for c in columns]
    head = ["task", "model", "hidden", "gap", *(f"test set {n}" for n in names)]
    return _metric_table_html("test-sets", head, table)


def _metric_table_html(css: str, head: list[str], table: pd.DataFrame) -> str:
    """Rows indexed by (task, model, hidden, gap), one mean metric per column, as an HTML table."""
    lines = [f"<table class='{css}'><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for key, values in table.iterrows():
        cells = [f"<td class='l'>{_e(key[0])}</td>", f"<td class='l'>{_e(key[1])}</td>"]
        cells += [f"<td>{_e(k)}</td>" for k in key[2:]]
        cells += [f"<td>{'—' if math.isnan(v) else f'{v:.3f}'}</td>" for v in values]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</tbody></table>"])


def _status_counts(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    return ", ".join(f"{int(counts[s])} {s}" for s in ("done", "diverged", "failed") if s in counts)


def _threshold(runs: pd.DataFrame) -> str:
    values = sorted(runs["solve_threshold"].unique()) if "solve_threshold" in runs else []
    return ", ".join(f"{v:g}" for v in values) or "—"


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return f"({path.name} not found)"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _e(value) -> str:
    return html.escape(str(value), quote=True)
