"""lrd.watchdog.watch: a process whose computation deadlocks is ended (exit 75, one line); a starved one is not.

Both are real processes: one whose jitted computation waits forever on a host callback,
one that computes at about 1-2% of a core because CPU hogs at a higher priority hold both
cores. The old rule (under a tenth of a core for a window is a stall) ended the second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from lrd import watchdog

STALL_S = 2.0

DEADLOCK = f"""
import threading, jax, jax.numpy as jnp, numpy as np
import lrd  # inline CPU dispatch, as lrd runs
from lrd.watchdog import watch
never = threading.Event()

def wait_forever(x):
    never.wait()
    return np.asarray(x)

@jax.jit
def blocked(x):
    return jax.pure_callback(wait_forever, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1

with watch(stall_s={STALL_S}):
    blocked(jnp.ones(3)).block_until_ready()
print("unreachable")
"""

BUSY = f"""
import time
from lrd.watchdog import watch
start_cpu, start = time.process_time(), time.monotonic()
with watch(stall_s={STALL_S}):
    while time.monotonic() - start < {4 * STALL_S}:
        sum(range(1000))  # computing, whenever the scheduler lets it
print(f"{{(time.process_time() - start_cpu) / (time.monotonic() - start):.4f}}")
"""


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, **kwargs)


def test_a_computation_that_deadlocks_is_ended_with_exit_75_and_one_line():
    started = time.monotonic()
    done = _python(DEADLOCK, timeout=120)
    assert done.returncode == watchdog.STALLED == 75, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrd: the computation stopped"), done.stderr
    assert "unreachable" not in done.stdout
    assert time.monotonic() - started < 60  # ended by the watchdog, not by the timeout


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="the kernel's per-thread statistics are Linux's")
def test_a_process_starved_by_cpu_hogs_is_left_alone():
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.5)
        lowest = ["nice", "-n", "19", sys.executable, "-c", textwrap.dedent(BUSY)]  # not preexec_fn: JAX warns on fork
        done = subprocess.run(lowest, capture_output=True, text=True, timeout=120)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert done.returncode == 0, done.stderr
    share = float(done.stdout.strip())
    assert share < 0.1, f"not starved (used {share:.1%} of a core): the test proves nothing"


def test_a_busy_process_is_left_alone():
    stalled: list[float] = []
    with watchdog.watch(stall_s=0.3, on_stall=stalled.append):
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            sum(range(1000))
    assert not stalled


def test_a_main_thread_asleep_is_a_stall_even_beside_a_busy_python_thread():
    """A progress display's refresh thread wakes on a timer: it is not the computation."""
    import threading

    stop, stalled = threading.Event(), []

    def refresh():
        while not stop.wait(0.01):
            sum(range(20000))

    display = threading.Thread(target=refresh, daemon=True)
    display.start()
    try:
        with watchdog.watch(stall_s=0.4, on_stall=stalled.append):
            time.sleep(1.2)  # the main thread blocked, as inside a stalled XLA call
    finally:
        stop.set()
    assert stalled and stalled[0] >= 0.4


def test_a_main_thread_waiting_for_a_compiling_thread_is_not_a_stall():
    """The threads that compile (named COMPILE_THREAD) compute: the main thread may wait for them."""
    import threading

    stalled: list[float] = []

    def compile_like():
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            sum(range(20000))

    worker = threading.Thread(target=compile_like, name=f"{watchdog.COMPILE_THREAD}-0", daemon=True)
    with watchdog.watch(stall_s=0.4, on_stall=stalled.append):
        worker.start()
        worker.join()  # the main thread blocked, as while a group's programs compile
    assert not stalled


@pytest.mark.parametrize(
    ("active_ns", "busy", "stall"),
    [(0, False, True), (9_000_000, False, True), (11_000_000, False, False), (0, True, False)],
)
def test_the_stall_rule_at_its_boundary(active_ns, busy, stall):
    # a 1 s window: the computing threads ran or waited for a CPU for active_ns; busy: one was seen runnable
    assert watchdog.is_stalled(1.0, active_ns, busy) is stall


def test_lrd_runs_cpu_computations_inline():
    """The default chosen by measurement (docs/reliability.md): XLA's CPU computations run inline."""
    from jax._src import xla_bridge

    import lrd.train  # noqa: F401  (sets it on import)

    assert xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value is False


def test_activity_is_compared_thread_by_thread():
    """A thread that ends takes its run time with it: the total falls, yet the others ran."""
    before = {"1": 5_000_000_000, "2": 100, "3": 50}  # thread 1 compiled for 5 s, then ended
    now = {"2": 100, "3": 20_000_050, "4": 1_000}  # thread 3 ran 20 ms more; thread 4 is new
    assert watchdog.active_since(before, now) == 20_001_000
