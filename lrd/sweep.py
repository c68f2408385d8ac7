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

A sweep that ends with every run of its experiment complete packs the folder
(``store.pack``): one table per kind instead of a folder per run.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple, Protocol

import jax
import pandas as pd

from lrd import interrupt, results, store
from lrd.backends import Backend, Block, LocalBackend, Started, make_job
from lrd.buckets import Candidate, can_pad, can_share, plan_buckets
from lrd.experiment import Experiment, RunSpec
from lrd.models import CELLS
from lrd.schema import CURVES, RUN
from lrd.tasks.base import Task


class Reporter(Protocol):
    """What a sweep tells its caller (the CLI draws progress from it).

    Several groups may train at once (a cluster): the events of a group carry its
    label. ``group_started`` comes again, with ``attempt`` 2, 3, ..., when a group is
    retried after its worker died. ``group_done`` gets the rows written: status
    "done", "diverged", or "failed" with an ``error``; with ``solved`` (``lrd.results``).
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
    damaged: dict[str, str] = {}  # noqa: RUF012  # run id -> what was wrong, for the damaged runs computed again
    not_packed: str = ""  # why a folder whose runs all finished was not packed (store.pack); "" when it was


class Group(NamedTuple):
    """Runs that differ only in their seed and learning rate, sorted by (seed, learning rate).

    ``bucket``: the tasks of the length bucket whose groups share this group's programs
    (``lrd.buckets``), () when it has programs of its own.
    """

    specs: list[RunSpec]
    bucket: tuple[Task, ...] = ()

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


def plan(experiment: Experiment, done: set[str], buckets: Mapping[tuple, tuple[int, ...]] | None = None) -> list[Group]:
    """The groups with at least one run still to compute, shortest programs first, a bucket's groups together.

    The length buckets (``lrd.buckets``) are chosen over all the experiment's groups, finished
    or not, so a resumed sweep trains each group in the program it would have had; ``buckets``
    (group key -> the bucket's gaps) gives them instead, as ``lrd verify`` does from the runs table.
    """
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in experiment.runs:
        groups[spec.group_key].append(spec)
    if buckets is None:
        shared = length_buckets(groups)
    else:
        shared = {key: tuple(key[0].at_gap(g) for g in gaps) for key, gaps in buckets.items() if len(gaps) > 1}
    pending = [specs for specs in groups.values() if any(s.run_id not in done for s in specs)]
    length = lambda specs: max(t.length for t in shared.get(specs[0].group_key, (specs[0].task,)))
    pending.sort(key=lambda specs: (length(specs), specs[0].model.label, specs[0].task.length))
    return [
        Group(sorted(specs, key=lambda s: (s.seed, s.train.lr)), shared.get(specs[0].group_key, ()))
        for specs in pending
    ]


def length_buckets(groups: Mapping[tuple, list[RunSpec]]) -> dict[tuple, tuple[Task, ...]]:
    """Group key -> the tasks of its length bucket, for the groups that share a program (``lrd.buckets.plan_buckets``).

    Candidates are groups of one family: the same task but for the gap, the same model and
    training, the same number of members, a model that can run padded sequences.
    """
    families: dict[tuple, list[tuple]] = defaultdict(list)
    for key, specs in groups.items():
        task, model, train, threshold = key
        if not (can_pad(model, train) and can_share(task)):
            continue
        others = json.dumps({**task.params(), "gap": 0}, sort_keys=True, default=str)
        families[(task.name, others, model, train, threshold, len(specs))].append(key)
    shared: dict[tuple, tuple[Task, ...]] = {}
    for family, keys in families.items():
        if len(keys) < 2:
            continue
        candidates = [Candidate(key[0], key[1], key[2], family[-1]) for key in keys]
        for bucket in plan_buckets(candidates):
            if len(bucket) > 1:
                tasks = tuple(sorted((keys[i][0] for i in bucket), key=lambda t: t.length))
                shared.update({keys[i]: tasks for i in bucket})
    return shared


def run_sweep(
    experiment: Experiment,
    out_dir: Path,
    reporter: Reporter,
    backend: Backend | None = None,
    buckets: Mapping[tuple, tuple[int, ...]] | None = None,
) -> SweepSummary:
    """Compute every missing, failed or damaged run of ``experiment`` into ``out_dir``.

    ``buckets``: the length buckets to train in (``plan``); None chooses them, for this process's
    backend only: on a cluster each group may run in another process, which a shared program
    would not spare a compilation.

    The folder's lock (``store.lock``) is held throughout; ``store.Locked`` if another
    process holds it.
    """
    start = time.perf_counter()
    if buckets is None and not isinstance(backend or LocalBackend(), LocalBackend):
        buckets = {}  # not this process's backend
    with ExitStack() as held:
        if out_dir.is_dir():
            held.enter_context(store.lock(out_dir))  # before anything is read: a second sweep stops here
        found, groups = _stored(experiment, out_dir, buckets)
        check_memory(groups)  # before the folder is created
        if not out_dir.is_dir():
            out_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(store.lock(out_dir))
            found, groups = _stored(experiment, out_dir, buckets)  # another sweep may have begun it meanwhile
        return _compute(experiment, out_dir, reporter, backend, found, groups, start)


def _stored(
    experiment: Experiment, out_dir: Path, buckets: Mapping[tuple, tuple[int, ...]] | None = None
) -> tuple[dict[str, store.RunCheck], list[Group]]:
    """The checks of the experiment's stored runs, and the groups still to compute."""
    found = store.check_runs(out_dir, {spec.run_id for spec in experiment.runs})
    done = {run_id for run_id, check in found.items() if check.state == store.COMPLETE}
    return found, plan(experiment, done, buckets)


def _compute(
    experiment: Experiment,
    out_dir: Path,
    reporter: Reporter,
    backend: Backend | None,
    found: dict[str, store.RunCheck],
    groups: list[Group],
    start: float,
) -> SweepSummary:
    done = {run_id for run_id, check in found.items() if check.state == store.COMPLETE}
    damaged = {run_id: check.reason for run_id, check in found.items() if check.state == store.DAMAGED}
    store.prepare(out_dir, experiment)
    reporter.start(experiment, total=len(experiment.runs), already_done=len(done))
    jobs = [make_job(i, g.specs[0].group_key, g.members, experiment.plugins, g.bucket) for i, g in enumerate(groups)]
    attempts = [0] * len(groups)
    finished: set[int] = set()

    def emit(event: Started | Block) -> None:
        interrupt.check()  # between training blocks: a Ctrl-C swallowed inside JAX stops the sweep here
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

    threshold = experiment.report.solve_threshold
    computed = diverged = failed = 0
    for outcome in (backend or LocalBackend(local_workers(groups))).run(jobs, emit):
        finished.add(outcome.index)
        group = groups[outcome.index]
        rows = []
        for index, member in enumerate(group.specs):
            if member.run_id in done:
                continue  # finished before an interruption: its files stay as they are
            if outcome.result is None:
                tables = results.failed_run_table(
                    member, experiment.name, len(group.specs), outcome.error or "unknown error"
                )
            else:
                tables = results.run_tables(member, outcome.result, index, experiment.name, outcome.wall_time_s)
            store.write_run(out_dir, member.run_id, tables)
            reported = results.with_solved(tables[RUN], tables.get(CURVES, pd.DataFrame()), threshold)
            rows.append(reported.iloc[0].to_dict())
        computed += sum(row["status"] != "failed" for row in rows)
        diverged += sum(row["status"] == "diverged" for row in rows)
        failed += sum(row["status"] == "failed" for row in rows)
        reporter.group_done(group.label, rows)
        interrupt.check()
    not_packed = _pack_if_finished(experiment, out_dir)
    runs = store.load(out_dir).runs
    store.write_summary(out_dir, runs, results.summary(runs))
    elapsed = time.perf_counter() - start
    return SweepSummary(len(experiment.runs), len(done), computed, diverged, failed, elapsed, damaged, not_packed)


def _pack_if_finished(experiment: Experiment, out_dir: Path) -> str:
    """Pack the folder (``store.pack``) when every run of the experiment is complete; why not, if it could not.

    With failed runs the folder stays as it is: the next sweep computes them, then packs.
    """
    ids = {spec.run_id for spec in experiment.runs}
    checks = store.check_runs(out_dir, ids)
    if len(checks) < len(ids) or any(check.state != store.COMPLETE for check in checks.values()):
        return ""
    try:
        store.pack(out_dir)
    except store.StoreError as err:
        return str(err)
    return ""


# --- memory ----------------------------------------------------------------------------------
class TooLarge(ValueError):
    """A group that cannot fit in this machine's memory; the message is one line."""


BASE_BYTES = 550 * 10**6  # Python, JAX, pandas and the compiled programs (fitted, see group_memory)
BYTES_PER_UNIT = 4  # one float32 per (seed, timestep, example, layer, direction, hidden unit, kept value)


def group_memory(group: Group) -> int:
    """An estimate of a group's peak memory in bytes.

    Backpropagation through time keeps every timestep's activations (states and
    gates) of every layer, direction, example and seed, so the peak grows as
    seeds x T x (batch + probe batch) x layers x directions x hidden x (states +
    gates + 2) float32 values. Calibrated on the peak RSS of ``lrd run`` (CPU,
    delayed recall, 2 seeds, batch 16, probe 16, steps 2): LSTM h=64 at T=1002 and
    T=8002 (685, 1639 MB) and RNN h=64 at T=8002 (1084 MB) fit a base of 550 MB
    and one float32 per kept value (LSTM 6 + 2, RNN 2 + 2 values per unit);
    LSTM h=128 at T=8002 checks it: 2681 MB measured, 2648 MB estimated. All four
    are estimated within 3%, a little under; GPU memory is not modelled.
    """
    spec = group.specs[0]
    model, train = spec.model, spec.train
    cell = CELLS[model.cell]
    # kept values per timestep and example: the states (S wide each), the gates (H each; cells without
    # a matrix layout count one), 2 H more; attention also keeps its scores and weights (heads x T each)
    per_step = len(cell.state_names) * model.state_size + (getattr(cell, "n_gates", 1) + 2) * model.hidden
    if model.heads is not None:
        per_step += 2 * model.heads * spec.task.length
    directions = 2 if model.bidirectional else 1
    length = max(t.length for t in group.bucket) if group.bucket else spec.task.length  # padded in a bucket
    units = len(group.specs) * length * (train.batch_size + train.probe_size) * model.layers
    return BASE_BYTES + units * directions * per_step * BYTES_PER_UNIT


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def local_workers(groups: list[Group]) -> int:
    """How many groups train at once in this process (``lrd.backends.LocalBackend``): 2 or 1.

    Two where JAX computes on the CPU, the machine has at least two cores and its memory
    holds the two largest groups at once (``group_memory``); else one. Two groups at once
    keep both cores of a 2-core machine busy, where one small group's training keeps one
    (docs/benchmarks.md); on a GPU the groups run one at a time, as before (not measured).
    """
    if len(groups) < 2 or (os.cpu_count() or 1) < 2 or jax.default_backend() != "cpu":
        return 1
    available = machine_memory()
    largest = sorted(map(group_memory, groups))[-2:]
    return 2 if available is None or sum(largest) <= available else 1


def check_memory(groups: list[Group]) -> None:
    """Raise TooLarge, naming the estimate and the machine's memory, for the first group that cannot fit."""
    available = machine_memory()
    if available is None:
        return
    for group in groups:
        need = group_memory(group)
        if need > available:
            raise TooLarge(
                f"{group.label}: needs about {need / 2**30:.1f} GiB (estimate), this machine has "
                f"{available / 2**30:.1f} GiB; lower batch_size, probe_size, hidden, or the seeds or learning rates"
            )
