"""Train the group that stalled XLA, again and again, and count the attempts that finish.

The group: experiments/copy.toml's first, the GRU at gap 10 with its 20 members (5 seeds x
4 learning rates), diagnostics on, 300 steps. Before the fix it stalled XLA's CPU thread
pool in 6 of 9 attempts with diagnostics on (docs/reliability.md). Each attempt is a fresh
``lrd run`` process with a time limit; one that ends with exit 75 (the watchdog) or runs
past the limit counts as stalled.

    python scripts/stall_repeat.py --attempts 20 --cache warm             # the fix, inline dispatch
    python scripts/stall_repeat.py --attempts 20 --cache fresh            # a new compilation cache each time
    python scripts/stall_repeat.py --attempts 10 --dispatch async         # asynchronous dispatch back on
    python scripts/stall_repeat.py --attempts 4 --dispatch async --lapack # the reproducer: the old LAPACK QR

``--lapack`` puts back what the diagnostics computed with before the fix
(``jnp.linalg.qr`` and ``jnp.linalg.svd``, batched LAPACK custom calls inside the looped,
vmapped training program): the minimal change that brings the stall back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = """\
name = "stall_group"
seeds = [0, 1, 2, 3, 4]

[task]
name = "copy"
gap = 10

[model]
cell = "gru"
hidden = 64
forget_bias = 1.0

[train]
steps = 300
log_every = 100
batch_size = 16
lr = [1e-3, 3e-3, 1e-2, 3e-2]
clip = 1.0
eval_size = 1024
probe_size = 64
stop_when_solved = false
diagnostics = true
"""

# the diagnostics' linear algebra as it was before the fix: LAPACK through jnp.linalg
LAPACK = """\
import jax.numpy as jnp
from lrd import dynamics
dynamics.householder_qr = lambda a: dynamics.QR(*jnp.linalg.qr(a))
dynamics.top_singular_value = lambda a: jnp.linalg.svd(a, compute_uv=False)[0]
"""


def attempt(work: Path, cache: Path, dispatch: str, lapack: bool, timeout: float) -> tuple[str, float]:
    """One ``lrd run`` of the group in a new folder: (its outcome, seconds)."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {
        **os.environ,
        "LRD_CACHE_DIR": str(cache),
        "JAX_CPU_ENABLE_ASYNC_DISPATCH": "true" if dispatch == "async" else "false",
        "PYTHONPATH": str(ROOT),
    }
    boot = (LAPACK if lapack else "") + "import sys\nfrom lrd.cli import entry\nsys.argv[0] = 'lrd'\nentry()\n"
    command = [sys.executable, "-c", boot, "run", str(work / "group.toml"), "--out", str(out), "--no-plot"]
    start = time.monotonic()
    try:
        done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "stalled (timeout)", time.monotonic() - start
    elapsed = time.monotonic() - start
    if done.returncode == 0:
        return "finished", elapsed
    if done.returncode == 75:
        return "stalled (exit 75)", elapsed
    last = done.stderr.strip().splitlines()[-1:] or [""]
    return f"failed (exit {done.returncode}: {last[0][:120]})", elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--cache", choices=("warm", "fresh"), default="warm", help="compilation cache per attempt")
    parser.add_argument("--dispatch", choices=("inline", "async"), default="inline", help="XLA's CPU dispatch")
    parser.add_argument("--lapack", action="store_true", help="the diagnostics' old LAPACK QR and SVD (reproducer)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds after which an attempt counts as stalled")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lrd-stall-") as tmp:
        work = Path(tmp)
        (work / "group.toml").write_text(GROUP)
        shared = work / "cache"
        if args.cache == "warm":  # compiled once, not counted
            outcome, seconds = attempt(work, shared, args.dispatch, args.lapack, args.timeout)
            print(f"warm-up: {outcome} in {seconds:.0f} s", flush=True)
        counts: dict[str, int] = {}
        for i in range(args.attempts):
            cache = shared if args.cache == "warm" else work / f"cache{i}"
            outcome, seconds = attempt(work, cache, args.dispatch, args.lapack, args.timeout)
            counts[outcome] = counts.get(outcome, 0) + 1
            print(f"attempt {i + 1}/{args.attempts}: {outcome} in {seconds:.0f} s", flush=True)
            if cache != shared:
                shutil.rmtree(cache, ignore_errors=True)
        code = "the old LAPACK QR/SVD" if args.lapack else "this lrd"
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        print(f"{code}, {args.dispatch} dispatch, {args.cache} cache: {summary} of {args.attempts} attempts")
        return 0 if counts.get("finished", 0) == args.attempts else 1


if __name__ == "__main__":
    sys.exit(main())
