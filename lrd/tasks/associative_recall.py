"""Associative recall, single- or multi-query.

Sources: Ba, Hinton, Mnih, Leibo & Ionescu 2016, "Using fast weights to attend
to the recent past", sec. 4.1 (associative retrieval: "c9k8j3f1??c" -> 9, the value stored with key c), and
its multi-query form MQAR of Arora et al. 2023, "Zoology" (HazyResearch/zoology,
``zoology/data/multiquery_ar.py``): key-value pairs, then queries, each answered
by the value stored with its key.

Convention here: tokens 0..n_keys-1 are keys, n_keys..n_keys+n_values-1 the
values and n_keys+n_values the blank. A sequence is

    n_pairs pairs "key value" (keys distinct, uniform without replacement;
    values i.i.d. uniform over n_values), then ``gap`` blanks, then n_queries
    query steps, each one of the stored keys (distinct, random order)

and the target at each query step is the index (0..n_values-1) of the value
stored with that key; those n_queries steps are the scored ones (the mask is
1 there only, and targets are 0 elsewhere). Length 2 n_pairs + gap + n_queries.
``n_queries = 1`` is Ba et al.'s single query (their "??" separator is the
blank filler here); ``n_queries = n_pairs`` queries every key once, as MQAR
(whose queries are spread among noise tokens at random distances instead).

``gap`` is the number of blank steps between the last pair and the first
query, so every query comes at least gap + 1 steps after the value it asks
for (gap + 2 after its key) and at most gap + 2 n_pairs + n_queries - 2. A drawn example with gap=3,
n_pairs=3, n_queries=2, n_keys=n_values=8 (keys k0..k7, values v0..v7, ``_``
blank; length 11)::

    inputs : k0 v5 k7 v4 k1 v0  _  _  _ k7 k0
    targets:  .  .  .  .  .  .  .  .  . v4 v5
    mask   :  0  0  0  0  0  0  0  0  0  1  1

Memoryless baseline: every stored value is uniform over n_values and
independent of the step t (keys and query order carry no information about
it without memory), so the best output that sees only t is uniform:
cross-entropy ln(n_values), accuracy 1/n_values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits


@register
class AssociativeRecall(Task):
    name: ClassVar[str] = "associative_recall"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Ba et al. 2016 (fast weights) associative retrieval; Arora et al. 2023 (Zoology) MQAR"
    convention: ClassVar[str] = (
        "n_pairs key-value pairs (distinct keys), gap blanks, n_queries distinct stored keys; "
        "predict each queried key's value; length 2*n_pairs+gap+n_queries"
    )

    n_pairs: int = Field(8, gt=0, description="key-value pairs to store")
    n_queries: int = Field(8, gt=0, description="queried keys (distinct, among the stored ones)")
    n_keys: int = Field(16, gt=0, description="key vocabulary size")
    n_values: int = Field(16, gt=1, description="value vocabulary size (the classes)")

    @model_validator(mode="after")
    def _enough_keys(self):
        if self.n_pairs > self.n_keys:
            raise ValueError(f"n_pairs={self.n_pairs} distinct keys need n_keys >= n_pairs (got {self.n_keys})")
        if self.n_queries > self.n_pairs:
            raise ValueError(
                f"n_queries={self.n_queries} distinct queries need n_pairs >= n_queries (got {self.n_pairs})"
            )
        return self

    @property
    def length(self) -> int:
        return 2 * self.n_pairs + self.gap + self.n_queries

    @property
    def blank(self) -> int:
        return self.n_keys + self.n_values

    @property
    def input_dim(self) -> int:
        return self.n_keys + self.n_values + 1  # keys, values, blank

    @property
    def output_dim(self) -> int:
        return self.n_values

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - self.n_queries, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        P, Q = self.n_pairs, self.n_queries
        k_keys, k_values, k_queries = jax.random.split(key, 3)
        keys = jnp.argsort(jax.random.uniform(k_keys, (batch_size, self.n_keys)), axis=1)[:, :P]  # (B, P) distinct
        values = jax.random.randint(k_values, (batch_size, P), 0, self.n_values)  # (B, P)
        asked = jnp.argsort(jax.random.uniform(k_queries, (batch_size, P)), axis=1)[:, :Q]  # (B, Q) pair indices
        queries = jnp.take_along_axis(keys, asked, axis=1)  # (B, Q)
        answers = jnp.take_along_axis(values, asked, axis=1)  # (B, Q)
        pairs = jnp.stack([keys, self.n_keys + values], axis=2).reshape(batch_size, 2 * P)  # (B, 2P): k v k v ...
        filler = jnp.full((batch_size, self.gap), self.blank, jnp.int32)
        tokens = jnp.concatenate([pairs, filler, queries], axis=1)  # (B, T)
        targets = self.scored_targets(answers)  # (B, T)
        return Batch(one_hot(tokens, self.input_dim), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.n_values)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.n_values)
