"""Temporal order (Hochreiter & Schmidhuber 1997, experiments 6a/6b), length-scaled.

Source: Hochreiter & Schmidhuber 1997, "Long short-term memory", sec. 5.6
(temporal order), in the length-scaled form used by Martens & Sutskever 2011
and Pascanu, Mikolov & Bengio 2013 ("On the difficulty of training RNNs"),
whose generator (``tempOrder.py`` / ``tempOrder3bit.py`` of
pascanur/trainingRNNs) this follows exactly.

Convention: six one-hot input symbols, X = 0 and Y = 1 the relevant ones,
a..d = 2..5 the distractors. A sequence of length T has ``n_relevant``
relevant symbols (each X or Y with probability 1/2), the i-th at a uniformly
random position in the window [start_i, start_i + w), w = floor(T/10):

    n_relevant = 2 (exp. 6a): start = floor(T/10), floor(5T/10)
    n_relevant = 3 (exp. 6b): start = floor(T/10), floor(3T/10), floor(6T/10)

For T = 100 the two windows are [10, 20) and [50, 60): the paper's 6a
positions, up to its inclusive upper ends, its random length T..T+T/10 and
its B/E start and end symbols, all dropped (as in Pascanu's code) so shapes
stay fixed; the three windows [10, 20), [30, 40), [60, 70) are Pascanu's,
close to the paper's 6b [10, 20], [33, 43], [66, 76]. Every other step is a
distractor drawn uniformly from a..d. The class, read at the last
step t = T-1 only, is sum_i v_i 2^i with v_i = 0 for X and 1 for Y (so XX=0,
YX=1, XY=2, YY=3 for two symbols: the first symbol is the low bit, as in
Pascanu's code). The windows are computed with integer arithmetic.

``gap`` is the sequence length T (as in Martens & Sutskever and Pascanu et
al.); the first relevant symbol lies roughly 0.8T to 0.9T steps before the
readout. A drawn example with gap=20, n_relevant=2 (windows [2, 4) and
[10, 12); the class is YX = 1 + 2*0 = 1)::

    inputs : a d Y c c c d a c d X b b b d a d c d c
    targets: . . . . . . . . . . . . . . . . . . . 1
    mask   : 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1

Memoryless baseline: the v_i are independent fair coins, so the class is
uniform over C = 2^n_relevant classes whatever the position t; the best
output that sees only t is the uniform distribution, with cross-entropy
ln C (ln 4 or ln 8) and accuracy 1/C (1/4 or 1/8).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits

N_DISTRACTORS = 4
WINDOW_TENTHS = {2: (1, 5), 3: (1, 3, 6)}  # start of each window, in tenths of T


@register
class TemporalOrder(Task):
    name: ClassVar[str] = "temporal_order"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Hochreiter & Schmidhuber 1997 exp. 6a/6b; length-scaled as Pascanu et al. 2013"
    convention: ClassVar[str] = (
        "gap = length T; X/Y at random steps in [T/10, 2T/10) and [5T/10, 6T/10) "
        "(3-symbol: [T/10,2T/10), [3T/10,4T/10), [6T/10,7T/10)), distractors a-d elsewhere; "
        "classify the order at the last step (4 or 8 classes)"
    )

    n_relevant: Literal[2, 3] = 2

    @model_validator(mode="after")
    def _long_enough(self):
        if self.gap < 10:
            raise ValueError("gap (the length T) must be at least 10 so each window floor(T/10) is non-empty")
        return self

    @property
    def length(self) -> int:
        return self.gap

    @property
    def input_dim(self) -> int:
        return 2 + N_DISTRACTORS

    @property
    def output_dim(self) -> int:
        return 2**self.n_relevant

    @property
    def windows(self) -> tuple[tuple[int, int], ...]:
        """[start, stop) of the window holding each relevant symbol."""
        T = self.length
        return tuple(((T * tenths) // 10, (T * tenths) // 10 + T // 10) for tenths in WINDOW_TENTHS[self.n_relevant])

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        T, n = self.length, self.n_relevant
        k_noise, k_bits, k_pos = jax.random.split(key, 3)
        tokens = jax.random.randint(k_noise, (batch_size, T), 2, 2 + N_DISTRACTORS)  # (B, T)
        bits = jax.random.randint(k_bits, (batch_size, n), 0, 2)  # (B, n): 0 = X, 1 = Y
        starts = jnp.array([start for start, _ in self.windows])  # (n,)
        positions = starts + jax.random.randint(k_pos, (batch_size, n), 0, T // 10)  # (B, n)
        t = jnp.arange(T)
        for i in range(n):
            tokens = jnp.where(t == positions[:, i : i + 1], bits[:, i : i + 1], tokens)
        label = jnp.sum(bits * (2 ** jnp.arange(n)), axis=1)  # (B,)
        targets = self.scored_targets(label[:, None])  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.output_dim)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.output_dim)
