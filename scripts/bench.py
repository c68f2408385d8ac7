"""Benchmark lrd's training engine side by side with flax.linen nn.RNN and PyTorch.

    python scripts/bench.py            # everything below, T in {100, 1000} (about 10 min on 2 cores)
    python scripts/bench.py --quick    # T = 100 only, fewer repeats (under 2 min)
    python scripts/bench.py --comparison   # the comparison of record (docs/benchmarks.md), load written

Every contender trains the same model on the same task: copy memory with
length T (one-hot inputs of 10 symbols), batch 128, hidden 128, one recurrent
layer and a linear readout, cross-entropy on the recall positions, global-norm
clipping 1.0 and Adam; one training step = forward + backward + update.

  lrd      lrd.train.Trainer's training step (batch sampled inside the compiled scan)
  flax     flax.linen ``nn.RNN`` over ``SimpleCell`` / ``OptimizedLSTMCell`` / ``GRUCell``
           (sampled the same way, same loss, same optax chain)
  torch    ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (eager, pre-sampled batches), with
           1 and 2 threads, oneDNN on and off; the best of these is reported

Timings are medians over interleaved repeats (every contender once per round,
in turn) after a warm-up call, so background load hits all of them alike.
GFLOP/s counts the matmul work of a step (3 x the forward's: forward, and the
two backward products) against the machine's peak measured here with a large
square matmul. The process allocator matters on Linux (glibc): by default this
script re-executes itself with lrd's tuned malloc settings (``lrd.runtime``,
``LRD_MALLOC=tuned``) so every contender runs with them; ``--malloc default``
keeps glibc's defaults.

Further sections: seeds (8 seeds in one vmapped program against 8 runs one
after another), the probe (cost of the per-timestep gradient norms), the time
loop (lax.scan, the scan unrolled, the Pallas kernels of ``lrd.models.kernels``,
cuDNN; 8 seeds on the kernels), XLA's command buffers for the scan's while loop
(those two on a GPU only; "n/a" elsewhere), the parallel cells (lru, mingru,
minlstm, s4d, s6: lrd's training step with their ``jax.lax.associative_scan`` form,
``time_loop = "parallel"``, against their step equations in a sequential ``lax.scan``,
``time_loop = "scan"``, and
against the LSTM, at T = 1000 and 4000, batch 16, hidden 64; ``--parallel-only``
runs this section alone), the diagnostics (cost of each of ``lrd.dynamics``'s
against a training block of ``log_every = 50`` steps; ``--diagnostics-only`` runs
this section alone), and the compile time at growing T. The ``lrd`` column is
lrd's default time loop: the scan on a CPU, the kernels on a GPU when the model
fits them. PyTorch is optional (``pip install -e '.[bench]'``);
without it the torch columns are left out.

``--compile-only`` measures the default experiment's compilation instead: per group and
program, the seconds to trace, lower and compile and the program's size (StableHLO
operations, optimised-HLO instructions), diagnostics on and off; then whole ``lrd run``
commands from a fresh compilation cache (compilations counted from ``JAX_LOG_COMPILES``,
their seconds, the sweep's and the command's wall time) and a warm rerun with one
override. ``--before DIR`` (a source tree of an older lrd, such as a ``git worktree``)
measures that tree too, each repeat running both in turn:

    git worktree add /tmp/lrd-before <commit>
    python scripts/bench.py --compile-only --before /tmp/lrd-before --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrd import runtime
from lrd.models import CELLS as CELLS_REGISTRY
from lrd.models import ModelConfig
from lrd.tasks.copy import Copy
from lrd.train import Program, TrainConfig, Trainer

CELLS = ("rnn", "lstm", "gru")
STEP_HEADER = (
    f"{'cell':5} {'T':>5} {'lrd':>8} {'GFLOP/s':>6} {'peak':>5} {'flax':>8} {'lrd vs':>8} {'torch':>8} {'lrd vs':>9}"
)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MATRIX_SCAN_CELLS = ("deltanet", "gated_deltanet")  # parallel form: a matrix associative scan (lrd.models.scan)
MATRIX_SCAN_MAX_T = 1000


# --- timing ----------------------------------------------------------------------------------
def _timed_rounds(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call of each contender: one warm-up call each, then ``rounds`` round-robin rounds."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender; one warm-up call each, then round-robin."""
    return {name: statistics.median(ts) for name, ts in _timed_rounds(contenders, rounds).items()}


def fastest(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Like ``interleaved``, but the fastest call of each: costs taken as differences need the least noise."""
    return {name: min(ts) for name, ts in _timed_rounds(contenders, rounds).items()}


def classic_prng(jitted: Callable) -> Callable:
    """Call ``jitted`` traced with the classic threefry PRNG, as lrd's programs are (lrd.train.Program)."""

    def call(*args):
        with jax.threefry_partitionable(False):
            return jitted(*args)

    return call


def step_flops(cell: str, T: int, batch: int, hidden: int, d_in: int = 10, d_out: int = 10) -> float:
    """Matmul FLOPs of one training step: 3 x the forward's (forward, two backward products)."""
    gh = GATES[cell] * hidden
    forward = 2 * batch * T * (gh * (d_in + hidden) + hidden * d_out)
    return 3.0 * forward


def matmul_peak() -> dict[str, float]:
    """GFLOP/s of a 2048^2 float32 matmul in JAX and NumPy (and torch when installed)."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja = jnp.asarray(a)
    dot = jax.jit(lambda x: x @ x)
    fns = {"jax": lambda: dot(ja).block_until_ready(), "numpy": lambda: a @ a}
    torch = _torch()
    if torch is not None:
        ta = torch.from_numpy(a)
        fns["torch"] = lambda: ta @ ta
    times = interleaved(fns, rounds=5)
    return {name: 2 * n**3 / t / 1e9 for name, t in times.items()}


# --- lrd ------------------------------------------------------------------------------------
def lrd_runner(
    cell: str,
    T: int,
    batch: int,
    hidden: int,
    n_steps: int,
    seeds: int = 1,
    time_loop: str = "auto",
    unroll: int = 1,
    lrs: tuple[float, ...] = (),
) -> Callable[[], None]:
    """n_steps of lrd's training step for ``seeds`` vmapped seeds, as one compiled call.

    ``time_loop`` as in the experiment file's ``[model] time_loop``; ``unroll`` > 1 unrolls
    the scan path's ``lax.scan`` that many steps (a lever measured here, not a setting of lrd).
    ``lrs``: each seed at each of these learning rates, ``seeds x len(lrs)`` members, as a
    sweep's group of a learning-rate grid trains them.
    """
    model = ModelConfig(cell=cell, hidden=hidden, time_loop=time_loop)
    trainer = Trainer(Copy(gap=T - 20), model, _train_config(batch, n_steps))

    def steps(state):
        return jax.lax.scan(lambda s, _: trainer._train_step(s, trainer._view(0)), state, None, length=n_steps)[0]

    block = Program(steps, donate=True)  # lrd's seed-batched program, as the sweep runs it
    members = (
        [(seed, lr) for seed in range(seeds) for lr in lrs]
        if lrs
        else [(seed, trainer.train_config.lr) for seed in range(seeds)]
    )
    state = [trainer.initial_state([seed for seed, _ in members], [lr for _, lr in members])]

    def run():
        with scan_unroll(unroll):  # traced on the first call
            state[0] = block(state[0])
        jax.block_until_ready(state[0])

    return run


@contextlib.contextmanager
def scan_unroll(unroll: int):
    """flax's ``nn.scan`` (which lrd's RecurrentLayer calls) with ``unroll`` steps per loop iteration."""
    if unroll == 1:
        yield
        return

    original = nn.scan
    nn.scan = functools.partial(original, unroll=unroll)
    try:
        yield
    finally:
        nn.scan = original


def _train_config(batch: int, n_steps: int) -> TrainConfig:
    return TrainConfig(steps=n_steps, log_every=n_steps, batch_size=batch, probe_size=batch, eval_size=batch)


# --- flax nn.RNN ----------------------------------------------------------------------------
def flax_runner(cell: str, T: int, batch: int, hidden: int, n_steps: int) -> Callable[[], None]:
    import optax

    task = Copy(gap=T - 20)
    cells = {"rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(task.output_dim)(nn.RNN(cells[cell](hidden))(x))

    model = Model()
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, task.input_dim)))

    def steps(carry):
        def step(carry, i):
            params, opt_state = carry
            b = task.sample(jax.random.fold_in(jax.random.PRNGKey(1), i), batch)
            grads = jax.grad(lambda p: task.training_loss(model.apply(p, b.inputs), b))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, carry, jnp.arange(n_steps))[0]

    block = classic_prng(jax.jit(steps, donate_argnums=0))
    carry = [(params, tx.init(params))]

    def run():
        carry[0] = block(carry[0])
        jax.block_until_ready(carry[0])

    return run


# --- PyTorch ---------------------------------------------------------------------------------
def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_runner(
    cell: str, T: int, batch: int, hidden: int, n_steps: int, threads: int, onednn: bool, device: str = "cpu"
):
    torch = _torch()
    task = Copy(gap=T - 20)
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    torch.manual_seed(0)
    recurrent = rnn(task.input_dim, hidden, batch_first=True).to(device)
    readout = torch.nn.Linear(hidden, task.output_dim).to(device)
    params = list(recurrent.parameters()) + list(readout.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    batches = []
    for i in range(4):
        b = jax.device_get(task.sample(jax.random.PRNGKey(i), batch))
        batches.append(tuple(torch.from_numpy(np.array(a)).to(device) for a in (b.inputs, b.targets, b.mask)))

    def run():
        torch.set_num_threads(threads)
        with torch.backends.mkldnn.flags(enabled=onednn):
            for i in range(n_steps):
                x, y, m = batches[i % len(batches)]
                opt.zero_grad(set_to_none=True)
                logits = readout(recurrent(x)[0])  # (B, T, K)
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.long(), reduction="none")
                loss = (nll * m).sum() / m.sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


# --- sections ----------------------------------------------------------------------------------
def torch_configs(quick: bool) -> list[tuple[int, bool, str]]:
    """(threads, oneDNN, device) of the PyTorch contenders: cuDNN on a GPU, else thread/oneDNN variants."""
    torch = _torch()
    if torch is None:
        return []
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return [(1, True, "cuda")]
    threads = (os.cpu_count(),) if quick else tuple(sorted({1, os.cpu_count()}))
    return [(t, onednn, "cpu") for t in threads for onednn in (True, False)]


def bench_steps(lengths, batch, hidden, rounds, peak, quick) -> dict:
    rows = {}
    for T in lengths:
        n = 2 if T >= 1000 else 10
        for cell in CELLS:
            contenders = {
                "lrd": lrd_runner(cell, T, batch, hidden, n),
                "flax": flax_runner(cell, T, batch, hidden, n),
            }
            for threads, onednn, device in torch_configs(quick):
                name = "torch cuda" if device == "cuda" else f"torch {threads} threads{'' if onednn else ', no oneDNN'}"
                contenders[name] = torch_runner(cell, T, batch, hidden, n, threads, onednn, device)
            per_step = {k: v / n for k, v in interleaved(contenders, rounds).items()}
            torch_best = min((k for k in per_step if k.startswith("torch")), key=per_step.get, default=None)
            flops = step_flops(cell, T, batch, hidden)
            row = {"cell": cell, "T": T, "lrd": per_step["lrd"], "flax": per_step["flax"]}
            row["lrd_gflops"] = flops / per_step["lrd"] / 1e9
            row["lrd_of_peak"] = row["lrd_gflops"] / peak
            row["vs_flax"] = per_step["flax"] / per_step["lrd"]
            if torch_best:
                row.update(
                    torch=per_step[torch_best], torch_config=torch_best, vs_torch=per_step[torch_best] / per_step["lrd"]
                )
            rows[cell, T] = row
            _print_step_row(row)
    return rows


def one_and_group(cell, T, batch, hidden, n, rounds, seeds, lrs=()) -> tuple[float, float, int]:
    """Median seconds of ``n`` steps of one member and of a group (``seeds`` x ``lrs``) in one vmapped
    program, interleaved; and the group's size."""
    one = lrd_runner(cell, T, batch, hidden, n, seeds=1)
    group = lrd_runner(cell, T, batch, hidden, n, seeds=seeds, lrs=lrs)
    times = interleaved({"one": one, "group": group}, rounds)
    return times["one"], times["group"], seeds * max(len(lrs), 1)


def bench_seeds(configs, rounds, n_seeds=8) -> None:
    """Throughput of n_seeds in one vmapped program against n_seeds single-seed programs in turn."""
    for cell, T, batch, hidden, n in configs:
        one, many, _ = one_and_group(cell, T, batch, hidden, n, rounds, n_seeds)
        print(
            f"{cell:5} T={T:<5} B={batch:<4} H={hidden:<4} 1 seed {one / n * 1e3:8.2f} ms/step   "
            f"{n_seeds} seeds vmapped {many / n * 1e3:8.2f} ms/step   throughput x{n_seeds * one / many:.2f}",
            flush=True,
        )


def bench_members(configs, rounds, seeds=5, lrs=(1e-3, 3e-3, 1e-2, 3e-2)) -> None:
    """A group of seeds x learning rates in one vmapped program against one member: the cost per member."""
    for cell, T, batch, hidden, n in configs:
        one, group, members = one_and_group(cell, T, batch, hidden, n, rounds, seeds, lrs)
        per_member = group / members
        print(
            f"{cell:5} T={T:<5} B={batch:<4} H={hidden:<4} 1 member {one / n * 1e3:8.2f} ms/step   "
            f"{members} members {group / n * 1e3:9.2f} ms/step = {per_member / n * 1e3:7.2f} per member   "
            f"per-member cost x{per_member / one:.2f} of one member",
            flush=True,
        )


def load() -> str:
    """The machine's load average (1, 5, 15 min), to write beside the numbers measured under it."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


SPEED_LOOP = 30_000_000  # additions in machine_speed's loop: 0.92-1.00 s on this project's machine on 2026-12-07


def machine_speed() -> str:
    """Seconds of a fixed pure-Python loop: this VM's speed drifts by a third within a day (docs/benchmarks.md).

    The load average does not show it (the host's other tenants do not count in it), so the
    benchmarks print this beside their numbers; compare only numbers measured at similar speeds.
    """
    t0 = time.perf_counter()
    total = 0
    for i in range(SPEED_LOOP):
        total += i
    return f"speed: a {SPEED_LOOP:,}-step Python loop took {time.perf_counter() - t0:.2f} s"


def run_comparison(rounds: int) -> None:
    """The CPU comparison of record, in one run: each section's contenders interleaved, the load around each.

    The training step against flax and PyTorch at the studies' shape (batch = hidden = 32) and
    at 128, T = 100 and 1000; the parallel cells against their sequential form; a 20-member
    group (5 seeds x 4 learning rates) against one member.
    """
    print(f"start: {load()}; {machine_speed()}", flush=True)
    peaks = matmul_peak()
    peak = max(peaks.values())
    print("matmul peak (2048^2 float32): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + " GFLOP/s")
    for size in (32, 128):
        print(
            f"\n== training step, batch {size}, hidden {size}: seconds per step (median of {rounds} interleaved rounds)"
        )
        print(f"before: {load()}", flush=True)
        print(STEP_HEADER)
        bench_steps([100, 1000], size, size, rounds, peak, quick=False)
        print(f"after: {load()}", flush=True)
    print(f"\n== parallel cells, batch 16, hidden 64: ms per training step (median of {rounds} interleaved rounds)")
    print(f"before: {load()}", flush=True)
    bench_parallel([1000, 4000], 16, 64, rounds)
    print(f"after: {load()}", flush=True)
    print("\n== a 20-member group (5 seeds x 4 learning rates) in one vmapped program against one member")
    print(f"before: {load()}", flush=True)
    bench_members([(cell, 70, 32, 64, 20) for cell in CELLS] + [(cell, 100, 32, 32, 20) for cell in CELLS], rounds)
    print(f"end: {load()}; {machine_speed()}", flush=True)


def bench_probe(cells, T, batch, hidden, rounds, step_times, log_every=50) -> None:
    """A probe pass (loss + parameter and per-timestep state gradients) against a plain one."""
    from lrd.probes import probe

    for cell in cells:
        trainer = Trainer(Copy(gap=T - 20), ModelConfig(cell=cell, hidden=hidden), _train_config(batch, 1))
        params = trainer.init(jnp.stack([jax.random.PRNGKey(0)])).params
        params = jax.tree.map(lambda p: p[0], params)
        data = trainer.task.sample(jax.random.PRNGKey(1), batch)

        def plain(params):
            loss = lambda p: trainer.task.training_loss(trainer.model.apply(p, data.inputs), data)
            return jax.value_and_grad(loss)(params)

        def probed(params):
            result = probe(trainer.task, trainer.model, params, data)
            return result.loss, result.param_grads, result.state_norms

        fns = {name: classic_prng(jax.jit(f)) for name, f in (("plain", plain), ("probe", probed))}
        times = interleaved({name: (lambda f=f: jax.block_until_ready(f(params))) for name, f in fns.items()}, rounds)
        step_time = step_times[cell, T]["lrd"]
        extra = times["probe"] - times["plain"]
        print(
            f"{cell:5} T={T:<5} plain fwd+bwd {times['plain'] * 1e3:7.1f} ms  with state gradients {times['probe'] * 1e3:7.1f} ms"
            f"  (+{extra / times['plain']:.1%} of the pass, {extra / step_time:+.1%} of a training step;"
            f" one probe per {log_every} steps costs {times['probe'] / (log_every * step_time):.1%})",
            flush=True,
        )


def bench_diagnostics(cells, T, batch, hidden, probe_size, rounds, log_every=50) -> None:
    """Each diagnostic of lrd.dynamics against a training block of ``log_every`` steps, as a sweep runs them.

    One seed, the default diagnostic settings; each program's fastest of ``rounds`` calls. Costs by difference of compiled programs:
    block statistics (a block returning them vs one that does not), the per-sequence geometric
    means (a probe returning them vs one that does not), gate statistics (the layer-0 trajectory
    and its quantiles), Lyapunov exponents (the spectra with no power iteration, less the gates)
    and sigma_max (the full diagnostics, less the former two).
    """
    from lrd.dynamics import block_statistics, cell_trajectory, gate_statistics, model_dynamics
    from lrd.probes import probe

    for cell in cells:
        config = TrainConfig(
            steps=log_every, log_every=log_every, batch_size=batch, probe_size=probe_size, eval_size=batch
        )
        trainer = Trainer(Copy(gap=T - 20), ModelConfig(cell=cell, hidden=hidden), config)
        state = jax.tree.map(lambda x: x[0], trainer.initial_state([0]))  # member 0 of a one-member state
        data = trainer.task.sample(state.probe_key, probe_size)

        def block(state, stats: bool):
            state, (losses, norms, taken) = jax.lax.scan(
                lambda s, _: trainer._train_step(s, trainer._view(0)), state, None, log_every
            )
            return (state, block_statistics(losses, norms, taken, config.clip, config.spike_factor)) if stats else state

        def probed(params, gmean: bool):
            r = probe(trainer.task, trainer.model, params, data)
            return (r.loss, r.grad_norm, r.state_norms, r.below_floor) + ((r.log_gmean_norms,) if gmean else ())

        def dyn(params, iterations: int):
            kwargs = dict(lyapunov_k=config.lyapunov_k, spectrum_size=config.spectrum_size, saturation=0.1)
            return model_dynamics(
                trainer.model_config, params, data.inputs, iterations=iterations, key=state.probe_key, **kwargs
            )

        def gates(params):
            cell_params = params["params"]["layer0_fwd"]["scan"]["cell"]
            _, sown = cell_trajectory(trainer.model_config.cell_module(), cell_params, data.inputs)
            return gate_statistics(sown, 0.1, None)

        programs = {
            "block": (lambda s: block(s, False), state),
            "block+stats": (lambda s: block(s, True), state),
            "probe": (lambda p: probed(p, False), state.params),
            "probe+gmean": (lambda p: probed(p, True), state.params),
            "gates": (gates, state.params),
            "no power": (lambda p: dyn(p, 0), state.params),
            "dynamics": (lambda p: dyn(p, config.power_iterations), state.params),
        }
        jitted = {name: (classic_prng(jax.jit(f)), a) for name, (f, a) in programs.items()}
        fns = {name: (lambda f=f, a=a: jax.block_until_ready(f(a))) for name, (f, a) in jitted.items()}
        t = fastest(fns, rounds)
        costs = {
            "block stats": t["block+stats"] - t["block"],
            "geometric means": t["probe+gmean"] - t["probe"],
            "gate stats": t["gates"],
            "Lyapunov (QR)": t["no power"] - t["gates"],
            "sigma_max (power)": t["dynamics"] - t["no power"],
        }
        total = sum(costs.values())
        print(
            f"{cell:5} T={T:<4} B={batch:<4} H={hidden:<4} probe {probe_size:<4} block of {log_every} steps"
            f" {t['block']:6.3f} s, probe {t['probe'] * 1e3:6.1f} ms; diagnostics "
            + ", ".join(f"{k} {v * 1e3:+.1f} ms ({v / t['block']:+.1%})" for k, v in costs.items())
            + f"; total {total * 1e3:.1f} ms = {total / t['block']:.1%} of the block",
            flush=True,
        )


def bench_compile(cells, lengths, batch, hidden) -> None:
    """Seconds to compile lrd's training block (10 steps) at growing T."""
    for cell in cells:
        parts = []
        for T in lengths:
            trainer = Trainer(Copy(gap=T - 20), ModelConfig(cell=cell, hidden=hidden), _train_config(batch, 10))
            state = trainer.init(jnp.stack([jax.random.PRNGKey(0)]))
            start = time.perf_counter()
            trainer.advance.lower(state, 10, 0).compile()
            parts.append(f"T={T}: {time.perf_counter() - start:5.2f} s")
        print(f"{cell:5} " + "   ".join(parts), flush=True)


# --- compilation of the default experiment ---------------------------------------------------
DEFAULT_EXPERIMENT = "experiments/quick.toml"
COMPILE_LINE = re.compile(r"Finished XLA compilation of jit\((\S+)\) in ([0-9.]+) sec")


def group_programs(trainer: Trainer, n_members: int) -> dict:
    """{name: (Program, abstract arguments)} of a group's run; an lrd without ``Trainer.programs`` gets its three."""
    if hasattr(trainer, "programs"):
        return trainer.programs(n_members)
    members = (jax.ShapeDtypeStruct((n_members, 2), jnp.uint32), jax.ShapeDtypeStruct((n_members,), jnp.float32))
    with jax.threefry_partitionable(False):
        state = jax.eval_shape(trainer.init._pick(members), members)
    return {
        "init": (trainer.init, (members,)),
        "advance": (trainer.advance, (state, 0)),
        "evaluate": (trainer.evaluate, (state,)),
    }


def _size(text: str) -> int:
    """Operations in a module's text: its lines that assign a value."""
    return sum(" = " in line for line in text.splitlines())


def child_programs(diagnostics: bool) -> None:
    """One JSON line per group and program of the default experiment: trace, lower, compile seconds; sizes."""
    import json

    from lrd.experiment import load_experiment
    from lrd.sweep import plan

    experiment = load_experiment(DEFAULT_EXPERIMENT, {"train.diagnostics": diagnostics})
    for group in plan(experiment, set()):
        trainer = Trainer(*group.specs[0].group_key)  # fresh: nothing compiled
        for name, (program, args) in group_programs(trainer, len(group.specs)).items():
            with jax.threefry_partitionable(False):
                t0 = time.perf_counter()
                traced = program._pick(args[0]).trace(*args)
                t1 = time.perf_counter()
                lowered = traced.lower()
                t2 = time.perf_counter()
                compiled = lowered.compile()
                t3 = time.perf_counter()
            row = {"group": group.label, "program": name, "trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2}
            row |= {"stablehlo_ops": _size(lowered.as_text()), "hlo_ops": _size(compiled.as_text())}
            print(json.dumps(row), flush=True)


def _child(tree: Path, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
    """This script (or ``lrd``) run with ``tree`` as its lrd; (stdout, stderr, wall seconds)."""
    full = dict(os.environ, PYTHONPATH=str(tree), **(env or {}))
    t0 = time.perf_counter()
    done = subprocess.run(args, env=full, cwd=cwd or tree, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {tree}: exit {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout, done.stderr, wall


def bench_programs(trees: dict[str, Path]) -> None:
    """Per group and program: trace, lower and compile seconds and sizes, diagnostics on and off, per tree."""
    import json

    for label, tree in trees.items():
        for diagnostics in (True, False):
            out, _, _ = _child(
                tree, [sys.executable, str(Path(__file__).resolve()), "--programs-child", str(diagnostics)]
            )
            rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            print(f"\n{label}, diagnostics {'on' if diagnostics else 'off'} (one program at a time, no cache):")
            print(f"  {'group':44} {'program':12} {'trace':>6} {'lower':>6} {'compile':>8} {'StableHLO':>9} {'HLO':>6}")
            for r in rows:
                print(
                    f"  {r['group'][:44]:44} {r['program']:12} {r['trace_s']:6.2f} {r['lower_s']:6.2f}"
                    f" {r['compile_s']:8.2f} {r['stablehlo_ops']:9} {r['hlo_ops']:6}"
                )
            by_program: dict[str, list[float]] = {}
            for r in rows:
                by_program.setdefault(r["program"], []).append(r["trace_s"] + r["lower_s"] + r["compile_s"])
            total = sum(sum(v) for v in by_program.values())
            print(
                f"  total {total:.1f} s over {len(rows)} programs: "
                + ", ".join(f"{k} {sum(v):.1f} s" for k, v in by_program.items()),
                flush=True,
            )


def _compilations(stderr: str) -> tuple[int, float, int, float]:
    """(compilations, their seconds, those of at least 0.5 s, their seconds) in a JAX_LOG_COMPILES log."""
    seconds = [float(m.group(2)) for m in COMPILE_LINE.finditer(stderr)]
    big = [s for s in seconds if s >= 0.5]
    return len(seconds), sum(seconds), len(big), sum(big)


def bench_command(trees: dict[str, Path], repeats: int) -> None:
    """``lrd run`` of the default experiment from a fresh cache, then a warm rerun with one override; per tree."""
    import tempfile

    print(
        f"\n{'tree':8} {'repeat':>6} {'command':>8} {'sweep':>6} {'compiles':>8} {'compile s':>9}"
        f" {'>=0.5 s':>7} {'their s':>7} | warm rerun {'command':>8} {'compiles':>8} | same, warm {'sweep':>6}"
    )
    sweep_line = re.compile(r"([0-9.]+) s; results in")
    for repeat in range(repeats):
        for label, tree in trees.items():
            with tempfile.TemporaryDirectory(prefix="lrd-bench-") as work:
                env = {"LRD_CACHE_DIR": f"{work}/cache", "JAX_LOG_COMPILES": "1"}
                lrd = [sys.executable, "-m", "lrd", "run", str(tree / DEFAULT_EXPERIMENT)]
                out, err, wall = _child(tree, [*lrd, "--out", f"{work}/first"], env, cwd=Path(work))
                n, secs, n_big, big_secs = _compilations(err)
                sweep = float(sweep_line.search(out).group(1))  # type: ignore[union-attr]
                _, err2, wall2 = _child(tree, [*lrd, "train.lr=1e-3", "--out", f"{work}/second"], env, cwd=Path(work))
                # the same experiment again, every program in the cache: its sweep is the execution (and loading)
                out3, _, _ = _child(tree, [*lrd, "--out", f"{work}/third", "--no-plot"], env, cwd=Path(work))
                executed = float(sweep_line.search(out3).group(1))  # type: ignore[union-attr]
                print(
                    f"{label:8} {repeat + 1:6} {wall:8.1f} {sweep:6.1f} {n:8} {secs:9.1f} {n_big:7} {big_secs:7.1f} |"
                    f" {'':10} {wall2:8.1f} {_compilations(err2)[0]:8} | {'':10} {executed:6.1f}",
                    flush=True,
                )


def run_bench_compile(before: Path | None, repeats: int, programs: bool = True) -> None:
    trees = {"now": Path(__file__).resolve().parents[1]}
    if before is not None:
        trees = {"before": before.resolve(), **trees}
    print(f"at the start: {load()}; {machine_speed()}")
    if programs:
        print("\n== compilation of the default experiment's programs (seconds; sizes in operations)")
        bench_programs(trees)
    print(f"\n== lrd run {DEFAULT_EXPERIMENT}: a fresh compilation cache, then a warm rerun (seconds)")
    bench_command(trees, repeats)
    print(f"at the end: {load()}; {machine_speed()}")


# --- the time loop on a GPU (issue 17) ---------------------------------------------------------
# XLA's command buffers (CUDA graphs) including while loops and conditionals, for graphs of any size:
# the scan's per-timestep kernel launches replayed from one graph instead of issued by the host.
COMMAND_BUFFERS = "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
UNROLLS = (8,)


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def bench_time_loops(lengths, batch, hidden, rounds, unrolls=UNROLLS, n_seeds=8) -> None:
    """Training step on each time loop: the scan, the scan unrolled, the Pallas kernels; cuDNN for scale.

    Then ``n_seeds`` vmapped seeds on the kernels against ``n_seeds`` cuDNN runs one after another.
    """
    if not on_gpu():
        print(f"n/a: the kernels compile for a GPU only; JAX runs on {jax.default_backend()} here")
        return
    cudnn = bool(torch_configs(quick=True)) and torch_configs(quick=True)[0][2] == "cuda"
    names = ["scan", *(f"unroll {u}" for u in unrolls), "kernel"] + (["cudnn"] if cudnn else [])
    print(f"{'cell':5} {'T':>5} " + " ".join(f"{n:>10}" for n in names) + "   kernel vs scan   kernel vs cudnn")
    for T in lengths:
        n = 2 if T >= 1000 else 10
        for cell in CELLS:
            contenders = {"scan": lrd_runner(cell, T, batch, hidden, n, time_loop="scan")}
            for u in unrolls:
                contenders[f"unroll {u}"] = lrd_runner(cell, T, batch, hidden, n, time_loop="scan", unroll=u)
            contenders["kernel"] = lrd_runner(cell, T, batch, hidden, n, time_loop="kernel")
            if cudnn:
                contenders["cudnn"] = torch_runner(cell, T, batch, hidden, n, 1, True, "cuda")
            ms = {k: v / n * 1e3 for k, v in interleaved(contenders, rounds).items()}
            ratio = f"{ms['cudnn'] / ms['kernel']:14.2f}x" if cudnn else "   (no torch)"
            print(
                f"{cell:5} {T:>5} "
                + " ".join(f"{ms[k]:8.2f}ms" for k in names)
                + f" {ms['scan'] / ms['kernel']:14.2f}x {ratio}",
                flush=True,
            )
    print(f"-- {n_seeds} seeds vmapped on the kernels against {n_seeds} single-seed cuDNN runs one after another")
    for cell in CELLS:
        T, n = lengths[0], 10
        contenders = {"kernel": lrd_runner(cell, T, batch, hidden, n, seeds=n_seeds, time_loop="kernel")}
        if cudnn:
            contenders["cudnn"] = torch_runner(cell, T, batch, hidden, n, 1, True, "cuda")
        ms = {k: v / n * 1e3 for k, v in interleaved(contenders, rounds).items()}
        line = f"{cell:5} T={T:<5} {n_seeds} seeds on the kernels {ms['kernel']:8.2f} ms/step"
        if cudnn:
            sequential = n_seeds * ms["cudnn"]
            line += f"   {n_seeds} cuDNN runs {sequential:8.2f} ms   throughput x{sequential / ms['kernel']:.2f}"
        print(line, flush=True)


def bench_command_buffers(lengths, batch, hidden, rounds) -> None:
    """The scan's training step with XLA's default flags and with command buffers for while loops.

    XLA reads its flags once per process, so each setting runs in a child process
    (this script with ``--child-steps``).
    """
    if not on_gpu():
        print(f"n/a: command buffers are a GPU feature; JAX runs on {jax.default_backend()} here")
        return
    found = {}
    for name, flags in (("default", ""), ("command buffers", COMMAND_BUFFERS)):
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
        args = [sys.executable, __file__, "--child-steps", ",".join(map(str, lengths)), "--rounds", str(rounds)]
        args += ["--batch", str(batch), "--hidden", str(hidden)]
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"{name}: failed ({proc.stderr.strip().splitlines()[-1:]})")
            return
        for line in proc.stdout.splitlines():
            if line.startswith("STEP "):
                _, cell, T, seconds = line.split()
                found[name, cell, int(T)] = float(seconds)
    print(f"{'cell':5} {'T':>5} {'default':>10} {'cmd buffers':>12}   speedup")
    for T in lengths:
        for cell in CELLS:
            a, b = found["default", cell, T], found["command buffers", cell, T]
            print(f"{cell:5} {T:>5} {a * 1e3:8.2f}ms {b * 1e3:10.2f}ms   {a / b:6.2f}x", flush=True)


def child_steps(lengths, batch, hidden, rounds) -> None:
    """The scan's training step only, one ``STEP cell T seconds`` line each (for bench_command_buffers)."""
    for T in lengths:
        n = 2 if T >= 1000 else 10
        for cell in CELLS:
            seconds = interleaved({"scan": lrd_runner(cell, T, batch, hidden, n, time_loop="scan")}, rounds)["scan"]
            print(f"STEP {cell} {T} {seconds / n}", flush=True)


def bench_parallel(lengths, batch, hidden, rounds) -> None:
    """The parallel cells' training step (associative_scan) against their step in a sequential lax.scan, and the LSTM.

    Both forms are lrd's own (``[model] time_loop = "parallel"`` and ``"scan"``); "auto" takes the
    step on a CPU, the parallel form elsewhere.
    """
    every = sorted(name for name, cls in CELLS_REGISTRY.items() if cls.parallel)
    print(f"{'T':>5} {'cell':8} {'parallel':>9} {'sequential':>10} {'speed-up':>8} {'vs lstm':>8}   (ms per step)")
    for T in lengths:
        n = 2
        contenders = {"lstm": lrd_runner("lstm", T, batch, hidden, n)}
        # the delta rule's parallel form scans d x d matrices, O(T log T d^3): at T = 4000 it outgrew
        # this machine's 24 GB (killed), so it runs up to T = 1000
        cells = [c for c in every if T <= MATRIX_SCAN_MAX_T or c not in MATRIX_SCAN_CELLS]
        for cell in sorted(set(every) - set(cells)):
            print(f"{T:>5} {cell:8} n/a: the matrix scan's memory at this T (runs up to T = {MATRIX_SCAN_MAX_T})")
        for cell in cells:
            contenders[f"{cell} parallel"] = lrd_runner(cell, T, batch, hidden, n, time_loop="parallel")
            contenders[f"{cell} sequential"] = lrd_runner(cell, T, batch, hidden, n, time_loop="scan")
        ms = {k: v / n * 1e3 for k, v in interleaved(contenders, rounds).items()}
        print(f"{T:>5} {'lstm':8} {ms['lstm']:9.1f}", flush=True)
        for cell in cells:
            par, seq = ms[f"{cell} parallel"], ms[f"{cell} sequential"]
            print(f"{T:>5} {cell:8} {par:9.1f} {seq:10.1f} {seq / par:7.1f}x {ms['lstm'] / par:7.2f}x", flush=True)


def _print_step_row(row: dict) -> None:
    torch_part = (
        f"{row['torch']:8.4f} {row['vs_torch']:8.2f}x  ({row['torch_config']})" if "torch" in row else "   (no torch)"
    )
    print(
        f"{row['cell']:5} {row['T']:>5} {row['lrd']:8.4f} {row['lrd_gflops']:6.1f} {row['lrd_of_peak']:5.0%}"
        f" {row['flax']:8.4f} {row['vs_flax']:7.2f}x {torch_part}",
        flush=True,
    )


def run_bench_diagnostics(batch: int, hidden: int, rounds: int) -> None:
    print("\n== diagnostics (lrd.dynamics): cost of each against a training block of log_every = 50 steps")
    for T, B, H, probe_size in ((100, batch, hidden, batch), (100, 32, 32, 64)):  # reference shape; a study's
        bench_diagnostics(CELLS, T, B, H, probe_size, rounds)


def _cpu_seconds(fn: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_cost_model(repeats: int = 5) -> None:
    """Measure the constants of ``lrd.buckets.CostModel`` and show the plans they give.

    Both sides in CPU seconds of this process (two cores: compilation keeps about 1.7 of
    them busy, a small training block about one): a group's programs compiled
    (``Trainer.compile``, no compilation cache), diagnostics on and off, at the default
    experiment's shape (delayed recall gap 100, hidden 32, batch 32, 3 members); and a
    training block (``advance``, 50 steps with its probe and stop check) per member, step
    and timestep, for the tanh RNN and the LSTM, from which ``step_s`` and ``flop_s`` are
    fitted (``padding_cost``'s flops: 6 x gates x H x (H + D) per sequence).
    """
    from lrd.buckets import COST, Candidate, CostModel, plan_buckets
    from lrd.experiment import load_experiment
    from lrd.tasks import TASKS

    jax.config.update("jax_enable_compilation_cache", False)
    task = TASKS["delayed_recall"](gap=100)
    compile_cpu: dict[bool, list[float]] = {True: [], False: []}
    per_step: dict[str, float] = {}
    flops: dict[str, float] = {}
    for cell in ("rnn", "lstm"):
        model = ModelConfig(cell=cell, hidden=32, forget_bias=3.0)
        for diagnostics in (True, False):
            train = TrainConfig(
                steps=800, log_every=50, batch_size=32, probe_size=64, diagnostics=diagnostics, stop_when_solved=True
            )
            trainer = Trainer(task, model, train, stop_threshold=0.95)
            cpu, wall = _cpu_seconds(lambda: trainer.compile(3))
            compile_cpu[diagnostics].append(cpu)
            print(f"compile {cell} diagnostics={diagnostics}: {cpu:.1f} CPU s, {wall:.1f} s wall", flush=True)
        state = trainer.initial_state([0, 1, 2])
        state, _ = trainer.advance(state, 50, 0)
        jax.block_until_ready(state)
        times = []
        for _ in range(repeats):  # the state is donated: each block trains on from the last
            cpu = time.process_time()
            state, _ = trainer.advance(state, 50, 0)
            jax.block_until_ready(state)
            times.append(time.process_time() - cpu)
        per_step[cell] = float(np.median(times)) / (3 * 50 * task.length)
        gates = 4 if cell == "lstm" else 1
        flops[cell] = 32 * 6 * gates * 32 * (32 + task.input_dim)  # the batch's
        print(f"advance {cell}: {per_step[cell] * 1e6:.1f} CPU us per member, step and timestep", flush=True)
    flop_s = (per_step["lstm"] - per_step["rnn"]) / (flops["lstm"] - flops["rnn"])
    fitted = CostModel(
        compile_s=float(np.mean(compile_cpu[True])),
        compile_s_without_diagnostics=float(np.mean(compile_cpu[False])),
        step_s=per_step["rnn"] - flop_s * flops["rnn"],
        flop_s=flop_s,
    )
    print(f"\nmeasured: {fitted}\nin lrd:   {COST}")
    for path in ("experiments/quick.toml", "experiments/delayed_recall.toml"):
        experiment = load_experiment(path)
        groups: dict[tuple, list] = {}
        for spec in experiment.runs:
            groups.setdefault(spec.group_key, []).append(spec)
        for cell in dict.fromkeys(key[1].cell for key in groups):
            keys = [key for key in groups if key[1].cell == cell]
            candidates = [Candidate(k[0], k[1], k[2], len(groups[k])) for k in keys]
            for name, model in (("measured", fitted), ("lrd", COST)):
                buckets = plan_buckets(candidates, model)
                text = " ".join("{" + ",".join(str(keys[i][0].gap) for i in b) + "}" for b in buckets)
                print(f"{path} {cell}: buckets of gaps ({name} constants) {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T=100 only, fewer repeats (under 2 minutes)")
    parser.add_argument(
        "--parallel-only",
        action="store_true",
        help="only the parallel cells against their sequential form and the LSTM (T = 1000, 4000; batch 16, hidden 64)",
    )
    parser.add_argument("--diagnostics-only", action="store_true", help="only the cost of the diagnostics")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="allocator settings of every contender (lrd.runtime)",
    )
    parser.add_argument("--compile-only", action="store_true", help="only the default experiment's compilation")
    parser.add_argument("--cost-model", action="store_true", help="only the length buckets' cost model (lrd.buckets)")
    parser.add_argument(
        "--comparison",
        action="store_true",
        help="only the comparison of record: flax and PyTorch at B=H=32 and 128 (T 100, 1000), "
        "the parallel cells, a 20-member group against one member; the load beside each",
    )
    parser.add_argument("--before", type=Path, help="with --compile-only: an older lrd's source tree, measured too")
    parser.add_argument("--repeats", type=int, default=3, help="with --compile-only: whole commands per tree")
    parser.add_argument(
        "--commands-only", action="store_true", help="with --compile-only: the whole commands alone, not each program"
    )
    parser.add_argument("--programs-child", help=argparse.SUPPRESS)  # diagnostics True/False: per-program numbers
    parser.add_argument("--child-steps", help=argparse.SUPPRESS)  # T values: scan steps only (command buffers)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.programs_child:
        return child_programs(args.programs_child == "True")
    if args.compile_only:
        return run_bench_compile(args.before, args.repeats, programs=not args.commands_only)
    if args.cost_model:
        return bench_cost_model()
    if args.child_steps:
        return child_steps([int(t) for t in args.child_steps.split(",")], args.batch, args.hidden, args.rounds)
    if args.malloc == "tuned":
        if os.environ.get("LRD_MALLOC") != "applied":
            os.environ["LRD_MALLOC"] = "tuned"
        runtime.reexec_with_malloc_settings()
    warnings.filterwarnings("ignore", message=".*TF32.*")  # torch's oneDNN switch talks about Intel GPUs
    rounds = 3 if args.quick else 5
    lengths = [100] if args.quick else [100, 1000]

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; torch {getattr(_torch(), '__version__', 'not installed')}"
    )
    print(
        f"allocator: {'tuned (' + os.environ.get('GLIBC_TUNABLES', '') + ')' if args.malloc == 'tuned' else 'glibc defaults'}"
    )
    if args.comparison:
        return run_comparison(rounds)
    if args.parallel_only:
        print(f"\n== parallel cells, batch 16, hidden 64: ms per training step (median of {rounds} interleaved rounds)")
        bench_parallel([1000, 4000], 16, 64, rounds)
        return
    if args.diagnostics_only:
        return run_bench_diagnostics(args.batch, args.hidden, rounds)
    peaks = matmul_peak()
    peak = max(peaks.values())
    print(
        "matmul peak (2048^2 float32): "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        + f" GFLOP/s -> peak {peak:.0f}"
    )

    print(
        f"\n== training step, batch {args.batch}, hidden {args.hidden}: seconds per step (median of {rounds} interleaved rounds)"
    )
    print(STEP_HEADER)
    steps = bench_steps(lengths, args.batch, args.hidden, rounds, peak, args.quick)

    print("\n== seeds: 8 seeds in one vmapped program vs 8 single-seed programs one after another")
    some = ("lstm",) if args.quick else CELLS
    configs = [(cell, 70, 32, 64, 20) for cell in some]  # the copy reference study's shape (gap 50)
    if not args.quick:
        configs += [(cell, 100, args.batch, args.hidden, 5) for cell in some]
    bench_seeds(configs, rounds)

    print("\n== per-timestep gradient norms: a probe pass against a plain forward+backward pass")
    for T in lengths:
        bench_probe(some, T, args.batch, args.hidden, rounds, steps)

    print("\n== the time loop: lax.scan, the scan unrolled, the Pallas kernels (ms per training step)")
    bench_time_loops(lengths, args.batch, args.hidden, rounds, unrolls=UNROLLS if args.quick else (*UNROLLS, 32))
    print("\n== XLA command buffers (CUDA graphs) for the scan's while loop")
    bench_command_buffers(lengths, args.batch, args.hidden, rounds)

    print(f"\n== parallel cells, batch 16, hidden 64: ms per training step (median of {rounds} interleaved rounds)")
    bench_parallel([1000] if args.quick else [1000, 4000], 16, 64, rounds)
    run_bench_diagnostics(args.batch, args.hidden, rounds)

    print("\n== compile time of a training block")
    bench_compile(
        ("rnn",) if args.quick else CELLS, [100, 1000] if args.quick else [100, 1000, 3000], args.batch, args.hidden
    )


if __name__ == "__main__":
    sys.exit(main())
