"""State tracking: the word problem of a finite group.

Sources: Merrill, Petty & Sabharwal 2024 ("The illusion of state in state-space models"):
the running product of a sequence of group elements, which needs a state that tracks
the group, where S5 (not solvable) separates recurrences from log-depth models;
Grazzi et al. 2024 ("Unlocking state-tracking in linear RNNs through negative
eigenvalues"): diagonal linear recurrences with eigenvalues in [0, 1] cannot learn
parity (Z2), those with eigenvalues in [-1, 1] can; Deletang et al. 2023 (modular
arithmetic, parity) for the cyclic groups.

Groups (``group``): ``z2`` (parity), ``cyclic`` (Z_m, ``modulus`` m), ``s3``, ``s5``
(all permutations of 3 or 5 points) and ``a5`` (the even permutations of 5 points),
each as permutations of its points; the elements are numbered in lexicographic order
of their permutations (the identity is 0).

Convention: one-hot inputs of the |G| elements and a cue (|G| + 1 inputs). A sequence
is ``gap`` i.i.d. uniform elements g_1 ... g_gap then the cue, length gap + 1. The
product is composed left to right, p_t = p_(t-1) g_t (as permutations: apply p_(t-1),
then g_t). ``target = "final"``: the product p_gap is the target at the cue, the only
scored step; ``"every"``: the prefix product p_t is the target at every element's
position t and the total at the cue (all gap + 1 steps scored). ``gap`` is the number
of elements: the first lies gap steps before the cue. A drawn example, ``z2``,
gap = 6, target = "every" (``?`` the cue)::

    inputs : 1 0 1 1 0 1 ?
    targets: 1 1 0 1 1 0 0
    mask   : 1 1 1 1 1 1 1

Memoryless baseline: a prefix product of one or more independent uniform elements is
uniform over the group (multiplying by a fixed element permutes the group), so the
best output that sees only t is uniform over |G| at every scored step: cross-entropy
ln |G| and accuracy 1/|G|.
"""

from __future__ import annotations

import itertools
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, one_hot, register, uniform_logits

GROUPS = ("z2", "cyclic", "s3", "s5", "a5")


def group_elements(group: str, modulus: int = 2) -> np.ndarray:
    """The group's elements as permutations, (|G|, points), in lexicographic order (the identity first)."""
    if group in ("z2", "cyclic"):
        m = 2 if group == "z2" else modulus
        return np.array([[(i + k) % m for i in range(m)] for k in range(m)])  # rotation by k
    points = 3 if group == "s3" else 5
    perms = np.array(list(itertools.permutations(range(points))))
    if group == "a5":
        inversions = [sum(p[i] > p[j] for i in range(points) for j in range(i + 1, points)) for p in perms]
        perms = perms[np.array(inversions) % 2 == 0]
    return perms


def multiplication_table(elements: np.ndarray) -> np.ndarray:
    """table[a, b] = the index of a then b: (a b)(i) = b(a(i)), the composition the products use."""
    index = {tuple(p): k for k, p in enumerate(elements)}
    return np.array([[index[tuple(b[a])] for b in elements] for a in elements])


@register
class StateTracking(Task):
    name: ClassVar[str] = "state_tracking"
    kind: ClassVar[Literal["classification", "regression"]] = "classification"
    source: ClassVar[str] = "Merrill et al. 2024 (illusion of state); Grazzi et al. 2024 (negative eigenvalues)"
    convention: ClassVar[str] = (
        "gap uniform group elements, then a cue; target the running product (left to right) at the cue "
        "(final) or at every step (every); length gap+1"
    )

    group: Literal["z2", "cyclic", "s3", "s5", "a5"] = Field("z2", description="the group whose word problem")
    modulus: int = Field(2, gt=1, description="m of the cyclic group Z_m (group = 'cyclic' only)")
    target: Literal["final", "every"] = Field("final", description="score the product at the cue or every step")

    @model_validator(mode="after")
    def _modulus_only_for_cyclic(self):
        if self.group != "cyclic" and self.modulus != 2:
            raise ValueError(f"modulus: only the cyclic group has one (group is {self.group!r})")
        return self

    @property
    def order(self) -> int:
        """|G|, the number of elements."""
        return len(group_elements(self.group, self.modulus))

    @property
    def length(self) -> int:
        return self.gap + 1

    @property
    def input_dim(self) -> int:
        return self.order + 1  # the elements and the cue

    @property
    def output_dim(self) -> int:
        return self.order

    @property
    def scored_span(self) -> tuple[int, int]:
        return (0 if self.target == "every" else self.length - 1), self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        table = jnp.asarray(multiplication_table(group_elements(self.group, self.modulus)), jnp.int32)
        elements = jax.random.randint(key, (batch_size, self.gap), 0, self.order)  # (B, gap)

        def step(product, element):  # (B,), (B,)
            product = table[product, element]
            return product, product

        identity = jnp.zeros((batch_size,), jnp.int32)
        final, prefix = jax.lax.scan(step, identity, elements.T)  # (B,), (gap, B)
        cue = jnp.full((batch_size, 1), self.order, jnp.int32)
        tokens = jnp.concatenate([elements, cue], axis=1)  # (B, T)
        if self.target == "every":
            values = jnp.concatenate([prefix.T, final[:, None]], axis=1)  # (B, gap + 1)
        else:
            values = final[:, None]
        return Batch(one_hot(tokens, self.input_dim), self.scored_targets(values), self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        return Baseline.uniform(self.order)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return uniform_logits(batch, self.order)
