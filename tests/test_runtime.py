"""With LRD_MALLOC=tuned the lrd command restarts itself once with lrd's allocator settings; they change no number."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TINY

from lrd import runtime, store

SHOW_ENV = (
    "from lrd import runtime; runtime.reexec_with_malloc_settings(); "
    "import os; print(os.environ.get('GLIBC_TUNABLES', ''))"
)

needs_glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc allocator settings apply on Linux/glibc only",
)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LRD_MALLOC")}
    return {**env, **extra}


@needs_glibc
def test_reexec_sets_the_tunables_once_and_keeps_the_users():
    out = subprocess.run(
        [sys.executable, "-c", SHOW_ENV],
        env=_env(GLIBC_TUNABLES="glibc.malloc.tcache_count=7", LRD_MALLOC="tuned"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "glibc.malloc.tcache_count=7:" + runtime.MALLOC_TUNABLES


def test_reexec_is_off_by_default():
    out = subprocess.run(
        [sys.executable, "-c", SHOW_ENV], env=_env(), capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


@needs_glibc
def test_allocator_settings_change_no_result(tmp_path, write_experiment, cache_dir):
    exp = write_experiment(TINY)
    tables = {}
    for mode in ("tuned", None):
        out = tmp_path / f"out-{mode}"
        env = _env(**({"LRD_MALLOC": mode} if mode else {}), LRD_CACHE_DIR=str(cache_dir))
        subprocess.run(
            ["lrd", "run", str(exp), "--out", str(out), "--no-plot"], env=env, check=True, capture_output=True
        )
        tables[mode] = store.load(out)
    for name in ("runs", "curves", "grad_norms"):
        a, b = getattr(tables["tuned"], name), getattr(tables[None], name)
        drop = [c for c in a.columns if c == "wall_time_s"]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))
