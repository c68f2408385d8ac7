"""The tutorial notebook (docs/tutorial.ipynb) runs from top to bottom, at its tiny size (LRD_TUTORIAL_TINY=1)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("LRD_TUTORIAL_TINY", "1")  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells), "the notebook is committed without outputs"
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert len(images) >= 3  # the gradient norms drawn from the table, and lrd's two figures

    sweep = pd.read_csv(tmp_path / "tutorial-results" / "sweep" / "runs.csv.gz")
    assert sorted(set(sweep["gap"])) == [4, 8]  # the sweep, then the longer gap added by an override
    assert set(sweep["model"]) == {"rnn", "lstm"} and set(sweep["status"]) == {"done"}
    assert (sweep["steps"] == 20).all()  # the tiny size, not the tutorial's own
    first = pd.read_csv(tmp_path / "tutorial-results" / "first_symbol" / "runs.csv.gz")
    assert set(first["task"]) == {"first_symbol"} and set(first["status"]) == {"done"}
    assert (first["baseline_metric"] == 0.25).all()
