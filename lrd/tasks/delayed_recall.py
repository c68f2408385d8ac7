"""Delayed recall: remember one symbol across ``gap`` distractor steps.

Source: Hochreiter & Schmidhuber 1997, experiment 2 (2c: "very long time
lags, no local regularities"), itself after Bengio, Simard & Frasconi 1994's
latching problem: the class of the first symbol must be kept until a cue.

Convention here: tokens 0..K-1 are the symbols to remember, K..K+D-1 the
distractors, K+D the blank and K+D+1 the recall cue (one-hot inputs of size
K+D+2). A sequence is: one symbol (uniform over K) at t=0, then ``gap``
distractor steps, then the cue at t = gap+1, where the target is the first
symbol (the only scored position). So ``gap`` is the number of steps strictly
between the symbol and its recall, and the length is gap + 2. Distractors are
random (uniform over D symbols, the default) or all blanks (``distractor =
"blank"``). Memoryless baseline: uniform over K, cross-entropy ln K and
accuracy 1/K. A drawn example with K=8, D=8, gap=5 (symbols s0..s7,
distractors d0..d7, ``?`` the cue)::

    inputs : s3 d5 d0 d7 d2 d6 ?
    targets:  .  .  .  .  .  . s3
    mask   :  0  0  0  0  0  0  1
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class DelayedRecall(Task):
    name: ClassVar[str] = "delayed_recall"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Hochreiter & Schmidhuber 1997 exp. 2; Bengio, Simard & Frasconi 1994"
    convention: ClassVar[str] = (
        "one of K symbols, gap distractors (random or blank), a cue; recall the symbol at the cue; length gap+2"
    )

    n_symbols: int = Field(8, gt=1, description="K, the classes to remember")
    n_distractors: int = Field(8, gt=0, description="D, distinct distractor symbols")
    distractor: Literal["random", "blank"] = "random"

    @property
    def length(self) -> int:
        return self.gap + 2

    @property
    def input_dim(self) -> int:
        return self.n_symbols + self.n_distractors + 2

    @property
    def output_dim(self) -> int:
        return self.n_symbols

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        K, D = self.n_symbols, self.n_distractors
        k_symbol, k_noise = jax.random.split(key)
        symbol = jax.random.randint(k_symbol, (batch_size, 1), 0, K)  # (B, 1)
        if self.distractor == "random":
            middle = jax.random.randint(k_noise, (batch_size, self.gap), K, K + D)  # (B, gap)
        else:
            middle = jnp.full((batch_size, self.gap), K + D, jnp.int32)
        cue = jnp.full((batch_size, 1), K + D + 1, jnp.int32)
        tokens = jnp.concatenate([symbol, middle, cue], axis=1)  # (B, T)
        targets = self.scored_targets(symbol)  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_symbols)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_symbols)
