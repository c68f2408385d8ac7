"""The `lrd` command's own work: one-line user errors, and `lrd show` rendering the results summary."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console

from lrd.cli import main, summary_table


def test_show_and_plot_on_a_missing_or_empty_folder(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert main(["upgrade", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lrd: error:") for line in err)


def test_a_damaged_experiment_json_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "experiment.json").write_text("{not json")
    assert main(["show", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "experiment.json: cannot read the resolved experiment" in err and "\n" not in err


def test_summary_table_renders_the_aggregate():
    row = {
        "task": "adding",
        "gap": 10,
        "model": "lstm",
        "hidden": 8,
        "baseline_metric": 0.1,
        "growth_rate_init": -0.5,
        "growth_rate_final": 0.0125,
    }
    runs = pd.DataFrame(
        [
            {**row, "seed": 0, "status": "done", "final_metric": 0.9, "solved": False, "solved_step": math.nan},
            {**row, "seed": 1, "status": "done", "final_metric": 1.0, "solved": True, "solved_step": 40.0},
            {**row, "seed": 2, "status": "failed", "final_metric": math.nan, "solved": False, "solved_step": math.nan},
        ]
    )
    console = Console(width=200, record=True)
    console.print(summary_table(runs, "t"))
    text = console.export_text()
    assert "failed" in text  # the column appears only with failures
    line = next(line for line in text.splitlines() if "adding" in line)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells == [
        "adding",
        "10",
        "lstm",
        "8",
        "3",
        "0",
        "1",
        "0.950 ± 0.071",
        "0.100",
        "1/3",
        "40",
        "-0.500 → +0.013",
    ]
