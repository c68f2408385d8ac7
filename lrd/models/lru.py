"""LRU: the Linear Recurrent Unit, a complex diagonal linear recurrence, parallel in time.

Source: Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023, "Resurrecting
recurrent neural networks for long sequences", sec. 3 and appendix A (checked against
NicolasZucchet/minimal-LRU, ``lru/model.py``). Equations, for state width N = hidden::

    lambda = exp(-exp(nu_log) + i exp(theta_log))         (N,) complex, |lambda| < 1
    gamma  = exp(gamma_log)                               (N,) the normalisation
    h_t = lambda * h_{t-1} + gamma * (x_t B)              h complex (N,), B = B_re + i B_im (D, N)
    y_t = Re(h_t C) + x_t D                               C = C_re + i C_im (N, H), D (D, H)

Initialisation (the paper's "ring" init): |lambda| uniform on the ring
r_min <= |lambda| <= r_max in the complex plane (nu_log = log(-log(u (r_max^2 - r_min^2)
+ r_min^2) / 2), u ~ U[0, 1]), phase theta = max_phase u' (theta_log = log theta);
gamma_log = log sqrt(1 - |lambda|^2); B_re, B_im ~ N(0, 1/(2D)); C_re, C_im ~ N(0, 1/N).
Defaults r_min = 0.9, r_max = 0.999, max_phase = 2 pi, the values the paper uses on
its long-range tasks (minimal-LRU defaults to r_min = 0, r_max = 1, max_phase = 6.28).

Conventions that differ: the paper's layer maps width H to H with a diagonal D; here
the input width D differs from the output width H, so D is a full (D, H) matrix
(LeCun normal, N(0, 1/D)) where the paper has a vector (N(0, 1)). The paper's block
around the recurrence (normalisation, GELU, GLU, residual) is not part of the cell;
``y`` is the cell's output and stacked layers feed each other's y directly.

State and probe: h is complex; it is stored and probed as the real vector
(Re h, Im h) of width 2N (``state_size``). The perturbation, of that width, joins
the input term: h_t = lambda h_{t-1} + gamma (x_t B) + (eps_re + i eps_im), so
dL/d eps = (dL/d Re h_t, dL/d Im h_t) and the probed norm is the Euclidean norm over
both parts (of the batch and N units), i.e. the norm of h_t as a vector in R^2N.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, register
from lrd.models.scan import linear_recurrence


@register
class LRUCell(Cell):
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi

    cell_name: ClassVar[str] = "lru"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "lambda = exp(-exp(nu_log) + i exp(theta_log)); h' = lambda h + exp(gamma_log) (x B); "
        "y = Re(h' C) + x D; h complex, probed as (Re h, Im h)"
    )
    source: ClassVar[str] = "Orvieto et al. 2023 (LRU), ring init, gamma normalisation"
    # trained at lr * [train] recurrence_lr_factor (the LRU, as S4/S5, gives the recurrence a smaller rate)
    recurrence_params: ClassVar[tuple[str, ...]] = ("nu_log", "theta_log", "gamma_log")

    @classmethod
    def state_size(cls, hidden: int, **_options) -> int:
        return 2 * hidden  # (Re h, Im h)

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        """The paper's parameters; B (D, N), C (N, H), D (D, H) act on row vectors (x B, h C, x D)."""
        N = self.hidden

        def nu_init(key, shape, dtype=jnp.float32):
            u = jax.random.uniform(key, shape, dtype)
            return jnp.log(-0.5 * jnp.log(u * (self.r_max**2 - self.r_min**2) + self.r_min**2))

        def theta_init(key, shape, dtype=jnp.float32):
            return jnp.log(self.max_phase * jax.random.uniform(key, shape, dtype))

        def normal(std):
            return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)

        nu_log = self.param("nu_log", nu_init, (N,))
        theta_log = self.param("theta_log", theta_init, (N,))
        modulus = jnp.exp(-jnp.exp(nu_log))
        gamma_log = self.param("gamma_log", lambda key, shape: 0.5 * jnp.log(1.0 - modulus**2), (N,))
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": gamma_log,
            "B_re": self.param("B_re", normal(1.0 / math.sqrt(2 * input_dim)), (input_dim, N)),
            "B_im": self.param("B_im", normal(1.0 / math.sqrt(2 * input_dim)), (input_dim, N)),
            "C_re": self.param("C_re", normal(1.0 / math.sqrt(N)), (N, N)),
            "C_im": self.param("C_im", normal(1.0 / math.sqrt(N)), (N, N)),
            "D": self.param("D", nn.initializers.lecun_normal(), (input_dim, N)),
        }

    def _terms(self, x: jax.Array) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
        """Parameters, lambda (N,) and the input term gamma * (x B) (..., N), complex."""
        p = self.weights(x.shape[-1])
        lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))  # (N,)
        bx = jnp.exp(p["gamma_log"]) * (x @ p["B_re"] + 1j * (x @ p["B_im"]))  # (..., N)
        return p, lam, bx

    @staticmethod
    def _output(p: dict[str, jax.Array], h: jax.Array, x: jax.Array) -> jax.Array:
        return h.real @ p["C_re"] - h.imag @ p["C_im"] + x @ p["D"]  # Re(h C) + x D

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (state,) = carry  # (B, 2N): (Re h, Im h)
        N = self.hidden
        p, lam, bx = self._terms(x)
        h = lam * (state[:, :N] + 1j * state[:, N:]) + bx  # (B, N)
        if eps is not None:
            h = h + (eps["h"][:, :N] + 1j * eps["h"][:, N:])
        return (jnp.concatenate([h.real, h.imag], axis=-1),), self._output(p, h, x)

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, 2N)} -> y (B, T, H), parallel in time."""
        N = self.hidden
        p, lam, bx = self._terms(inputs)  # bx (B, T, N)
        if eps is not None:
            bx = bx + (eps["h"][..., :N] + 1j * eps["h"][..., N:])
        h = linear_recurrence(jnp.broadcast_to(lam, bx.shape), bx, reverse)  # (B, T, N) complex
        return self._output(p, h, inputs)  # (B, T, H)
