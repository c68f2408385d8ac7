"""Induction heads: recall the token that followed the first occurrence of a trigger.

Sources: Olsson et al. 2022 ("In-context learning and induction heads"); the synthetic
form of Gu & Dao 2023 (Mamba, sec. 4.1.2 and Table 2): random tokens with a special
token somewhere, followed by the token to recall; the sequence ends with the special
token, and the model must output the token that followed it the first time. Mamba
trains at length 256 and tests far beyond (up to 2^20); here ``[train] eval_gaps``
evaluates a trained model at longer gaps.

Convention: ``n_symbols`` ordinary tokens 0..V-1 and the trigger V (one-hot inputs of
size V + 1). A sequence has length gap + 3: i.i.d. uniform ordinary tokens, except
the trigger at a uniform random position q in 0..gap and the target token right after
it (at q + 1, uniform), and the trigger again at the last step T - 1, where the
target (the token at q + 1) is the only scored step. The distance from the recalled
token to the readout is T - 2 - q, from 1 to gap + 1: ``gap`` sets the longest.
A drawn example with V = 4, gap = 5 (``T`` the trigger)::

    inputs : 2 0 T 3 1 2 0 T
    targets: . . . . . . . 3
    mask   : 0 0 0 0 0 0 0 1

Memoryless baseline: the target is a fresh uniform token, independent of t, so the
best output that sees only t is uniform over V: cross-entropy ln V and accuracy 1/V.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class Induction(Task):
    name: ClassVar[str] = "induction"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Olsson et al. 2022 induction heads; Gu & Dao 2023 (Mamba) synthetic induction task"
    convention: ClassVar[str] = (
        "uniform tokens with a trigger at a random position 0..gap followed by the target; the trigger again at "
        "the end, where the target is recalled; length gap+3"
    )

    n_symbols: int = Field(16, gt=1, description="V, the ordinary tokens (the trigger is one more)")

    @property
    def length(self) -> int:
        return self.gap + 3

    @property
    def input_dim(self) -> int:
        return self.n_symbols + 1

    @property
    def output_dim(self) -> int:
        return self.n_symbols

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        V, T = self.n_symbols, self.length
        k_tokens, k_position = jax.random.split(key)
        tokens = jax.random.randint(k_tokens, (batch_size, T), 0, V)  # (B, T): the target is tokens[q + 1]
        q = jax.random.randint(k_position, (batch_size, 1), 0, self.gap + 1)  # (B, 1) the first trigger
        t = jnp.arange(T)[None, :]
        tokens = jnp.where((t == q) | (t == T - 1), V, tokens)
        target = jnp.take_along_axis(tokens, q + 1, axis=1)  # (B, 1)
        return Batch(one_hot(tokens, self.input_dim), self.scored_targets(target), self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_symbols)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_symbols)
