"""Parity of a bit stream, read out after a cue.

Sources: the parity problem of Bengio, Simard & Frasconi 1994 ("Learning
long-term dependencies with gradient descent is difficult"), also discussed
by Hochreiter & Schmidhuber 1997 (sec. 5, as a task random weight guessing
solves); here in the form of the "parity check" of Deletang et al. 2023
("Neural networks and the Chomsky hierarchy"): classify whether a random bit
string has an even or odd number of ones.

Convention: tokens 0 and 1 are the bits, 2 the cue (one-hot inputs of size
3). A sequence is ``gap`` i.i.d. fair bits, then the cue at t = gap, where the
target is (number of ones) mod 2 — the only scored step (mask = 1 there,
targets 0 elsewhere). Length gap + 1. So ``gap`` is the number of bits: the
first bit is gap steps before the readout, and every bit matters (flipping
any one flips the answer). A drawn example with gap=7 (``?`` the cue)::

    inputs : 1 0 1 0 0 1 1 ?
    targets: . . . . . . . 0
    mask   : 0 0 0 0 0 0 0 1

Memoryless baseline: with at least one fair bit independent of the others
the parity is a fair coin, whatever t, so the best output that sees only t
is (1/2, 1/2): cross-entropy ln 2 and accuracy 1/2.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits

CUE = 2


@register
class Parity(Task):
    name: ClassVar[str] = "parity"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Bengio, Simard & Frasconi 1994 parity; Deletang et al. 2023 parity check"
    convention: ClassVar[str] = "gap fair bits, then a cue where the target is their parity; length gap+1"

    @property
    def length(self) -> int:
        return self.gap + 1

    @property
    def input_dim(self) -> int:
        return 3  # bit 0, bit 1, cue

    @property
    def output_dim(self) -> int:
        return 2

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        bits = jax.random.randint(key, (batch_size, self.gap), 0, 2)  # (B, gap)
        tokens = jnp.concatenate([bits, jnp.full((batch_size, 1), CUE, jnp.int32)], axis=1)  # (B, T)
        parity = jnp.sum(bits, axis=1) % 2  # (B,)
        targets = self.scored_targets(parity[:, None])  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(2)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, 2)
