"""ONE pure training function for every task x model, members (seed, learning rate) batched with vmap.

``Trainer(task, model, train)`` builds three jit-compiled, member-vmapped
programs, each compiled once per shape:

  init((keys, lrs))   -> state
  advance(state, n)   -> (state, record)   n <= log_every optimiser steps (a lax.scan), then a probe
  evaluate(state)     -> final metrics on at least ``eval_size`` fresh sequences, and the
                         validation metrics on at least ``valid_size`` others

A *member* is one run: a seed and a learning rate. The learning rate is a value in
the member's optimiser state (``optax.inject_hyperparams``), not a constant of the
program, so runs that differ only in seed and learning rate train in one program:
a grid of learning rates costs no extra compilation.

For each gap of ``train.eval_gaps``, ``evaluate_at[gap]`` is the same evaluation
(the same keys) on the task with that gap, which the trained parameters serve
unchanged because no cell's parameters depend on the sequence length.

``Trainer.run(seeds, lrs=...)`` chains them: ``advance(state, 0)`` logs step 0, then
steps/log_every calls of ``advance(state, log_every)``, so
a sweep can show progress between log points without any callback inside the
compiled code. Every batch is sampled inside the compiled code from
``fold_in(data_key, step)``; the probe batch is fixed per seed, so the logged
per-timestep gradient norms of different steps are comparable.

A member's randomness all comes from its seed's key: ``split(key, 4)`` gives the
initialisation, training-data, probe and evaluation keys (the training batches are
``fold_in(data_key, step)``), and the validation set, added later, comes from
``fold_in(key, VALID_FOLD)``, a stream disjoint from those that leaves the split,
and so every earlier number, as it was.

Divergence: a step whose loss or gradient is not finite marks that member
diverged at that step and freezes its parameters; other members are untouched.

``stop_when_solved``: at every log point each member's metric on a *stop check set* of
``stop_check_size`` validation sequences (the validation stream, ``valid_key``; never
trained on) is compared with the stop threshold (the experiment's ``[report]
solve_threshold``) by ``lrd.results.reaches``, the comparison the tables use; a member that
reaches it stops (its parameters freeze, as for divergence; its number of steps is
recorded), and the group ends once every member has stopped or diverged. A run's numbers
therefore do not depend on the other members. Stopping decides nothing about *solved*:
a stopped run is evaluated as every run is, and is solved only if its evaluation metric
reaches the threshold (``lrd.results.with_solved``). A run stopped at the first check that
reaches the threshold is a model *at* the threshold, and the evaluation, another sample,
then lands below it about as often as above (the copy study at 12000 steps: 8 of its 79
stopped runs evaluated below 0.95, and a stopped run's falling loss made each undecided).
``stop_margin`` m moves the stop to the threshold plus m: the run trains on until its
check metric clears the threshold by m, so that the evaluation rarely contradicts the stop;
solved is still the evaluation metric against the threshold alone. ``stop_check = "probe"`` keeps the
rule of before issue 21 (the member's probe metric, compared as ``metric >= threshold``
in float32) only to reproduce the runs trained with it (``lrd verify``).

Diagnostics (``lrd.dynamics``): every log record carries the block's pre-clip
gradient-norm, clipping and loss-spike statistics (reductions of values every
step computes anyway, gathered inside the scan) and the per-sequence
gradient-norm geometric means of the probe; with ``diagnostics = true`` (off by default, so committed results keep
their run ids) also the Jacobian spectra and gate statistics of layer 0 on the probe
batch, computed by a program of their own (``Trainer.diagnose``) at each log point, so
the training block compiles the same with them on or off.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from lrd.buckets import Padded, Single, View, can_pad
from lrd.dynamics import BlockStats, Dynamics, block_statistics, model_dynamics
from lrd.models.cells import CELLS
from lrd.models.network import MODEL_LOCK, ModelConfig, Perturbation, SequenceModel
from lrd.probes import global_norm, probe
from lrd.remedies import floss_penalty, omega_penalty
from lrd.results import reaches, solve_bound
from lrd.runtime import configure_jax
from lrd.tasks.base import Batch, Task
from lrd.watchdog import COMPILE_THREAD

configure_jax()  # before any computation: CPU computations inline (lrd.runtime)

EVAL_CHUNK = 256
# fold_in(key, VALID_FOLD) hashes the counter (0, VALID_FOLD), none of the counters (i, i + 4) that
# split(key, 4) hashes for the init, data, probe and evaluation keys: the validation set is a stream of its own
VALID_FOLD = 0x76616C64
OPTIMIZERS = {"adam": optax.adam, "rmsprop": optax.rmsprop, "sgd": optax.sgd}

# the stop check of stop_when_solved (stop_check_size): a model STOP_MARGIN below the threshold stops, over all
# the checks of a run, with probability below STOP_LEVEL
STOP_MARGIN = 0.05
STOP_LEVEL = 1e-3
# the rules by which stop_when_solved stops a run (TrainConfig.stop_check): "valid", the stop check set above,
# and "probe", the member's probe batch, the rule of the runs trained before issue 21. A stored configuration
# with stop_when_solved and no stop_check was trained by STOP_CHECK_BEFORE (its id is the hash without it)
StopCheck = Literal["valid", "probe"]
STOP_CHECK_BEFORE: StopCheck = "probe"


def _bernoulli_kl(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)), in nats (0 log 0 = 0)."""
    term = lambda x, y: 0.0 if x == 0 else x * math.log(x / y)
    return term(a, b) + term(1 - a, 1 - b)


def stop_check_size(threshold: float, checks: int, margin: float = STOP_MARGIN, level: float = STOP_LEVEL) -> int:
    """Sequences of the stop check set: a model ``margin`` below ``threshold`` passes any of ``checks`` checks
    with probability below ``level``.

    The metric of a check is a mean over n independent sequences of a per-sequence score
    in [0, 1] (the fraction of its scored positions right, or 0/1 for a one-answer task).
    For a model whose true metric is p = threshold - margin, the Chernoff-Hoeffding bound
    (Hoeffding 1963, Theorem 1: it holds for any variables in [0, 1], the binomial being
    the extreme case) gives the chance that the mean reaches the bound b of
    ``lrd.results.reaches`` (the threshold less 2^-22)

        P(mean >= b) <= exp(-n KL(b || p)),   KL the Bernoulli Kullback-Leibler divergence.

    The check set is fixed (the same sequences at every check, drawn from the validation
    stream, which training never sees) and the model changes between checks: each check
    is a test of its own, and whether the model at check j passes depends on the set, so
    the checks are not independent. A union bound needs no independence: over the
    ``checks`` checks of a run the chance that a model at most ``margin`` below the
    threshold stops is at most the sum of the per-check chances, so each check is held
    to ``level / checks``:

        n = ceil(ln(checks / level) / KL(b || p)).

    At threshold 0.95, margin 0.05 (p = 0.90, KL = 0.0167 nats), level 1e-3: one check
    needs 414 sequences, 41 checks (2000 steps logged every 50, and step 0) 636, 61
    checks 660 (the exact binomial tail at 636 sequences is about 1e-7, far below the
    bound). For comparison, the 64-sequence probe batch passes a model of true accuracy
    0.90 with probability 0.11 per check. A threshold within ``margin`` of 0 has no model
    ``margin`` below it: one sequence.
    """
    bound = float(solve_bound(threshold))
    p = threshold - margin
    if p <= 0:
        return 1
    return max(1, math.ceil(math.log(checks / level) / _bernoulli_kl(min(bound, 1.0), p)))


class TrainConfig(BaseModel):
    """Training settings; every field may be swept in an experiment file."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="learning rate; a list trains as one program")
    clip: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="global-norm clipping threshold; 0 disables clipping"
    )
    log_every: int = Field(50, gt=0)
    eval_size: int = Field(1024, gt=0)
    probe_size: int = Field(128, gt=0)
    valid_size: int = Field(1024, gt=0, description="validation sequences, for choosing among learning rates")
    stop_when_solved: bool = Field(
        False, description="stop a run once its metric on the stop check set (stop_check_size) reaches the threshold"
    )
    stop_margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="with stop_when_solved, a run stops once its stop check metric reaches the threshold plus "
        "this margin (solved is still decided by the evaluation metric and the threshold alone)",
    )
    stop_check: StopCheck = Field(
        "valid",
        description="with stop_when_solved, what the stop decides on: 'valid', the stop check set of "
        "stop_check_size validation sequences (lrd.results.reaches); 'probe', the run's probe batch compared "
        "as metric >= threshold in float32, kept only to reproduce results trained before the validation "
        "check (a stored configuration without stop_check): never use it for new runs",
    )
    profile_every: int = Field(
        0,
        ge=0,
        description="store the per-timestep profiles (the grad_norms rows; sigma_max and pmb_bound of dynamics) "
        "every this many steps up to a run's last trained step, and at that step; 0: at every log point. "
        "A multiple of log_every",
    )
    eval_gaps: tuple[int, ...] = Field(
        (),
        description="after training, also evaluate every model on its task at these gaps (no retraining); "
        "stored in the eval_gaps table",
    )
    recurrence_lr_factor: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="learning rate of the cell's recurrence parameters (Cell.recurrence_params) as a multiple of lr",
    )
    # remedies (lrd.remedies): regularisers added to the training loss; off (0) by default and then out of the run id
    omega: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="weight of Pascanu et al.'s Omega (backpropagated norm kept)"
    )
    floss: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="weight of gradient flossing (top Lyapunov exponents towards 0)"
    )
    floss_k: int = Field(1, gt=0, description="Lyapunov exponents flossed (at most the state size)")
    floss_every: int = Field(1, gt=0, description="floss every this many optimiser steps")

    # diagnostics (lrd.dynamics); they do not change training. Off by default: runs stored before they
    # existed are runs without them, so at these defaults they stay out of the run id (LATER_TRAIN_SETTINGS)
    diagnostics: bool = Field(False, description="Jacobian spectra and gate statistics at every log point")
    lyapunov_k: int = Field(4, gt=0, description="Lyapunov exponents computed (at most the state size)")
    power_iterations: int = Field(2, gt=0, description="block power iterations per timestep for sigma_max(J_t)")
    spectrum_size: int = Field(8, gt=0, description="probe sequences the Jacobian spectra are averaged over")
    saturation: float = Field(
        0.1, gt=0, lt=1, allow_inf_nan=False, description="saturated: activation derivative below this x its max"
    )
    spike_factor: float = Field(
        2.0, gt=1, allow_inf_nan=False, description="loss spike: a step's loss above this x the block median"
    )

    @field_validator("eval_gaps", mode="before")
    @classmethod
    def _gaps_as_tuple(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, list):  # TOML arrays; a tuple keeps the frozen config hashable
            value = tuple(value)
        if isinstance(value, tuple) and all(isinstance(g, int) and not isinstance(g, bool) for g in value):
            if any(g <= 0 for g in value):
                raise ValueError(f"every gap must be > 0 (got {list(value)})")
            if len(set(value)) != len(value):
                raise ValueError(f"repeated gap in {list(value)}")
            return tuple(sorted(value))
        raise ValueError(f"must be a list of positive integers (got {value!r})")

    @model_validator(mode="after")
    def _whole_blocks(self):
        if self.steps % self.log_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")
        if self.stop_margin and not self.stop_when_solved:
            raise ValueError("stop_margin moves the stop of stop_when_solved: set stop_when_solved = true")
        if self.profile_every % self.log_every:
            raise ValueError(f"profile_every ({self.profile_every}) must be a multiple of log_every ({self.log_every})")
        return self

    @model_serializer(mode="wrap")
    def _stop_check_only_where_it_decides(self, handler) -> dict:
        """The dump (a run's identity, the runs table) names ``stop_check`` only where it is "valid" and stops a run.

        Without ``stop_when_solved`` it decides nothing; "probe" is the rule of the runs
        stored before it existed, whose ids are the hash of their configuration without it.
        """
        data = handler(self)
        if not self.stop_when_solved or self.stop_check == STOP_CHECK_BEFORE:
            data.pop("stop_check", None)
        return data

    def program(self) -> TrainConfig:
        """The settings compiled into a training program: the learning rate, a per-member value, reset to its default.

        Runs whose configurations have the same ``program()`` train together in one program
        (``stop_check``, which decides nothing without ``stop_when_solved``, is reset there too).
        """
        fields = type(self).model_fields
        update: dict[str, Any] = {"lr": fields["lr"].default}
        if not self.stop_when_solved:
            update["stop_check"] = fields["stop_check"].default
        return self.model_copy(update=update)

    def optimizer_chain(self, lr: float | jax.Array | None = None) -> optax.GradientTransformation:
        """optax optimiser, after global-norm clipping (Pascanu, Mikolov & Bengio 2013) unless clip = 0.

        The learning rate (``lr``, default ``self.lr``) is a value in the optimiser state
        (``optax.inject_hyperparams``), so ``update`` reads it from there: a state made by
        ``optimizer_chain(lr).init`` trains at ``lr`` whatever chain updates it.
        """
        factory = OPTIMIZERS[self.optimizer]
        # only the learning rate becomes a state value: the other settings (Adam's b1, b2, eps) stay Python
        # constants, as without injection, so a single learning rate gives bitwise the numbers it gave before
        injected = optax.inject_hyperparams(lambda learning_rate: factory(learning_rate))
        opt = injected(learning_rate=self.lr if lr is None else lr)
        return opt if self.clip == 0 else optax.chain(optax.clip_by_global_norm(self.clip), opt)


def recurrence_rate(
    tx: optax.GradientTransformation, factor: float, names: tuple[str, ...]
) -> optax.GradientTransformation:
    """``tx`` with the updates of the cells' parameters named in ``names`` scaled by ``factor``.

    Per-parameter-group learning rates as S4/S5, the LRU and expRNN use them (the recurrence
    trained at a smaller rate than the rest). Adam's, RMSProp's and SGD's updates are linear
    in the learning rate, so scaling a parameter's update by ``factor`` trains it at
    ``factor * lr`` exactly; clipping still sees the whole gradient. Only parameters inside a
    cell (a ``cell`` module in the tree) are matched, never the readout.
    """
    if factor == 1.0 or not names:
        return tx

    def in_group(path, _leaf) -> bool:
        keys = [getattr(k, "key", None) for k in path]
        return "cell" in keys and keys[-1] in names

    return optax.chain(
        tx, optax.masked(optax.scale(factor), lambda params: jax.tree_util.tree_map_with_path(in_group, params))
    )


class TrainState(NamedTuple):
    params: Any  # the flax parameter tree
    opt_state: optax.OptState
    step: jax.Array  # () int32, optimiser steps taken
    diverged_step: jax.Array  # () int32, -1 while finite
    data_key: jax.Array
    probe_key: jax.Array
    eval_key: jax.Array
    valid_key: jax.Array
    stopped_step: (
        jax.Array
    )  # () int32, -1 while training; with stop_when_solved, the step of the log point it solved at


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
    stop_metric: jax.Array | None = None  # with stop_when_solved: the metric on the stop check set


class Evaluation(NamedTuple):
    """Metrics of the trained parameters on the evaluation set and on the validation set (each (S,) when vmapped)."""

    final: dict[str, jax.Array]
    valid: dict[str, jax.Array]


class RunResult(NamedTuple):
    """Everything a group of runs returns, as NumPy arrays with a leading member axis (S, ...)."""

    seeds: list[int]
    records: list[LogRecord]  # one per log point, steps 0, log_every, ... (up to steps, or where the group stopped)
    final: dict[str, np.ndarray]  # evaluation metrics, (S,)
    diverged_step: np.ndarray  # (S,), -1 if finite
    lrs: list[float]  # member i is (seeds[i], lrs[i])
    final_valid: dict[str, np.ndarray]  # validation metrics, (S,)
    steps_trained: np.ndarray  # (S,) optimiser steps that changed the parameters
    time_loop: str = "scan"  # the time loop the layers ran: "scan", "parallel", "kernel" or "interpret"
    eval_gaps: Mapping[int, dict[str, np.ndarray]] = MappingProxyType(
        {}
    )  # test gap -> evaluation metrics (S,), for train.eval_gaps
    bucket: tuple[int, ...] = ()  # the gaps of the length bucket whose program trained the group (lrd.buckets); ()
    test_sets: Mapping[str, dict[str, np.ndarray]] = MappingProxyType(
        {}
    )  # the task's test_sets(): name -> evaluation metrics (S,)


class Trainer:
    """Compiled training programs for one (task, model, training) configuration; any learning rates.

    ``stop_threshold``: with ``train.stop_when_solved``, the probe metric at which a member
    stops (required then; a sweep passes the experiment's ``[report] solve_threshold``).
    """

    def __init__(
        self,
        task: Task,
        model: ModelConfig,
        train: TrainConfig,
        stop_threshold: float | None = None,
        bucket: tuple[Task, ...] = (),
    ):
        if train.stop_when_solved and stop_threshold is None:
            raise ValueError("stop_when_solved needs a stop_threshold (the metric at which a run stops)")
        if len(bucket) > 1 and not can_pad(model, train):
            raise ValueError(f"{model.label} cannot run padded sequences (lrd.buckets.can_pad): no length bucket")
        self.task, self.model_config, self.train_config = task, model, train
        # a length bucket (lrd.buckets): the tasks, differing only in gap, that share these programs, padded at
        # their end to the longest; a run names its task (``run(task=...)``). One task: the unpadded programs
        self.tasks = tuple(sorted(bucket, key=lambda t: t.length)) if len(bucket) > 1 else (task,)
        if task not in self.tasks:
            raise ValueError(f"the bucket {[t.gap for t in self.tasks]} does not hold the task (gap {task.gap})")
        self.stop_threshold = stop_threshold
        # the stop check set: a check at step 0 and after every log block (none with the probe rule of before)
        self.stop_check_size = (
            stop_check_size(stop_threshold, train.steps // train.log_every + 1)
            if train.stop_when_solved and stop_threshold is not None and train.stop_check == "valid"
            else 0
        )
        self.model = SequenceModel(model, task.output_dim)
        self.tx = self.optimizer()  # updates at the learning rate in each member's state
        # one member at a time: see Program's ``sequential``
        self.init = Program(self._init, sequential=True)
        # n_steps is shared by all members (not vmapped), so the per-step lax.cond stays a real branch
        self.advance = Program(self._advance, donate=True)
        self.evaluate = Program(self._evaluate)
        self.diagnose = Program(self._diagnose)
        self.evaluate_at = {g: Program(functools.partial(self._evaluate_at, task.at_gap(g))) for g in train.eval_gaps}
        # each of the bucket's tasks' test sets (Task.test_sets), by (task index, name)
        self.evaluate_on = {
            (i, name): Program(functools.partial(self._evaluate_at, test))
            for i, bucket_task in enumerate(self.tasks)
            for name, test in bucket_task.test_sets().items()
        }
        self._compiling = threading.Lock()
        self._compiled: set[int] = set()  # the member counts compile() has compiled for

    def optimizer(self, lr: float | jax.Array | None = None) -> optax.GradientTransformation:
        """The optimiser chain (``TrainConfig.optimizer_chain``) with the recurrence at ``recurrence_lr_factor`` x lr.

        The cell's ``recurrence_params`` are scaled by ``recurrence_rate``; the scaling follows the
        injected learning rate, so it holds for every member of a learning-rate grid.
        """
        train = self.train_config
        return recurrence_rate(
            train.optimizer_chain(lr), train.recurrence_lr_factor, CELLS[self.model_config.cell].recurrence_params
        )

    def _view(self, which: jax.Array) -> View:
        """The task the programs run: the task itself, or the bucket's task at index ``which``, padded."""
        return Single(self.task) if len(self.tasks) == 1 else Padded(self.tasks, which)

    # --- pure, per-member functions ------------------------------------------------
    def _init(self, member: tuple[jax.Array, jax.Array]) -> TrainState:
        key, lr = member  # the seed's key, the learning rate ()
        init_key, data_key, probe_key, eval_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1, 1, self.task.input_dim), jnp.float32)  # (B, T, D): params do not depend on T
        params = self.model.init(init_key, dummy)
        return TrainState(
            params=params,
            opt_state=self.optimizer(lr).init(params),
            step=jnp.int32(0),
            diverged_step=jnp.int32(-1),
            data_key=data_key,
            probe_key=probe_key,
            eval_key=eval_key,
            valid_key=jax.random.fold_in(key, VALID_FOLD),
            stopped_step=jnp.int32(-1),
        )

    def _record(self, state: TrainState, block: BlockStats, view: View) -> LogRecord:
        """The probe's record of ``state``; its ``dynamics`` are left to ``diagnose`` (a program of their own)."""
        result = probe(view, self.model, state.params, self._probe_batch(state, view))
        return LogRecord(
            state.step,
            result.metrics,
            result.grad_norm,
            result.state_norms,
            result.below_floor,
            result.log_gmean_norms,
            result.gmean_below_floor,
            block,
            None,
        )

    def _probe_batch(self, state: TrainState, view: View) -> Batch:
        return view.sample(state.probe_key, self.train_config.probe_size)

    def _diagnose(self, state: TrainState, which: jax.Array) -> Dynamics:
        """The diagnostics (``lrd.dynamics``) of ``state`` on the probe batch.

        Their own program, run at each log point on the logged state: the training block
        is the same program with the diagnostics on or off, and compiles as fast.
        """
        config = self.train_config
        view = self._view(which)
        inputs = self._probe_batch(state, view).inputs
        return model_dynamics(
            self.model_config,
            state.params,
            cast(jax.Array, self.model.apply(state.params, inputs, cell_inputs=True)),  # what layer 0's cell receives
            lyapunov_k=config.lyapunov_k,
            iterations=config.power_iterations,
            spectrum_size=config.spectrum_size,
            saturation=config.saturation,
            key=jax.random.fold_in(state.probe_key, 1),
            padded=view if isinstance(view, Padded) else None,
        )

    def _logged(self, state: TrainState, record: LogRecord, which: int) -> LogRecord:
        """``record`` fetched to the host, with the diagnostics of ``state`` when they are on.

        In a bucket, the per-timestep values are cut to the task's real steps (the first ones).
        """
        if self.train_config.diagnostics:
            record = record._replace(dynamics=self.diagnose(state, which))
        record = jax.device_get(record)
        real = self.tasks[which].length
        if real == self.length:
            return record
        cut = lambda x: x[..., :real]
        dynamics = record.dynamics
        if dynamics is not None:
            dynamics = dynamics._replace(sigma_max=cut(dynamics.sigma_max), pmb_bound=cut(dynamics.pmb_bound))
        return record._replace(
            state_norms=jax.tree.map(cut, record.state_norms),
            below_floor=jax.tree.map(cut, record.below_floor),
            log_gmean_norms=jax.tree.map(cut, record.log_gmean_norms),
            gmean_below_floor=jax.tree.map(cut, record.gmean_below_floor),
            dynamics=dynamics,
        )

    @property
    def length(self) -> int:
        """The sequence length the programs run: the bucket's longest."""
        return max(t.length for t in self.tasks)

    def _train_step(self, state: TrainState, view: View) -> tuple[TrainState, tuple[jax.Array, jax.Array, jax.Array]]:
        """One optimiser step; also (loss, pre-clip gradient norm, whether the step counted) for the block stats."""
        batch = view.sample(jax.random.fold_in(state.data_key, state.step), self.train_config.batch_size)

        config = self.train_config

        def loss_fn(params):
            loss = view.score(self.model, params, batch, lambda task, outputs, b: task.training_loss(outputs, b))
            if config.omega > 0:
                loss = loss + config.omega * omega_penalty(self.model, self.task, params, batch)
            if config.floss > 0:
                flossing = state.step % config.floss_every == 0
                term = jax.lax.cond(
                    flossing,
                    lambda p: floss_penalty(self.model, p, batch.inputs, config.floss_k),
                    lambda p: jnp.float32(0.0),
                    params,
                )
                loss = loss + config.floss * term
            return loss

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        alive = (state.diverged_step < 0) & (state.stopped_step < 0)
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

    def _advance(self, state: TrainState, n_steps: jax.Array, which: jax.Array) -> tuple[TrainState, LogRecord]:
        """Take ``n_steps`` (0..log_every) optimiser steps, then probe. One program for any n and any bucket task."""
        view = self._view(which)

        def skip(state):
            return state, (jnp.float32(jnp.nan), jnp.float32(jnp.nan), jnp.bool_(False))

        def body(state, i):
            return jax.lax.cond(i < n_steps, lambda s: self._train_step(s, view), skip, state)

        config = self.train_config
        state, (losses, norms, taken) = jax.lax.scan(body, state, jnp.arange(config.log_every))  # each (log_every,)
        block = block_statistics(losses, norms, taken, config.clip, config.spike_factor)
        record = self._record(state, block, view)
        if self.stop_threshold is not None and config.stop_when_solved and config.stop_check == STOP_CHECK_BEFORE:
            # the rule of before issue 21, kept only to reproduce its runs: the probe metric, compared as it was
            passed = record.metrics["metric"] >= self.stop_threshold
            stops = passed & (state.stopped_step < 0) & (state.diverged_step < 0)
            state = state._replace(stopped_step=jnp.where(stops, state.step, state.stopped_step))
        elif self.stop_threshold is not None and config.stop_when_solved:
            n_chunks, chunk = self._chunks(self.stop_check_size)
            keys = jax.random.split(state.valid_key, n_chunks)
            check = jnp.mean(self._set_metrics(state.params, keys, chunk, view)["metric"], axis=0)  # equal chunks
            stop_at = self.stop_threshold + config.stop_margin
            stops = reaches(check, stop_at) & (state.stopped_step < 0) & (state.diverged_step < 0)
            state = state._replace(stopped_step=jnp.where(stops, state.step, state.stopped_step))
            record = record._replace(stop_metric=check)
        return state, record

    def _set_metrics(self, params, keys: jax.Array, chunk: int, view: View) -> dict[str, jax.Array]:
        """The task's metrics of ``params`` on ``chunk`` sequences per key, one row per key (a ``lax.map``)."""

        def one(key):
            batch = view.sample(key, chunk)
            return view.score(self.model, params, batch, lambda task, outputs, b: task.metrics(outputs, b))

        return jax.lax.map(one, keys)  # leading axis: chunks

    def _evaluate(self, state: TrainState, which: jax.Array) -> Evaluation:
        """Metrics on at least ``eval_size`` evaluation and ``valid_size`` validation sequences.

        Both sets are drawn in chunks of equal size, in one ``lax.map`` when their chunk
        sizes agree (the default), so the validation set adds no loop to compile.
        """
        sizes = [self._chunks(self.train_config.eval_size), self._chunks(self.train_config.valid_size)]
        keys = [jax.random.split(state.eval_key, sizes[0][0]), jax.random.split(state.valid_key, sizes[1][0])]
        metrics = functools.partial(self._set_metrics, state.params, view=self._view(which))
        mean = lambda values: jax.tree.map(lambda m: jnp.mean(m, axis=0), values)  # equal chunks: mean of means
        if sizes[0][1] == sizes[1][1]:
            both = metrics(jnp.concatenate(keys), sizes[0][1])  # (n_eval + n_valid chunks, ...)
            n = sizes[0][0]
            return Evaluation(mean(jax.tree.map(lambda m: m[:n], both)), mean(jax.tree.map(lambda m: m[n:], both)))
        return Evaluation(mean(metrics(keys[0], sizes[0][1])), mean(metrics(keys[1], sizes[1][1])))

    def _evaluate_at(self, task: Task, state: TrainState) -> dict[str, jax.Array]:
        """Mean metrics of ``task`` (the trained one at another gap, or a test set) on the evaluation sequences."""
        n_chunks, chunk = self._chunks(self.train_config.eval_size)

        def one(key):
            batch = task.sample(key, chunk)
            return task.metrics(self.model.apply(state.params, batch.inputs), batch)

        metrics = jax.lax.map(one, jax.random.split(state.eval_key, n_chunks))
        return jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)  # equal chunks: mean of means

    @staticmethod
    def _chunks(size: int) -> tuple[int, int]:
        """(number, size) of the equal chunks that cover at least ``size`` sequences, each at most EVAL_CHUNK."""
        n_chunks = math.ceil(size / EVAL_CHUNK)
        return n_chunks, math.ceil(size / n_chunks)

    # --- driver --------------------------------------------------------------------
    def programs(self, n_members: int) -> dict[str, tuple[Program, tuple]]:
        """The programs ``run`` calls for ``n_members`` members, each with abstract arguments of the shapes it gets.

        Keys: "init", "advance", "evaluate", then "diagnose" when the diagnostics are on and
        "evaluate_at_<gap>" for each of ``train.eval_gaps`` and "evaluate_on_<name>_<gap>" for each
        test set of the bucket's tasks (``Task.test_sets``).
        """
        members = (jax.ShapeDtypeStruct((n_members, 2), jnp.uint32), jax.ShapeDtypeStruct((n_members,), jnp.float32))
        state = self.init.trace(members).out_info  # the state's shapes, as init returns it
        programs: dict[str, tuple[Program, tuple]] = {
            "init": (self.init, (members,)),
            "advance": (self.advance, (state, 0, 0)),  # n_steps and which: Python ints, as run passes them
            "evaluate": (self.evaluate, (state, 0)),
        }
        if self.train_config.diagnostics:
            programs["diagnose"] = (self.diagnose, (state, 0))
        programs.update({f"evaluate_at_{gap}": (p, (state,)) for gap, p in self.evaluate_at.items()})
        programs.update(
            {f"evaluate_on_{name}_{self.tasks[i].gap}": (p, (state,)) for (i, name), p in self.evaluate_on.items()}
        )
        return programs

    def compile(self, n_members: int) -> None:
        """Compile the programs of ``run`` for ``n_members`` members, each in a thread of its own.

        Tracing and lowering hold Python's lock and run one after another; XLA compiles
        without it, so the programs compile concurrently. ``run`` then finds them compiled
        (JAX keeps a lowered program's executable for the jitted function's later calls).
        """
        with self._compiling:  # a second caller (the next group's compilation ahead, lrd.backends) waits here
            if n_members in self._compiled:
                return
            with MODEL_LOCK:  # tracing: one thread at a time (lrd.models.network.MODEL_LOCK)
                lowered = [program.lower(*args) for program, args in self.programs(n_members).values()]
            in_threads([lower.compile for lower in lowered])
            self._compiled.add(n_members)

    @property
    def n_blocks(self) -> int:
        return self.train_config.steps // self.train_config.log_every

    def initial_state(self, seeds: list[int], lrs: list[float] | None = None) -> TrainState:
        """The state of the members (seeds[i], lrs[i]) before training; ``lrs`` defaults to the config's ``lr``."""
        lrs = [self.train_config.lr] * len(seeds) if lrs is None else list(lrs)
        if len(lrs) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(lrs)} learning rates")
        keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])  # (S, 2)
        return self.init((keys, jnp.asarray(lrs, jnp.float32)))

    def run(
        self,
        seeds: list[int],
        on_block: Callable[[int, int], None] | None = None,
        lrs: list[float] | None = None,
        task: Task | None = None,
    ) -> RunResult:
        """Train the members (seeds[i], lrs[i]) together in one vmapped program.

        ``lrs`` defaults to the configuration's ``lr`` for every seed; ``on_block(done, total)``
        is called after each log block. ``task``: which task of the bucket (default: the Trainer's).
        """
        lrs = [self.train_config.lr] * len(seeds) if lrs is None else list(lrs)
        which = self.tasks.index(self.task if task is None else task)
        self.compile(len(seeds))
        state, record = self.advance(self.initial_state(seeds, lrs), 0, which)
        records = [self._logged(state, record, which)]
        for block in range(self.n_blocks):
            state, record = self.advance(state, self.train_config.log_every, which)
            records.append(self._logged(state, record, which))
            if on_block is not None:
                on_block(block + 1, self.n_blocks)
            if bool(np.all((np.asarray(state.diverged_step) >= 0) | (np.asarray(state.stopped_step) >= 0))):
                break  # every member has diverged or solved; nothing left to train
        final, final_valid = jax.device_get(self.evaluate(state, which))
        diverged, stopped = (np.asarray(jax.device_get(x)) for x in (state.diverged_step, state.stopped_step))
        last = np.asarray(jax.device_get(state.step))
        steps_trained = np.where(diverged >= 0, diverged, np.where(stopped >= 0, stopped, last))
        at_gaps = {g: jax.device_get(evaluate(state)) for g, evaluate in self.evaluate_at.items()}
        tests = {name: jax.device_get(p(state)) for (i, name), p in self.evaluate_on.items() if i == which}
        return RunResult(
            list(seeds),
            records,
            final,
            diverged,
            lrs,
            final_valid,
            steps_trained,
            self.model_config.time_loop_path(),
            at_gaps,
            tuple(t.gap for t in self.tasks) if len(self.tasks) > 1 else (),
            tests,
        )


class Program:
    """A per-member function, jit-compiled over a leading member axis; one compiled program per shape.

    The first argument (and every output) carries a leading member axis; the other
    arguments are shared by all members. Several members are batched with ``jax.vmap``;
    a single member runs the function itself, with the axis removed on the way in and
    restored on the way out, since XLA's CPU backend runs a vmapped matmul with a
    member axis of size 1 as a batched dot about 25% slower than the plain one
    (LSTM step, T = 100, batch 128, hidden 128: 206 ms vmapped, 159 ms plain;
    docs/benchmarks.md, "Levers tried"). Either way a given member count always gives the
    same numbers.

    Both programs are traced with JAX's classic (non-partitionable) threefry PRNG.
    Both threefry forms are deterministic functions of the key; the classic one
    compiles about twice as fast on CPU (measured: 8.0 s -> 3.9 s for a training
    block), and compilation dominates short runs. Fixing it here keeps the random
    streams independent of the user's JAX configuration.

    ``sequential=True`` runs the members one after another (``lax.map``) instead of
    vmapping them: the initialisation does, since its orthogonal initialiser's QR is a
    LAPACK call that, batched over members, jaxlib 0.10 splits across XLA's intra-op
    pool and waits for; two such waits at once deadlocked a 2-thread pool
    (docs/reliability.md). On one matrix at a time the call runs inline, and the numbers
    are the same (tested).
    """

    def __init__(self, fn: Callable, donate: bool = False, sequential: bool = False):
        donate_argnums = (0,) if donate else ()
        in_axes = (0,) + (None,) * (len(inspect.signature(fn).parameters) - 1)
        members = _one_at_a_time(fn) if sequential else jax.vmap(fn, in_axes=in_axes)
        self.batched = jax.jit(members, donate_argnums=donate_argnums)
        self.single = jax.jit(_single_seed(fn), donate_argnums=donate_argnums)

    def _pick(self, first):
        return self.single if jax.tree.leaves(first)[0].shape[0] == 1 else self.batched

    def __call__(self, *args):
        with jax.threefry_partitionable(False):
            return self._pick(args[0])(*args)

    def lower(self, *args):
        with jax.threefry_partitionable(False):
            return self._pick(args[0]).lower(*args)

    def trace(self, *args):
        """The traced program for ``args`` (arrays or ``jax.ShapeDtypeStruct``); ``.lower().compile()`` follow."""
        with jax.threefry_partitionable(False):
            return self._pick(args[0]).trace(*args)

    def _cache_size(self) -> int:
        return self.batched._cache_size() + self.single._cache_size()  # type: ignore[attr-defined]


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in a daemon thread of its own (COMPILE_THREAD), all at once; their results in order.

    The first exception a call raised is raised here, once every call has ended. Daemon
    threads, so that an interrupted process exits without waiting for a compilation.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as err:  # handed to the caller's thread
            errors.append(err)

    threads = [
        threading.Thread(target=call, args=(i,), name=f"{COMPILE_THREAD}-{i}", daemon=True) for i in range(len(calls))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _one_at_a_time(fn: Callable) -> Callable:
    """``fn`` over a leading member axis, member after member (``lax.map``), the shared arguments closed over."""

    def members(first, *shared):
        return jax.lax.map(lambda member: fn(member, *shared), first)

    return members


def _single_seed(fn: Callable) -> Callable:
    """``fn`` on the only member of a leading member axis of size 1, the axis restored on its outputs."""

    def one(first, *shared):
        out = fn(jax.tree.map(lambda x: x[0], first), *shared)
        return jax.tree.map(lambda x: x[None], out)

    return one


def get_trainer(
    task: Task,
    model: ModelConfig,
    train: TrainConfig,
    stop_threshold: float | None = None,
    bucket: tuple[Task, ...] = (),
) -> Trainer:
    """The Trainer of a configuration, shared so a shape compiles once per process.

    Pass ``train.program()`` (as a sweep does, ``RunSpec.group_key``) to share one Trainer across learning rates,
    and a length ``bucket`` (``lrd.buckets``) to share it across the bucket's tasks: ``run(task=...)`` picks one.
    """
    with MODEL_LOCK:  # a Trainer makes its model; and two threads (lrd.backends) may ask for the same Trainer
        if len(bucket) > 1:
            return _cached_trainer(min(bucket, key=lambda t: t.length), model, train, stop_threshold, bucket)
        return _cached_trainer(task, model, train, stop_threshold, ())


@functools.lru_cache(maxsize=64)
def _cached_trainer(
    task: Task, model: ModelConfig, train: TrainConfig, stop_threshold: float | None, bucket: tuple[Task, ...]
) -> Trainer:
    return Trainer(task, model, train, stop_threshold, bucket)
