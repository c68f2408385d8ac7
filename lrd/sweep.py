"""Run an experiment's grid into a results folder, resuming where it stopped.

Runs that share a compiled shape (same task, model and training settings,
different seeds) train together in one vmapped program. Every finished run is
written atomically as soon as its group ends; running the same experiment
again computes only the groups with missing runs.

XLA's results depend (in the last float32 bits) on how many seeds a program
vmaps over, so a group is always trained with all of its seeds: a group
interrupted in the milliseconds between writing two of its runs is retrained
whole and only its missing runs are written. The numbers therefore never
depend on where a sweep was interrupted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Protocol

from lrd import store
from lrd.experiment import Experiment, RunSpec
from lrd.train import get_trainer


class Reporter(Protocol):
    """What a sweep tells its caller (the CLI draws progress from it)."""

    def start(self, experiment: Experiment, total: int, already_done: int) -> None: ...
    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int) -> None: ...
    def block_done(self, done: int, total: int) -> None: ...
    def group_done(self, label: str, runs: list[dict]) -> None: ...


class SweepSummary(NamedTuple):
    total: int
    already_done: int
    computed: int
    diverged: int
    wall_time_s: float


class Group(NamedTuple):
    """Runs that differ only in their seed."""

    specs: list[RunSpec]

    @property
    def label(self) -> str:
        spec = self.specs[0]
        seeds = ",".join(str(s.seed) for s in self.specs)
        return f"{spec.task.name} gap={spec.task.gap} {spec.model.label} h={spec.model.hidden} seeds {seeds}"


def plan(experiment: Experiment, done: set[str]) -> list[Group]:
    """The groups with at least one run still to compute, shortest sequences first."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in experiment.runs:
        groups[spec.group_key].append(spec)
    pending = [specs for specs in groups.values() if any(s.run_id not in done for s in specs)]
    pending.sort(key=lambda specs: (specs[0].task.length, specs[0].model.label))
    return [Group(sorted(specs, key=lambda s: s.seed)) for specs in pending]


def run_sweep(experiment: Experiment, out_dir: Path, reporter: Reporter) -> SweepSummary:
    """Compute every missing run of ``experiment`` into ``out_dir``."""
    start = time.perf_counter()
    store.prepare(out_dir, experiment)
    done = store.completed_runs(out_dir) & {spec.run_id for spec in experiment.runs}
    reporter.start(experiment, total=len(experiment.runs), already_done=len(done))
    computed = diverged = 0
    for group in plan(experiment, done):
        spec = group.specs[0]
        trainer = get_trainer(*spec.group_key)
        reporter.group_started(group.label, len(group.specs), trainer.n_blocks, spec.train.steps)
        t0 = time.perf_counter()
        result = trainer.run([s.seed for s in group.specs], on_block=reporter.block_done)
        wall = time.perf_counter() - t0
        rows = []
        for index, member in enumerate(group.specs):
            if member.run_id in done:
                continue  # finished before an interruption: its files stay as they are
            tables = store.run_tables(member, result, index, experiment.name, wall)
            store.write_run(out_dir, member.run_id, tables)
            rows.append(tables["run"].iloc[0].to_dict())
        computed += len(rows)
        diverged += sum(row["status"] == "diverged" for row in rows)
        reporter.group_done(group.label, rows)
    store.write_summary(out_dir, store.load(out_dir).runs)
    return SweepSummary(len(experiment.runs), len(done), computed, diverged, time.perf_counter() - start)
