"""Lookahead: output now the symbol that will arrive ``gap`` steps later.

Source: the anti-causal counterpart of the lagged copy of the S4 code base
(``torch_copying_lag_data`` in state-spaces/s4, y_t = x_{t-lag}); a
dependency on future inputs is what Schuster & Paliwal 1997 ("Bidirectional
recurrent neural networks", sec. IV-A) built their artificial-data test of
bidirectional networks on. This exact form is this project's convention.

Convention: tokens 0..K-1 (K = ``n_symbols``), i.i.d. uniform at every one of
the T = gap + n_scored steps; the target at step t is the input symbol at
t + gap, scored on the fixed window t = 0..n_scored-1 (mask = 1 there, and
targets are 0 after it). So ``gap`` is how far ahead each scored output
looks, exactly gap steps for every scored position. A drawn example with
gap=3, n_scored=5, K=8 (length 8)::

    inputs : 6 2 5 2 4 3 3 5
    targets: 2 4 3 3 5 . . .
    mask   : 1 1 1 1 1 0 0 0

Memoryless baseline: the target x_{t+gap} is uniform over K and independent
of t, so the best output that sees only t is uniform: cross-entropy ln K,
accuracy 1/K. A unidirectional (causal) model cannot beat it either, since
x_{t+gap} is independent of x_0..x_t; a backward or bidirectional model can
solve the task exactly by carrying x_{t+gap} back gap steps.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class Lookahead(Task):
    name: ClassVar[str] = "lookahead"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "anti-causal lag copy (cf. state-spaces/s4 copying lag; Schuster & Paliwal 1997)"
    convention: ClassVar[str] = (
        "K i.i.d. symbols; target at t = input at t+gap on the window t < n_scored; "
        "length gap+n_scored; causal models stay at ln K"
    )

    n_symbols: int = Field(8, gt=1, description="K, the alphabet and classes")
    n_scored: int = Field(10, gt=0, description="scored positions 0..n_scored-1")

    @property
    def length(self) -> int:
        return self.gap + self.n_scored

    @property
    def input_dim(self) -> int:
        return self.n_symbols

    @property
    def output_dim(self) -> int:
        return self.n_symbols

    @property
    def scored_span(self) -> tuple[int, int]:
        return 0, self.n_scored - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        tokens = jax.random.randint(key, (batch_size, self.length), 0, self.n_symbols)  # (B, T)
        targets = self.scored_targets(tokens[:, self.gap :])  # (B, T): input t + gap at scored t
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_symbols)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_symbols)
