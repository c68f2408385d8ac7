"""Ctrl-C that always stops lrd, however and whenever it lands.

The ``lrd`` command (``exit_on_sigint``): a SIGINT ends the process at once with one
line and exit 130. Python's own handling cannot do that reliably: it raises
KeyboardInterrupt wherever the main thread happens to be, and that went wrong in
three ways (docs/reliability.md): swallowed inside a callback Python calls from C (a
JAX garbage-collection callback: the sweep trained on and exited 0); turned into another
error while JAX was being imported (``RuntimeError: Error calling __set_name__``, or an
abort, exit 134); and, after one that landed inside JAX, a crash in the interpreter's
teardown (exit 139). Nor can it be prompt: the main thread runs Python's handler only
between bytecodes, not inside a compilation that takes 20 s.

So the command lets Python's C-level handler write the signal to a pipe
(``signal.set_wakeup_fd``, done in the signal handler itself, whatever the main thread
is doing), and a thread blocked on that pipe prints the line and calls ``os._exit(130)``.
Nothing in the main thread is interrupted. That is safe because every file lrd writes
appears atomically (a temporary name, fsynced, renamed: the guarantee that makes a
``kill -9`` safe), the folder's lock is a ``flock`` the OS releases, and a leftover
temporary file is removed by the next run.

In-process callers (``lrd.run`` in a notebook, the tests calling ``lrd.cli.main``) keep
Python's KeyboardInterrupt, made reliable by ``stop_on_sigint``: inside it a SIGINT sets a
flag and raises KeyboardInterrupt at once; if that exception is swallowed, its "Exception
ignored" report is silenced and ``check()``, called at the sweep's safe points (after each
training block, between groups, at the end), raises it again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

INTERRUPTED = "lrd: interrupted; finished runs are saved, run the same command to resume"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
SHOW_CURSOR = "\x1b[?25h"  # a live progress display hides it; os._exit skips its clean-up
_interrupted = False
_exits_on_sigint = False


def exit_on_sigint() -> None:
    """From now on a SIGINT ends this process at once: one line on stderr, exit 130 (see the module docstring).

    Call it first thing in the main thread of a command; a second call does nothing.
    """
    global _exits_on_sigint
    if _exits_on_sigint:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # nothing raised in the main thread
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def wait_for_sigint() -> None:
        while True:
            received = os.read(read_end, 64)
            if not received or signal.SIGINT in received:
                break
        if os.isatty(2):
            os.write(2, SHOW_CURSOR.encode())
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os.write(2, f"\n{INTERRUPTED}\n".encode() if os.isatty(2) else f"{INTERRUPTED}\n".encode())
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=wait_for_sigint, name="lrd-sigint", daemon=True).start()
    _exits_on_sigint = True


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
    if _exits_on_sigint:  # the command's handler ends the process itself
        yield
        return
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
