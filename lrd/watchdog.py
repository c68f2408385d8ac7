"""Fetching results from XLA without waiting forever on a stalled computation.

On this project's 2-core machine (jax 0.10.2, CPU) a training block occasionally never
finishes: the main thread waits in ``device_get`` while every XLA worker thread sleeps,
waiting for work (a lost wake-up in the CPU runtime's thread pool; seen three times in
about an hour of study reruns, never at the same group twice). Nothing computes, so the
process's CPU time stops growing, which is what ``fetch`` watches for.

``fetch(tree)`` is ``jax.device_get(tree)`` that polls the arrays instead of blocking.
When the process has used less than ``IDLE_CPU_S`` of CPU time over ``STALL_S`` seconds
with an array still not ready, it dispatches a matmul large enough to use the thread pool
(a woken worker also takes queued work, if the lost work is queued) and waits another
``STALL_S``; if the arrays are still not ready and the process still idle, it raises
``Stalled``. Nothing more can run in that process (even dispatching a new computation
waits), so ``lrd run`` then exits at once (code 75) with the finished runs saved, and the
same command resumes, retraining the stalled group.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STALL_S = 30.0  # seconds without CPU use, with a result pending, that count as a stall
IDLE_CPU_S = 0.5  # CPU seconds (all threads) below which a window counts as idle
POLL_S = 0.05


class Stalled(RuntimeError):
    """XLA stopped computing with a result still pending."""


def _pending(leaves: list[Any]) -> bool:
    import jax

    return not all(leaf.is_ready() for leaf in leaves if isinstance(leaf, jax.Array))  # type: ignore[attr-defined]


def _wait_or_idle(leaves: list[Any], stall_s: float) -> bool:
    """Wait until ready (True) or until ``stall_s`` seconds pass with the process idle (False)."""
    wall, cpu = time.monotonic(), time.process_time()
    pause = 0.001  # short at first: most results arrive within milliseconds of being asked for
    while _pending(leaves):
        time.sleep(pause)
        pause = min(2 * pause, POLL_S)
        if time.monotonic() - wall >= stall_s:
            if time.process_time() - cpu < IDLE_CPU_S:
                return False
            wall, cpu = time.monotonic(), time.process_time()  # busy: a long computation, not a stall
    return True


def fetch(tree: Any, stall_s: float | None = None) -> Any:
    """``jax.device_get(tree)``, raising ``Stalled`` where XLA stops computing before it is ready."""
    import jax  # here, so that the CLI can import Stalled without JAX
    import jax.numpy as jnp

    stall_s = STALL_S if stall_s is None else stall_s
    leaves = jax.tree.leaves(tree)
    if not _wait_or_idle(leaves, stall_s):
        _wake = jnp.ones((512, 512)) @ jnp.ones((512, 512))  # a matmul large enough to use XLA's thread pool
        print(f"lrd: XLA idle for {stall_s:.0f} s with a result pending; woke its thread pool", file=sys.stderr)
        if not _wait_or_idle(leaves, stall_s):
            raise Stalled(f"XLA stopped computing (idle {2 * stall_s:.0f} s with a result pending)")
        print("lrd: the pending result arrived after the wake-up", file=sys.stderr)
    return jax.device_get(tree)


def _exit_stalled(idle_s: float) -> None:
    print(
        f"lrd: XLA stopped computing (no CPU used for {idle_s:.0f} s while training); "
        "finished runs are saved, run the same command to resume",
        file=sys.stderr,
        flush=True,
    )
    os._exit(75)  # the stalled call holds the main thread: nothing else can end the process


@contextmanager
def watch(stall_s: float | None = None, on_stall: Callable[[float], None] | None = None) -> Iterator[None]:
    """Within the block, a thread ends the process (exit 75) once it has used no CPU for ``stall_s`` seconds.

    With XLA's CPU computations run inline (``lrd.runtime.configure_jax``) a stalled computation
    blocks the main thread inside the call, where ``fetch`` never gets to look; this thread
    still can. Training and compiling keep the CPU busy, so only a stall trips it. Finished
    runs are already written (atomically), so the same command resumes.
    """
    stall_s = 2 * STALL_S if stall_s is None else stall_s
    on_stall = on_stall or _exit_stalled
    stop = threading.Event()

    def run() -> None:
        period = min(1.0, stall_s / 4)
        cpu, last, since = time.process_time(), time.monotonic(), time.monotonic()
        while not stop.wait(period):
            now_cpu, now = time.process_time(), time.monotonic()
            if now_cpu - cpu >= 0.1 * (now - last):  # a tenth of a core or more since the last look: busy
                since = now
            elif now - since >= stall_s:
                on_stall(now - since)
                return
            cpu, last = now_cpu, now

    thread = threading.Thread(target=run, name="lrd-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
