"""Noisy in-context recall, after MAD-Lab.

Source: Poli et al. 2024, "Mechanistic design and scaling of hybrid architectures"
(MAD), its noisy in-context recall task (``generate_noisy_in_context_recall_instance``
of the MAD-Lab code): key-value pairs drawn with replacement from small key and value
vocabularies, a key always followed by the same value within a sequence, some pairs
replaced by pairs of noise tokens from a vocabulary of their own; at the end a copy
prefix and a key seen before, whose value the model must give.

Convention (MAD-Lab's, single query): a vocabulary of V = ``vocab_size`` tokens, the
last (V - 1) the copy prefix, the ``noise_vocab`` before it the noise tokens, and of
the remaining V - 1 - noise_vocab the first half (rounded down) the keys, the rest the
values. ``gap`` is the number of pair slots, length 2 gap + 2:

    gap slots, each a noise pair (two i.i.d. uniform noise tokens) with probability
    ``frac_noise``, else a key-value pair: the key uniform over the keys, its value
    uniform over the values at the key's first pair and the same at every later
    one; one uniformly chosen slot is always a key-value pair; then the copy prefix,
    then a query key, uniform over the distinct keys of the sequence's pairs.

The target at the query key (the last step, the only scored one) is its value, as a
class (value - first value token). MAD-Lab trains a language model on every next
token and scores this value; here only the value is trained and scored. The query
lies 2 to 2 gap steps after the pair it recalls. A drawn example with V = 12,
noise_vocab = 4 (keys k0..k2, values v3..v6, noise n7..n10, ``>`` the prefix),
gap = 4::

    inputs : k1 v4 n9 n7 k0 v6 k1 v4  > k0
    targets:  .  .  .  .  .  .  .  .  . v6
    mask   :  0  0  0  0  0  0  0  0  0  1

Memoryless baseline: each key's value is uniform over the values and independent of
the step t, so the best output that sees only t is uniform over them: cross-entropy
ln(n_values) and accuracy 1/n_values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class NoisyRecall(Task):
    name: ClassVar[str] = "noisy_recall"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Poli et al. 2024 (MAD), noisy in-context recall"
    convention: ClassVar[str] = (
        "gap slots of key-value pairs (keys with replacement, fixed values) or noise pairs (frac_noise), "
        "a copy prefix, a seen key; predict its value; length 2*gap+2"
    )

    vocab_size: int = Field(32, gt=0, description="tokens: keys, values, noise tokens and the copy prefix")
    noise_vocab: int = Field(16, ge=0, description="noise tokens")
    frac_noise: float = Field(0.2, ge=0.0, lt=1.0, description="probability that a slot holds noise")

    @model_validator(mode="after")
    def _keys_and_values(self):
        if self.n_keys < 1 or self.n_values < 2:
            raise ValueError(
                f"vocab_size={self.vocab_size} with noise_vocab={self.noise_vocab} leaves "
                f"{self.n_keys} keys and {self.n_values} values: need at least 1 and 2"
            )
        if self.frac_noise > 0 and self.noise_vocab == 0:
            raise ValueError(f"frac_noise={self.frac_noise} needs noise tokens: noise_vocab must be at least 1")
        return self

    @property
    def n_keys(self) -> int:
        return (self.vocab_size - 1 - self.noise_vocab) // 2

    @property
    def n_values(self) -> int:
        return self.vocab_size - 1 - self.noise_vocab - self.n_keys

    @property
    def length(self) -> int:
        return 2 * self.gap + 2

    @property
    def input_dim(self) -> int:
        return self.vocab_size

    @property
    def output_dim(self) -> int:
        return self.n_values

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        B, S, K = batch_size, self.gap, self.n_keys
        k_keys, k_table, k_noisy, k_kept, k_noise, k_query = jax.random.split(key, 6)
        keys = jax.random.randint(k_keys, (B, S), 0, K)
        table = K + jax.random.randint(k_table, (B, K), 0, self.n_values)  # each key's value token
        values = jnp.take_along_axis(table, keys, axis=1)  # (B, S)
        kept = jax.random.randint(k_kept, (B, 1), 0, S)  # the slot that is always a pair
        noisy = jax.random.bernoulli(k_noisy, self.frac_noise, (B, S)) & (jnp.arange(S) != kept)
        first_noise = K + self.n_values
        noise = first_noise + jax.random.randint(k_noise, (B, S, 2), 0, max(self.noise_vocab, 1))
        pairs = jnp.where(noisy[..., None], noise, jnp.stack([keys, values], axis=2)).reshape(B, 2 * S)
        seen = jnp.zeros((B, K), bool).at[jnp.arange(B)[:, None], keys].max(~noisy)  # (B, K) keys in pairs
        gumbel = jax.random.gumbel(k_query, (B, K))
        query = jnp.argmax(jnp.where(seen, gumbel, -jnp.inf), axis=1)  # uniform over the seen keys
        prefix = jnp.full((B, 1), self.vocab_size - 1, jnp.int32)
        tokens = jnp.concatenate([pairs, prefix, query[:, None].astype(jnp.int32)], axis=1)  # (B, T)
        answer = jnp.take_along_axis(table, query[:, None], axis=1) - K  # (B, 1)
        return Batch(one_hot(tokens, self.vocab_size), self.scored_targets(answer), self.scored_mask(B))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_values)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_values)
