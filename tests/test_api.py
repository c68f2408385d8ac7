"""The Python API: lrd.run and lrd.load, with the same bad-input cases as experiment files."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from conftest import TINY, comparable, lrd
from test_experiment import BAD
from test_overrides import BAD_OVERRIDES

import lrd as api
from lrd.experiment import parse_overrides


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_experiment_text_raises_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # imports of a text experiment are relative to the current folder
    text, words = BAD[case]
    with pytest.raises(api.ExperimentError) as err:
        api.run(text, out=tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith("<experiment string>")
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(set(BAD) - {"not toml"}))
def test_bad_experiment_dict_raises_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, words = BAD[case]
    with pytest.raises(api.ExperimentError) as err:
        api.run(tomllib.loads(text), out=tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith("<experiment dict>")
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "out").exists()


CLI_ONLY = {"not TOML", "two words", "empty value", "key given twice", "no =", "empty key"}  # text syntax


@pytest.mark.parametrize("case", sorted(set(BAD_OVERRIDES) - CLI_ONLY))
def test_bad_override_keyword_raises_one_line(case, write_experiment, tmp_path):
    items, words = BAD_OVERRIDES[case]
    overrides = parse_overrides(items, "x")  # the same values, as Python values
    path = write_experiment(TINY)
    with pytest.raises(api.ExperimentError) as err:
        api.run(path, out=tmp_path / "out", **overrides)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "out").exists()


def test_a_key_given_as_a_section_and_dotted_is_refused(write_experiment):
    with pytest.raises(api.ExperimentError, match=r"override model\.cell: given twice"):
        api.run(write_experiment(TINY), model={"cell": "gru"}, **{"model.cell": "rnn"})


@pytest.mark.parametrize(
    ("experiment", "match"),
    [
        (42, "must be a file path, a TOML string or a dict"),
        ({"task": {"name": "copy", "gap": 3}, "model": {"cell": "rnn"}}, "name: missing"),
        ("no/such/file.toml", "no/such/file.toml: cannot read"),
    ],
)
def test_what_is_not_an_experiment(experiment, match):
    with pytest.raises(api.ExperimentError, match=match):
        api.run(experiment)


def test_a_time_loop_kernel_forced_on_a_machine_without_a_gpu_is_refused(tmp_path):
    import jax

    if jax.default_backend() == "gpu":
        return  # the kernels can run here: nothing to refuse
    with pytest.raises(api.ExperimentError, match=r"^experiment 'tiny': model\.time_loop") as err:
        api.run(TINY, out=tmp_path / "out", **{"model.time_loop": "kernel", "model.hidden": 16})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_run_returns_what_load_returns_and_matches_the_command(write_experiment, tmp_path, cache_dir, capsys):
    path = write_experiment(TINY)
    # the API: a section dict and a dotted key; a list is a grid axis
    results = api.run(path, tmp_path / "api", model={"cell": ["gru"]}, **{"train.lr": 3e-3})
    assert "tiny: 2 runs, 0 already done, 2 to compute" in capsys.readouterr().out
    assert set(results.runs["model"]) == {"gru"} and set(results.runs["lr"]) == {3e-3}
    assert len(results.runs) == 2 and set(results.runs["status"]) == {"done"}
    loaded = api.load(tmp_path / "api")
    for got, want in zip(results, loaded):
        assert got.equals(want)
    recorded = (tmp_path / "api" / "experiment.toml").read_text()
    assert 'cell = ["gru"]' in recorded and "lr = 0.003" in recorded
    # the command with the same overrides trains the same runs, with the same numbers
    proc = lrd("run", str(path), "model.cell=[gru]", "train.lr=3e-3", "--out", str(tmp_path / "cli"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].endswith(f"figure files in {tmp_path / 'cli' / 'figures'}")
    assert lines[-1] == f"report: {tmp_path / 'cli' / 'report.html'}"  # the last line names the report
    for got, want in zip(comparable(api.load(tmp_path / "cli")), comparable(results)):
        assert got.equals(want)
    # again: nothing to compute, the same tables
    again = api.run(path, tmp_path / "api", progress=False, model={"cell": ["gru"]}, **{"train.lr": 3e-3})
    assert capsys.readouterr().out == ""
    assert again.runs.equals(results.runs)
    # with figures: the figures and the report, as the command writes them
    api.run(path, tmp_path / "api", figures=True, model={"cell": ["gru"]}, **{"train.lr": 3e-3})
    assert capsys.readouterr().out.strip().endswith(f"report: {tmp_path / 'api' / 'report.html'}")
    drawn = {p.name for p in (tmp_path / "api" / "figures").iterdir()}
    assert drawn == {p.name for p in (tmp_path / "cli" / "figures").iterdir()}
    assert "<img" in (tmp_path / "api" / "report.html").read_text()


def test_import_lrd_does_not_import_jax():
    code = "import sys, lrd; assert 'jax' not in sys.modules; lrd.load; assert 'jax' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
