"""The one-line summary of a finished group that the reporters print."""

from __future__ import annotations

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
