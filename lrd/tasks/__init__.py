"""Synthetic long-range tasks: one file per task, one registry (``TASKS``)."""

from lrd.tasks import (  # noqa: F401  (register the built-ins)
    adding,
    associative_recall,
    copy,
    delayed_recall,
    flip_flop,
    fuzzy_recall,
    induction,
    lookahead,
    mqar,
    noisy_recall,
    parity,
    selective_copy,
    state_tracking,
    temporal_order,
)
from lrd.tasks.base import TASKS, Baseline, Batch, Task, register

__all__ = ["TASKS", "Baseline", "Batch", "Task", "register"]
