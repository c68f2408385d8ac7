"""Where a sweep's groups of runs train: in this process, or as tasks on a Ray cluster.

The sweep (``lrd.sweep``) plans the groups and writes every result itself; a
backend only trains. A group travels as a ``Job``: plain data that any process
with the same ``lrd`` installed can run, on any host. It holds the pickled
configuration and the experiment's plugins (a task file's text, so a remote
host needs no copy of it). The worker returns the group's ``RunResult`` (NumPy
arrays) to the driver, so no shared filesystem is needed.

  LocalBackend   the groups in this process, one or two at a time (the default; no Ray)
  RayBackend     one Ray task per group, retried when its worker dies

Every backend reports progress the same way, in the driver's thread:
``Started(index)`` when a group begins on a worker (again on each retry) and
``Block(index, done, total)`` after each training block. An exception while
training a group, or a worker that dies more often than it is retried, makes a
failed ``Outcome``; the other groups go on.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import math
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from lrd.experiment import Plugin, load_plugin
from lrd.models.network import ModelConfig
from lrd.runtime import enable_compilation_cache, versions
from lrd.tasks.base import Task
from lrd.train import RunResult, TrainConfig, Trainer, get_trainer
from lrd.watchdog import COMPILE_THREAD, watch

# Package versions a worker must share with the driver: they decide the numbers.
PINNED = ("lrd", "jax", "jaxlib", "flax", "optax", "numpy")
RAY_MAX_RETRIES = 2  # retries of a Ray task whose worker died (an exception is not retried: it would recur)
POLL_S = 0.2  # how often the driver collects progress events while groups train elsewhere


class Job(NamedTuple):
    """One group's training, as data a worker process on any host can run."""

    index: int  # type: ignore[assignment]  # the group's position in the sweep's plan (shadows tuple.index)
    config: bytes  # pickle of a JobConfig; loaded after the plugins, which may define the task
    seeds: tuple[int, ...]  # member i trains seeds[i] at learning rate lrs[i]
    lrs: tuple[float, ...]
    plugins: tuple[Plugin, ...]
    versions: dict[str, str]  # the driver's versions of PINNED


class JobConfig(NamedTuple):
    """What a job trains: a group key (``RunSpec.group_key``) and its length bucket (``lrd.buckets``; () alone)."""

    task: Task
    model: ModelConfig
    train: TrainConfig
    threshold: float | None
    bucket: tuple[Task, ...]


class Started(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index


class Block(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index
    done: int
    total: int


Event = Started | Block


class Outcome(NamedTuple):
    """What a worker hands back: the result, or the error that stopped the group."""

    index: int  # type: ignore[assignment]  # shadows tuple.index
    result: RunResult | None  # None when the group failed
    wall_time_s: float  # training with compilation, on the worker
    error: str | None = None  # one line: exception type, message, where


class Backend(Protocol):
    def run(self, jobs: list[Job], emit: Callable[[Event], None]) -> Iterator[Outcome]:
        """Train every job; yield each outcome as it arrives (any order); call ``emit`` in this thread."""
        ...


def make_job(
    index: int,
    group_key: tuple[Task, ModelConfig, TrainConfig, float | None],
    members: list[tuple[int, float]],
    plugins: tuple[Plugin, ...],
    bucket: tuple[Task, ...] = (),
) -> Job:
    """The job of a group: its shared configuration, its members (seed, learning rate) and its length bucket.

    ``bucket``: the tasks (``lrd.buckets``) whose groups share the job's compiled programs; () for its own.
    """
    seeds, lrs = (tuple(column) for column in zip(*members))
    return Job(index, pickle.dumps(JobConfig(*group_key, bucket)), seeds, lrs, plugins, dict(pinned_versions()))


@functools.cache
def pinned_versions() -> dict[str, str]:
    """This process's versions of PINNED, looked up once (a lookup per group took 140 s for 40,000 runs)."""
    found = versions()
    return {name: found[name] for name in PINNED}


def _nothing() -> None:
    pass


def _trainer(job: Job) -> Trainer:
    """The job's Trainer, in this process: its versions checked, its plugins loaded."""
    _check_versions(job.versions)
    for plugin in job.plugins:
        load_plugin(plugin)
    return get_trainer(*_config(job))


def _config(job: Job) -> JobConfig:
    return pickle.loads(job.config)


def train(job: Job, emit: Callable[[Event], None], compiled: Callable[[], None] = _nothing) -> Outcome:
    """Run one job in this process. Exceptions become a failed Outcome; the caller goes on.

    ``compiled()`` is called once the job's programs are compiled, before its training. A
    job of a length bucket (``lrd.buckets``) whose shared programs fail is run again in
    programs of its own, so that one task's error fails its own group, not the bucket's.
    """
    emit(Started(job.index))
    t0 = time.perf_counter()
    try:
        trainer = _trainer(job)
        t0 = time.perf_counter()
        on_block = lambda done, total: emit(Block(job.index, done, total))
        with watch():  # a computation stalled inside XLA ends the process (exit 75; lrd.watchdog)
            trainer.compile(len(job.seeds))
            compiled()
            result = trainer.run(list(job.seeds), on_block=on_block, lrs=list(job.lrs), task=_config(job).task)
    except Exception as err:
        config = _config(job)
        if config.bucket:
            return train(job._replace(config=pickle.dumps(config._replace(bucket=()))), emit, compiled)
        return Outcome(job.index, None, time.perf_counter() - t0, describe(err))
    return Outcome(job.index, result, time.perf_counter() - t0)


def describe(err: BaseException) -> str:
    """One line: the exception, its message, and the innermost frame that raised it."""
    message = " ".join(str(err).split())
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {message}{where}"


class VersionMismatch(RuntimeError):
    pass


def _check_versions(expected: dict[str, str]) -> None:
    found = pinned_versions()
    wrong = [
        f"{name} {found.get(name)} (driver: {expected[name]})" for name in expected if found.get(name) != expected[name]
    ]
    if wrong:
        raise VersionMismatch(f"this worker has {', '.join(wrong)}; install the driver's versions on every node")


# --- this process ---------------------------------------------------------------------
class LocalBackend:
    """The groups in the driver's process: one after another, or ``workers`` at a time in threads.

    One worker: while a group trains, the next group's programs compile in a thread
    (``compile_ahead``): XLA compiles on one core while training often leaves the other idle.
    Two workers: two groups train (and compile) at once, each in a thread of its own
    (``in_workers``). A small group's training block keeps about one core busy, so on 2
    cores this trains a sweep of small groups in about two thirds of the time
    (docs/benchmarks.md). The numbers are the same either way: a program's result does not
    depend on what else runs beside it (tested).
    """

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers

    def run(self, jobs: list[Job], emit: Callable[[Event], None]) -> Iterator[Outcome]:
        if self.workers > 1 and len(jobs) > 1:
            yield from in_workers(jobs, emit, self.workers)
            return
        compiling: list[threading.Thread] = []  # the next group's compilation, started once a group's is done
        try:
            for i, job in enumerate(jobs):
                ahead = (
                    functools.partial(_compile_ahead_into, compiling, jobs[i + 1]) if i + 1 < len(jobs) else _nothing
                )
                yield train(job, emit, compiled=ahead)
        finally:
            for thread in compiling:  # a thread still inside XLA when the interpreter exits aborts the process
                thread.join()


class Cancelled(BaseException):
    """Raised in a worker's progress call once the driver has stopped reading: ends its group between blocks.

    A BaseException, so that ``train`` does not turn it into a failed outcome (or retry a bucket's job).
    """


def in_workers(jobs: list[Job], emit: Callable[[Event], None], workers: int) -> Iterator[Outcome]:
    """Train ``jobs`` in ``workers`` threads, each taking the next job when it is free; outcomes as they end.

    ``emit`` is called in this thread (events travel on a queue). When the caller stops reading
    (an interrupt, an error), each worker stops at its group's next training block and takes no
    other job, and this waits for them (a compilation under way ends first); the outcomes already
    yielded are the caller's, as in one thread.
    """
    queued: queue.SimpleQueue[Event | Outcome] = queue.SimpleQueue()
    waiting = collections.deque(jobs)
    taking = threading.Lock()
    stopped = threading.Event()

    def put(event: Event) -> None:
        if stopped.is_set():
            raise Cancelled
        queued.put(event)

    def work() -> None:
        while not stopped.is_set():
            with taking:
                if not waiting:
                    return
                job = waiting.popleft()
            try:
                queued.put(train(job, put))
            except Cancelled:
                return
            except BaseException as err:  # never leave the driver waiting for an outcome
                queued.put(Outcome(job.index, None, math.nan, describe(err)))

    # named as computing threads, so the watchdog (lrd.watchdog) counts their time
    threads = [
        threading.Thread(target=work, name=f"{COMPILE_THREAD}-worker-{i}", daemon=True)
        for i in range(min(workers, len(jobs)))
    ]
    for thread in threads:
        thread.start()
    try:
        left = len(jobs)
        while left:
            try:
                item = queued.get(timeout=POLL_S)  # a timeout, so a Ctrl-C in this thread is not held up
            except queue.Empty:
                continue
            if isinstance(item, Outcome):
                left -= 1
                yield item
            else:
                emit(item)
    finally:
        stopped.set()
        for thread in threads:  # a thread still inside XLA when the interpreter exits aborts the process
            thread.join()


def compile_ahead(job: Job) -> threading.Thread:
    """Compile ``job``'s programs in a daemon thread, returned; its ``train`` waits for them (``Trainer.compile``).

    An error here is left for ``train`` to meet and report, so it is dropped.
    """

    def prepare() -> None:
        with contextlib.suppress(Exception):
            _trainer(job).compile(len(job.seeds))

    thread = threading.Thread(target=prepare, name=f"{COMPILE_THREAD}-ahead", daemon=True)
    thread.start()
    return thread


def _compile_ahead_into(started: list[threading.Thread], job: Job) -> None:
    started.append(compile_ahead(job))


# --- Ray ------------------------------------------------------------------------------------
class RayNotInstalled(RuntimeError):
    pass


class RayBackend:
    """One Ray task per group: joins the cluster at ``address``, or starts a local one.

    A task whose worker process (or node) dies is retried RAY_MAX_RETRIES times,
    on any node; after that its outcome is failed. Each task asks for one GPU when
    the cluster has GPUs, else for one CPU.
    """

    def __init__(self, address: str | None = None, max_retries: int = RAY_MAX_RETRIES):
        self.address, self.max_retries = address, max_retries

    @staticmethod
    def check_installed() -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RayNotInstalled("the ray backend needs Ray: pip install 'lrd[ray]'") from None

    def run(self, jobs: list[Job], emit: Callable[[Event], None]) -> Iterator[Outcome]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.address:
            ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            resources = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) > 0 else {"num_cpus": 1}
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            events = ray.remote(num_cpus=0, scheduling_strategy=here)(EventLog).remote()  # lives as long as the driver
            task = ray.remote(max_retries=self.max_retries, **resources)(_train_on_ray)
            pending = {task.remote(job, events): job.index for job in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for event in ray.get(events.drain.remote()):
                    emit(event)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        yield copy.deepcopy(ray.get(ref))  # own the arrays: they outlive the object store
                    except ray.exceptions.RayError as err:
                        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                        error = f"{type(err).__name__}: {first} (after {self.max_retries} retries)"
                        yield Outcome(index, None, math.nan, error)
        finally:
            ray.shutdown()


class EventLog:
    """A Ray actor that collects workers' progress events until the driver drains them."""

    def __init__(self):
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def _train_on_ray(job: Job, events) -> Outcome:
    enable_compilation_cache()
    return train(job, lambda event: events.put.remote(event))
