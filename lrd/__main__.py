"""The ``lrd`` command's first frame: ``python -m lrd`` and the installed ``lrd`` script start here.

It arms lrd's Ctrl-C handling (``lrd.interrupt.exit_on_sigint``) before anything heavy is
imported, so that a Ctrl-C while Python still imports lrd, JAX or pandas ends the command
like any other: one line and exit 130, not a traceback.
"""

from __future__ import annotations

from lrd import interrupt  # the standard library only


def entry() -> None:
    interrupt.exit_on_sigint()
    from lrd.cli import entry as command

    command()


if __name__ == "__main__":
    entry()
