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

    assert main(["show", str(REFERENCE / study), "--wide"]) == 0
    out = capsys.readouterr().out
    for header in ("lr", "outcomes [95% CI, decided]"):
        assert header in out
    rows = summary(store.load(REFERENCE / study).runs)
    assert len(rows) == 9  # 3 gaps x 3 models, each at its chosen learning rate of the grid
    for row in rows.itertuples():
        counts = f"{row.solved} solved / {row.undecided} undecided / {row.trained}"
        assert f"{counts} [{row.success_lo:.2f},{row.success_hi:.2f}]" in out
        assert f"{row.lr:g} of {row.lrs}{' !' if row.lr_at_edge else ''}" in out


# --- lrd show: fits 100 columns, formats, row selection -------------------------------------------------
RECALL = REFERENCE / "delayed_recall"


def _recall_summary():
    from lrd import store
    from lrd.results import summary

    return summary(store.load(RECALL).runs)


def test_show_fits_100_columns_by_default_and_wide_shows_every_column(capsys):
    assert main(["show", str(RECALL)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "…" not in out  # nothing cut
    rows = _recall_summary()
    for row in rows.itertuples():  # every configuration's outcome, whole
        assert f"{row.solved}/{row.undecided}/{row.trained} [{row.success_lo:.2f},{row.success_hi:.2f}]" in out
    assert "task delayed_recall; h 32; baseline 0.125" in " ".join(out.split())  # the same in every row: the caption
    assert main(["show", str(RECALL), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert max(len(line) for line in wide.splitlines()) > 100
    assert "solved at step" in wide and "solved at step" not in out


def test_show_csv_parses_with_pandas_and_json_and_markdown_hold_every_row(capsys):
    import io
    import json

    rows = _recall_summary()
    assert main(["show", str(RECALL), "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv.columns) == list(rows.columns) and len(csv) == len(rows) == 9
    pd.testing.assert_series_equal(csv["solved"], rows["solved"], check_dtype=False)
    assert csv["final_metric"].to_numpy() == pytest.approx(rows["final_metric"].to_numpy())
    assert main(["show", str(RECALL), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in records] == list(rows["model"]) and records[0]["lr"] == rows["lr"].iloc[0]
    assert main(["show", str(RECALL), "--format", "markdown"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 9 and table[1].startswith("|---|")
    assert all(line.count(" | ") == table[0].count(" | ") for line in table[2:])  # no cell breaks the columns


def test_show_where_selects_rows(capsys):
    import io

    assert main(["show", str(RECALL), "--format", "csv", "--where", "model=lstm", "gap=200"]) == 0
    one = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(zip(one["model"], one["gap"])) == [("lstm", 200)]
    assert main(["show", str(RECALL), "--format", "csv", "--where", "gap=50,200", "lr=1e-2"]) == 0
    some = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(some["gap"]) == {50, 200} and set(some["lr"]) == {0.01}  # lr matched as a number
    assert main(["show", str(RECALL), "--where", "modle=lstm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no column 'modle'" in err and "did you mean 'model'" in err
    assert main(["show", str(RECALL), "--where", "model=transformer"]) == 2
    assert "no run matches" in capsys.readouterr().err
    assert main(["show", str(RECALL), "--where", "model"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_compare_finds_what_changed_between_two_tables():
    from lrd.results import compare, summary
    from lrd.store import load

    before = load(RECALL).runs
    chosen = summary(before).iloc[0]  # the first configuration, at its chosen lr
    rows_of = (before["gap"] == chosen["gap"]) & (before["model"] == chosen["model"]) & (before["lr"] == chosen["lr"])
    after = before.copy()
    first = after.index[rows_of][0]
    after.loc[first, "final_metric"] = after.loc[first, "final_metric"] - 0.5  # one run falls below the threshold
    after.loc[first, "solved"] = after.loc[first, "final_metric"] >= after.loc[first, "solve_threshold"]
    after = after[after["model"] != "rnn"]  # and the tanh RNN is gone
    rows, same = compare(before, after)
    changed = rows[rows["changed"]]
    rnn = rows["model"] == "rnn"
    assert rnn.any() and rows.loc[rnn, "trained_after"].isna().all() and changed["model"].eq("rnn").sum() == rnn.sum()
    one = rows[(rows["gap"] == chosen["gap"]) & (rows["model"] == chosen["model"])].iloc[0]
    assert one["lr_after"] == one["lr_before"]  # chosen on the validation metric, which did not move
    assert one["metric_change"] == pytest.approx(-0.5 / chosen["seeds"], rel=1e-6)
    was_solved = before.loc[first, "final_metric"] >= before.loc[first, "solve_threshold"]
    assert one["changed"] == was_solved and one["solved_after"] == one["solved_before"] - was_solved
    assert same["runs"] == len(after) and same["identical"] == len(after) - 1
    assert same["largest_difference"] == pytest.approx(0.5)


def test_compare_command_on_a_folder_and_itself(capsys):
    import io

    assert main(["compare", str(RECALL), str(RECALL), "--format", "csv"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(rows) == 9 and not rows["changed"].any() and (rows["metric_change"] == 0).all()
    assert main(["compare", str(RECALL), str(RECALL)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    runs = len(__import__("lrd.store", fromlist=["load"]).load(RECALL).runs)
    assert f"{runs} runs in both (the same run id): {runs} with the same final metric." in " ".join(out.split())
    assert main(["compare", str(RECALL), "no/such/folder"]) == 2


# --- lrd --version, lrd tasks NAME ------------------------------------------------------------------------
def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lrd {metadata.version('lrd')}"


def test_cells_lists_the_cells_and_shows_one(capsys):
    from lrd.models import CELLS

    assert main(["cells"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CELLS) and "Tasks" not in out
    assert main(["cells", "gru"]) == 0
    assert "lrd/models/cells.py" in capsys.readouterr().out
    assert main(["cells", "delayed_recall"]) == 2  # a task, not a cell
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cells delayed_recall" in err and "--import" in err


def test_tasks_name_shows_parameters_defaults_and_source(capsys):
    assert main(["tasks", "delayed_recall"]) == 0
    out = capsys.readouterr().out
    assert "file: " in out and "lrd/tasks/delayed_recall.py" in out
    n_symbols = next(line for line in out.splitlines() if "n_symbols" in line)
    assert "int" in n_symbols and " 8 " in n_symbols
    assert "gap" in out and "(required)" in out
    assert main(["tasks", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "lrd/models/cells.py" in out and "forget_bias" in out and "1.0" in out and "states: c, h" in out


USER_TASK = """\"\"\"flip: say the first bit at the end.\"\"\"
from pydantic import Field

from lrd.tasks import Baseline, register
from lrd.tasks.parity import Parity


@register
class Flip(Parity):
    name = "flip_{suffix}"
    source = "a test"
    flips: int = Field(default=3, gt=0, description="how many flips")

    def baseline(self):
        return Baseline.uniform(2)
"""


def test_tasks_name_of_a_users_own_task_loaded_with_import(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    suffix = tmp_path.name.replace("-", "_")  # a name no other test registers
    (tmp_path / "my_task.py").write_text(USER_TASK.replace("{suffix}", suffix))
    assert main(["tasks", f"flip_{suffix}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--import my_task.py" in err  # not built in: how to load it
    assert main(["tasks", f"flip_{suffix}", "--import", "my_task.py"]) == 0
    out = capsys.readouterr().out
    assert "task flip_" in out and "flip: say the first bit at the end." in out
    assert "file: my_task.py" in out
    flips = next(line for line in out.splitlines() if "flips" in line)
    assert " 3 " in flips and "how many flips" in flips


def test_an_unknown_task_or_cell_suggests_imports_unless_a_built_in_name_is_close(write_experiment):
    from lrd.experiment import ExperimentError, load_experiment

    path = write_experiment(TINY_TASK.format(task="first_bit", cell="rnn"))
    with pytest.raises(ExperimentError, match=r'task\.name: unknown name .first_bit.*imports = \["my_task\.py"\]'):
        load_experiment(path)
    path = write_experiment(TINY_TASK.format(task="delayed_recal", cell="rnn"))
    with pytest.raises(ExperimentError, match="did you mean 'delayed_recall'") as typo:
        load_experiment(path)
    assert "imports" not in str(typo.value)
    path = write_experiment(TINY_TASK.format(task="delayed_recall", cell="leaky"))
    with pytest.raises(ExperimentError, match=r'unknown name .leaky.*imports = \["my_cell\.py"\]'):
        load_experiment(path)


TINY_TASK = """\
name = "t"
[task]
name = "{task}"
gap = 4
[model]
cell = "{cell}"
hidden = 8
[train]
steps = 20
log_every = 10
"""
