"""lrd: long-range-dependency experiments in JAX, with the gradient norm at every timestep.

From Python (a notebook, a script)::

    import lrd

    results = lrd.run("experiments/quick.toml", **{"task.gap": [10, 40]})  # trains, returns the tables
    results = lrd.load("results/delayed_recall")                           # a results folder's tables

``run``, ``load``, ``Results`` and ``ExperimentError`` are imported on first use
(``lrd.api``), so ``import lrd`` itself does not load JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrd.api import ExperimentError, Results, load, run

__all__ = ["ExperimentError", "Results", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lrd import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrd' has no attribute {name!r}")
