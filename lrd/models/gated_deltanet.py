"""Gated DeltaNet: the delta rule with a Mamba-2 style scalar decay per head.

Source: Yang, Kautz & Hatamizadeh 2024, "Gated delta networks: improving Mamba2 with delta
rule" (eq. 10 and sec. 3; the reference code, NVlabs/GatedDeltaNet and fla-org's
``gated_delta_rule``). The DeltaNet cell (``lrd.models.deltanet``: the same q, k, v, beta and
readout) with its transition scaled by a gate alpha_t in (0, 1) per head, the decay of
Mamba-2::

    alpha_t = exp(-exp(A_log) softplus(x_t W_a + b_dt))                    one per head
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    y_t = d^-1/2 S_t^T q_t

Initialisation (Mamba-2's, as the reference code): A = exp(A_log) uniform on [1, 16];
b_dt = softplus^-1(dt) with dt log-uniform on [0.001, 0.1]; W_a LeCun normal.
``eigen_range = "[-1,1]"`` doubles beta as for DeltaNet (Grazzi et al. 2024): the
transition's eigenvalues alpha_t and alpha_t (1 - beta_t) then lie in [-1, 1].

Conventions that differ, state and probe, parallel form: as ``deltanet``.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import register
from lrd.models.deltanet import DeltaNetCell
from lrd.models.mamba2 import a_log_init
from lrd.models.s6 import dt_bias_init


@register
class GatedDeltaNetCell(DeltaNetCell):
    cell_name: ClassVar[str] = "gated_deltanet"
    equations: ClassVar[str] = (
        "q, k, v, beta as deltanet; alpha = exp(-exp(A_log) softplus(x W_a + b_dt)); "
        "S' = alpha (I - beta k k^T) S + beta k v^T (S: d x d per head); y = d^-1/2 S'^T q"
    )
    source: ClassVar[str] = "Yang, Kautz & Hatamizadeh 2024 (Gated DeltaNet; no conv/norm/out_proj)"
    recurrence_params: ClassVar[tuple[str, ...]] = ("W_beta", "A_log", "W_a", "b_dt")

    def extra_weights(self, input_dim: int) -> dict[str, jax.Array]:
        """W_a (D, heads), b_dt (heads,), A_log (heads,)."""
        n = self.heads
        return {
            "W_a": self.param("W_a", nn.initializers.lecun_normal(), (input_dim, n)),
            "b_dt": self.param("b_dt", dt_bias_init, (n,)),
            "A_log": self.param("A_log", a_log_init, (n,)),
        }

    def decay(self, p: dict, x: jax.Array) -> jax.Array:
        """alpha (..., heads) in (0, 1)."""
        return jnp.exp(-jnp.exp(p["A_log"]) * jax.nn.softplus(x @ p["W_a"] + p["b_dt"]))

    def transition(self, p: dict, x: jax.Array, k: jax.Array, beta: jax.Array) -> jax.Array:
        return self.decay(p, x)[..., None, None] * super().transition(p, x, k, beta)

    def transitioned(self, p: dict, x: jax.Array, k: jax.Array, beta: jax.Array, S: jax.Array) -> jax.Array:
        return self.decay(p, x)[..., None, None] * super().transitioned(p, x, k, beta, S)
