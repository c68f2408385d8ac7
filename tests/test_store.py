"""The results store: atomic run folders, packed tables, which runs a folder holds, the schema it was written under."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, unpack

from lrd import store
from lrd.cli import main
from lrd.schema import SCHEMA_VERSION, Results
from lrd.store import StoreError

ROOT = Path(__file__).resolve().parents[1]


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
    assert store.read_run(tmp_path, "a")["run"]["final_metric"].tolist() == [0.5]
    written = sorted([f"{t}.parquet" for t in tables("a", 0.5)] + [store.MANIFEST])  # no diagnostics: no dynamics
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == written
    assert not list((tmp_path / "runs").glob(".tmp*"))


def test_rewrite_run_moves_or_replaces_in_place(tmp_path):
    store.write_run(tmp_path, "old", tables("old", 0.5))
    store.rewrite_run(tmp_path, "old", "new", tables("new", 0.5))
    assert store.stored_runs(tmp_path) == {"new"}
    store.rewrite_run(tmp_path, "new", "new", tables("new", 0.7))
    assert store.read_run(tmp_path, "new")["curves"]["metric"].tolist() == [0.0, 0.7]
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
    with pytest.raises(StoreError, match=r"run a damaged \(curves\.parquet unreadable") as err:
        store.read_run(tmp_path, "a")
    assert "\n" not in str(err.value)
    store.write_run(tmp_path, "a", tables("a", 0.9))  # a damaged run is replaced, unlike a complete one
    assert store.check_run(run_dir).state == store.COMPLETE
    assert store.read_run(tmp_path, "a")["run"]["final_metric"].tolist() == [0.9]
    assert not list((tmp_path / "runs").glob(".tmp*")) and not list(run_dir.glob(".tmp*"))


# --- packing ---------------------------------------------------------------------------------------
# every kind of table: diagnostics (dynamics) and evaluation at other gaps (eval_gaps); two groups, four runs
STUDY = TINY.replace("probe_size = 16", "probe_size = 16\ndiagnostics = true\neval_gaps = [4, 6]")
KINDS = ("runs", "curves", "grad_norms", "eval_gaps", "dynamics")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, cache_dir) -> Path:
    """STUDY run once into one folder per run: the sweep's form before it packs."""
    work = tmp_path_factory.mktemp("study")
    (work / "exp.toml").write_text(STUDY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "pack", lambda out_dir: None)  # the sweep's last step, left out
        assert main(["run", str(work / "exp.toml"), "--out", str(work / "out"), "--no-plot"]) == 0
    assert len(list((work / "out" / "runs").iterdir())) == 4 and not (work / "out" / store.PACKED).exists()
    return work / "out"


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


def assert_loads_the_same(got: Results, want: Results, empty: tuple[str, ...] = ("eval_gaps",)) -> None:
    for name, a, b in zip(Results._fields, got, want):
        assert len(b) or name in empty, name  # every other table has rows to compare
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)


def test_packed_and_unpacked_forms_load_to_identical_dataframes(unpacked, tmp_path, capsys):
    out = copy_of(unpacked, tmp_path)
    before, each = store.load(out), {i: store.read_run(out, i) for i in store.stored_runs(out)}
    assert len(before.eval_gaps) == 8 and len(before.dynamics)  # 4 runs x 2 test gaps; diagnostics on
    assert main(["pack", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 4 runs packed, 4 in all, into {out / 'tables'} (")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".lock", "experiment.json", "experiment.toml", "runs.csv.gz", "summary.csv", "tables", "versions.json"]
    )
    manifest = json.loads((out / "tables" / "manifest.json").read_text())
    assert manifest["runs"] == sorted(each) and manifest["schema"] == SCHEMA_VERSION
    assert sorted(manifest["files"]) == sorted(f"{kind}.parquet" for kind in KINDS)
    for name, entry in manifest["files"].items():
        data = (out / "tables" / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["rows"] == pq.ParquetFile(out / "tables" / name).metadata.num_rows
        column = pd.read_parquet(out / "tables" / name, columns=["run"])["run"]
        assert column.is_monotonic_increasing and set(column) == set(each), name  # sorted by run id
    assert_loads_the_same(store.load(out), before)
    assert_loads_the_same(store.load(out, all_runs=True), before)
    for run_id, tables in each.items():  # each run reads back as its run folder held it
        for name, table in store.read_run(out, run_id).items():
            pd.testing.assert_frame_equal(table, tables[name], check_exact=True)


def test_packed_tables_are_small_where_nothing_is_lost(unpacked, tmp_path):
    out = copy_of(unpacked, tmp_path)
    store.pack(out)
    metadata = pq.ParquetFile(out / "tables" / "grad_norms.parquet").metadata
    schema = pq.read_schema(out / "tables" / "grad_norms.parquet")
    assert schema.field("norm").type == pa.float32() and schema.field("log_gmean_norm").type == pa.float32()
    assert store.load(out).grad_norms["norm"].dtype == np.float64  # read back as computed: float32 values, exactly
    column = metadata.row_group(0).column(schema.get_field_index("direction"))
    assert column.compression == "ZSTD" and column.statistics is None
    assert "RLE_DICTIONARY" in column.encodings  # the strings: dictionary-encoded
    norms = metadata.row_group(0).column(schema.get_field_index("norm"))
    assert "BYTE_STREAM_SPLIT" in norms.encodings and norms.statistics is None
    runs = pq.read_schema(out / "tables" / "runs.parquet")
    assert runs.field("lr").type == pa.float64()  # 0.001 is no float32: kept as it was


def test_a_study_whose_runs_differ_in_columns_loads_the_same_packed_and_unpacked(tmp_path):
    """results/modern: cells with options the others lack, so its runs have ten different sets of columns."""
    out = copy_of(ROOT / "results" / "modern", tmp_path)
    packed = store.load(out)
    unpack(out)
    assert not (out / store.PACKED).exists() and len(list((out / "runs").iterdir())) == len(packed.runs)
    assert_loads_the_same(store.load(out), packed, empty=("eval_gaps", "dynamics"))
    store.pack(out)
    assert_loads_the_same(store.load(out), packed, empty=("eval_gaps", "dynamics"))


def test_the_sweep_packs_a_folder_whose_runs_all_finished(unpacked, tmp_path, capsys):
    out = copy_of(unpacked, tmp_path)
    before = store.load(out)
    assert main(["run", str(unpacked.parent / "exp.toml"), "--out", str(out), "--no-plot"]) == 0
    assert "0 runs computed, 4 already done" in capsys.readouterr().out
    assert (out / store.PACKED).is_dir() and not (out / "runs").exists()
    assert_loads_the_same(store.load(out), before)


def half_packed(unpacked: Path, tmp_path: Path) -> Path:
    """Two runs packed, two more in run folders beside the tables: a packed folder that gained runs."""
    out = copy_of(unpacked, tmp_path)
    later = sorted((out / "runs").iterdir())[:2]
    for run_dir in later:
        run_dir.rename(tmp_path / run_dir.name)
    assert store.pack(out).runs == 2 and not (out / "runs").exists()  # emptied, so removed
    (out / "runs").mkdir()
    for run_dir in later:
        (tmp_path / run_dir.name).rename(run_dir)
    return out


def test_a_packed_folder_that_gains_runs_packs_them_with_the_others(unpacked, tmp_path):
    out = half_packed(unpacked, tmp_path)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(store.stored_runs(out))[:2]
    want = store.load(copy_of(unpacked, tmp_path / "reference"))
    assert_loads_the_same(store.load(out), want)  # both forms at once
    assert store.pack(out) == store.Packed(4, 2, {}, store.pack(out).bytes)  # the second: nothing to do
    assert not (out / "runs").exists() and json.loads((out / "tables" / "manifest.json").read_text())["runs"] == sorted(
        store.stored_runs(out)
    )
    assert_loads_the_same(store.load(out), want)


STEPS = ("tables written", "tables checked", "old tables moved aside", "new tables in place", "old tables removed")
STEPS += ("run folder removed",)
KILL = """\
import os, signal, sys
from pathlib import Path
from lrd import store
store._pack_step = lambda reached: os.kill(os.getpid(), signal.SIGKILL) if reached == sys.argv[2] else None
with store.lock(Path(sys.argv[1])):
    store.pack(Path(sys.argv[1]))
"""


class Killed(Exception):
    pass


@pytest.mark.parametrize("how", ["raise", "SIGKILL"])
@pytest.mark.parametrize("step", STEPS)
def test_a_pack_killed_at_any_step_loses_nothing(step, how, unpacked, tmp_path, monkeypatch):
    out = half_packed(unpacked, tmp_path)
    want = store.load(copy_of(unpacked, tmp_path / "reference"))
    if how == "raise":

        def killed(reached: str) -> None:
            if reached == step:
                raise Killed(step)

        monkeypatch.setattr(store, "_pack_step", killed)
        with pytest.raises(Killed):
            store.pack(out)
        monkeypatch.undo()
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", KILL, str(out), step], env=env, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    checks = store.check_runs(out)
    assert len(checks) == 4 and all(c.state == store.COMPLETE for c in checks.values()), checks
    assert_loads_the_same(store.load(out), want)  # nothing lost, nothing twice
    assert store.pack(out).runs == 4  # the next pack finishes the job
    left = sorted(p.name for p in out.iterdir() if p.name in ("runs", "tables") or p.name.startswith(".tmp"))
    # killed, a process leaves its temporary folder to the next one; raised, the temporary folder is its own still
    mine = [name for name in left if name.startswith(f".tmp-tables-pid{os.getpid()}-")]
    assert left == sorted(["tables", *mine]) and len(mine) <= (how == "raise")
    assert_loads_the_same(store.load(out), want)
