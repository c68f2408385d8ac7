"""minGRU: a GRU whose gate and candidate see only the input, parallel in time.

Source: Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs all we needed?",
sec. 3.1 and appendix (log-space form). Equations::

    z_t = sigmoid(x_t W_z + b_z)
    c_t = x_t W_h + b_h                       (log_space = False: the paper's plain form)
    c_t = g(x_t W_h + b_h)                    (log_space = True, the default: the form the paper trains)
    h_t = (1 - z_t) h_{t-1} + z_t c_t

with g(v) = v + 1/2 for v >= 0 and sigmoid(v) for v < 0, which keeps the candidate
positive so that the recurrence can be computed in log space:
log h_t = logaddexp(log(1 - z_t) + log h_{t-1}, log z_t + log g(.)), with
log z = -softplus(-k), log(1 - z) = -softplus(k) (``lrd.models.scan``). Both forms
train parallel in time (``sequence``); ``__call__`` is the same step, for ``lax.scan``.

Conventions that differ: the paper's z weighs the *new* candidate, while lrd's GRU z
weighs the old state (h' = z h + (1-z) n). h_0 = 0 here (the paper's code starts from
a given h_0, g(h_0) in log space); the log-space recurrence then starts from
log h_0 = -inf, i.e. h_1 = z_1 c_1. Initialisation: W LeCun normal, b = 0 (the paper
uses PyTorch's nn.Linear defaults). The output is h itself (no projection); the
paper's full model adds convolutions, MLPs and normalisation between layers, lrd's
stack has none of those.

Probe: the perturbation joins b_t = z_t c_t, so it is added to h_t the moment h_t is
computed and later states see it. In log space, where b_t must stay positive, it is
carried by a second, linear-space scan of the same a_t (h is linear in b).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, perturbed, register
from lrd.models.scan import linear_recurrence, log_linear_recurrence


def g(v: jax.Array) -> jax.Array:
    """Feng et al. 2024's positive activation: v + 1/2 for v >= 0, sigmoid(v) below."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def log_g(v: jax.Array) -> jax.Array:
    """log g(v), computed without forming g(v) for v < 0."""
    return jnp.where(v >= 0, jnp.log(jnp.maximum(v, 0.0) + 0.5), -jax.nn.softplus(-v))


def add_perturbation(h: jax.Array, a: jax.Array, eps: Eps, reverse: bool) -> jax.Array:
    """h plus the states of h_t = a_t h_{t-1} + eps_t: where eps joins b_t, by linearity."""
    return h if eps is None else h + linear_recurrence(a, eps["h"], reverse)


@register
class MinGRUCell(Cell):
    log_space: bool = True

    cell_name: ClassVar[str] = "mingru"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "z = sigmoid(x W_z + b_z); c = g(x W_h + b_h) (log_space; else c = x W_h + b_h); h' = (1 - z) h + z c"
    )
    source: ClassVar[str] = "Feng et al. 2024 (minGRU), log-space form by default"

    @nn.compact
    def weights(self, input_dim: int) -> tuple[jax.Array, jax.Array]:
        """W (D, 2H) with blocks [z | h], b (2H,)."""
        W = self.param("W", nn.initializers.lecun_normal(), (input_dim, 2 * self.hidden))
        b = self.param("b", nn.initializers.zeros, (2 * self.hidden,))
        return W, b

    def _gate_and_candidate(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        W, b = self.weights(x.shape[-1])
        k, v = jnp.split(x @ W + b, 2, axis=-1)  # (..., H) each
        return k, v

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        k, v = self._gate_and_candidate(x)  # (B, H)
        z = jax.nn.sigmoid(k)
        self.sow("intermediates", "update", z)  # the paper's z: the weight of the new candidate (lrd.dynamics)
        c = g(v) if self.log_space else v
        h = perturbed((1.0 - z) * h + z * c, eps, "h")
        return (h,), h

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, H)} -> h (B, T, H), parallel in time."""
        k, v = self._gate_and_candidate(inputs)  # (B, T, H)
        if self.log_space:
            log_a = -jax.nn.softplus(k)  # log(1 - z)
            h = log_linear_recurrence(log_a, -jax.nn.softplus(-k) + log_g(v), reverse)  # log z + log c
            return add_perturbation(h, jnp.exp(log_a), eps, reverse)
        z = jax.nn.sigmoid(k)
        b = z * v if eps is None else z * v + eps["h"]
        return linear_recurrence(1.0 - z, b, reverse)
