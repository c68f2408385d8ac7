"""Run an experiment's grid into a results folder, resuming where it stopped.

Runs that share a compiled shape (same task, model and training settings,
different seeds and learning rates) train together in one vmapped program: a group. The sweep
plans the groups, hands them to a backend (``lrd.backends``: this process, or
a Ray cluster) and writes every finished run atomically as soon as its group
comes back, whichever backend trained it; running the same experiment again
computes only the groups with missing or failed runs.

XLA's results depend (in the last float32 bits) on how many members a program
vmaps over, so a group is always trained with all of its members: a group
interrupted in the milliseconds between writing two of its runs is retrained
whole and only its missing runs are written. The numbers therefore never
depend on where a sweep was interrupted, nor on which backend ran it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Protocol

from lrd import store
from lrd.backends import Backend, Block, LocalBackend, Started, make_job
from lrd.experiment import Experiment, RunSpec


class Reporter(Protocol):
    """What a sweep tells its caller (the CLI draws progress from it).

    Several groups may train at once (a cluster): the events of a group carry its
    label. ``group_started`` comes again, with ``attempt`` 2, 3, ..., when a group is
    retried after its worker died. ``group_done`` gets the rows written: status
    "done", "diverged", or "failed" with an ``error``.
    """

    def start(self, experiment: Experiment, total: int, already_done: int) -> None: ...
    def group_started(self, label: str, n_runs: int, n_blocks: int, steps: int, attempt: int) -> None: ...
    def block_done(self, label: str, done: int, total: int) -> None: ...
    def group_done(self, label: str, runs: list[dict]) -> None: ...


class SweepSummary(NamedTuple):
    total: int
    already_done: int
    computed: int  # runs written with results (done or diverged)
    diverged: int
    failed: int  # runs recorded as failed; the next sweep computes them again
    wall_time_s: float


class Group(NamedTuple):
    """Runs that differ only in their seed and learning rate, sorted by (seed, learning rate)."""

    specs: list[RunSpec]

    @property
    def members(self) -> list[tuple[int, float]]:
        """(seed, learning rate) of each run."""
        return [(s.seed, s.train.lr) for s in self.specs]

    @property
    def label(self) -> str:
        spec = self.specs[0]
        seeds = ",".join(str(s) for s in dict.fromkeys(s.seed for s in self.specs))
        lrs = list(dict.fromkeys(s.train.lr for s in self.specs))
        lr = f" lr {','.join(f'{x:g}' for x in sorted(lrs))}" if len(lrs) > 1 else ""
        return f"{spec.task.name} gap={spec.task.gap} {spec.model.label} h={spec.model.hidden} seeds {seeds}{lr}"


def plan(experiment: Experiment, done: set[str]) -> list[Group]:
    """The groups with at least one run still to compute, shortest sequences first."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in experiment.runs:
        groups[spec.group_key].append(spec)
    pending = [specs for specs in groups.values() if any(s.run_id not in done for s in specs)]
    pending.sort(key=lambda specs: (specs[0].task.length, specs[0].model.label))
    return [Group(sorted(specs, key=lambda s: (s.seed, s.train.lr))) for specs in pending]


def run_sweep(
    experiment: Experiment, out_dir: Path, reporter: Reporter, backend: Backend | None = None
) -> SweepSummary:
    """Compute every missing (or failed) run of ``experiment`` into ``out_dir``."""
    start = time.perf_counter()
    store.prepare(out_dir, experiment)
    done = store.completed_runs(out_dir) & {spec.run_id for spec in experiment.runs}
    reporter.start(experiment, total=len(experiment.runs), already_done=len(done))
    groups = plan(experiment, done)
    jobs = [make_job(i, g.specs[0].group_key, g.members, experiment.plugins) for i, g in enumerate(groups)]
    attempts = [0] * len(groups)
    finished: set[int] = set()

    def emit(event: Started | Block) -> None:
        if event.index in finished:
            return  # a progress event that arrived after its group's result
        group = groups[event.index]
        if isinstance(event, Started):
            attempts[event.index] += 1
            train = group.specs[0].train
            reporter.group_started(
                group.label, len(group.specs), train.steps // train.log_every, train.steps, attempts[event.index]
            )
        else:
            reporter.block_done(group.label, event.done, event.total)

    computed = diverged = failed = 0
    for outcome in (backend or LocalBackend()).run(jobs, emit):
        finished.add(outcome.index)
        group = groups[outcome.index]
        rows = []
        for index, member in enumerate(group.specs):
            if member.run_id in done:
                continue  # finished before an interruption: its files stay as they are
            if outcome.result is None:
                tables = store.failed_run_table(member, experiment.name, len(group.specs), outcome.error)
            else:
                tables = store.run_tables(member, outcome.result, index, experiment.name, outcome.wall_time_s)
            store.write_run(out_dir, member.run_id, tables)
            rows.append(tables["run"].iloc[0].to_dict())
        computed += sum(row["status"] != "failed" for row in rows)
        diverged += sum(row["status"] == "diverged" for row in rows)
        failed += sum(row["status"] == "failed" for row in rows)
        reporter.group_done(group.label, rows)
    store.write_summary(out_dir, store.load(out_dir).runs)
    return SweepSummary(len(experiment.runs), len(done), computed, diverged, failed, time.perf_counter() - start)
