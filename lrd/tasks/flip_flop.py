"""Flip-flop language modelling, FFL(p).

Source: Liu, Ash, Goel, Krishnamurthy & Zhang 2023, "Exposing attention glitches with
flip-flop language modeling": a stream of instruction-bit pairs where ``w`` writes
its bit to a one-bit memory, ``i`` (ignore) carries a bit to be ignored and ``r``
(read) is followed by the bit last written. FFL(p) draws the instructions i.i.d.
with probabilities ((1 - p)/2, (1 - p)/2, p) for (w, r, i), except that the first is
``w`` and the last ``r``; the paper trains at p = 0.8 and tests on sparse (p = 0.98,
long stretches of ignores) and dense (p = 0.1) sequences. Its errors are rare,
sparse long-range ones: the read after a long stretch of ignores.

Convention: tokens 0 and 1 are the bits, 2 = w, 3 = r, 4 = i (one-hot inputs of 5).
``gap`` is the number of instructions, length 2 gap: instruction j at step 2j, its bit
at step 2j + 1. The bits after ``w`` and ``i`` are fair coins; the bit after ``r`` is
the last written one. Scored: each ``r`` step, whose target is the bit that follows
it (a language model's next-token prediction there, the only deterministic one). The
paper trains on the next-token loss at every step; here only the reads are scored and
trained. The number of reads differs between sequences (``scored_steps = "drawn"``):
a metric is the mean over all reads of the batch (of its chunks, in training). A read
lies 2 to 2 gap - 2 steps after the write it recalls. The paper's two test sets,
``sparse`` (p = 0.98) and ``dense`` (p = 0.1), are the task's ``test_sets()``: every
trained model is also scored on them (``final_test_sparse_metric`` and
``final_test_dense_metric`` in the runs table). A drawn example with gap = 5::

    inputs : w 1 i 0 r 1 i 1 r 1
    targets: . . . . 1 . . . 1 .
    mask   : 0 0 0 0 1 0 0 0 1 0

Memoryless baseline: every written bit is a fair coin, independent of where the
reads lie, so the best output that sees only t is uniform over the two bits at every
read: cross-entropy ln 2 and accuracy 1/2.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits

WRITE, READ, IGNORE = 2, 3, 4
TEST_P_IGNORE = {"sparse": 0.98, "dense": 0.1}  # Liu et al.'s out-of-distribution test sets


@register
class FlipFlop(Task):
    name: ClassVar[str] = "flip_flop"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Liu et al. 2023, flip-flop language modeling FFL(p)"
    convention: ClassVar[str] = (
        "gap instruction-bit pairs (w/r/i with probabilities (1-p)/2, (1-p)/2, p; first w, last r); "
        "predict the last written bit at each read; length 2*gap"
    )
    scored_steps: ClassVar[Literal["fixed", "drawn"]] = "drawn"

    gap: int = Field(gt=1, description="instructions, the first a write and the last a read")
    p_ignore: float = Field(0.8, ge=0.0, lt=1.0, description="probability of an ignore instruction")

    @property
    def length(self) -> int:
        return 2 * self.gap

    @property
    def input_dim(self) -> int:
        return 5  # two bits, w, r, i

    @property
    def output_dim(self) -> int:
        return 2

    @property
    def scored_span(self) -> tuple[int, int]:
        return 2, self.length - 2  # the second instruction's step to the last one's

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        B, n = batch_size, self.gap
        k_ops, k_bits = jax.random.split(key)
        p_other = (1.0 - self.p_ignore) / 2
        logits = jnp.log(jnp.array([p_other, p_other, self.p_ignore]))  # w, r, i
        ops = WRITE + jax.random.categorical(k_ops, logits, shape=(B, n))
        ops = ops.at[:, 0].set(WRITE).at[:, -1].set(READ)  # (B, n)
        coins = jax.random.bernoulli(k_bits, 0.5, (B, n)).astype(jnp.int32)

        def remember(memory, op_and_coin):  # memory (B,): the last written bit
            op, coin = op_and_coin
            memory = jnp.where(op == WRITE, coin, memory)
            return memory, memory

        _, memory = jax.lax.scan(remember, coins[:, 0], (ops.T, coins.T))  # (n, B) after each instruction
        bits = jnp.where(ops == READ, memory.T, coins)  # (B, n)
        tokens = jnp.stack([ops, bits], axis=2).reshape(B, 2 * n)
        read = jnp.stack([ops == READ, jnp.zeros_like(ops, bool)], axis=2).reshape(B, 2 * n)
        targets = jnp.where(read, jnp.roll(tokens, -1, axis=1), 0)  # the bit after each read
        return Batch(one_hot(tokens, self.input_dim), targets, read.astype(jnp.float32))

    def test_sets(self) -> dict[str, Task]:
        return {name: self.with_params(p_ignore=p) for name, p in TEST_P_IGNORE.items()}

    def baseline(self) -> Baseline:
        return Baseline.uniform(2)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, 2)
