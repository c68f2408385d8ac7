"""S6: the selective state-space layer of Mamba, parallel in time.

Source: Gu & Dao 2023, "Mamba: linear-time sequence modeling with selective state
spaces", sec. 3.2, Algorithm 2, and the reference code (state-spaces/mamba,
``mamba_simple.py``: x_proj, dt_proj, A_log, D, the initialisations below). For H
channels u_t (H,) and N = ``STATE_DIM`` states per channel::

    u_t     = x_t W_u + b_u                                   the channels (input projection)
    Delta_t = softplus(u_t W_x[:, :R] W_dt + b_dt)            (H,)  input-dependent step size
    B_t     = u_t W_x[:, R:R+N],  C_t = u_t W_x[:, R+N:]      (N,)  input-dependent B and C
    A       = -exp(A_log)                                     (H, N)
    h_t     = exp(Delta_t A) * h_{t-1} + (Delta_t B_t) u_t    (H, N): ZOH for A, Euler for B (as Mamba)
    y_t     = h_t C_t + D * u_t                               (H,)

Initialisation (Mamba's): A_log = log(1..N) per channel (S4D-real, A = -(1..N));
b_dt = softplus^-1(dt) with dt log-uniform on [0.001, 0.1]; W_dt uniform on
+-R^-1/2 with R = ceil(H / 16); D = 1; W_u, W_x LeCun normal (Mamba: PyTorch's
nn.Linear defaults), b_u = 0. N = 16 (Mamba's d_state).

Conventions that differ: the cell is the S6 layer alone, with a linear input
projection u = x W_u + b_u where Mamba's block has in_proj, a causal depthwise
convolution, SiLU, a SiLU-gated branch and out_proj (none of these here); the
output y is the cell's output, h its state.

``eigen_range = "[-1,1]"`` (Grazzi et al. 2024, "Unlocking state-tracking in linear RNNs
through negative eigenvalues", their Mamba variant): the decay 2 exp(Delta_t A) - 1 in
(-1, 1) in place of exp(Delta_t A) in (0, 1); the default "[0,1]" is Mamba's.

State and probe: h (H, N) per sequence is stored and probed flattened, width H N
(``state_size``); the perturbation joins the input term (Delta_t B_t) u_t, so it is
added to h_t the moment h_t is computed.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, register
from lrd.models.scan import linear_recurrence

STATE_DIM = 16  # N, states per channel (Mamba's d_state)
DT_MIN, DT_MAX = 0.001, 0.1


def dt_bias_init(key, shape, dtype=jnp.float32):
    """softplus^-1(dt), dt log-uniform on [DT_MIN, DT_MAX] (Mamba's dt_bias; Mamba-2 and Gated DeltaNet use it too)."""
    log_dt = jax.random.uniform(key, shape, dtype, math.log(DT_MIN), math.log(DT_MAX))
    dt = jnp.maximum(jnp.exp(log_dt), 1e-4)
    return dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)


@register
class S6Cell(Cell):
    eigen_range: Literal["[0,1]", "[-1,1]"] = "[0,1]"

    cell_name: ClassVar[str] = "s6"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "u = x W_u + b_u; Delta = softplus(u W_x[:R] W_dt + b_dt); B, C = u W_x[R:R+N], u W_x[R+N:]; "
        "h' = exp(Delta A) h + Delta B u (h: H x N, N = 16); y = h' C + D u; A = -exp(A_log)"
    )
    source: ClassVar[str] = "Gu & Dao 2023 (Mamba S6 layer, without conv/gate/out_proj)"
    # A and the step size, the group S4/S5 train at a smaller rate (Mamba itself trains them at the common rate)
    recurrence_params: ClassVar[tuple[str, ...]] = ("A_log", "W_dt", "b_dt")

    @classmethod
    def state_size(cls, hidden: int, **_options) -> int:
        return hidden * STATE_DIM  # h (H, N), flattened

    @property
    def rank(self) -> int:
        return math.ceil(self.hidden / 16)

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        H, N, R = self.hidden, STATE_DIM, self.rank

        def a_log_init(key, shape, dtype=jnp.float32):
            return jnp.log(jnp.broadcast_to(jnp.arange(1, N + 1, dtype=dtype), shape))

        def dt_weight_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -(R**-0.5), R**-0.5)

        return {
            "W_u": self.param("W_u", nn.initializers.lecun_normal(), (input_dim, H)),
            "b_u": self.param("b_u", nn.initializers.zeros, (H,)),
            "W_x": self.param("W_x", nn.initializers.lecun_normal(), (H, R + 2 * N)),
            "W_dt": self.param("W_dt", dt_weight_init, (R, H)),
            "b_dt": self.param("b_dt", dt_bias_init, (H,)),
            "A_log": self.param("A_log", a_log_init, (H, N)),
            "D": self.param("D", nn.initializers.ones, (H,)),
        }

    def _terms(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, dict]:
        """For x (..., D): decay exp(Delta A) (..., H, N), input term (..., H, N), C (..., N), u (..., H)."""
        p = self.weights(x.shape[-1])
        N, R = STATE_DIM, self.rank
        u = x @ p["W_u"] + p["b_u"]  # (..., H)
        proj = u @ p["W_x"]  # (..., R + 2N)
        delta = jax.nn.softplus(proj[..., :R] @ p["W_dt"] + p["b_dt"])  # (..., H)
        B, C = proj[..., R : R + N], proj[..., R + N :]  # (..., N) each
        decay = jnp.exp(delta[..., None] * -jnp.exp(p["A_log"]))  # (..., H, N), in (0, 1)
        if self.eigen_range == "[-1,1]":  # Grazzi et al. 2024: 2 exp(Delta A) - 1, in (-1, 1)
            decay = 2.0 * decay - 1.0
        drive = (delta * u)[..., None] * B[..., None, :]  # (..., H, N)
        return decay, drive, C, u, p

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (state,) = carry  # (B, H N)
        decay, drive, C, u, p = self._terms(x)
        h = decay * state.reshape(drive.shape) + drive  # (B, H, N)
        if eps is not None:
            h = h + eps["h"].reshape(h.shape)
        y = jnp.einsum("bhn,bn->bh", h, C) + p["D"] * u  # (B, H)
        return (h.reshape(state.shape),), y

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, H N)} -> y (B, T, H), parallel in time."""
        decay, drive, C, u, p = self._terms(inputs)  # (B, T, H, N), (B, T, H, N), (B, T, N), (B, T, H)
        if eps is not None:
            drive = drive + eps["h"].reshape(drive.shape)
        h = linear_recurrence(decay, drive, reverse)  # (B, T, H, N)
        return jnp.einsum("bthn,btn->bth", h, C) + p["D"] * u  # (B, T, H)
