"""Length buckets: groups whose sequences differ only in length share one compiled program.

A sweep over gaps trains one group of runs per gap, and each group compiled its own
programs (init, training block, evaluation, diagnostics): on the default experiment
compilation was 70-95% of every group's wall time. Groups of the same task, model and
training settings whose tasks differ only in ``gap`` can instead run one program compiled
at the longest length of a *bucket*: every batch is sampled at its own length and
padded at its end to the bucket's (``right_pad``). The real steps come first, so the
layers compute them exactly as without padding (the same scan body, from the same initial
state), and what the padded steps compute never reaches them. The readout, the loss and
the metrics are computed on the real steps alone, per task, inside a ``lax.switch``
(``Padded``), so their gradient reaches the padded steps as exact zeros; the per-timestep
profiles are cut to the real steps on the host. Training is therefore bitwise what it is
without padding (the parameters at every step, the evaluations, the stops); the
per-timestep profiles and the diagnostics, reductions over arrays that XLA now cuts from
longer ones, agree to within 1e-6 relative (tests/test_buckets.py). A run records the
bucket it trained in (the runs table's ``bucket``), and ``lrd verify`` retrains it in the
same one, so a folder still verifies bitwise on the machine that wrote it.

Padding costs execution: a group padded from T to L runs L - T extra steps of its cell
in every training step. ``plan_buckets`` chooses the buckets from a measured cost model
(``CostModel``: the CPU seconds of a group's compilation saved against those of the
padded steps added, for the steps budgeted) rather than a fixed rule, by dynamic
programming over the groups sorted by length. Only unidirectional models whose every
layer runs its cell step by step (``lax.scan``) can be padded. The others keep a program
per length: attention and the parallel and kernel time loops see the whole sequence; a
backward layer would start in the padding (rotating the padding to its front was tried:
it changed the last bits of training); the remedies are computed on whole sequences. And
only classification tasks share programs (``can_share``: a regression loss in a branch
changed the last bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from lrd.models.cells import CELLS
from lrd.models.network import ModelConfig, Perturbation, SequenceModel, readout
from lrd.tasks.base import Batch, Task

if TYPE_CHECKING:
    from lrd.train import TrainConfig  # lrd.train imports this module


def right_pad(batch: Batch, length: int) -> Batch:
    """``batch`` (B, T, ...) with ``length - T`` steps of zeros after its end (inputs, targets, mask: never scored)."""
    pad = length - batch.mask.shape[1]
    widths = lambda x: [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
    return Batch(*(jnp.pad(x, widths(x)) for x in batch))


def head(batch: Batch, length: int) -> Batch:
    """The first ``length`` (the real) steps of a padded batch."""
    return Batch(*(x[:, :length] for x in batch))


class Single:
    """One task, unpadded: the programs every group compiled before buckets, unchanged."""

    def __init__(self, task: Task):
        self.task = task
        self.length = task.length

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        return self.task.sample(key, batch_size)

    def score(
        self,
        model: SequenceModel,
        params,
        batch: Batch,
        fn: Callable[[Task, jax.Array, Batch], Any],
        perturbation: Perturbation | None = None,
    ) -> Any:
        """``fn(task, outputs, batch)`` of the model's outputs on ``batch``."""
        outputs: jax.Array = model.apply(params, batch.inputs, perturbation)  # type: ignore[assignment]
        return fn(self.task, outputs, batch)


class Padded:
    """The tasks of a bucket as one, for the task at index ``which`` (a traced int32 scalar).

    Batches are padded at their end to the longest task's length (``real``: the task's own).
    ``score`` runs the recurrent layers over the padded batch, then the readout and ``fn``
    on the real steps, in the branch of ``which`` (``lax.switch``): the readout's matmul and
    the loss's reductions see exactly the shapes and values they see unpadded.
    """

    def __init__(self, tasks: Sequence[Task], which: jax.Array):
        self.tasks = tuple(tasks)
        self.which = which
        self.length = max(t.length for t in self.tasks)
        self.lengths = tuple(t.length for t in self.tasks)
        self.real = jnp.asarray(self.lengths, jnp.int32)[which]  # the task's length

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        branches = [lambda k, t=t: right_pad(t.sample(k, batch_size), self.length) for t in self.tasks]
        return jax.lax.switch(self.which, branches, key)

    def score(
        self,
        model: SequenceModel,
        params,
        batch: Batch,
        fn: Callable[[Task, jax.Array, Batch], Any],
        perturbation: Perturbation | None = None,
    ) -> Any:
        states = model.apply(params, batch.inputs, perturbation, readout=False)  # (B, L, H)

        def branch(task: Task) -> Callable:
            return lambda s, b: fn(task, readout(model, params, s[:, : task.length]), head(b, task.length))

        return jax.lax.switch(self.which, [branch(t) for t in self.tasks], states, batch)

    def pad_steps(self, values: jax.Array) -> jax.Array:
        """``values`` (B, T, ...) of the real steps, padded with zeros at the end to the bucket's length."""
        return jnp.pad(values, [(0, 0), (0, self.length - values.shape[1])] + [(0, 0)] * (values.ndim - 2))

    def each(self, fn: Callable[[Task], Any]) -> Any:
        """``fn(task)`` in the branch of ``which``."""
        return jax.lax.switch(self.which, [lambda t=t: fn(t) for t in self.tasks])

    def per_task(self, fn: Callable[[int], Any]) -> Any:
        """``fn(length)`` in the branch of ``which``: values that depend on the real length, computed as constants."""
        return jax.lax.switch(self.which, [lambda n=n: fn(n) for n in self.lengths])


View = Single | Padded


# --- which groups share a program ---------------------------------------------------------------
def can_pad(model: ModelConfig, train: TrainConfig) -> bool:
    """Whether ``model``, trained with ``train``, computes a padded batch's real steps as it computes them unpadded.

    Its layers must run forward only (a backward layer starts at the end) and their cell step
    by step (``lax.scan``; attention and the parallel forms see the whole sequence); a model
    trained with a remedy (``omega``, ``floss``, computed on whole sequences) cannot, nor a
    cell in a block (not tried: its norms, MLP and convolution are other programs).
    """
    cls = CELLS[model.cell]
    step_by_step = model.time_loop_path() == "scan" and (cls.parallel or not hasattr(cls, "sequence"))
    remedies = train.omega > 0 or train.floss > 0
    return step_by_step and not model.bidirectional and not remedies and model.block == "bare"


def can_share(task: Task) -> bool:
    """Whether ``task``'s groups may share a program: classification tasks only.

    A regression task's loss (the squared error of a one-wide readout), computed in a
    ``lax.switch`` branch, gave its gradient one last bit different from the task's own
    program for the bucket's longest task (the adding problem, tests/test_buckets.py), and
    training carries such a bit on as a different machine does; classification tasks gave
    the same bits in every case tried.
    """
    return task.kind == "classification"


class CostModel(NamedTuple):
    """CPU seconds of a group's compilation, and of one padded step, on the machine that measured them.

    Both sides are counted in CPU seconds of the process: on 2 cores XLA's compiler keeps
    about 1.7 of them busy, a small training block about one, and a sweep overlaps the next
    group's compilation with a group's training (``lrd.backends.LocalBackend``).

    compile_s: one group's programs compiled (``Trainer.compile``: init, training block,
      evaluation and diagnostics, in threads); ``compile_s_without_diagnostics`` without the last.
    step_s, flop_s: a training step's seconds per member, per padded timestep: ``step_s`` plus
      ``flop_s`` for each floating-point operation of the batch's cell at that step (forward
      and backward, 6 x gates x H x (H + D) per sequence), fitted to a training block of the
      tanh RNN and the LSTM (its probe and stop check included, as a block runs them).

    The padding is costed for every budgeted step: a run that ``stop_when_solved`` stops
    early pays less, so the plan errs towards programs of their own.

    Measured by ``python scripts/bench.py --cost-model`` on this project's 2-core CPU machine
    (docs/benchmarks.md, "Length buckets"). On another machine the ratio of the two sides,
    which is what decides, changes less than either.
    """

    compile_s: float = 16.8
    compile_s_without_diagnostics: float = 10.9
    step_s: float = 8.6e-6
    flop_s: float = 3.3e-11

    def compile_cost(self, diagnostics: bool) -> float:
        return self.compile_s if diagnostics else self.compile_s_without_diagnostics

    def padding_cost(self, model: ModelConfig, input_dim: int, batch: int, member_steps: int, pad: int) -> float:
        """Seconds that ``pad`` padded timesteps add to ``member_steps`` training steps (summed over members)."""
        gates = getattr(CELLS[model.cell], "n_gates", 1)
        width = model.hidden * len(model.directions)
        flops = 6 * gates * width * (model.hidden + input_dim) * model.layers
        return member_steps * pad * (self.step_s + self.flop_s * batch * flops)


COST = CostModel()


class Candidate(NamedTuple):
    """A group as the planner sees it: its task, model and training, and its number of members."""

    task: Task
    model: ModelConfig
    train: TrainConfig
    members: int


def plan_buckets(groups: Sequence[Candidate], cost: CostModel = COST) -> list[list[int]]:
    """Partition ``groups`` (all of one family: same task but for the gap, same model and training,
    same member count) into buckets of consecutive lengths minimising compilation + padding seconds.

    Returns lists of indices into ``groups``, each bucket sorted by length. Dynamic
    programming over the groups sorted by length: best[j] = min over i < j of best[i] +
    compile + the padding of groups i..j-1 up to the length of group j-1.
    """
    order = sorted(range(len(groups)), key=lambda i: groups[i].task.length)
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        top = groups[order[j - 1]].task.length
        for i in range(j):
            padding = sum(
                cost.padding_cost(
                    g.model, g.task.input_dim, g.train.batch_size, g.members * g.train.steps, top - g.task.length
                )
                for g in (groups[k] for k in order[i:j])
            )
            total = best[i] + cost.compile_cost(groups[order[0]].train.diagnostics) + padding
            if total < best[j]:
                best[j], cut[j] = total, i
    buckets, j = [], n
    while j > 0:
        buckets.append(order[cut[j] : j])
        j = cut[j]
    return buckets[::-1]
