"""DeltaNet: a linear-attention matrix state written by the delta rule.

Source: Schlag, Irie & Schmidhuber 2021, "Linear transformers are secretly fast weight
programmers" (the delta rule); Yang, Wang, Zhang, Shen & Kim 2024, "Parallelizing linear
transformers with the delta rule over sequence length" (DeltaNet as trained today: SiLU
and L2-normalised queries and keys, a sigmoid write strength beta, the scale d^-1/2; the
reference code, fla-org/flash-linear-attention, ``fla/ops/delta_rule/naive.py``). Per head
(``heads`` of width d = H / heads), with S (d, d) the state::

    q_t = l2norm(silu(x_t W_q)),  k_t = l2norm(silu(x_t W_k)),  v_t = silu(x_t W_v)    (d,) each
    beta_t = sigmoid(x_t W_beta)                                                       one per head
    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    y_t = d^-1/2 S_t^T q_t                                                             the heads concatenated (H,)

``eigen_range = "[-1,1]"`` (Grazzi et al. 2024, "Unlocking state-tracking in linear RNNs
through negative eigenvalues"): beta_t = 2 sigmoid(x_t W_beta), so that the transition
I - beta_t k_t k_t^T (eigenvalues 1 and 1 - beta_t) has an eigenvalue in [-1, 1] rather
than [0, 1]: the range that lets a linear recurrence track parity.

Conventions that differ: the cell is the delta-rule layer alone, as ``s6`` is Mamba's
selective layer alone: no short convolutions on q, k, v, no output norm or gate, no output
projection (the readout, or the next layer, reads y). Projections have no biases, as in the
reference code. Initialisation: LeCun normal for every projection.

State and probe: S per head, flattened to (heads d^2,) (``state_size`` = H^2 / heads); the
perturbation joins S_t the moment it is computed. The parallel form
(``matrix_linear_recurrence``) scans the pairs (I - beta k k^T, beta k v^T + eps) with a
matrix associative scan, O(T log T d^3): exact and differentiable, where Yang et al.'s
chunked WY form is the fast one on accelerators.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Cell, Eps, register
from lrd.models.scan import matrix_linear_recurrence

EigenRange = Literal["[0,1]", "[-1,1]"]


def l2norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / ||x|| over the last axis (fla's l2norm: x / sqrt(sum x^2 + eps))."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def write_strength(z: jax.Array, eigen_range: str) -> jax.Array:
    """beta = sigmoid(z) in (0, 1), or 2 sigmoid(z) in (0, 2) for eigenvalues in [-1, 1] (Grazzi et al. 2024)."""
    beta = jax.nn.sigmoid(z)
    return 2.0 * beta if eigen_range == "[-1,1]" else beta


@register
class DeltaNetCell(Cell):
    heads: int = 1
    eigen_range: EigenRange = "[0,1]"

    cell_name: ClassVar[str] = "deltanet"
    parallel: ClassVar[bool] = True
    equations: ClassVar[str] = (
        "q, k = l2norm(silu(x W_q)), l2norm(silu(x W_k)); v = silu(x W_v); beta = sigmoid(x W_beta); "
        "S' = (I - beta k k^T) S + beta k v^T (S: d x d per head); y = d^-1/2 S'^T q"
    )
    source: ClassVar[str] = "Yang et al. 2024 (DeltaNet, delta rule of Schlag et al. 2021; no conv/norm/out_proj)"
    recurrence_params: ClassVar[tuple[str, ...]] = ("W_beta",)

    @classmethod
    def state_size(cls, hidden: int, heads: int = 1, **_options) -> int:
        return hidden * hidden // heads  # S (heads, d, d), flattened

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        """Every parameter: the projections W_q, W_k, W_v (D, H), W_beta (D, heads), and ``extra_weights``."""
        H, n = self.hidden, self.heads
        shapes = {"W_q": (input_dim, H), "W_k": (input_dim, H), "W_v": (input_dim, H), "W_beta": (input_dim, n)}
        p = {name: self.param(name, nn.initializers.lecun_normal(), shape) for name, shape in shapes.items()}
        return {**p, **self.extra_weights(input_dim)}

    def extra_weights(self, input_dim: int) -> dict[str, jax.Array]:
        """Parameters a variant adds (made inside ``weights``): none here."""
        return {}

    def _projections(self, x: jax.Array) -> tuple[dict, jax.Array, jax.Array, jax.Array, jax.Array]:
        """x (..., D) -> the parameters, q, k, v (..., heads, d) and beta (..., heads)."""
        p = self.weights(x.shape[-1])
        split = lambda z: z.reshape(*z.shape[:-1], self.heads, self.head_dim)
        q = l2norm(split(jax.nn.silu(x @ p["W_q"])))
        k = l2norm(split(jax.nn.silu(x @ p["W_k"])))
        v = split(jax.nn.silu(x @ p["W_v"]))
        beta = write_strength(x @ p["W_beta"], self.eigen_range)
        return p, q, k, v, beta

    def transition(self, p: dict, x: jax.Array, k: jax.Array, beta: jax.Array) -> jax.Array:
        """The state's transition matrix (..., heads, d, d): I - beta k k^T (the gated cell decays it)."""
        eye = jnp.eye(self.head_dim, dtype=k.dtype)
        return eye - beta[..., None, None] * k[..., :, None] * k[..., None, :]

    def transitioned(self, p: dict, x: jax.Array, k: jax.Array, beta: jax.Array, S: jax.Array) -> jax.Array:
        """``transition(...) @ S`` without forming the d x d matrix: S - beta k (k^T S), O(d^2) per head."""
        kS = jnp.einsum("...hd,...hde->...he", k, S)  # (..., heads, d)
        return S - beta[..., None, None] * k[..., :, None] * kS[..., None, :]

    def _read(self, S: jax.Array, q: jax.Array) -> jax.Array:
        """y = d^-1/2 S^T q per head, concatenated: S (..., heads, d, d), q (..., heads, d) -> (..., H)."""
        y = jnp.einsum("...hde,...hd->...he", S, q) * self.head_dim**-0.5
        return y.reshape(*y.shape[:-2], self.hidden)

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (state,) = carry  # (B, heads d^2)
        p, q, k, v, beta = self._projections(x)
        d = self.head_dim
        S = state.reshape(-1, self.heads, d, d)
        S = self.transitioned(p, x, k, beta, S) + beta[..., None, None] * k[..., :, None] * v[..., None, :]
        if eps is not None:
            S = S + eps["h"].reshape(S.shape)
        return (S.reshape(state.shape),), self._read(S, q)

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, heads d^2)} -> y (B, T, H), parallel in time."""
        p, q, k, v, beta = self._projections(inputs)  # (B, T, heads, d), ..., (B, T, heads)
        M = self.transition(p, inputs, k, beta)  # (B, T, heads, d, d)
        U = beta[..., None, None] * k[..., :, None] * v[..., None, :]
        if eps is not None:
            U = U + eps["h"].reshape(U.shape)
        return self._read(matrix_linear_recurrence(M, U, reverse), q)
