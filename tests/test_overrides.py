"""Overrides (`lrd run [EXP] KEY=VALUE ...`): parsed as TOML, validated as a file's values, one-line errors."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import TINY
from test_experiment import BAD

from lrd.cli import main
from lrd.experiment import ExperimentError, load_experiment, parse_overrides, parse_value

REPO = Path(__file__).resolve().parents[1]

# the bad-input cases of experiment files (test_experiment.BAD), given as overrides of TINY
BAD_OVERRIDES = {
    "diagnostics not a bool": (['train.diagnostics="yes"'], BAD["diagnostics not a bool"][1]),
    "zero lyapunov_k": (["train.lyapunov_k=0"], BAD["zero lyapunov_k"][1]),
    "negative saturation": (["train.saturation=-0.1"], BAD["negative saturation"][1]),
    "spike factor at most 1": (["train.spike_factor=1.0"], BAD["spike factor at most 1"][1]),
    "misspelled task key": (["task.gpa=4"], BAD["misspelled task key"][1]),
    "misspelled train key": (["train.log_evry=10"], BAD["misspelled train key"][1]),
    "negative gap": (["task.gap=-4"], BAD["negative gap"][1]),
    "zero gap": (["task.gap=[4,0]"], BAD["zero gap"][1]),
    "wrong type": (['task.gap="4"'], BAD["wrong type"][1]),
    "float for int": (["model.hidden=8.5"], BAD["float for int"][1]),
    "bool for int": (["train.steps=true"], BAD["bool for int"][1]),
    "unknown task": (["task.name=delayed_recal"], BAD["unknown task"][1]),
    "unknown model": (["model.cell=[rnn,lstn]"], BAD["unknown model"][1]),
    "unknown optimizer": (["train.optimizer=adamw"], BAD["unknown optimizer"][1]),
    "empty grid": (["model.cell=[]"], BAD["empty grid"][1]),
    "empty seeds": (["seeds=[]"], BAD["empty seeds"][1]),
    "hidden and params": (["model.params=500"], BAD["hidden and params"][1]),
    "infinite lr in a list": (["train.lr=[1e-3, inf]"], BAD["infinite lr in a list"][1]),
    "nan lr": (["train.lr=nan"], BAD["nan lr"][1]),
    "non-positive lr": (["train.lr=[1e-3, 0.0]"], BAD["non-positive lr"][1]),
    "negative seed": (["seeds=[0,-1]"], BAD["negative seed"][1]),
    "seed of 2**32": (["seeds=[0,4294967296]"], BAD["seed of 2**32"][1]),
    "infinite lr": (["train.lr=inf"], BAD["infinite lr"][1]),
    "nan clip": (["train.clip=nan"], BAD["nan clip"][1]),
    "nan forget_bias": (["model.forget_bias=nan"], BAD["nan forget_bias"][1]),
    "steps not a multiple": (["train.steps=25"], BAD["steps not a multiple"][1]),
    "unknown time loop": (["model.time_loop=fast"], BAD["unknown time loop"][1]),
    "kernel beyond its size limit": (["model.time_loop=kernel"], BAD["kernel beyond its size limit"][1]),
    "parallel form of a cell without one": (
        ["model.time_loop=parallel"],
        BAD["parallel form of a cell without one"][1],
    ),
    "missing import": (["imports=[nowhere.py]"], BAD["missing import"][1]),
    "threshold above 1": (["report.solve_threshold=1.5"], BAD["threshold above 1"][1]),
    "threshold as a grid": (["report.solve_threshold=[0.9,0.95]"], BAD["threshold as a grid"][1]),
    "misspelled report key": (["report.solve_treshold=0.9"], BAD["misspelled report key"][1]),
    "threshold in the task": (["task.solve_threshold=0.9"], BAD["threshold in the task"][1]),
    "heads not dividing the width": (["model.cell=attention", "model.heads=3"], BAD["heads not dividing the width"][1]),
    "an option the cell lacks": (["model.heads=2"], BAD["an option the cell lacks"][1]),
    "r_min above r_max": (["model.cell=lru", "model.r_min=0.99", "model.r_max=0.9"], BAD["r_min above r_max"][1]),
    "zero recurrence lr factor": (["train.recurrence_lr_factor=0"], BAD["zero recurrence lr factor"][1]),
    # what only overrides can get wrong
    "misspelled section": (["trian.lr=1e-3"], ["override trian.lr", "unknown key", "did you mean 'train'"]),
    "misspelled top-level key": (["seed=[0]"], ["override seed", "unknown key", "did you mean 'seeds'"]),
    "section without a key": (["model=gru"], ["override model", "model.<key>"]),
    "key in a key": (["model.cell.x=gru"], ["override model.cell.x", "unknown key"]),
    "not TOML": (["train.lr=[1e-3,"], ["override train.lr", "'[1e-3,' is not a TOML value"]),
    "two words": (["model.cell=lstm gru"], ["override model.cell", "not a TOML value"]),
    "empty value": (["train.lr="], ["override train.lr", "not a TOML value"]),
    "key given twice": (["train.lr=1e-3", "train.lr=3e-3"], ["override train.lr", "given twice"]),
    "no =": (["model.cell=gru", "lstm"], ["lstm", "not KEY=VALUE"]),
    "empty key": (["=3"], ["'=3'", "not KEY=VALUE"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_bad_override_is_one_line_exit_2_nothing_written(case, write_experiment, tmp_path, capsys):
    items, words = BAD_OVERRIDES[case]
    path = write_experiment(TINY)
    out = tmp_path / "out"
    code = main(["run", str(path), *items, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert case == "no =" or str(path) in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()


def test_every_bad_file_case_that_an_override_can_make_is_covered():
    # removing a key (missing task name, missing cell, hidden: the params cases need it gone) and broken TOML
    # syntax of a file are the only other cases
    assert set(BAD) - set(BAD_OVERRIDES) == {
        *("missing task name", "missing cell", "not toml"),
        *("neither hidden nor params", "params not an integer", "params too small"),
    }


def test_overrides_without_an_experiment_apply_to_the_default(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(REPO)
    assert main(["run", "model.cell=lstn", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "experiments/quick.toml with model.cell=" in err and "did you mean 'lstm'" in err
    assert not (tmp_path / "out").exists()


def test_overrides_after_an_option_are_still_overrides(write_experiment, tmp_path, capsys):
    path = write_experiment(TINY)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "train.lr=-1"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


VALUES = {
    "lstm": "lstm",  # a bare word is a string
    "[lstm,gru]": ["lstm", "gru"],  # also inside a list
    "[ lstm , 'g r u' ]": ["lstm", "g r u"],
    '"3e-3"': "3e-3",  # quoted: a string
    "3e-3": 3e-3,  # everything TOML reads stays TOML
    "[3e-3, adam]": [3e-3, "adam"],
    "[10,200]": [10, 200],
    "-4": -4,
    "true": True,
    "inf": float("inf"),
    "my_task.py": "my_task.py",
    "[tasks/a.py, b]": ["tasks/a.py", "b"],
}


@pytest.mark.parametrize("text", sorted(VALUES))
def test_values_are_toml_with_bare_words_as_strings(text):
    assert parse_value(text, "here") == VALUES[text]


def test_overrides_give_the_same_runs_as_the_file_with_those_values(write_experiment):
    edited = TINY.replace('cell = ["rnn", "lstm"]', 'cell = ["gru", "lstm"]').replace("gap = 4", "gap = [4, 9]")
    expected = load_experiment(write_experiment(edited, "edited.toml"))
    overridden = load_experiment(
        write_experiment(TINY, "tiny.toml"), parse_overrides(["model.cell=[gru,lstm]", "task.gap=[4,9]"], "x")
    )
    assert [s.run_id for s in overridden.runs] == [s.run_id for s in expected.runs]
    assert len(overridden.runs) == 2 * 2 * 2  # cells x gaps x seeds: each list is a grid axis
    # the experiment records the resolved file: read back, it is the same experiment
    recorded = load_experiment(write_experiment(overridden.source, "recorded.toml"))
    assert [s.run_id for s in recorded.runs] == [s.run_id for s in expected.runs]
    assert recorded.name == "tiny" and "model.cell=" in overridden.source.splitlines()[0]


def test_an_override_with_a_bad_key_is_an_experiment_error(write_experiment):
    with pytest.raises(ExperimentError, match=r"train\.lrr: unknown key.*did you mean 'lr'"):
        load_experiment(write_experiment(TINY), {"train.lrr": 1e-3})


def test_lrd_plot_without_a_folder_names_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "results/quick" in err and "lrd run" in err


def test_the_default_results_are_written_by_lrd_run_not_committed():
    # on a fresh clone `lrd run` must train: nothing of results/quick may be in the repository
    tracked = subprocess.run(["git", "ls-files", "results/quick"], cwd=REPO, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/quick/summary.csv"], cwd=REPO)
    assert ignored.returncode == 0
    # so is a results folder of one's own; the committed studies are not ignored
    mine = subprocess.run(["git", "check-ignore", "--no-index", "-q", "results/my-sweep/summary.csv"], cwd=REPO)
    assert mine.returncode == 0
    studies = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True)
    committed = sorted({path.split("/")[1] for path in studies.stdout.splitlines()})
    assert "delayed_recall" in committed
    for study in committed:
        tracked = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", f"results/{study}/experiment.json"], cwd=REPO
        )
        assert tracked.returncode == 1, f"results/{study} is committed but ignored: add !results/{study}/"
    # the README's figures come from committed results that `lrd run` does not touch
    readme = (REPO / "README.md").read_text()
    figures = [line for line in readme.splitlines() if line.startswith("![")]
    assert figures and not any("results/quick" in line for line in figures)
    for line in figures:
        assert (REPO / line[line.index("(") + 1 : -1]).is_file(), line


# --- overrides rewrite the description ------------------------------------------------------------------
def test_overrides_append_to_the_description_in_the_experiment_as_run(write_experiment):
    from lrd.experiment import load_experiment, overridden_part

    path = write_experiment('description = "gaps 4: rnn vs lstm"\n' + TINY)
    assert load_experiment(path).description == "gaps 4: rnn vs lstm"  # no override: the file's words
    experiment = load_experiment(path, {"model.cell": ["gru"], "task.gap": [5, 20], "train.lr": 3e-3})
    want = "gaps 4: rnn vs lstm (overridden: model.cell=[gru] task.gap=[5,20] train.lr=0.003)"
    assert experiment.description == want
    assert tomllib.loads(experiment.source)["description"] == want  # experiment.toml records it
    assert overridden_part(want) == "overridden: model.cell=[gru] task.gap=[5,20] train.lr=0.003"
    assert overridden_part("gaps 4: rnn vs lstm") == ""
    # an overridden description is the user's words, the other overrides still said; a section as a dict reads dotted
    given = load_experiment(path, {"description": "mine", "model": {"cell": "gru"}, "seeds": [0]}).description
    assert given == "mine (overridden: model.cell=gru seeds=[0])"
    assert load_experiment(write_experiment(TINY, "bare.toml"), {"seeds": [1]}).description == "overridden: seeds=[1]"


def test_an_overridden_sweep_says_so_in_its_stored_experiment_report_and_figures(
    write_experiment, tmp_path, monkeypatch, cache_dir
):
    import json

    from lrd.plots import writing

    notes = []
    real_note = writing.note
    monkeypatch.setattr(writing, "note", lambda fig, text: (notes.append(text), real_note(fig, text)))
    path = write_experiment('description = "tiny"\n' + TINY)
    out = tmp_path / "out"
    assert main(["run", str(path), "model.cell=[rnn]", "seeds=[0]", "--out", str(out)]) == 0
    want = "overridden: model.cell=[rnn] seeds=[0]"
    assert json.loads((out / "experiment.json").read_text())["description"] == f"tiny ({want})"
    assert want in (out / "experiment.toml").read_text()
    assert want in (out / "report.html").read_text()
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert figures and notes.count(want) == len(figures)  # every figure carries the note
