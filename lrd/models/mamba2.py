"""Mamba-2: the SSD layer, a selective state space with one scalar decay per head.

Source: Dao & Gu 2024, "Transformers are SSMs: generalized models and efficient algorithms
through structured state space duality", sec. 7 (the Mamba-2 layer: A a scalar times the
identity per head; B, C and the step size Delta projected from the input in parallel with
it; the reference code, state-spaces/mamba ``mamba2_simple.py`` and ``ssd_minimal.py``).
For H channels u_t split into ``heads`` heads of width P = H / heads, N = ``STATE_DIM``
states, and h (heads, N, P)::

    u_t     = x_t W_u + b_u                                    (H,) the channels, per head (P,)
    B_t, C_t = x_t W_B, x_t W_C                                (N,) shared by the heads (one group)
    Delta_t = softplus(x_t W_dt + b_dt)                        one per head
    a_t     = exp(Delta_t A),  A = -exp(A_log)                 one scalar per head, in (0, 1)
    h_t     = a_t h_{t-1} + Delta_t B_t u_t^T                  (heads, N, P)
    y_t     = C_t^T h_t + D u_t                                (H,)

Initialisation (Mamba-2's): A uniform on [1, 16] (A_log = log A); b_dt = softplus^-1(dt),
dt log-uniform on [0.001, 0.1]; D = 1; W_u, W_B, W_C, W_dt LeCun normal; b_u = 0. N = 16.
``eigen_range = "[-1,1]"`` (Grazzi et al. 2024): a_t = 2 exp(Delta_t A) - 1 in (-1, 1).

Conventions that differ: the cell is the SSD recurrence alone, as ``s6`` is Mamba's: no
short convolution, no SiLU gate branch, no group norm, no output projection; B and C are
projected from the layer input x (as Mamba-2, not from u as S6).

State and probe: h (heads, N, P) flattened, width N H (``state_size``); the perturbation
joins h_t the moment it is computed (the input term). The parallel form is the
scalar-decay scan (``linear_recurrence`` with a broadcast per head), which computes the
same states as the SSD's chunked matrix form.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, register
from lrd.models.s6 import dt_bias_init
from lrd.models.scan import linear_recurrence

STATE_DIM = 16  # N, states per head (Mamba-2's d_state is 64 to 128; 16 as the S6 cell here)
A_MIN, A_MAX = 1.0, 16.0  # Mamba-2's A_init_range


def a_log_init(key, shape, dtype=jnp.float32):
    """log A, A uniform on [A_MIN, A_MAX] (Mamba-2's A_log; Gated DeltaNet's too)."""
    return jnp.log(jax.random.uniform(key, shape, dtype, A_MIN, A_MAX))


@register
class Mamba2Cell(Cell):
    heads: int = 1
    eigen_range: Literal["[0,1]", "[-1,1]"] = "[0,1]"

    cell_name: ClassVar[str] = "mamba2"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "u = x W_u + b_u; B, C = x W_B, x W_C; Delta = softplus(x W_dt + b_dt); a = exp(-Delta exp(A_log)) "
        "per head; h' = a h + Delta B u^T (h: N x P per head, N = 16); y = C^T h' + D u"
    )
    source: ClassVar[str] = "Dao & Gu 2024 (Mamba-2 SSD layer, without conv/gate/norm/out_proj)"
    recurrence_params: ClassVar[tuple[str, ...]] = ("A_log", "W_dt", "b_dt")

    @classmethod
    def state_size(cls, hidden: int, **_options) -> int:
        return hidden * STATE_DIM  # h (heads, N, P), flattened: N H whatever the heads

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        H, N, n = self.hidden, STATE_DIM, self.heads
        lecun = nn.initializers.lecun_normal()
        return {
            "W_u": self.param("W_u", lecun, (input_dim, H)),
            "b_u": self.param("b_u", nn.initializers.zeros, (H,)),
            "W_B": self.param("W_B", lecun, (input_dim, N)),
            "W_C": self.param("W_C", lecun, (input_dim, N)),
            "W_dt": self.param("W_dt", lecun, (input_dim, n)),
            "b_dt": self.param("b_dt", dt_bias_init, (n,)),
            "A_log": self.param("A_log", a_log_init, (n,)),
            "D": self.param("D", nn.initializers.ones, (n,)),
        }

    def _terms(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, dict]:
        """For x (..., D): decay a (..., heads, 1, 1), input term (..., heads, N, P), C (..., N), u (..., heads, P)."""
        p = self.weights(x.shape[-1])
        n, P = self.heads, self.hidden // self.heads
        u = (x @ p["W_u"] + p["b_u"]).reshape(*x.shape[:-1], n, P)
        B, C = x @ p["W_B"], x @ p["W_C"]  # (..., N)
        delta = jax.nn.softplus(x @ p["W_dt"] + p["b_dt"])  # (..., heads)
        a = jnp.exp(-delta * jnp.exp(p["A_log"]))
        if self.eigen_range == "[-1,1]":
            a = 2.0 * a - 1.0
        drive = delta[..., None, None] * B[..., None, :, None] * u[..., None, :]  # (..., heads, N, P)
        return a[..., None, None], drive, C, u, p

    def _read(self, h: jax.Array, C: jax.Array, u: jax.Array, p: dict) -> jax.Array:
        y = jnp.einsum("...hnp,...n->...hp", h, C) + p["D"][:, None] * u  # (..., heads, P)
        return y.reshape(*y.shape[:-2], self.hidden)

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (state,) = carry  # (B, N H)
        a, drive, C, u, p = self._terms(x)
        h = a * state.reshape(drive.shape) + drive  # (B, heads, N, P)
        if eps is not None:
            h = h + eps["h"].reshape(h.shape)
        return (h.reshape(state.shape),), self._read(h, C, u, p)

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, N H)} -> y (B, T, H), parallel in time."""
        a, drive, C, u, p = self._terms(inputs)  # (B, T, heads, 1, 1), (B, T, heads, N, P), ...
        if eps is not None:
            drive = drive + eps["h"].reshape(drive.shape)
        h = linear_recurrence(jnp.broadcast_to(a, drive.shape), drive, reverse)
        return self._read(h, C, u, p)
