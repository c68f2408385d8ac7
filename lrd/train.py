"""ONE pure training function for every task x model, seeds batched with vmap.

``Trainer(task, model, train)`` builds three jit-compiled, seed-vmapped
programs, each compiled once per shape:

  init(keys)          -> state
  advance(state, n)   -> (state, record)   n <= log_every optimiser steps (a lax.scan), then a probe
  evaluate(state)     -> final metrics on at least ``eval_size`` fresh sequences

``Trainer.run(seeds)`` chains them: ``advance(state, 0)`` logs step 0, then
steps/log_every calls of ``advance(state, log_every)``, so
a sweep can show progress between log points without any callback inside the
compiled code. Every batch is sampled inside the compiled code from
``fold_in(data_key, step)``; the probe batch is fixed per seed, so the logged
per-timestep gradient norms of different steps are comparable.

Diagnostics (``lrd.dynamics``): every log record carries the block's pre-clip
gradient-norm, clipping and loss-spike statistics (reductions of values every
step computes anyway, gathered inside the scan) and the per-sequence
gradient-norm geometric means of the probe; with ``diagnostics = true`` (the
default) also the Jacobian spectra and gate statistics of layer 0 on the probe
batch.

Divergence: a step whose loss or gradient is not finite marks that seed
diverged at that step and freezes its parameters; other seeds are untouched.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrd.dynamics import BlockStats, Dynamics, block_statistics, model_dynamics
from lrd.models.network import ModelConfig, Perturbation, SequenceModel
from lrd.probes import global_norm, probe
from lrd.tasks.base import Task

EVAL_CHUNK = 256


class TrainConfig(BaseModel):
    """Training settings; every field may be swept in an experiment file."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    clip: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="global-norm clipping threshold; 0 disables clipping"
    )
    log_every: int = Field(50, gt=0)
    eval_size: int = Field(1024, gt=0)
    probe_size: int = Field(128, gt=0)
    # diagnostics (lrd.dynamics); they do not change training, but a run with them switched off
    # has a different id, so it never counts as a stored run that has them
    diagnostics: bool = Field(True, description="Jacobian spectra and gate statistics at every log point")
    lyapunov_k: int = Field(4, gt=0, description="Lyapunov exponents computed (at most the state size)")
    power_iterations: int = Field(2, gt=0, description="block power iterations per timestep for sigma_max(J_t)")
    spectrum_size: int = Field(8, gt=0, description="probe sequences the Jacobian spectra are averaged over")
    saturation: float = Field(
        0.1, gt=0, lt=1, allow_inf_nan=False, description="saturated: activation derivative below this x its max"
    )
    spike_factor: float = Field(
        2.0, gt=1, allow_inf_nan=False, description="loss spike: a step's loss above this x the block median"
    )

    @model_validator(mode="after")
    def _whole_blocks(self):
        if self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")
        return self

    def optimizer_chain(self) -> optax.GradientTransformation:
        """optax optimiser, after global-norm clipping (Pascanu, Mikolov & Bengio 2013) unless clip = 0."""
        opt = {"adam": optax.adam, "rmsprop": optax.rmsprop, "sgd": optax.sgd}[self.optimizer](self.lr)
        return opt if self.clip == 0 else optax.chain(optax.clip_by_global_norm(self.clip), opt)


class TrainState(NamedTuple):
    params: Any  # the flax parameter tree
    opt_state: optax.OptState
    step: jax.Array  # () int32, optimiser steps taken
    diverged_step: jax.Array  # () int32, -1 while finite
    data_key: jax.Array
    probe_key: jax.Array
    eval_key: jax.Array


class LogRecord(NamedTuple):
    """Values at one log point, on the seed's fixed probe batch (leading seed axis when vmapped)."""

    step: jax.Array
    metrics: dict[str, jax.Array]  # loss, metric, extras
    grad_norm: jax.Array  # global norm of dL/dparams, before clipping
    state_norms: Perturbation  # (T,) per layer/direction/state
    below_floor: Perturbation
    log_gmean_norms: Perturbation  # (T,) ln of the geometric mean over the batch of per-sequence norms
    gmean_below_floor: Perturbation
    block: BlockStats  # the training steps since the previous record (nan at step 0)
    dynamics: Dynamics | None  # None when diagnostics are off


class RunResult(NamedTuple):
    """Everything a run returns, as NumPy arrays with a leading seed axis (S, ...)."""

    seeds: list[int]
    records: list[LogRecord]  # one per log point, steps 0, log_every, ..., steps
    final: dict[str, np.ndarray]  # evaluation metrics, (S,)
    diverged_step: np.ndarray  # (S,), -1 if finite
    time_loop: str = "scan"  # the time loop the layers ran: "scan", "kernel" or "interpret"


class Trainer:
    """Compiled training programs for one (task, model, training) configuration."""

    def __init__(self, task: Task, model: ModelConfig, train: TrainConfig):
        self.task, self.model_config, self.train_config = task, model, train
        self.model = SequenceModel(model, task.output_dim)
        self.tx = train.optimizer_chain()
        self.init = Program(self._init)
        # n_steps is shared by all seeds (not vmapped), so the per-step lax.cond stays a real branch
        self.advance = Program(self._advance, donate=True)
        self.evaluate = Program(self._evaluate)

    # --- pure, per-seed functions --------------------------------------------------
    def _init(self, key: jax.Array) -> TrainState:
        init_key, data_key, probe_key, eval_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1, 1, self.task.input_dim), jnp.float32)  # (B, T, D): params do not depend on T
        params = self.model.init(init_key, dummy)
        return TrainState(
            params=params,
            opt_state=self.tx.init(params),
            step=jnp.int32(0),
            diverged_step=jnp.int32(-1),
            data_key=data_key,
            probe_key=probe_key,
            eval_key=eval_key,
        )

    def _record(self, state: TrainState, block: BlockStats) -> LogRecord:
        config = self.train_config
        batch = self.task.sample(state.probe_key, config.probe_size)
        result = probe(self.task, self.model, state.params, batch)
        dynamics = None
        if config.diagnostics:
            dynamics = model_dynamics(
                self.model_config,
                state.params,
                batch.inputs,
                lyapunov_k=config.lyapunov_k,
                iterations=config.power_iterations,
                spectrum_size=config.spectrum_size,
                saturation=config.saturation,
                key=jax.random.fold_in(state.probe_key, 1),
            )
        return LogRecord(
            state.step,
            result.metrics,
            result.grad_norm,
            result.state_norms,
            result.below_floor,
            result.log_gmean_norms,
            result.gmean_below_floor,
            block,
            dynamics,
        )

    def _train_step(self, state: TrainState) -> tuple[TrainState, tuple[jax.Array, jax.Array, jax.Array]]:
        """One optimiser step; also (loss, pre-clip gradient norm, whether the step counted) for the block stats."""
        batch = self.task.sample(jax.random.fold_in(state.data_key, state.step), self.train_config.batch_size)

        def loss_fn(params):
            return self.task.training_loss(self.model.apply(params, batch.inputs), batch)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        alive = state.diverged_step < 0
        grad_norm = global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = alive & finite
        select = lambda new, old: jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, old)
        return state._replace(
            params=select(params, state.params),
            opt_state=select(opt_state, state.opt_state),
            step=state.step + 1,
            diverged_step=jnp.where(alive & ~finite, state.step, state.diverged_step),
        ), (loss, grad_norm, keep)

    def _advance(self, state: TrainState, n_steps: jax.Array) -> tuple[TrainState, LogRecord]:
        """Take ``n_steps`` (0..log_every) optimiser steps, then probe. One program for any n."""

        def skip(state):
            return state, (jnp.float32(jnp.nan), jnp.float32(jnp.nan), jnp.bool_(False))

        def body(state, i):
            return jax.lax.cond(i < n_steps, self._train_step, skip, state)

        config = self.train_config
        state, (losses, norms, taken) = jax.lax.scan(body, state, jnp.arange(config.log_every))  # each (log_every,)
        block = block_statistics(losses, norms, taken, config.clip, config.spike_factor)
        return state, self._record(state, block)

    def _evaluate(self, state: TrainState) -> dict[str, jax.Array]:
        n_chunks = math.ceil(self.train_config.eval_size / EVAL_CHUNK)
        chunk = math.ceil(self.train_config.eval_size / n_chunks)

        def one(key):
            batch = self.task.sample(key, chunk)
            return self.task.metrics(self.model.apply(state.params, batch.inputs), batch)

        metrics = jax.lax.map(one, jax.random.split(state.eval_key, n_chunks))
        return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)  # equal chunks: mean of means

    # --- driver --------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return self.train_config.steps // self.train_config.log_every

    def run(self, seeds: list[int], on_block: Callable[[int, int], None] | None = None) -> RunResult:
        """Train ``seeds`` together (one vmapped program); ``on_block(done, total)`` after each log block."""
        keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
        state, record = self.advance(self.init(keys), 0)
        records = [jax.device_get(record)]
        for block in range(self.n_blocks):
            state, record = self.advance(state, self.train_config.log_every)
            records.append(jax.device_get(record))
            if on_block is not None:
                on_block(block + 1, self.n_blocks)
            if bool(np.all(np.asarray(state.diverged_step) >= 0)):
                break  # every seed has diverged; nothing left to train
        final = jax.device_get(self.evaluate(state))
        diverged_step = np.asarray(jax.device_get(state.diverged_step))
        return RunResult(list(seeds), records, final, diverged_step, self.model_config.time_loop_path())


class Program:
    """A per-seed function, jit-compiled over a leading seed axis; one compiled program per shape.

    The first argument (and every output) carries a leading seed axis; the other
    arguments are shared by all seeds. Several seeds are batched with ``jax.vmap``;
    a single seed runs the function itself, with the axis removed on the way in and
    restored on the way out, since XLA's CPU backend runs a vmapped matmul with a
    seed axis of size 1 as a batched dot about 25% slower than the plain one
    (LSTM step, T = 100, batch 128, hidden 128: 206 ms vmapped, 159 ms plain;
    docs/benchmarks.md, "Levers tried"). Either way a given seed count always gives the
    same numbers.

    Both programs are traced with JAX's classic (non-partitionable) threefry PRNG.
    Both threefry forms are deterministic functions of the key; the classic one
    compiles about twice as fast on CPU (measured: 8.0 s -> 3.9 s for a training
    block), and compilation dominates short runs. Fixing it here keeps the random
    streams independent of the user's JAX configuration.
    """

    def __init__(self, fn: Callable, donate: bool = False):
        donate_argnums = (0,) if donate else ()
        in_axes = (0,) + (None,) * (len(inspect.signature(fn).parameters) - 1)
        self.batched = jax.jit(jax.vmap(fn, in_axes=in_axes), donate_argnums=donate_argnums)
        self.single = jax.jit(_single_seed(fn), donate_argnums=donate_argnums)

    def _pick(self, first):
        return self.single if jax.tree.leaves(first)[0].shape[0] == 1 else self.batched

    def __call__(self, *args):
        with jax.threefry_partitionable(False):
            return self._pick(args[0])(*args)

    def lower(self, *args):
        with jax.threefry_partitionable(False):
            return self._pick(args[0]).lower(*args)

    def _cache_size(self) -> int:
        return self.batched._cache_size() + self.single._cache_size()  # type: ignore[attr-defined]


def _single_seed(fn: Callable) -> Callable:
    """``fn`` on the only seed of a leading seed axis of size 1, the axis restored on its outputs."""

    def one(first, *shared):
        out = fn(jax.tree.map(lambda x: x[0], first), *shared)
        return jax.tree.map(lambda x: x[None], out)

    return one


@functools.lru_cache(maxsize=64)
def get_trainer(task: Task, model: ModelConfig, train: TrainConfig) -> Trainer:
    """The Trainer of a configuration, shared so a shape compiles once per process."""
    return Trainer(task, model, train)
