"""The one-line summary of a finished group that the reporters print, and the live display in a real terminal."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import TINY

from lrd.progress import _result_line


def _row(seed: int, lr: float, **extra) -> dict:
    return {"seed": seed, "lr": lr, "status": "done", "final_metric": 0.5, "solved": False, **extra}


def test_members_named_by_seed_alone_when_one_learning_rate():
    line = _result_line([_row(0, 3e-3), _row(1, 3e-3, solved=True, final_metric=1.0)])
    assert line == "seed 0: metric 0.500; seed 1: metric 1.000 solved"


def test_members_named_by_seed_and_learning_rate_in_a_grid():
    rows = [_row(0, 1e-3), _row(0, 1e-2, status="diverged", diverged_step=120.0)]
    assert _result_line(rows) == "seed 0 lr 0.001: metric 0.500; seed 0 lr 0.01: diverged at step 120"


def test_a_failed_group_names_each_seed_once():
    rows = [_row(s, lr, status="failed", error="boom") for s in (0, 1) for lr in (1e-3, 1e-2)]
    assert _result_line(rows) == "seeds 0,1 failed: boom"


FOUR_GROUPS = TINY.replace("gap = 4", "gap = [4, 6]")  # rnn and lstm at two gaps


def _terminal_run(args: list[str], cwd, width: int, height: int = 50) -> tuple[int, list[str]]:
    """``lrd`` in a pseudo-terminal of ``width`` x ``height``; (exit code, the final screen's lines, pyte-rendered).

    The child is started by subprocess (no os.fork in this process, where JAX may run threads)
    with the terminal's other end as its stdin, stdout and stderr.
    """
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    import pyte

    screen = pyte.Screen(width, height)
    stream = pyte.ByteStream(screen)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(width), LINES=str(height))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrd", *args],
        cwd=cwd,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        stream.feed(data)
    os.close(master)
    return proc.wait(), [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("width", [80, 120])
def test_the_live_display_keeps_the_header_and_every_group_line_in_a_real_terminal(
    width, write_experiment, tmp_path, cache_dir
):
    """The live display (bars while groups train) leaves the header and each finished group's line on screen."""
    path = write_experiment(FOUR_GROUPS)
    code, screen = _terminal_run(["run", str(path), "--out", str(tmp_path / "out"), "--no-plot"], tmp_path, width)
    assert code == 0, "\n".join(screen)
    text = "\n".join(screen)
    assert screen.count("tiny: 8 runs, 0 already done, 8 to compute") == 1, text
    labels = [f"delayed_recall gap={gap} {cell} h=8 seeds 0,1: seed 0" for gap in (4, 6) for cell in ("lstm", "rnn")]
    joined = " ".join(text.split())  # a result line wider than the terminal wraps
    for label in labels:
        assert joined.count(label) == 1, (label, text)
    import re

    bars = re.findall(r"(\d+)/8 runs", text)
    assert bars and set(bars) == {"8"}, text  # the runs bar as it ended, no stale one behind
    assert "-:--:--" not in text  # the time left is estimated from the first group on
