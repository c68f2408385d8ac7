"""Check a results folder on this machine: retrain a sample of its groups and compare every stored number.

``verify(DIR, sample)`` picks ``sample`` groups of the folder's finished runs (a group:
the seeds that train together in one vmapped program, ``lrd.sweep.plan``), chosen by a
``random.Random`` seeded with the folder's experiment name, so the same folder always
checks the same groups. It rebuilds each run from ``experiment.json`` (the resolved
configuration the run's id is the hash of; a ``stop_when_solved`` run stored without
``train.stop_check`` was stopped by the probe-batch rule of before issue 21, and is retrained
with it, ``lrd.train.STOP_CHECK_BEFORE``), trains the groups with the sweep, whole and
with all their seeds, into a temporary folder, and compares the stored tables with the
new ones value by value.

The difference of two values a, b is ``|a - b| / max(|a|, |b|)`` (0 when they are equal,
NaN included; 1 when only one is NaN or finite); text and boolean columns must match
exactly (else 1). Per table it reports the largest difference, where it is, and how many
numbers are bitwise equal. ``wall_time_s`` is not compared.

Why a tolerance, and which: see the README ("Checking a results folder"). On the machine
that wrote a folder, with the same versions, every number is bitwise equal. Across
machines the float32 results depend on the CPU's instruction set (XLA picks kernels per
ISA: AVX-512 vs AVX2, FMA or not, changes the order and rounding of the sums), and
training amplifies last-bit differences step by step.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pydantic

from lrd import store
from lrd.experiment import Experiment, ReportConfig, RunSpec, run_id_of
from lrd.models.network import ModelConfig
from lrd.runtime import versions
from lrd.schema import OPTIONAL_TABLES, TABLES
from lrd.sweep import Group, Reporter, plan, run_sweep
from lrd.tasks import TASKS
from lrd.train import STOP_CHECK_BEFORE, TrainConfig

# the default bound on the largest relative difference (README, "Checking a results folder"): none on the
# machine and versions that wrote the folder; elsewhere what last-bit differences grow to in stable runs
SAME_MACHINE_TOLERANCE = 0.0
OTHER_MACHINE_TOLERANCE = 1e-3
NOT_COMPARED = ("wall_time_s",)


class VerifyError(ValueError):
    """A folder that cannot be verified; the message is one line."""


class TableCheck(NamedTuple):
    """The comparison of one table over the verified runs."""

    table: str
    values: int  # numbers compared
    bitwise: int  # of them, bitwise equal (NaN equal to NaN)
    max_difference: float  # largest relative difference (0 when every value is equal)
    where: str  # the column, and run, of the largest difference ("" when none)


class Verification(NamedTuple):
    groups: list[str]  # labels of the retrained groups
    runs: int
    tables: list[TableCheck]

    @property
    def max_difference(self) -> float:
        return max((t.max_difference for t in self.tables), default=0.0)


class Machines(NamedTuple):
    written: str  # the CPU and jaxlib that wrote the folder, as its versions.json records them
    here: str  # this machine's
    same: bool  # the same CPU (and vector instructions) and every recorded version: bitwise equality expected

    @property
    def tolerance(self) -> float:
        """The default tolerance: 0 (bitwise) where ``same``, else ``OTHER_MACHINE_TOLERANCE``."""
        return SAME_MACHINE_TOLERANCE if self.same else OTHER_MACHINE_TOLERANCE


def machines(out_dir: Path) -> Machines:
    """Where the folder was written (its versions.json) and where it is verified, and whether they are the same."""
    try:
        stored = json.loads((out_dir / "versions.json").read_text())
    except (OSError, ValueError):
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    here = versions()
    same = "cpu" in stored and all(stored.get(k) == v for k, v in here.items() if k != "platform")
    describe = lambda v: f"{v.get('cpu', 'CPU not recorded')}, jaxlib {v.get('jaxlib', '?')}"
    return Machines(describe(stored), describe(here), same)


def specs_of(out_dir: Path) -> tuple[dict[str, Any], list[RunSpec]]:
    """The folder's resolved experiment and its runs rebuilt from it; VerifyError if they are not this lrd's."""
    resolved = store.read_experiment_json(out_dir)
    if resolved is None or not resolved["runs"]:
        raise VerifyError(f"{out_dir}: no runs here (no experiment.json with runs); nothing to verify")
    store.check_schema(out_dir)  # StoreError: another results schema
    where = out_dir / store.EXPERIMENT_JSON
    specs = []
    for run_id, config in resolved["runs"].items():
        try:
            task_config = dict(config["task"])
            name = task_config.pop("name")
            if name not in TASKS:
                raise VerifyError(f"{where}: run {run_id}: task {name!r} is not registered here (a task file?)")
            model, train = dict(config["model"]), dict(config["train"])
            if train.get("stop_when_solved"):  # stored without the rule: trained by the rule of before issue 21
                train.setdefault("stop_check", STOP_CHECK_BEFORE)
            spec = RunSpec(
                TASKS[name](**task_config),
                ModelConfig(**{k: v for k, v in model.items() if k != "params_target"}),
                TrainConfig(**{k: v for k, v in train.items() if k != "stop_threshold"}),
                int(config["seed"]),
                params_target=model.get("params_target"),
                stop_threshold=train.get("stop_threshold"),
            )
        except (KeyError, TypeError, pydantic.ValidationError) as err:
            raise VerifyError(
                f"{where}: run {run_id}: not a configuration this lrd reads ({type(err).__name__}); "
                "runs from another lrd version?"
            ) from None
        if spec.run_id != run_id or run_id_of(config) != run_id:
            raise VerifyError(
                f"{where}: run {run_id}: this lrd gives its configuration another id; runs from another lrd version"
            )
        specs.append(spec)
    return resolved, specs


def choose_groups(name: str, groups: list[Group], sample: int) -> list[Group]:
    """``sample`` groups, the same ones for the same folder: ``random.Random(name)`` over groups in a fixed order."""
    ordered = sorted(groups, key=lambda g: g.specs[0].run_id)
    return sorted(random.Random(name).sample(ordered, min(sample, len(ordered))), key=lambda g: g.label)


def verify(out_dir: str | Path, sample: int, reporter: Reporter, on_table: Callable | None = None) -> Verification:
    """Retrain ``sample`` groups of ``out_dir`` into a temporary folder and compare every stored number."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise VerifyError(f"{out_dir}: no such results folder")
    if sample < 1:
        raise VerifyError(f"--sample {sample}: must be at least 1")
    resolved, specs = specs_of(out_dir)
    completed = store.completed_runs(out_dir)
    finished = [g for g in plan(_experiment(resolved, specs), set(), {}) if all(s.run_id in completed for s in g.specs)]
    if not finished:
        raise VerifyError(f"{out_dir}: no group has all its runs finished; nothing to verify")
    chosen = choose_groups(str(resolved.get("name", out_dir.name)), finished, sample)
    runs = [spec for group in chosen for spec in group.specs]
    with tempfile.TemporaryDirectory(prefix="lrd-verify-") as tmp:
        run_sweep(_experiment(resolved, runs), Path(tmp), reporter, buckets=stored_buckets(out_dir, chosen))
        old = _tables(out_dir, runs)
        new = _tables(Path(tmp), runs)
    checks = [compare(name, old[name], new[name]) for name in TABLES + OPTIONAL_TABLES if name in old or name in new]
    return Verification([g.label for g in chosen], len(runs), checks)


def stored_buckets(out_dir: Path, groups: list[Group]) -> dict[tuple, tuple[int, ...]]:
    """Group key -> the gaps of the length bucket its runs trained in (``lrd.buckets``; the runs table's ``bucket``).

    Runs stored before buckets, or trained alone, have none: their groups are retrained alone.
    """
    runs = store.load(out_dir).runs
    if "bucket" not in runs.columns:
        return {}
    stored = dict(zip(runs["run"], runs["bucket"], strict=True))
    found = {}
    for group in groups:
        text = stored.get(group.specs[0].run_id)
        if isinstance(text, str) and text:
            found[group.specs[0].group_key] = tuple(int(g) for g in text.split(","))
    return found


def _experiment(resolved: dict[str, Any], runs: list[RunSpec]) -> Experiment:
    """An experiment of ``runs`` under the folder's name (the runs table records it), no file of its own."""
    name = str(resolved.get("name", "verify"))
    report = ReportConfig(**resolved.get("report", {}))
    return Experiment(name, str(resolved.get("description", "")), Path(f"{name}.toml"), "", runs, (), report)


def _tables(out_dir: Path, runs: list[RunSpec]) -> dict[str, pd.DataFrame]:
    """The stored tables of ``runs`` in ``out_dir`` (packed or not), rows in run-id order."""
    return store.read_tables(out_dir, [spec.run_id for spec in runs])


def compare(name: str, old: pd.DataFrame | None, new: pd.DataFrame | None) -> TableCheck:
    """Every value of ``old`` against ``new`` (the same rows in the same order); a missing table or column: 1."""
    if old is None or new is None or len(old) != len(new):
        found = "missing" if old is None or new is None else f"{len(old)} rows stored, {len(new)} recomputed"
        return TableCheck(name, 0, 0, 1.0, f"table {found}")
    worst, where, values, bitwise = 0.0, "", 0, 0
    for column in sorted(set(old) | set(new)):
        if column in NOT_COMPARED:
            continue
        if column not in old or column not in new:
            return TableCheck(name, values, bitwise, 1.0, f"column {column} only in one of them")
        a, b = old[column], new[column]
        numeric = all(pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c) for c in (a, b))
        if numeric:
            x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            bits = _same_bits(a.to_numpy(), b.to_numpy())
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = np.abs(x - y) / np.maximum(np.abs(x), np.abs(y))
            diff = np.where(same, 0.0, np.where(np.isfinite(diff), diff, 1.0))
        else:
            equal = (a.astype(object).to_numpy() == b.astype(object).to_numpy()) | (a.isna() & b.isna()).to_numpy()
            bits, diff = equal, np.where(equal, 0.0, 1.0)
        values += len(diff)
        bitwise += int(bits.sum())
        if len(diff) and diff.max() > worst:
            i = int(diff.argmax())
            worst = float(diff[i])
            run = old["run"].iloc[i] if "run" in old else "?"
            shown = (float(x[i]), float(y[i])) if numeric else (a.iloc[i], b.iloc[i])
            where = f"{column}, run {run}: {shown[0]!r} stored, {shown[1]!r} recomputed"
    return TableCheck(name, values, bitwise, worst, where)


def _same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: the same value bit for bit (any NaN equal to any NaN)."""
    if a.dtype != b.dtype:
        return np.zeros(len(a), bool)
    if a.dtype.kind == "f":
        return (a.view(f"u{a.dtype.itemsize}") == b.view(f"u{b.dtype.itemsize}")) | (np.isnan(a) & np.isnan(b))
    return a == b
