"""lrd: long-range-dependency experiments in JAX, with the gradient norm at every timestep.

From Python (a notebook, a script)::

    import lrd

    results = lrd.run("experiments/quick.toml", **{"task.gap": [10, 40]})  # trains, returns the tables
    results = lrd.load("results/delayed_recall")                           # a results folder's tables

``run``, ``load``, ``Results`` and ``ExperimentError`` are imported on first use
(``lrd.api``), so ``import lrd`` itself does not load JAX.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# XLA's CPU client runs computations asynchronously by default, and on this project's 2-core
# machine (jax 0.10.2) a training block sometimes never completed that way: its result never
# arrived while every XLA thread slept (README, "Reliability"). Run them inline instead. The
# variable is read when JAX is imported; lrd.runtime.configure_jax sets the flag itself for a
# process that imported JAX first. The compiled programs, and so the numbers, are the same.
os.environ.setdefault("JAX_CPU_ENABLE_ASYNC_DISPATCH", "false")

if TYPE_CHECKING:
    from lrd.api import ExperimentError, Results, load, run

__all__ = ["ExperimentError", "Results", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lrd import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrd' has no attribute {name!r}")
