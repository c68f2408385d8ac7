"""Copy memory task (Arjovsky, Shah & Bengio 2016, "Unitary evolution RNNs", sec. 4.1).

Convention (exactly the paper's): alphabet a_0..a_9 with a_0 the blank,
a_1..a_8 the symbols and a_9 the delimiter. For gap T the sequence has length
T + 20:

    inputs : 10 symbols from a_1..a_8, T-1 blanks, the delimiter, 10 blanks
    targets: T+10 blanks, then the same 10 symbols in order

So ``gap`` = T is the paper's T: the first symbol is recalled T+10 steps after
it was shown, and the delimiter sits T steps after the last symbol. A drawn
example with gap=3 (length 23; symbols 1-8, ``_`` blank, ``:`` delimiter)::

    inputs : 3 6 1 8 8 2 5 4 7 1 _ _ : _ _ _ _ _ _ _ _ _ _
    targets: _ _ _ _ _ _ _ _ _ _ _ _ _ 3 6 1 8 8 2 5 4 7 1
    mask   : 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1

Reported metrics: ``loss`` = cross-entropy on the 10 recall positions and
``metric`` = accuracy there (memoryless baselines ln 8 and 1/8: without memory
the best guess is uniform over a_1..a_8), and ``ce_all`` = the paper's
cross-entropy averaged over all T+20 positions (baseline 10 ln 8 / (T+20): the
blanks are predictable from the position, the 10 symbols are not).
Training minimises the recall-position loss by default; ``loss_positions =
"all"`` trains on the paper's all-position loss instead.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, blank_then_uniform_logits, one_hot, register

BLANK = 0


@register
class Copy(Task):
    name: ClassVar[str] = "copy"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Arjovsky, Shah & Bengio 2016 (uRNN), copy memory problem"
    convention: ClassVar[str] = (
        "10 symbols of 8, gap-1 blanks, delimiter, recall the 10; length gap+20; "
        "loss/metric on the 10 recall positions, ce_all over all positions"
    )

    n_symbols: int = Field(10, gt=0, description="how many symbols to remember")
    alphabet: int = Field(8, gt=1, description="symbols are drawn from a_1..a_alphabet")
    loss_positions: Literal["recall", "all"] = "recall"

    @property
    def length(self) -> int:
        return self.gap + 2 * self.n_symbols

    @property
    def delimiter(self) -> int:
        return self.alphabet + 1

    @property
    def input_dim(self) -> int:
        return self.alphabet + 2  # blank, symbols, delimiter

    @property
    def output_dim(self) -> int:
        return self.alphabet + 2

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - self.n_symbols, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        n = self.n_symbols
        symbols = jax.random.randint(key, (batch_size, n), 1, self.alphabet + 1)  # (B, n)
        blanks = jnp.full((batch_size, self.gap - 1), BLANK, jnp.int32)
        delim = jnp.full((batch_size, 1), self.delimiter, jnp.int32)
        tail = jnp.full((batch_size, n), BLANK, jnp.int32)
        tokens = jnp.concatenate([symbols, blanks, delim, tail], axis=1)  # (B, T)
        targets = self.scored_targets(symbols, fill=BLANK)  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def metrics(self, outputs, batch):
        out = super().metrics(outputs, batch)
        all_positions = Batch(batch.inputs, batch.targets, jnp.ones_like(batch.mask))
        out["ce_all"] = super().metrics(outputs, all_positions)["loss"]
        return out

    def training_loss(self, outputs, batch):
        return self.metrics(outputs, batch)["ce_all" if self.loss_positions == "all" else "loss"]

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.alphabet)

    def extra_baselines(self) -> dict[str, float]:
        return {"ce_all": self.n_symbols * math.log(self.alphabet) / self.length}

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        # blank is certain before the recall; uniform over a_1..a_alphabet during it
        return blank_then_uniform_logits(batch, self.output_dim, BLANK, range(1, self.alphabet + 1))
