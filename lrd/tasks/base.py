"""The task interface shared by every synthetic task, and its registry.

A task is a frozen, validated configuration (a pydantic model that refuses
unknown keys and wrong types) with a ``gap`` and its other parameters, and a
``sample(key, batch_size)`` that draws a batch with ``jax.random`` only, so it
can be called inside ``jit``.

Every task also knows its *memoryless baseline*: the loss and metric of the
best predictor that ignores the input history and sees only the position t in
the sequence. It is given analytically by ``baseline()`` and realised by
``memoryless_outputs(batch)``, so the two can be checked against each other.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field


class Batch(NamedTuple):
    """One batch of sequences.

    inputs:  (B, T, D) float32 network inputs.
    targets: (B, T) int32 class ids (classification) or float32 values (regression).
    mask:    (B, T) float32, 1.0 exactly at the scored positions.
    """

    inputs: jax.Array
    targets: jax.Array
    mask: jax.Array


class Baseline(NamedTuple):
    """Loss and metric of the best memoryless predictor (see module docstring)."""

    loss: float
    metric: float

    @classmethod
    def uniform(cls, n_classes: int) -> Baseline:
        """A uniform guess over ``n_classes`` equally likely classes: cross-entropy ln K, accuracy 1/K."""
        return cls(loss=math.log(n_classes), metric=1.0 / n_classes)


class Task(BaseModel):
    """Base class: subclasses add their parameters as typed fields.

    Class attributes a subclass sets:
      name: registry key used in experiment files.
      kind: "classification" (cross-entropy, accuracy) or "regression" (MSE, and as
        metric the fraction with |error| < ``tolerance``, a field regression tasks define).
      metric_name: what ``metric`` means; higher is better for every task.
      source / convention: one line each, shown by ``lrd tasks``.
      scored_steps: "fixed" (the default): every sequence is scored at the same steps;
        "drawn": each sequence's scored steps are drawn with it (e.g. MQAR's queries at
        random positions), all within ``scored_span``, and ``batch.mask`` differs between
        sequences. Metrics are means over all scored steps of a batch either way.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: ClassVar[str]
    kind: ClassVar[Literal["classification", "regression"]]
    metric_name: ClassVar[str] = "accuracy"
    source: ClassVar[str]
    convention: ClassVar[str]
    scored_steps: ClassVar[Literal["fixed", "drawn"]] = "fixed"

    gap: int = Field(gt=0, description="distance of the dependency; see the task's docstring")

    # --- shape of the problem -------------------------------------------------
    @property
    def length(self) -> int:
        """Sequence length T."""
        raise NotImplementedError

    @property
    def input_dim(self) -> int:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        """Number of classes (classification) or 1 (regression)."""
        raise NotImplementedError

    # --- data -----------------------------------------------------------------
    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        raise NotImplementedError

    # --- scoring ----------------------------------------------------------------
    def metrics(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Scalar metrics of model ``outputs`` (B, T, output_dim) on ``batch``.

        Always has ``loss`` (the training objective's reported value, on the
        scored positions) and ``metric`` (higher is better, in [0, 1]); tasks may
        add more (e.g. copy's all-position cross-entropy).
        """
        if self.kind == "classification":
            logp = jax.nn.log_softmax(outputs, axis=-1)  # (B, T, K)
            nll = -jnp.take_along_axis(logp, batch.targets[..., None], axis=-1)[..., 0]  # (B, T)
            correct = (jnp.argmax(outputs, axis=-1) == batch.targets).astype(jnp.float32)
            return {"loss": masked_mean(nll, batch.mask), "metric": masked_mean(correct, batch.mask)}
        err = outputs[..., 0] - batch.targets  # (B, T)
        tolerance = self.tolerance  # type: ignore[attr-defined]  # a field of every regression task
        return {
            "loss": masked_mean(err**2, batch.mask),
            "metric": masked_mean((jnp.abs(err) < tolerance).astype(jnp.float32), batch.mask),
        }

    def training_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """The scalar that training minimises (the ``loss`` metric unless a task says otherwise)."""
        return self.metrics(outputs, batch)["loss"]

    def baseline(self) -> Baseline:
        """Analytic loss and metric of the best memoryless predictor."""
        raise NotImplementedError

    def extra_baselines(self) -> dict[str, float]:
        """Analytic memoryless values of any extra metrics (same keys as ``metrics``)."""
        return {}

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        """Outputs (B, T, output_dim) of the best predictor that sees only the position t."""
        raise NotImplementedError

    def partial_baselines(self) -> dict[str, Baseline]:
        """Analytic loss and metric of best predictors that remember only part of what matters, by name.

        None by default; a task defines them where they are informative (e.g. the adding
        problem with only the second marked value remembered), each realised by
        ``partial_outputs(name, batch)`` so the two can be checked against each other.
        """
        return {}

    def partial_outputs(self, name: str, batch: Batch) -> jax.Array:
        """Outputs (B, T, output_dim) of the partial-memory predictor ``name`` of ``partial_baselines``."""
        raise NotImplementedError

    def test_sets(self) -> dict[str, Task]:
        """Other distributions of this task, by name, that a trained model is also scored on, at the end.

        None by default; a task defines them where its source tests out of distribution at the
        same length (e.g. flip-flop's sparse and dense sequences). Each must have the task's
        shapes and metrics; the scores are the runs table's ``final_test_<name>_<metric>``.
        """
        return {}

    # --- helpers ---------------------------------------------------------------
    def params(self) -> dict:
        """The task's parameters, including ``gap``, as plain Python values."""
        return self.model_dump()

    def at_gap(self, gap: int) -> Task:
        """The same task with another gap, validated like a file's value (pydantic.ValidationError if not allowed)."""
        return self.with_params(gap=gap)

    def with_params(self, **changes) -> Task:
        """The same task with ``changes`` to its parameters, validated (pydantic.ValidationError if not allowed)."""
        return type(self)(**{**self.params(), **changes})

    @property
    def scored_span(self) -> tuple[int, int]:
        """(first, last) scored position: the same for every sequence of the task, or, where
        ``scored_steps`` is "drawn", the first and last step any sequence may be scored at."""
        raise NotImplementedError

    def scored_mask(self, batch_size: int) -> jax.Array:
        """The mask (B, T) float32 of ``scored_span``: 1.0 at the scored positions, 0.0 elsewhere."""
        first, last = self.scored_span
        t = jnp.arange(self.length)
        return jnp.broadcast_to(((t >= first) & (t <= last)).astype(jnp.float32), (batch_size, self.length))

    def scored_targets(self, values: jax.Array, fill: int | float = 0) -> jax.Array:
        """Targets (B, T): ``values`` (B, n_scored) at the scored positions, ``fill`` elsewhere (same dtype)."""
        first, last = self.scored_span
        batch_size = values.shape[0]
        return jnp.full((batch_size, self.length), fill, values.dtype).at[:, first : last + 1].set(values)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` over the positions where ``mask`` is 1."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def uniform_logits(batch: Batch, n_classes: int) -> jax.Array:
    """Outputs (B, T, n_classes) of a uniform guess at every position (all-zero logits)."""
    return jnp.zeros((*batch.mask.shape, n_classes), jnp.float32)


def constant_outputs(batch: Batch, value: float) -> jax.Array:
    """Outputs (B, T, 1) of a regression predictor that says ``value`` at every position."""
    return jnp.full((*batch.mask.shape, 1), value, jnp.float32)


def blank_then_uniform_logits(batch: Batch, n_classes: int, blank: int, symbols: range) -> jax.Array:
    """Outputs (B, T, n_classes): ``blank`` for certain before the scored positions (``batch.mask``),
    uniform over ``symbols`` at them; the memoryless predictor of the copy tasks."""
    k = jnp.arange(n_classes)
    recall = batch.mask[0] > 0  # (T,), the same for every sequence
    blank_logits = jnp.where(k == blank, 0.0, -1e9)  # (K,)
    symbol_logits = jnp.where((k >= symbols.start) & (k < symbols.stop), 0.0, -1e9)  # (K,)
    logits = jnp.where(recall[:, None], symbol_logits, blank_logits)  # (T, K)
    return jnp.broadcast_to(logits, (*batch.mask.shape, n_classes)).astype(jnp.float32)


def one_hot(tokens: jax.Array, depth: int) -> jax.Array:
    return jax.nn.one_hot(tokens, depth, dtype=jnp.float32)


# --- registry ------------------------------------------------------------------
TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its ``name`` in experiment files."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task name {cls.name!r} is already registered by {TASKS[cls.name].__qualname__}")
    TASKS[cls.name] = cls
    return cls
