"""Ctrl-C that always stops a sweep, however it lands.

Python raises KeyboardInterrupt wherever the main thread happens to be when
SIGINT arrives. During a sweep that is sometimes inside a callback Python calls
from C (a JAX garbage-collection callback, a ``__del__``), where the exception
cannot propagate: Python prints "Exception ignored ..." and goes on, and the
sweep ran to the end with exit 0 (issue 16: 2 of 17 Ctrl-C's).

Inside ``stop_on_sigint()`` a SIGINT sets a flag and raises KeyboardInterrupt at
once (so a long block stops promptly); if that exception is swallowed, its
"Exception ignored" report is silenced and ``check()``, called at the sweep's
safe points (after each training block, between groups, at the end), raises it
again. A finished run is written atomically, so stopping anywhere keeps it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_interrupted = False


def _on_sigint(signum, frame) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _unraisable(previous):
    def hook(unraisable) -> None:
        if _interrupted and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return  # swallowed where it landed; check() raises it again at the next safe point
        previous(unraisable)

    return hook


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (inside ``stop_on_sigint``) and was swallowed."""
    if _interrupted:
        raise KeyboardInterrupt


@contextmanager
def stop_on_sigint() -> Iterator[None]:
    """Within the block, every SIGINT ends in a KeyboardInterrupt at the latest at the next ``check()``.

    Also raised on leaving the block when a SIGINT came and nothing raised it yet.
    Only in the main thread (where Python runs signal handlers); elsewhere a no-op.
    """
    global _interrupted
    _interrupted = False
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
        check()
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
