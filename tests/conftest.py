"""Shared fixtures: a tiny experiment and a per-session JAX compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = """\
name = "tiny"
seeds = [0, 1]

[task]
name = "delayed_recall"
gap = 4

[model]
cell = ["rnn", "lstm"]
hidden = 8

[train]
steps = 20
log_every = 10
batch_size = 16
eval_size = 64
probe_size = 16
"""


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The persistent compilation cache that every `lrd` process of the tests shares.

    JAX keys cache entries by the compiled program, so sharing it across test runs
    and workers changes only how long compilation takes, never a result.
    """
    path = Path(os.environ.get("LRD_CACHE_DIR", Path.home() / ".cache" / "lrd" / "jax-tests"))
    os.environ["LRD_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def write_experiment(tmp_path):
    def write(text: str, name: str = "exp.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
