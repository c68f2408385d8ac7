"""Upgrade a results folder written under an older results schema, in place, with the same numbers.

``lrd upgrade DIR`` retrains nothing: it rewrites the run ids and the stored tables
to the current schema (``lrd.schema.SCHEMA_VERSION``) and records what the old
schema kept per run as a setting of the folder.

Schema 1 -> 2: ``solve_threshold`` stopped being a task parameter (so part of a
run's id) and became the folder's ``[report] solve_threshold``. Each run of the
folder's experiment gets the id of its configuration without the threshold; its
stored ``solve_threshold``, ``solved`` and ``solved_step`` columns are dropped (they
are derived when the folder is read, ``lrd.results.with_solved``, from the same
final metric and curve, so they come back equal). Runs of earlier versions of the
experiment kept in the folder (not in its experiment.json) keep their ids: their
configuration was not recorded, and they are never looked up by id.

The runs are rewritten first, one by one, and experiment.json last: a crash at
any point leaves a folder that the same command upgrades.

Then, whatever its schema was, the folder is packed (``lrd.store.pack``): one table
per kind, checked value for value against the run folders before they are removed.
Runs written before manifests (``lrd.store.check_run``) are packed the same way, and
the packed tables have a manifest; a damaged or failed run is left as its run folder
for ``lrd run`` to compute again.

A folder whose ``stop_when_solved`` runs were stopped by the rule of before issue 21
(their probe batch; a stored configuration without ``train.stop_check``) keeps its
experiment.json as it is: each run's id is the hash of that configuration, and
``lrd verify`` reads the rule's absence as that rule (``lrd.train.STOP_CHECK_BEFORE``).
Its experiment.toml, the file as it was run, would today describe other runs (the
validation stop check is the default now), so ``stop_check = "probe"`` is recorded in its
``[train]`` table (``record_stop_check``): ``lrd run`` of that file then finds the stored
runs done, checked before the file is written.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from lrd import store
from lrd.experiment import ExperimentError, load_experiment, run_id_of
from lrd.schema import RUN, SCHEMA_VERSION, SOLVE_THRESHOLD, SOLVED_COLUMNS, TASK_PREFIX
from lrd.store import StoreError

# run-table columns that schema 1 stored and schema 2 derives or no longer has
SCHEMA1_ONLY = (f"{TASK_PREFIX}solve_threshold", *SOLVED_COLUMNS)


class Upgraded(NamedTuple):
    from_schema: int
    runs: int  # run folders rewritten
    solve_threshold: float
    packed: store.Packed  # what packing the folder did
    probe_stopped: int = 0  # stop_when_solved runs stopped by the probe-batch rule, recorded in experiment.toml


def upgrade(out_dir: str | Path) -> Upgraded:
    """Rewrite ``out_dir`` to the current results schema; StoreError (one line) if it cannot.

    Holds the folder's lock (``store.lock``): ``store.Locked`` while a sweep writes into it.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise StoreError(f"{out_dir}: no such results folder")
    with store.lock(out_dir):
        return _upgrade(out_dir)


def _upgrade(out_dir: Path) -> Upgraded:
    resolved = store.read_experiment_json(out_dir)
    if resolved is None:
        raise StoreError(f"{out_dir}: no experiment.json here: not a results folder of lrd")
    found = store.schema_of(resolved)
    if found > SCHEMA_VERSION:
        store.check_schema(out_dir)  # says: newer than this lrd
    if found == SCHEMA_VERSION:
        probe_stopped = record_stop_check(out_dir, resolved)
        return Upgraded(found, 0, store.solve_threshold(out_dir), store.pack(out_dir), probe_stopped)

    configs = resolved["runs"]
    thresholds = {config["task"].get("solve_threshold", SOLVE_THRESHOLD) for config in configs.values()}
    if len(thresholds) > 1:
        raise StoreError(
            f"{out_dir}: its runs use several solve thresholds ({', '.join(map(str, sorted(thresholds)))}) and a "
            "folder has one now; upgrade a copy per threshold, deleting the other runs from each"
        )
    threshold = float(thresholds.pop()) if thresholds else SOLVE_THRESHOLD
    new_ids, runs = {}, {}
    for old_id, config in configs.items():
        config = copy.deepcopy(config)
        config["task"].pop("solve_threshold", None)
        new_ids[old_id] = run_id_of(config)
        runs[new_ids[old_id]] = config

    rewritten = 0
    for old_id in sorted(store.stored_runs(out_dir)):
        new_id = new_ids.get(old_id, old_id)
        tables = store.read_run(out_dir, old_id)
        tables = {name: table.assign(run=new_id) for name, table in tables.items()}
        tables[RUN] = tables[RUN].drop(columns=list(SCHEMA1_ONLY), errors="ignore")
        store.rewrite_run(out_dir, old_id, new_id, tables)
        rewritten += 1
    resolved = {**resolved, "schema": SCHEMA_VERSION, "report": {"solve_threshold": threshold}, "runs": runs}
    store.write_experiment_json(out_dir, resolved)
    packed = store.pack(out_dir)
    if (out_dir / "summary.csv").exists():
        from lrd.results import summary  # pandas work, imported only when a folder is upgraded

        runs = store.load(out_dir).runs
        store.write_summary(out_dir, runs, summary(runs))
    return Upgraded(found, rewritten, threshold, packed)


# the line record_stop_check adds under [train]
STOP_CHECK_LINES = (
    "# recorded by `lrd upgrade`: these runs stopped on their probe batch, the rule of before issue 21;\n"
    '# kept only to reproduce them (lrd.train.TrainConfig.stop_check)\nstop_check = "probe"\n'
)


def record_stop_check(out_dir: Path, resolved: dict[str, Any]) -> int:
    """Record ``stop_check = "probe"`` in DIR/experiment.toml where its stop_when_solved runs were stopped so.

    The runs: those of experiment.json with ``stop_when_solved`` and no ``stop_check``.
    Returns how many (0: nothing to record, or already recorded). The file is rewritten
    only if, read again, it gives exactly the ids of experiment.json; StoreError otherwise.
    """
    probe = [
        i for i, c in resolved["runs"].items() if c["train"].get("stop_when_solved") and "stop_check" not in c["train"]
    ]
    path = out_dir / "experiment.toml"
    if not probe or not path.is_file():
        return 0
    source = path.read_text()
    try:
        train = tomllib.loads(source).get("train", {})
    except tomllib.TOMLDecodeError:
        raise StoreError(f"{path}: not valid TOML; cannot record stop_check there") from None
    if "stop_check" in train:
        return 0
    header = re.search(r"^\[train\][ \t]*(#[^\n]*)?\n", source, flags=re.MULTILINE)
    if header is None:
        raise StoreError(f"{path}: no [train] table to record stop_check in, though {len(probe)} runs stop when solved")
    text = source[: header.end()] + STOP_CHECK_LINES + source[header.end() :]
    check = path.with_name(f"{store.TMP_PREFIX}upgrade-{path.name}")  # beside it: its imports resolve the same
    try:
        check.write_text(text)
        ids = {spec.run_id for spec in load_experiment(check).runs}
    except ExperimentError as err:
        raise StoreError(f'{path}: with stop_check = "probe" it does not load ({err}); left unchanged') from None
    finally:
        check.unlink(missing_ok=True)
    if ids != set(resolved["runs"]):
        raise StoreError(
            f'{path}: with stop_check = "probe" it still does not give the runs of experiment.json '
            f"({len(ids - set(resolved['runs']))} others); left unchanged"
        )
    store._write_text(path, text)
    return len(probe)
