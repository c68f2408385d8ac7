"""Benchmark lrd's training engine: time per training step and cost of the gradient probe.

    python scripts/bench.py            # T in {100, 1000}, batch 128, hidden 128, every cell
    python scripts/bench.py --quick    # T = 100 only, fewer repeats

For each cell, the task is copy with gap T-20 (length T, one-hot inputs of 10
symbols), Adam, clipping 1.0, one seed. "step" is one optimiser step (sampling,
forward, backward, update) inside the compiled lax.scan; "probe" is one log
point (forward + backward on the probe batch with the per-timestep gradient
norms). Times are medians over repeats after a warm-up call; the compile time
is the first call of each program.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from lrd.models import ModelConfig
from lrd.tasks.copy import Copy
from lrd.train import TrainConfig, Trainer


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def bench_cell(cell: str, length: int, batch: int, hidden: int, steps: int, repeats: int) -> dict:
    task = Copy(gap=length - 20)
    train = TrainConfig(steps=steps, log_every=steps, batch_size=batch, probe_size=batch, eval_size=batch)
    trainer = Trainer(task, ModelConfig(cell=cell, hidden=hidden), train)
    state, compile_init = timed(trainer.init, jnp.stack([jax.random.PRNGKey(0)]))
    (state, _), compile_advance = timed(trainer.advance, state, 0)
    probe_times, block_times = [], []
    for _ in range(repeats):
        (state, _), t = timed(trainer.advance, state, 0)
        probe_times.append(t)
        (state, _), t = timed(trainer.advance, state, steps)
        block_times.append(t)
    probe = statistics.median(probe_times)
    step = (statistics.median(block_times) - probe) / steps
    return {"cell": cell, "T": length, "step_s": step, "probe_s": probe, "compile_s": compile_init + compile_advance}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T=100 only, fewer repeats")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    lengths = [100] if args.quick else [100, 1000]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; batch {args.batch}, hidden {args.hidden}")
    print(f"{'cell':5} {'T':>5} {'s/step':>9} {'steps/s':>8} {'probe s':>8} {'compile s':>9}")
    for length in lengths:
        steps, repeats = (5, 3) if length >= 1000 else (20, 3 if args.quick else 5)
        for cell in ("rnn", "lstm", "gru"):
            r = bench_cell(cell, length, args.batch, args.hidden, steps, repeats)
            print(f"{r['cell']:5} {r['T']:>5} {r['step_s']:>9.4f} {1 / r['step_s']:>8.2f} {r['probe_s']:>8.3f} {r['compile_s']:>9.1f}")


if __name__ == "__main__":
    main()
