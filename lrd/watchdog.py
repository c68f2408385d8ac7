"""Ending a process whose computation has stopped, and only then.

A training block that never finishes used to hang sweeps on this project's 2-core
machine (jax 0.10.2, CPU): XLA's intra-op thread pool deadlocked inside batched LAPACK
calls (docs/reliability.md has the mechanism and the stacks). Its root cause is removed
(the training programs hold no LAPACK call; ``lrd.dynamics``), and ``watch`` stays as
the guard that turns any future hang into an exit the user can act on.

A stall and starvation look alike from the CPU time a process uses: neither computes.
The kernel tells them apart. For every thread, ``/proc/self/task/<tid>/schedstat`` holds
the nanoseconds it has run and the nanoseconds it has waited, runnable, for a CPU. A
starved process (CPU hogs beside it, a tiny CPU quota) has runnable threads whose wait
grows; a stalled one has only sleeping threads, waiting on each other, whose run and
wait times both stand still. ``watch`` calls a window of ``stall_s`` seconds a stall
when the computing threads (``Activity``) ran and waited for less than ``ACTIVE_SHARE``
of it together and none was seen runnable or in uninterruptible sleep (disk I/O: 'R' or
'D' in ``/proc/self/task/<tid>/stat``). Where the kernel does not say (not Linux), it falls
back to the process's CPU time: under a tenth of a core for the window counts as a stall.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STALL_S = 60.0  # seconds with every thread asleep, while a computation is under way, that count as a stall
ACTIVE_SHARE = 0.01  # run + runnable-wait time of the other threads, as a share of the window, below which they sleep
IDLE_CORE_SHARE = 0.1  # the fallback where /proc says nothing: CPU time below a tenth of a core is idle
STALLED = 75  # EX_TEMPFAIL: try again
TASKS = Path("/proc/self/task")
COMPILE_THREAD = "lrd-compile"  # the name's start of the threads that compile: computing threads


class Activity:
    """Run and runnable-wait time of the threads that compute, from /proc.

    Those are the main thread (which waits for a computation, or runs it inline), the
    threads Python did not start (XLA's thread pools) and the threads named COMPILE_THREAD
    (which trace and compile programs, ``lrd.train.in_threads``). Python's own other threads
    (this watchdog, a progress display's refresh thread) wake on timers, and are left out.
    """

    @staticmethod
    def _python_threads() -> set[str]:
        """Python's threads that wait on timers: all but the main thread and the threads that compile."""
        return {
            str(t.native_id)
            for t in threading.enumerate()
            if t is not threading.main_thread() and not t.name.startswith(COMPILE_THREAD)
        }

    def sample(self) -> tuple[dict[str, int], bool] | None:
        """({thread id: run + wait nanoseconds} of the computing threads, whether one is runnable or in disk wait).

        None where the kernel does not report per-thread scheduler statistics.
        """
        times, busy = {}, False
        try:
            tasks = set(os.listdir(TASKS)) - self._python_threads()
            (TASKS / str(threading.main_thread().native_id) / "schedstat").stat()
        except OSError:
            return None
        for tid in tasks:
            try:
                run_ns, wait_ns, *_ = (TASKS / tid / "schedstat").read_text().split()
                stat = (TASKS / tid / "stat").read_text()
            except (OSError, ValueError):
                continue  # a thread that ended between listing and reading
            times[tid] = int(run_ns) + int(wait_ns)
            state = stat[stat.rindex(")") + 2]  # the field after the (command name), which may hold spaces
            busy |= state in "RD"
        return times, busy


def active_since(before: dict[str, int], now: dict[str, int]) -> int:
    """Nanoseconds the threads ran or waited for a CPU between two samples, thread by thread.

    A thread that ended takes its times with it, so totals over all threads can fall: each
    thread is compared with itself (a new one with zero).
    """
    return sum(max(0, ns - before.get(tid, 0)) for tid, ns in now.items())


def is_stalled(window_s: float, active_ns: int, seen_busy: bool) -> bool:
    """A window is a stall when no other thread was runnable or in disk wait and together they ran and waited
    for less than ACTIVE_SHARE of it (starved threads wait for a CPU: their wait grows)."""
    return not seen_busy and active_ns < ACTIVE_SHARE * window_s * 1e9


def _exit_stalled(idle_s: float) -> None:
    print(
        f"lrd: the computation stopped (every thread asleep for {idle_s:.0f} s while training); "
        "finished runs are saved, run the same command to resume",
        file=sys.stderr,
        flush=True,
    )
    os._exit(STALLED)  # the stalled call holds the main thread: nothing else can end the process


@contextmanager
def watch(stall_s: float | None = None, on_stall: Callable[[float], None] | None = None) -> Iterator[None]:
    """Within the block, a thread ends the process (exit 75, one line) once its computation has stalled.

    A stall: ``stall_s`` seconds in which every other thread of the process slept (see the module
    docstring); a starved process, whose threads wait for a CPU, is left alone. ``on_stall(seconds)``
    replaces the exit (tests). Finished runs are already written (atomically), so the same command
    resumes.
    """
    stall_s = STALL_S if stall_s is None else stall_s
    on_stall = on_stall or _exit_stalled
    stop = threading.Event()

    def run() -> None:
        activity = Activity()
        period = min(1.0, stall_s / 8)
        since, cpu = time.monotonic(), time.process_time()
        first = activity.sample()
        before, seen_busy = first if first is not None else ({}, False)
        active = 0
        while not stop.wait(period):
            now = time.monotonic()
            current = activity.sample()
            if current is None:  # no per-thread statistics: the CPU-time rule
                if time.process_time() - cpu >= IDLE_CORE_SHARE * (now - since):
                    since, cpu = now, time.process_time()
                elif now - since >= stall_s:
                    on_stall(now - since)
                    return
                continue
            times, busy = current
            active += active_since(before, times)
            before, seen_busy = times, seen_busy or busy
            if not is_stalled(now - since, active, seen_busy):
                since, active, seen_busy = now, 0, busy  # something ran or waited to run: a new window
            elif now - since >= stall_s:
                on_stall(now - since)
                return

    thread = threading.Thread(target=run, name="lrd-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
