"""Multi-query associative recall (MQAR), as in Zoology.

Source: Arora et al. 2023, "Zoology: measuring and improving recall in efficient
language models", sec. 3 and app. E; the generator ``multiquery_ar`` of
HazyResearch/zoology. Zoology measures
MQAR accuracy against model width and the number of key-value pairs.

Convention (Zoology's, with its names): a vocabulary of V = ``vocab_size`` tokens;
keys are drawn from 1..V/2-1 and values from V/2..V-1, both distinct within a
sequence. ``gap`` is the sequence length T (Zoology's ``input_seq_len``). A
sequence is

    n_pairs pairs "key value" (the context, 2 n_pairs steps), then T - 2 n_pairs
    steps in which each key is queried once: the query slots are the even offsets
    0, 2, 4, ... after the context, n_pairs of those (T - 2 n_pairs) / 2 slots drawn
    without replacement with probability proportional to s^(power_a - 1) for the
    s-th slot (s = 1, 2, ...; Zoology's power law, a = 0.01: near queries likelier),
    each slot assigned one key in random order; every other step holds a token
    drawn uniformly from the whole vocabulary (Zoology's ``random_non_queries``).

The target at each query step is the queried key's value (as a class, value - V/2,
of V - V/2); those n_pairs steps are the scored ones and differ between sequences
(``scored_steps = "drawn"``). Zoology trains a language model with labels shifted by
one step: its label at the query key's step is the value, as the target here. A
query lies at least 1 and at most T - 2 steps after the value it asks for.
Constraints: n_pairs <= V/2 - 1 distinct keys, and n_pairs <= (T - 2 n_pairs) / 2
slots. A drawn example with V = 16, n_pairs = 2, T = 12 (keys k1..k7, values
v8..v15, noise tokens in lower case ``n``)::

    inputs : k3 v12 k6 v9  n k6  n  n  n k3  n  n
    targets:  .   .  .  .  . v9  .  .  . v12 .  .
    mask   :  0   0  0  0  0  1  0  0  0  1  0  0

Memoryless baseline: each value is drawn uniformly from the V - V/2 values (without
replacement within a sequence, so each one alone is uniform), independently of
where its query lies, so the best output that sees only t is uniform over the
values at every scored step: cross-entropy ln(V - V/2), accuracy 1/(V - V/2).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class MQAR(Task):
    name: ClassVar[str] = "mqar"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Arora et al. 2023 (Zoology), multi-query associative recall"
    convention: ClassVar[str] = (
        "gap = length T; n_pairs key-value pairs, then every key queried once at power-law distributed "
        "even offsets among uniform noise tokens; predict each query's value"
    )
    scored_steps: ClassVar[Literal["fixed", "drawn"]] = "drawn"

    n_pairs: int = Field(4, gt=0, description="key-value pairs, each queried once")
    vocab_size: int = Field(64, gt=3, description="tokens: keys 1..V/2-1, values V/2..V-1")
    power_a: float = Field(0.01, gt=0.0, le=1.0, description="query slots drawn with weight s^(power_a - 1)")

    @model_validator(mode="after")
    def _room_for_the_pairs(self):
        if self.n_pairs > self.vocab_size // 2 - 1:
            raise ValueError(
                f"n_pairs={self.n_pairs} distinct keys need vocab_size >= 2 (n_pairs + 1) (got {self.vocab_size})"
            )
        if self.n_pairs > self.slots:
            raise ValueError(
                f"gap (the length) {self.gap} leaves {self.slots} query slots for n_pairs={self.n_pairs}: "
                f"it must be at least 4 n_pairs = {4 * self.n_pairs}"
            )
        return self

    @property
    def slots(self) -> int:
        """Query slots after the context: the even offsets 0, 2, ... below T - 2 n_pairs."""
        return max(self.gap - 2 * self.n_pairs, 0) // 2

    @property
    def n_values(self) -> int:
        return self.vocab_size - self.vocab_size // 2

    @property
    def length(self) -> int:
        return self.gap

    @property
    def input_dim(self) -> int:
        return self.vocab_size

    @property
    def output_dim(self) -> int:
        return self.n_values

    @property
    def scored_span(self) -> tuple[int, int]:
        return 2 * self.n_pairs, 2 * self.n_pairs + 2 * (self.slots - 1)

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        B, P, V, T = batch_size, self.n_pairs, self.vocab_size, self.length
        k_keys, k_values, k_slots, k_noise = jax.random.split(key, 4)
        keys = 1 + jnp.argsort(jax.random.uniform(k_keys, (B, V // 2 - 1)), axis=1)[:, :P]  # (B, P) distinct
        values = V // 2 + jnp.argsort(jax.random.uniform(k_values, (B, self.n_values)), axis=1)[:, :P]  # (B, P)
        # P slots without replacement, P(slot s) proportional to s^(a-1): the top P of log-weight + Gumbel noise
        log_weight = (self.power_a - 1.0) * jnp.log(jnp.arange(1, self.slots + 1, dtype=jnp.float32))
        slots = jax.lax.top_k(log_weight + jax.random.gumbel(k_slots, (B, self.slots)), P)[1]  # (B, P), key i -> slot
        at = 2 * P + 2 * slots  # (B, P) the step where key i is queried
        rows = jnp.arange(B)[:, None]
        context = jnp.stack([keys, values], axis=2).reshape(B, 2 * P)  # k v k v ...
        noise = jax.random.randint(k_noise, (B, T), 0, V)
        tokens = noise.at[:, : 2 * P].set(context).at[rows, at].set(keys)  # (B, T)
        targets = jnp.zeros((B, T), jnp.int32).at[rows, at].set(values - V // 2)
        mask = jnp.zeros((B, T), jnp.float32).at[rows, at].set(1.0)
        return Batch(one_hot(tokens, V), targets, mask)

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_values)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_values)
