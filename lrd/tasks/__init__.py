"""Synthetic long-range tasks: one file per task, one registry (``TASKS``)."""

from lrd.tasks.base import TASKS, Baseline, Batch, Task, get_task_class, register
from lrd.tasks import adding, copy, delayed_recall  # noqa: F401  (register the built-ins)

__all__ = ["TASKS", "Baseline", "Batch", "Task", "get_task_class", "register"]
