"""Fuzzy in-context recall, after MAD-Lab.

Source: Poli et al. 2024, "Mechanistic design and scaling of hybrid architectures"
(MAD), its fuzzy in-context recall task (``generate_fuzzy_in_context_recall_instance``
of the MAD-Lab code): associative recall where keys and values are motifs of one to
``k_motif`` (keys) and one to ``v_motif`` (values) adjacent tokens, so a model must find
where a key ends and copy a value of variable length.

Convention (MAD-Lab's, single query, without noise): a vocabulary of V = ``vocab_size``
tokens, the last (V - 1) the copy prefix and V - 2 the padding; of the other V - 2, the
first half (rounded down) are key tokens and the rest value tokens. A motif is a
sequence of distinct tokens (a drawn permutation's first k). ``gap`` is the number of
key-value pairs before the query:

    gap pairs, each a key of k tokens (k uniform in 1..k_motif) followed by a value of
    v tokens (v uniform in 1..v_motif); a key that occurred before keeps its first
    value; one pair, uniformly chosen, is the probe; then the copy prefix, the probe's
    key and its value, whose last token is left out (a language model's inputs are
    the sequence shifted by one). The sequence is padded at its front to the longest
    possible length, gap (k_motif + v_motif) + k_motif + v_motif.

The scored steps are the probe value's: the key's last step, where the value's first
token is the target, and each value token's step but the last, where the next one is;
1 to v_motif steps, differing between sequences (``scored_steps = "drawn"``). Targets
are value tokens as classes (token - first value token). MAD-Lab trains a language
model on every next token and scores the value; here only the value is trained and
scored, and the probe key has a drawn length as in MAD-Lab's training data (its test
data prompts with the longest keys). The recalled pair lies at least 2 and at most
about gap (k_motif + v_motif) steps before the query. A drawn example with V = 10
(keys k0..k3, values v4..v7, ``_`` padding, ``>`` the prefix), k_motif = v_motif = 2,
gap = 3 (length 16)::

    inputs : _  _  _  _ k2 v4 k1 v5 k2 k3 v4 v5  > k2 k3 v4
    targets: .  .  .  .  .  .  .  .  .  .  .  .  .  . v4 v5
    mask   : 0  0  0  0  0  0  0  0  0  0  0  0  0  0  1  1

Memoryless baseline: each value token is marginally uniform over the value tokens (a
position of a random permutation), whatever the step, so the best output that sees
only t is uniform over them: cross-entropy ln(n_values) and accuracy 1/n_values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class FuzzyRecall(Task):
    name: ClassVar[str] = "fuzzy_recall"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Poli et al. 2024 (MAD), fuzzy in-context recall"
    convention: ClassVar[str] = (
        "gap pairs of multi-token keys (1..k_motif) and values (1..v_motif), front-padded; a copy prefix and "
        "a seen key; predict its value's tokens; length gap*(k_motif+v_motif)+k_motif+v_motif"
    )
    scored_steps: ClassVar[Literal["fixed", "drawn"]] = "drawn"

    vocab_size: int = Field(16, gt=0, description="tokens: keys, values, the padding and the copy prefix")
    k_motif: int = Field(3, gt=0, description="longest key, in tokens")
    v_motif: int = Field(3, gt=0, description="longest value, in tokens")

    @model_validator(mode="after")
    def _motifs_fit(self):
        if self.n_keys < self.k_motif or self.n_values < max(self.v_motif, 2):
            raise ValueError(
                f"vocab_size={self.vocab_size} gives {self.n_keys} key and {self.n_values} value tokens: "
                f"motifs of distinct tokens need at least k_motif={self.k_motif} and max(v_motif, 2)={self.v_motif}"
            )
        return self

    @property
    def n_keys(self) -> int:
        return (self.vocab_size - 2) // 2

    @property
    def n_values(self) -> int:
        return self.vocab_size - 2 - self.n_keys

    @property
    def length(self) -> int:
        return (self.gap + 1) * (self.k_motif + self.v_motif)

    @property
    def input_dim(self) -> int:
        return self.vocab_size

    @property
    def output_dim(self) -> int:
        return self.n_values

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - self.v_motif, self.length - 1  # the value's last v tokens' steps, v <= v_motif

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        B, S, K, M, T = batch_size, self.gap, self.k_motif, self.v_motif, self.length
        keys = jax.random.split(key, 6)
        k_len = jax.random.randint(keys[0], (B, S), 1, K + 1)
        v_len = jax.random.randint(keys[1], (B, S), 1, M + 1)
        k_tok = jnp.argsort(jax.random.uniform(keys[2], (B, S, self.n_keys)), axis=2)[..., :K]  # distinct
        v_tok = self.n_keys + jnp.argsort(jax.random.uniform(keys[3], (B, S, self.n_values)), axis=2)[..., :M]
        # a key that occurred before keeps its first value: the same length and tokens, the lowest slot
        code = jnp.where(jnp.arange(K) < k_len[..., None], k_tok + 1, 0)  # (B, S, K), 0 past the key's end
        same = jnp.all(code[:, :, None, :] == code[:, None, :, :], axis=3)  # (B, S, S)
        first = jnp.argmax(same, axis=2)  # (B, S)
        v_tok = jnp.take_along_axis(v_tok, first[..., None], axis=1)
        v_len = jnp.take_along_axis(v_len, first, axis=1)
        probe = jax.random.randint(keys[4], (B, 1), 0, S)
        p_k_len, p_v_len = (jnp.take_along_axis(x, probe, axis=1)[:, 0] for x in (k_len, v_len))  # (B,)
        p_k_tok, p_v_tok = (jnp.take_along_axis(x, probe[..., None], axis=1)[:, 0] for x in (k_tok, v_tok))

        # the unpadded stream: the pairs, the prefix, the probe's key and value (T + 1 tokens at most)
        pair_tok = jnp.concatenate([k_tok, v_tok], axis=2)  # (B, S, K + M)
        j = jnp.arange(K + M)
        pair_on = jnp.where(j < K, j < k_len[..., None], j - K < v_len[..., None])  # (B, S, K + M)
        pair_at = jnp.where(j < K, j, k_len[..., None] + j - K)  # offset within its pair
        start = jnp.cumsum(k_len + v_len, axis=1) - (k_len + v_len)  # (B, S)
        body = jnp.sum(k_len + v_len, axis=1)  # (B,)
        tail_tok = jnp.concatenate([jnp.full((B, 1), self.vocab_size - 1), p_k_tok, p_v_tok], axis=1)  # (B, 1+K+M)
        i = jnp.arange(1 + K + M)
        tail_on = (i == 0) | ((i >= 1) & (i - 1 < K) & (i - 1 < p_k_len[:, None]))
        tail_on = tail_on | ((i >= 1 + K) & (i - 1 - K < p_v_len[:, None]))
        tail_at = jnp.where(i < 1 + K, i, p_k_len[:, None] + i - K)  # offset after the body
        used = body + 1 + p_k_len + p_v_len  # (B,) tokens in the stream
        pad = (T + 1) - used  # front padding, so that the stream ends at step T (left out)
        at = jnp.concatenate(
            [(pad[:, None, None] + start[..., None] + pair_at).reshape(B, -1), pad[:, None] + body[:, None] + tail_at],
            axis=1,
        )
        on = jnp.concatenate([pair_on.reshape(B, -1), tail_on], axis=1)
        tok = jnp.concatenate([pair_tok.reshape(B, -1), tail_tok], axis=1)
        rows = jnp.arange(B)[:, None]
        stream = jnp.full((B, T + 2), self.vocab_size - 2, jnp.int32)  # step T + 1 takes the unused slots
        stream = stream.at[rows, jnp.where(on, at, T + 1)].set(tok.astype(jnp.int32))
        # the value's tokens are the targets one step before each: the key's last step and the value's own
        value_at = pad[:, None] + body[:, None] + 1 + p_k_len[:, None] + jnp.arange(M) - 1  # (B, M)
        value_on = jnp.arange(M) < p_v_len[:, None]
        where = jnp.where(value_on, value_at, T)  # step T is dropped below
        targets = jnp.zeros((B, T + 1), jnp.int32).at[rows, where].set(p_v_tok - self.n_keys)
        mask = jnp.zeros((B, T + 1), jnp.float32).at[rows, where].set(1.0)
        return Batch(one_hot(stream[:, :T], self.vocab_size), targets[:, :T], mask[:, :T])

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_values)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_values)
