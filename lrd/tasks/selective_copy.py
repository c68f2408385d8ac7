"""Selective copying (Gu & Dao 2023, "Mamba", sec. 3.1 and appendix E.1).

Convention (exactly the reference generator ``torch_copying_data(L, M, A,
variable=True)`` of state-spaces/s4, ``src/dataloaders/datasets/copying.py``,
with L = ``gap``, M = ``n_symbols``, A = ``alphabet`` + 2): token 0 is the
blank ("noise"), 1..alphabet the data symbols and alphabet+1 the recall cue.
A sequence has length gap + 2 n_symbols:

    inputs : n_symbols data symbols (i.i.d. uniform over 1..alphabet) at
             uniformly random distinct positions among the first
             gap + n_symbols steps, kept in order, blanks at the other gap
             of those steps; then n_symbols cue tokens
    targets: blank, except the n_symbols cue steps, whose targets are the
             data symbols in the order they were shown (scored, mask = 1)

So ``gap`` is the number of blank (noise) steps in the memorisation part,
the paper's / generator's L. The k-th symbol (k = 0..n-1) is recalled at
step gap + n + k; it was shown at p_k <= gap + k, so every recall reaches
back between n_symbols and gap + n_symbols steps. The defaults are the
paper's: 16 symbols to copy and a vocabulary of 16 tokens (blank, 14 data
symbols, cue). The paper's sequence length 4096 is gap = 4064 if it
counts every step, gap = 4096 if it is the generator's L.

A drawn example with gap=6, n_symbols=4, alphabet=8 (length 14; ``_``
blank, ``?`` cue)::

    inputs : _ _ 4 _ 5 _ _ 8 _ 2 ? ? ? ?
    targets: _ _ _ _ _ _ _ _ _ _ 4 5 8 2
    mask   : 0 0 0 0 0 0 0 0 0 0 1 1 1 1

Memoryless baseline: each recalled symbol is uniform over the alphabet
whatever its step, and blanks are never scored, so the best output that
sees only t is uniform over 1..alphabet at the cue steps: cross-entropy
ln(alphabet) and accuracy 1/alphabet (ln 14 and 1/14 by default).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from lrd.tasks.base import Baseline, Batch, Task, blank_then_uniform_logits, one_hot, register

BLANK = 0


@register
class SelectiveCopy(Task):
    name: ClassVar[str] = "selective_copy"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Gu & Dao 2023 (Mamba), selective copying; generator of state-spaces/s4"
    convention: ClassVar[str] = (
        "n_symbols symbols at random ordered positions among the first gap+n_symbols steps "
        "(gap blanks), then n_symbols cues; recall them in order; length gap+2*n_symbols"
    )

    n_symbols: int = Field(16, gt=0, description="how many symbols to copy")
    alphabet: int = Field(14, gt=1, description="symbols are drawn from 1..alphabet")

    @property
    def length(self) -> int:
        return self.gap + 2 * self.n_symbols

    @property
    def cue(self) -> int:
        return self.alphabet + 1

    @property
    def input_dim(self) -> int:
        return self.alphabet + 2  # blank, symbols, cue

    @property
    def output_dim(self) -> int:
        return self.alphabet + 2

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - self.n_symbols, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        n, memory = self.n_symbols, self.gap + self.n_symbols
        k_symbols, k_positions = jax.random.split(key)
        symbols = jax.random.randint(k_symbols, (batch_size, n), 1, self.alphabet + 1)  # (B, n)
        # n distinct positions of [0, memory), uniformly, in increasing order
        order = jnp.argsort(jax.random.uniform(k_positions, (batch_size, memory)), axis=1)  # (B, memory)
        positions = jnp.sort(order[:, :n], axis=1)  # (B, n)
        rows = jnp.arange(batch_size)[:, None]  # (B, 1)
        shown = jnp.full((batch_size, memory), BLANK, jnp.int32).at[rows, positions].set(symbols)
        cues = jnp.full((batch_size, n), self.cue, jnp.int32)
        tokens = jnp.concatenate([shown, cues], axis=1)  # (B, T)
        targets = self.scored_targets(symbols, fill=BLANK)  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.alphabet)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return blank_then_uniform_logits(batch, self.output_dim, BLANK, range(1, self.alphabet + 1))
