"""`lrd report`: one self-contained HTML page, checked by parsing it and by rendering it in a headless browser."""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import lrd
from PIL import Image

from lrd.plots import CAPTIONS
from lrd.plots.base import task_caption
from lrd.results import summary
from lrd.store import load

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """What a reader's browser would fetch or show: image sources, linked resources, tables, text."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.tables, self.text = [], [], {}, []
        self._table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script", "iframe") or (tag != "img" and attrs.get("src")):
            self.links.append((tag, attrs))
        if tag == "table":
            self._table = attrs.get("class", "")
            self.tables[self._table] = 0
        if tag == "tr" and self._table is not None:
            self.tables[self._table] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.text = " ".join(" ".join(page.text).split())
    return page


def test_lrd_run_ends_with_the_report_and_names_it(at_gaps_run):
    out, proc = at_gaps_run
    assert (out / "report.html").is_file()
    assert proc.stdout.strip().splitlines()[-1] == "report: out/report.html"


def test_the_report_holds_every_figure_inline_the_summary_the_captions_and_the_experiment(at_gaps_run):
    out, _ = at_gaps_run
    page = parse(out / "report.html")
    figures = sorted((out / "figures").glob("*.png"))
    results = load(out)
    # diagnostics off; steps to solve only where a run solved
    needs_dynamics = ("jacobian_spectrum", "gates", "growth_vs_exponent", "early_prediction", "pascanu")
    left_out = (*needs_dynamics, *(() if results.runs["solved"].any() else ("steps_to_solve",)))
    drawn = {k: v for k, v in CAPTIONS.items() if k not in left_out}
    assert len(figures) == len(page.images) == len(drawn)  # one task configuration: every figure once
    inline = sorted(base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert inline == sorted(p.read_bytes() for p in figures)  # the figures themselves, nothing fetched
    assert page.links == []
    assert page.tables["summary"] == 1 + len(summary(results.runs))  # header + one row per task, gap, model
    assert page.tables["eval-gaps"] == 1 + results.runs["gap"].nunique()  # header + one row per training gap
    for caption in drawn.values():
        assert " ".join(caption.split()) in page.text
    task = " ".join(task_caption(results.runs).split())  # the convention and baseline, beside every figure
    assert page.text.count(task) == len(drawn)
    assert " ".join((out / "experiment.toml").read_text().split()) in page.text
    assert '"jaxlib"' in page.text and "eval_gaps = [3, 5, 9, 2]" in page.text


def test_the_report_renders_in_a_headless_browser(at_gaps_run, tmp_path):
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(
            f"no headless browser installed (looked for {', '.join(BROWSERS)}); "
            "`apt-get install chromium` (as .ci/run does) runs this check"
        )
    out, _ = at_gaps_run
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (out / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))  # (H, W, 3)
    assert pixels.shape[:2] == (1600, 1200)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and figures, not a blank or error page
    not_white = (pixels < 240).any(axis=2).mean()
    assert 0.02 < not_white < 0.9


def test_report_on_a_folder_without_figures_is_one_line_and_writes_nothing(at_gaps_run, tmp_path):
    out, _ = at_gaps_run
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("figures", "report.html"))
    proc = lrd("report", str(bare), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no figures" in proc.stderr and "Traceback" not in proc.stderr
    assert not (bare / "report.html").exists()
    proc = lrd("report", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and not (tmp_path / "missing").exists()


def test_the_report_escapes_what_it_quotes(at_gaps_run, tmp_path):
    out, _ = at_gaps_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    toml = copy / "experiment.toml"
    toml.write_text(toml.read_text() + '# <script>alert("x")</script>\n')
    proc = lrd("report", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (copy / "report.html").read_text()
    assert "<script>" not in text and html.escape('<script>alert("x")</script>') in text
    assert parse(copy / "report.html").links == []


def test_the_report_has_a_test_sets_table_where_the_runs_have_test_set_scores(at_gaps_run):
    from lrd.report import render

    out, _ = at_gaps_run
    results = load(out)
    runs = results.runs.assign(final_test_sparse_metric=0.25, final_test_sparse_loss=1.5)
    page = Page()
    page.feed(render(out, results._replace(runs=runs), []))
    done = runs[runs["status"] == "done"]
    assert page.tables["test-sets"] == done.groupby(["task", "model", "hidden", "gap"]).ngroups + 1  # and the head
    assert "test set sparse" in " ".join(page.text) and "0.250" in " ".join(page.text)
    plain = Page()
    plain.feed(render(out, results, []))
    assert "test-sets" not in plain.tables
