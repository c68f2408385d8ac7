"""lrd.watchdog.fetch: device_get that gives up on a stalled XLA computation instead of hanging."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from lrd import watchdog


def test_fetch_returns_what_device_get_returns():
    tree = {"a": jnp.arange(3.0), "b": (jnp.ones(2), 4)}
    got = watchdog.fetch(tree)
    np.testing.assert_array_equal(got["a"], [0.0, 1.0, 2.0])
    assert isinstance(got["a"], np.ndarray) and got["b"][1] == 4


def test_a_pending_result_with_the_process_idle_raises_stalled(monkeypatch, capsys):
    monkeypatch.setattr(watchdog, "_pending", lambda leaves: True)  # never ready
    monkeypatch.setattr(watchdog.time, "process_time", lambda: 1.0)  # and no CPU used
    monkeypatch.setattr(watchdog, "POLL_S", 0.001)
    with pytest.raises(watchdog.Stalled, match="XLA stopped computing"):
        watchdog.fetch(jnp.ones(2), stall_s=0.02)
    assert "woke its thread pool" in capsys.readouterr().err


def test_a_long_computation_using_cpu_is_not_a_stall(monkeypatch):
    polls = itertools.count()
    monkeypatch.setattr(watchdog, "_pending", lambda leaves: next(polls) < 200)  # ready after 200 polls
    cpu = itertools.count(step=1.0)  # one CPU second more at every reading: busy
    monkeypatch.setattr(watchdog.time, "process_time", lambda: next(cpu))
    monkeypatch.setattr(watchdog, "POLL_S", 0.0005)
    np.testing.assert_array_equal(watchdog.fetch(jnp.ones(2), stall_s=0.01), [1.0, 1.0])


def test_a_result_that_arrives_after_the_wake_up_is_returned(monkeypatch, capsys):
    woken = []
    monkeypatch.setattr(watchdog, "_pending", lambda leaves: not woken)
    monkeypatch.setattr(watchdog.time, "process_time", lambda: 1.0)
    monkeypatch.setattr(watchdog, "POLL_S", 0.001)
    ones, result = jnp.ones, jnp.ones(2)
    monkeypatch.setattr(jnp, "ones", lambda shape: woken.append(1) or ones(shape))
    np.testing.assert_array_equal(watchdog.fetch(result, stall_s=0.02), [1.0, 1.0])
    assert "arrived after the wake-up" in capsys.readouterr().err


def test_lrd_runs_cpu_computations_inline():
    """XLA's asynchronous CPU dispatch lost training blocks' results on this project's machine (README)."""
    from jax._src import xla_bridge

    import lrd.train  # noqa: F401  (sets it on import)

    assert xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value is False


def test_watch_ends_a_process_whose_computation_stopped_using_cpu():
    import time

    stalled = []
    with watchdog.watch(stall_s=0.3, on_stall=stalled.append):
        time.sleep(1.0)  # the main thread blocked, using no CPU: as inside a stalled XLA call
    assert stalled and stalled[0] >= 0.3


def test_watch_leaves_a_busy_process_alone():
    import time

    stalled = []
    with watchdog.watch(stall_s=0.3, on_stall=stalled.append):
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # computing: CPU time grows
            sum(range(1000))
    assert not stalled
