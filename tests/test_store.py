"""The results store: atomic run folders, which runs a folder holds, the schema it was written under."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import TINY

from lrd import store
from lrd.cli import main
from lrd.schema import SCHEMA_VERSION
from lrd.store import StoreError


def tables(run_id: str, value: float, failed: bool = False) -> dict[str, pd.DataFrame]:
    run = pd.DataFrame([{"run": run_id, "status": "failed" if failed else "done", "final_metric": value}])
    if failed:
        return {"run": run}
    curves = pd.DataFrame({"run": run_id, "step": [0, 10], "metric": [0.0, value]})
    grads = pd.DataFrame({"run": run_id, "step": [0], "norm": [1.0]})
    return {"run": run, "curves": curves, "grad_norms": grads}


def test_a_finished_run_replaces_a_failed_record_and_is_never_replaced(tmp_path):
    store.write_run(tmp_path, "a", tables("a", 0.0, failed=True))
    assert store.stored_runs(tmp_path) == {"a"} and store.completed_runs(tmp_path) == set()
    store.write_run(tmp_path, "a", tables("a", 0.5))
    assert store.completed_runs(tmp_path) == {"a"}
    store.write_run(tmp_path, "a", tables("a", 0.9))  # the same configuration finished elsewhere: keep the first
    assert store.read_run(tmp_path / "runs" / "a")["run"]["final_metric"].tolist() == [0.5]
    written = sorted([f"{t}.parquet" for t in tables("a", 0.5)] + [store.MANIFEST])  # no diagnostics: no dynamics
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == written
    assert not list((tmp_path / "runs").glob(".tmp*"))


def test_rewrite_run_moves_or_replaces_in_place(tmp_path):
    store.write_run(tmp_path, "old", tables("old", 0.5))
    store.rewrite_run(tmp_path, "old", "new", tables("new", 0.5))
    assert store.stored_runs(tmp_path) == {"new"}
    store.rewrite_run(tmp_path, "new", "new", tables("new", 0.7))
    assert store.read_run(tmp_path / "runs" / "new")["curves"]["metric"].tolist() == [0.0, 0.7]
    assert not list((tmp_path / "runs" / "new").glob(".tmp*"))


def test_a_folder_of_a_newer_schema_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "experiment.json").write_text(json.dumps({"schema": SCHEMA_VERSION + 1, "runs": {}}))
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, newer than this lrd"):
        store.load(tmp_path)


def test_changed_configuration_makes_new_runs_and_keeps_the_old(write_experiment, tmp_path, cache_dir):
    out = tmp_path / "out"
    small = TINY.replace('cell = ["rnn", "lstm"]', 'cell = "rnn"').replace("[0, 1]", "[0]")
    assert main(["run", str(write_experiment(small)), "--out", str(out), "--no-plot"]) == 0
    first = store.load(out).runs["run"].tolist()
    changed = small.replace("hidden = 8", "hidden = 6")
    assert main(["run", str(write_experiment(changed)), "--out", str(out), "--no-plot"]) == 0
    second = store.load(out).runs["run"].tolist()
    assert len(first) == len(second) == 1 and first != second
    assert sorted(store.load(out, all_runs=True).runs["run"]) == sorted(first + second)


def test_a_damaged_run_is_found_refused_by_read_run_and_replaced(tmp_path):
    store.write_run(tmp_path, "a", tables("a", 0.5))
    run_dir = tmp_path / "runs" / "a"
    written = json.loads((run_dir / store.MANIFEST).read_text())["files"]["curves.parquet"]["bytes"]
    (run_dir / "curves.parquet").write_bytes(b"garbage")
    reason = f"curves.parquet unreadable (7 bytes, {written} written)"
    assert store.check_run(run_dir) == store.RunCheck(store.DAMAGED, reason)
    assert store.completed_runs(tmp_path) == set()
    with pytest.raises(StoreError, match="damaged run") as err:
        store.read_run(run_dir)
    assert "\n" not in str(err.value)
    store.write_run(tmp_path, "a", tables("a", 0.9))  # a damaged run is replaced, unlike a complete one
    assert store.check_run(run_dir).state == store.COMPLETE
    assert store.read_run(run_dir)["run"]["final_metric"].tolist() == [0.9]
    assert not list((tmp_path / "runs").glob(".tmp*")) and not list(run_dir.glob(".tmp*"))
