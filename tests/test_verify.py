"""`lrd verify`: retrain a reproducible sample of groups and compare every stored number."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import lrd

from lrd import cli
from lrd.sweep import plan
from lrd.verify import _experiment, choose_groups, compare, machines, specs_of

ROOT = Path(__file__).resolve().parent.parent
SCHEMA1 = Path(__file__).parent / "data" / "schema1"


def checks(stdout: str) -> dict[str, tuple[int, int, float]]:
    """Per table: (bitwise equal, values, largest relative difference) from the command's output."""
    found = re.findall(r"^  (\w+) +(\d+)/(\d+) values bitwise equal; largest relative difference (\S+)", stdout, re.M)
    return {name: (int(same), int(total), float(diff)) for name, same, total, diff in found}


def test_a_folder_verified_on_the_machine_that_wrote_it_is_bitwise_equal(at_gaps_run, tmp_path):
    out, _ = at_gaps_run
    assert (out / "tables").is_dir() and not (out / "runs").exists()  # packed when the sweep ended
    proc = lrd("verify", str(out), "--sample", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = checks(proc.stdout)
    assert set(found) == {"run", "curves", "grad_norms", "eval_gaps"}
    for name, (same, total, diff) in found.items():
        assert total > 0 and same == total and diff == 0, name
    assert "retrained 2 groups (4 runs)" in proc.stdout  # a group trains whole: both its seeds
    assert proc.stdout.strip().endswith(
        "verified: every difference within tolerance 0 (same CPU and versions: bitwise)"
    )


def test_a_changed_number_is_found_and_fails_the_check(at_gaps_run, tmp_path):
    out, _ = at_gaps_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    path = copy / "tables" / "curves.parquet"  # packed: the sweep ended with every run finished
    curves = pd.read_parquet(path)
    curves.loc[curves["step"] == 10, "loss"] *= 1.5  # relative difference 1/3
    curves.to_parquet(path, index=False)
    # the manifest's checksum would now call the runs damaged: record the new file, as if it had been written so
    manifest = json.loads((copy / "tables" / "manifest.json").read_text())
    data = path.read_bytes()
    manifest["files"]["curves.parquet"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (copy / "tables" / "manifest.json").write_text(json.dumps(manifest))
    proc = lrd("verify", str(copy), "--sample", "1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    found = checks(proc.stdout)
    same, total, diff = found["curves"]
    assert diff == pytest.approx(1 / 3, rel=1e-3) and same == total - 2  # one changed value per seed (3 digits shown)
    assert all(found[t][0] == found[t][1] for t in ("run", "grad_norms", "eval_gaps"))
    assert "(loss, run " in proc.stdout and "NOT verified" in proc.stdout


def test_the_default_tolerance_is_bitwise_only_where_the_folder_was_written(at_gaps_run, tmp_path):
    out, _ = at_gaps_run
    assert machines(out).same and machines(out).tolerance == 0.0  # written here, by these versions
    written = json.loads((out / "versions.json").read_text())
    for name, change in [("no_cpu", {"cpu": None}), ("other_cpu", {"cpu": "Other (avx2, fma)"}), ("jax", {"jax": "0"})]:
        (tmp_path / name).mkdir()
        versions = {k: v for k, v in {**written, **change}.items() if v is not None}
        (tmp_path / name / "versions.json").write_text(json.dumps(versions))
        assert not machines(tmp_path / name).same and machines(tmp_path / name).tolerance == 1e-3, name
    assert not machines(ROOT / "results" / "parity").same  # written before versions.json recorded the CPU


def test_the_groups_are_chosen_reproducibly_from_the_folder_name():
    resolved, specs = specs_of(ROOT / "results" / "parity")
    groups = plan(_experiment(resolved, specs), set())
    assert len(groups) == 9
    first = [g.label for g in choose_groups("parity", groups, 3)]
    assert first == [g.label for g in choose_groups("parity", list(reversed(groups)), 3)]
    assert len(set(first)) == 3
    others = {tuple(g.label for g in choose_groups(name, groups, 3)) for name in ("a", "b", "c", "d")}
    assert len(others | {tuple(first)}) > 1  # the name decides; not always the same groups
    assert len(choose_groups("parity", groups, 100)) == 9


def test_committed_runs_rebuild_to_their_stored_ids():
    for folder in ("parity", "delayed_recall", "modern"):
        resolved, specs = specs_of(ROOT / "results" / folder)
        assert [s.run_id for s in specs] == list(resolved["runs"])
        if folder == "delayed_recall":  # stopped on the validation check set, and retrained by that rule
            assert {s.train.stop_check for s in specs} == {"valid"} and all(s.train.stop_when_solved for s in specs)


def test_compare_counts_bitwise_equal_values_and_finds_the_largest_relative_difference():
    old = pd.DataFrame({"run": ["a", "b", "c", "d"], "x": [1.0, np.nan, 0.0, 2.0], "s": ["u", "v", "w", None]})
    new = pd.DataFrame({"run": ["a", "b", "c", "d"], "x": [1.0, np.nan, -0.0, 2.5], "s": ["u", "v", "w", None]})
    check = compare("t", old, new)
    assert check.values == 12
    assert check.bitwise == 10  # -0.0 equals 0.0 but not bit for bit; 2.0 vs 2.5
    assert check.max_difference == pytest.approx(0.2)
    assert check.where.startswith("x, run d: 2.0 stored, 2.5 recomputed")
    assert compare("t", old, new.assign(x=[1.0, 3.0, 0.0, 2.0])).max_difference == 1.0  # NaN against a number
    assert compare("t", old, new.assign(s=["u", "v", "W", None])).max_difference == 1.0  # text must match
    assert compare("t", old, new.drop(columns="s")).max_difference == 1.0
    assert compare("t", old, None).max_difference == 1.0
    assert compare("t", old, old.assign(extra=1.0)).max_difference == 1.0  # a column only in one of them
    assert compare("t", old.assign(wall_time_s=1.0), old.assign(wall_time_s=2.0)).max_difference == 0.0


def _one_line_exit_2(capsys, *args: str) -> str:
    assert cli.main(["verify", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lrd: error: "), err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert "no such results folder" in _one_line_exit_2(capsys, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no runs here" in _one_line_exit_2(capsys, str(tmp_path / "empty"))
    shutil.copytree(SCHEMA1, tmp_path / "old")
    assert "lrd upgrade" in _one_line_exit_2(capsys, str(tmp_path / "old"))
    assert "--sample 0" in _one_line_exit_2(capsys, str(ROOT / "results" / "parity"), "--sample", "0")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda config: config["train"].update(lr=0.5), "this lrd gives its configuration another id"),
        (lambda config: config["train"].update(warmup=10), "not a configuration this lrd reads"),
        (lambda config: config["task"].update(name="my_task"), "task 'my_task' is not registered here"),
    ],
)
def test_runs_from_another_lrd_version_are_refused(tmp_path, capsys, change, message):
    folder = tmp_path / "parity"
    shutil.copytree(ROOT / "results" / "parity", folder)
    resolved = json.loads((folder / "experiment.json").read_text())
    change(next(iter(resolved["runs"].values())))
    (folder / "experiment.json").write_text(json.dumps(resolved))
    err = _one_line_exit_2(capsys, str(folder))
    assert message in err and "experiment.json" in err
