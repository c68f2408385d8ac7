"""minLSTM: an LSTM whose gates and candidate see only the input, parallel in time.

Source: Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs all we needed?",
sec. 3.2 and appendix (log-space form). Equations::

    f_t = sigmoid(x_t W_f + b_f),  i_t = sigmoid(x_t W_i + b_i)
    f'_t = f_t / (f_t + i_t),      i'_t = i_t / (f_t + i_t)      (time-independent scale)
    c_t = x_t W_h + b_h            (log_space = False)
    c_t = g(x_t W_h + b_h)         (log_space = True, the default; g as in ``lrd.models.mingru``)
    h_t = f'_t h_{t-1} + i'_t c_t

In log space, with d = softplus(-k_f) - softplus(-k_i): log f' = -softplus(d),
log i' = -softplus(-d). There is no cell state c separate from h and no output gate
(the paper drops both); the output is h. Conventions as for minGRU: h_0 = 0, W LeCun
normal, b = 0 (so f' = i' = 1/2 at initialisation), no forget-gate bias option; the
perturbation joins the input term of h_t (see ``lrd.models.mingru``).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, perturbed, register
from lrd.models.mingru import add_perturbation, g, log_g
from lrd.models.scan import linear_recurrence, log_linear_recurrence


@register
class MinLSTMCell(Cell):
    log_space: bool = True

    cell_name: ClassVar[str] = "minlstm"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "f = sigmoid(x W_f + b_f); i = sigmoid(x W_i + b_i); c = g(x W_h + b_h) (log_space; else x W_h + b_h); "
        "h' = f/(f+i) h + i/(f+i) c"
    )
    source: ClassVar[str] = "Feng et al. 2024 (minLSTM), log-space form by default"

    @nn.compact
    def weights(self, input_dim: int) -> tuple[jax.Array, jax.Array]:
        """W (D, 3H) with blocks [f | i | h], b (3H,)."""
        W = self.param("W", nn.initializers.lecun_normal(), (input_dim, 3 * self.hidden))
        b = self.param("b", nn.initializers.zeros, (3 * self.hidden,))
        return W, b

    def _preactivations(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        W, b = self.weights(x.shape[-1])
        k_f, k_i, v = jnp.split(x @ W + b, 3, axis=-1)  # (..., H) each
        return k_f, k_i, v

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        k_f, k_i, v = self._preactivations(x)  # (B, H)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        self.sow("intermediates", "forget", f)  # gate statistics (lrd.dynamics)
        self.sow("intermediates", "input", i)
        c = g(v) if self.log_space else v
        h = perturbed(f / (f + i) * h + i / (f + i) * c, eps, "h")
        return (h,), h

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, H)} -> h (B, T, H), parallel in time."""
        k_f, k_i, v = self._preactivations(inputs)  # (B, T, H)
        if self.log_space:
            d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
            log_f, log_i = -jax.nn.softplus(d), -jax.nn.softplus(-d)
            h = log_linear_recurrence(log_f, log_i + log_g(v), reverse)
            return add_perturbation(h, jnp.exp(log_f), eps, reverse)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        b = i / (f + i) * v if eps is None else i / (f + i) * v + eps["h"]
        return linear_recurrence(f / (f + i), b, reverse)
