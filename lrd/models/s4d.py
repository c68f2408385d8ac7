"""S4D: a diagonal linear time-invariant state-space layer, parallel in time.

Source: Gu, Gupta, Goel & Re 2022, "On the parameterization and initialization of
diagonal state space models" (S4D), its standalone code (state-spaces/s4,
``models/s4/s4d.py``), and the zero-order-hold step of S5 (Smith, Warrington &
Linderman 2023, ``discretize_zoh``). For H channels and M = ``MODES`` complex modes each::

    u_t    = x_t W_u + b_u                                (H,) the channels (input projection)
    A      = -exp(log_A_real) + i A_imag                  (H, M) complex, diagonal
    Delta  = exp(log_dt)                                  (H,)
    A_bar  = exp(Delta A),  B_bar = (A_bar - 1) / A       zero-order hold, B = 1 (as s4d.py)
    h_t    = A_bar * h_{t-1} + B_bar u_t                  (H, M) complex
    y_t    = 2 Re(sum_m C h_t) + D * u_t                  (H,); the 2 counts the conjugate modes

Initialisation (S4D-Lin, the paper's and s4d.py's): A = -1/2 + i pi m, m = 0..M-1;
log_dt uniform on [log 0.001, log 0.1]; C complex standard normal (real and imaginary
parts N(0, 1/2)); D standard normal; W_u LeCun normal, b_u = 0. M = 8 (state size
N = 16 real numbers per channel counting the conjugates, as s6's 16).

Conventions that differ: s4d.py computes the convolution kernel with C (A_bar - 1)/A
and convolves by FFT; the same outputs come from the recurrence above with B_bar on
the input side, computed here with an associative scan. The S4 block's GELU,
output linear layer, dropout and residual are not part of the cell; the input
projection u stands in for the block's input width.

State and probe: h is complex (H, M); it is stored and probed as the real vector
(Re h, Im h) flattened, width 2 H M (``state_size``), and the perturbation joins the
input term B_bar u_t (the probed norm is over both parts, as for the LRU).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, register
from lrd.models.scan import linear_recurrence

MODES = 8  # M, complex modes per channel
DT_MIN, DT_MAX = 0.001, 0.1


@register
class S4DCell(Cell):
    cell_name: ClassVar[str] = "s4d"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "u = x W_u + b_u; A = -exp(log_A_real) + i A_imag; A_bar = exp(exp(log_dt) A); "
        "h' = A_bar h + (A_bar - 1)/A u (h: H x 8 complex); y = 2 Re(sum C h') + D u"
    )
    source: ClassVar[str] = "Gu et al. 2022 (S4D-Lin, ZOH as S5), without the block's GELU/output layer"
    # A and the step size: S4/S4D train them at a smaller rate (lr 0.001, no weight decay)
    recurrence_params: ClassVar[tuple[str, ...]] = ("log_dt", "log_A_real", "A_imag")

    @classmethod
    def state_size(cls, hidden: int, **_options) -> int:
        return 2 * hidden * MODES  # (Re h, Im h), each (H, M) flattened

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        H, M = self.hidden, MODES

        def normal(std):
            return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)

        def log_dt_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))

        return {
            "W_u": self.param("W_u", nn.initializers.lecun_normal(), (input_dim, H)),
            "b_u": self.param("b_u", nn.initializers.zeros, (H,)),
            "log_dt": self.param("log_dt", log_dt_init, (H,)),
            "log_A_real": self.param("log_A_real", nn.initializers.constant(math.log(0.5)), (H, M)),
            "A_imag": self.param("A_imag", lambda key, shape: jnp.broadcast_to(math.pi * jnp.arange(M), shape), (H, M)),
            "C_re": self.param("C_re", normal(math.sqrt(0.5)), (H, M)),
            "C_im": self.param("C_im", normal(math.sqrt(0.5)), (H, M)),
            "D": self.param("D", normal(1.0), (H,)),
        }

    def _terms(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
        """For x (..., D): A_bar (H, M), input term B_bar u (..., H, M) complex, u (..., H)."""
        p = self.weights(x.shape[-1])
        u = x @ p["W_u"] + p["b_u"]  # (..., H)
        A = -jnp.exp(p["log_A_real"]) + 1j * p["A_imag"]  # (H, M)
        A_bar = jnp.exp(jnp.exp(p["log_dt"])[:, None] * A)  # (H, M)
        drive = ((A_bar - 1.0) / A) * u[..., None]  # (..., H, M)
        return A_bar, drive, u, p

    @staticmethod
    def _output(p: dict, h: jax.Array, u: jax.Array) -> jax.Array:
        return 2.0 * jnp.sum(h.real * p["C_re"] - h.imag * p["C_im"], axis=-1) + p["D"] * u  # 2 Re(C h) + D u

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (state,) = carry  # (B, 2 H M)
        A_bar, drive, u, p = self._terms(x)  # drive (B, H, M)
        re, im = jnp.split(state, 2, axis=-1)
        h = A_bar * (re + 1j * im).reshape(drive.shape) + drive
        if eps is not None:
            e_re, e_im = jnp.split(eps["h"], 2, axis=-1)
            h = h + (e_re + 1j * e_im).reshape(h.shape)
        flat = h.reshape(h.shape[0], -1)  # (B, H M)
        return (jnp.concatenate([flat.real, flat.imag], axis=-1),), self._output(p, h, u)

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, 2 H M)} -> y (B, T, H), parallel in time."""
        A_bar, drive, u, p = self._terms(inputs)  # drive (B, T, H, M)
        if eps is not None:
            e_re, e_im = jnp.split(eps["h"], 2, axis=-1)
            drive = drive + (e_re + 1j * e_im).reshape(drive.shape)
        h = linear_recurrence(jnp.broadcast_to(A_bar, drive.shape), drive, reverse)  # (B, T, H, M)
        return self._output(p, h, u)  # (B, T, H)
