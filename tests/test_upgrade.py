"""A results folder written before results schema 2 is refused with one line, then upgraded with the same numbers.

tests/data/schema1 was written by lrd before the change (commit e59c262): delayed recall
gap 4, rnn and lstm, seed 0, 20 steps, with the then task parameter solve_threshold = 0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lrd import store
from lrd.cli import main
from lrd.schema import SCHEMA_VERSION
from lrd.store import StoreError
from lrd.upgrade import upgrade

SCHEMA1 = Path(__file__).parent / "data" / "schema1"
EXPERIMENT = """\
name = "schema1"
seeds = [0]

[task]
name = "delayed_recall"
gap = 4

[model]
cell = ["rnn", "lstm"]
hidden = 8

[train]
steps = 20
log_every = 10
batch_size = 16
eval_size = 64
probe_size = 16

[report]
solve_threshold = 0.1
"""


@pytest.fixture
def old(tmp_path) -> Path:
    shutil.copytree(SCHEMA1, tmp_path / "old")
    return tmp_path / "old"


def stored(folder: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Each run's tables as stored, keyed by (model) since the ids change."""
    found = {}
    for run_dir in (folder / "runs").iterdir():
        tables = store.read_run(folder, run_dir.name)
        found[tables["run"]["model"].iloc[0]] = tables
    return found


def test_an_old_folder_is_refused_with_one_line_saying_how_to_upgrade(old, capsys, write_experiment):
    with pytest.raises(StoreError, match=r"results of schema 1, this lrd reads schema 2; run `lrd upgrade .*` once"):
        store.load(old)
    before = (old / "experiment.json").read_text()
    assert main(["show", str(old)]) == 2
    assert main(["run", str(write_experiment(EXPERIMENT)), "--out", str(old), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("lrd upgrade" in line for line in err)
    assert (old / "experiment.json").read_text() == before  # nothing written


def test_upgrade_keeps_the_numbers_and_the_runs_are_found_again(old, capsys, write_experiment, cache_dir):
    was = stored(old)
    assert main(["upgrade", str(old)]) == 0
    said = capsys.readouterr().out
    assert "upgraded from results schema 1 to 2: 2 runs rewritten, solve threshold 0.1" in said
    assert f"{old}: 2 runs packed, 2 in all, into {old / 'tables'}" in said
    assert (old / "tables" / "manifest.json").is_file() and not (old / "runs").exists()  # upgraded and packed
    resolved = json.loads((old / "experiment.json").read_text())
    assert resolved["schema"] == SCHEMA_VERSION and resolved["report"] == {"solve_threshold": 0.1}
    runs, curves, grad_norms, _, dynamics = store.load(old)
    assert dynamics.empty  # stored before the diagnostics
    for model, tables in was.items():
        run = runs[runs["model"] == model].reset_index(drop=True)
        old_run = tables["run"]
        for column in old_run.columns.drop(["run", "task_solve_threshold"]):  # solved & co. derived anew: equal
            pd.testing.assert_series_equal(run[column], old_run[column], check_dtype=False)
        for name, new in (("curves", curves), ("grad_norms", grad_norms)):
            mine = new[new["run"] == run["run"].iloc[0]].drop(columns="run").reset_index(drop=True)
            pd.testing.assert_frame_equal(mine, tables[name].drop(columns="run"), check_exact=True)
    assert "task_solve_threshold" not in runs.columns
    assert runs["solved"].tolist() == [False, True]  # lstm 0.094, rnn 0.203 against 0.1, as stored before
    # the experiment, written as today's lrd reads it, finds every run done under its new id
    # (the diagnostics are off by default, as they were for these runs: no part of their ids)
    assert main(["run", str(write_experiment(EXPERIMENT)), "--out", str(old), "--no-plot"]) == 0
    assert "0 runs computed, 2 already done" in capsys.readouterr().out
    assert main(["upgrade", str(old)]) == 0
    assert "already results schema 2 and packed; nothing to do" in capsys.readouterr().out


def test_a_task_solve_threshold_in_an_experiment_file_points_to_report(write_experiment, tmp_path, capsys):
    text = EXPERIMENT.replace("gap = 4", "gap = 4\nsolve_threshold = 0.9")
    assert main(["run", str(write_experiment(text)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "task.solve_threshold: moved to [report] solve_threshold" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_upgrade_records_the_probe_stop_rule_in_the_file_of_runs_stopped_by_it(tmp_path, capsys, write_experiment):
    """A folder whose stop_when_solved runs were stored without stop_check (stopped on their probe batch, before
    issue 21): experiment.json stays as it is (the ids are its hashes), experiment.toml gets stop_check = "probe",
    so that it gives the stored ids again; once only; a file that would still not give them is left alone."""
    from lrd.experiment import load_experiment

    source = EXPERIMENT.replace("probe_size = 16", "probe_size = 16\nstop_when_solved = true")
    probe = load_experiment(write_experiment(source.replace("[train]", '[train]\nstop_check = "probe"'), "p.toml"))
    folder = tmp_path / "stopped"
    folder.mkdir()
    store.write_experiment_json(
        folder,
        {
            "schema": SCHEMA_VERSION,
            "name": "schema1",
            "report": {"solve_threshold": 0.1},
            "runs": {s.run_id: s.config() for s in probe.runs},
        },
    )
    (folder / "experiment.toml").write_text(source)  # the file as it was run, before stop_check existed
    before = (folder / "experiment.json").read_bytes()
    probe_ids = {s.run_id for s in probe.runs}
    assert {s.run_id for s in load_experiment(folder / "experiment.toml").runs}.isdisjoint(probe_ids)  # "valid" now
    assert main(["upgrade", str(folder)]) == 0
    assert '2 runs stopped by the older probe-batch rule: stop_check = "probe" recorded' in (capsys.readouterr().out)
    assert (folder / "experiment.json").read_bytes() == before
    assert {s.run_id for s in load_experiment(folder / "experiment.toml").runs} == probe_ids
    assert main(["upgrade", str(folder)]) == 0  # recorded already: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert (folder / "experiment.toml").read_text().count('stop_check = "probe"') == 1

    (folder / "experiment.toml").write_text(source.replace("gap = 4", "gap = 5"))  # another experiment's file
    with pytest.raises(StoreError, match=r"still does not give the runs of experiment\.json"):
        upgrade(folder)
    assert "stop_check" not in (folder / "experiment.toml").read_text()
    assert not list(folder.glob(".tmp-*"))
