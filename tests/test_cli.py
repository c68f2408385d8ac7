"""The `lrd` command's own work: one-line user errors, and `lrd show` rendering the results summary."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
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
        *("adding", "10", "lstm", "8", "—", "3", "0", "1"),
        # Wilson: 1 of 2 decided (seed 0 failed, not still improving)
        *("1 solved / 0 undecided / 2 [0.09,0.91]", "0.950 ± 0.071", "0.100", "40", "-0.500 → +0.013"),
    ]
    assert "grid's edge" not in text
    assert "A run is solved when its final evaluation metric reaches" in " ".join(text.split())  # the rule, beside it
    # seed 0 still improving: undecided, and the interval is that of 1 of 1 decided
    console = Console(width=200, record=True)
    console.print(summary_table(runs.assign(still_improving=[True, False, False]), "t"))
    line = next(line for line in console.export_text().splitlines() if "adding" in line)
    assert "1 solved / 1 undecided / 2 [0.21,1.00]" in line


def test_summary_table_shows_the_chosen_learning_rate_and_flags_the_grids_edge():
    rows = []
    for lr, valid in ((1e-3, 0.2), (3e-3, 0.5), (1e-2, 0.9)):  # the largest wins: at the edge
        for seed in (0, 1):
            rows.append(
                {
                    **dict(task="copy", gap=5, model="gru", hidden=8, baseline_metric=0.1, seed=seed, lr=lr),
                    **dict(status="done", final_metric=valid, final_valid_metric=valid, final_valid_loss=1.0),
                    **dict(solved=False, solved_step=math.nan, still_improving=seed == 0),
                    **dict(growth_rate_init=-1.0, growth_rate_final=-1.0),
                }
            )
    console = Console(width=200, record=True)
    console.print(summary_table(pd.DataFrame(rows), "t"))
    text = console.export_text()
    cells = [c.strip() for c in next(line for line in text.splitlines() if "copy" in line).strip("│ ").split("│")]
    assert cells[4] == "0.01 of 3 !" and cells[5] == "2" and cells[7].startswith("0 solved / 1 undecided / 2 ")
    assert "best lr at the grid's edge: widen it" in text


REFERENCE = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("study", ["copy", "adding", "delayed_recall"])
def test_show_prints_success_interval_learning_rate_and_still_improving_for_each_reference_study(study, capsys):
    from lrd import store
    from lrd.results import summary

    assert main(["show", str(REFERENCE / study)]) == 0
    out = capsys.readouterr().out
    for header in ("lr", "outcomes [95% CI, decided]"):
        assert header in out
    rows = summary(store.load(REFERENCE / study).runs)
    assert len(rows) == 9  # 3 gaps x 3 models, each at its chosen learning rate of the grid
    for row in rows.itertuples():
        counts = f"{row.solved} solved / {row.undecided} undecided / {row.trained}"
        assert f"{counts} [{row.success_lo:.2f},{row.success_hi:.2f}]" in out
        assert f"{row.lr:g} of {row.lrs}{' !' if row.lr_at_edge else ''}" in out
