"""expRNN: an RNN whose recurrent matrix is orthogonal, the exponential of a skew-symmetric matrix.

Source: Lezcano-Casado & Martinez-Rubio 2019, "Cheap orthogonal constraints in neural
networks: a simple parametrization of the orthogonal and unitary group" (ICML), sec. 3-4,
and the reference code (github.com/Lezcano/expRNN: ``exprnn.py``, ``initialization.py``,
``orthogonal.py``). Equations, row vectors, hidden H::

    S   = A - A^T                       A strictly upper triangular: H(H-1)/2 free parameters
    U   = expm(S)                       orthogonal (U U^T = I), computed once per sequence
    h_t = modReLU(x_t W + h_{t-1} U)    modReLU(z) = sign(z) relu(|z| + b), b (H,)

Initialisation (the reference code's): A by Henaff et al. 2016's scheme, the code's
default on the copying problem: S block-diagonal with 2 x 2 blocks [[0, s_k], [-s_k, 0]],
s_k ~ U[-pi, pi], so U is a block rotation with eigenvalues exp(+-i s_k); W (D, H) He
(Kaiming) normal, std sqrt(2 / D), no input bias; b ~ U[-0.01, 0.01].

Learning rates: the paper trains A at a tenth of the rate of the other parameters on the
copying problem (``lr_orth``); ``[train] recurrence_lr_factor = 0.1`` does that here
(``recurrence_params = ("A",)``).

Conventions that differ: the reference parametrises the full H x H matrix and keeps its
upper triangle; here only the upper triangle is a parameter, so the parameter count is the
model's real one. The reference code computes expm with its own Pade implementation and
a custom backward; here ``expm_skew`` (scaling and squaring of a Taylor polynomial, no LAPACK:
``jax.scipy.linalg.expm`` solves a linear system with batched LAPACK custom calls, which
could stall XLA's CPU thread pool inside the training loop; docs/reliability.md) and JAX's
derivative of it. h_0 = 0.

Probe: the perturbation is added to h_t after the modReLU, the moment it is computed.
``sequence`` computes U once and scans the step with ``lax.scan`` (the recurrence is
nonlinear in h: no parallel form).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrd.models.cells import Carry, Cell, Eps, perturbed, register


def skew(a: jax.Array, hidden: int) -> jax.Array:
    """S = A - A^T (H, H) from the strictly upper triangle ``a`` (H(H-1)/2,), row-major as ``np.triu_indices``."""
    rows, cols = np.triu_indices(hidden, 1)
    upper = jnp.zeros((hidden, hidden), a.dtype).at[rows, cols].set(a)
    return upper - upper.T


TAYLOR_DEGREE = 12  # expm_skew: the Taylor remainder at ||X|| <= 1/2 is below 0.5^13 / 13! (2e-14)
MAX_SQUARINGS = 24  # expm_skew: matrices of norm up to 2^23 (a skew matrix's entries are angles)


def expm_skew(s: jax.Array) -> jax.Array:
    """exp(s) of a square matrix by scaling and squaring (Higham 2005, sec. 2), in plain jnp.

    X = s / 2^k with k the smallest integer making ||X||_1 <= 1/2, exp(X) from its Taylor
    polynomial of degree TAYLOR_DEGREE (Horner), then squared k times. For a skew-symmetric
    s the result is orthogonal to float32 precision (tests/test_cells.py checks it against
    scipy.linalg.expm). The squarings are MAX_SQUARINGS masked steps, so the function has a
    fixed shape and reverse-mode derivatives.
    """
    n = s.shape[-1]
    norm = jnp.max(jnp.sum(jnp.abs(s), axis=-2))  # ||s||_1
    k = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / 0.5)), 0, MAX_SQUARINGS)
    x = s * jnp.exp2(-k)
    eye = jnp.eye(n, dtype=s.dtype)
    result = eye
    for i in range(TAYLOR_DEGREE, 0, -1):  # Horner: I + X/1 (I + X/2 (I + ... (I + X/d)))
        result = eye + (x @ result) / i
    for i in range(MAX_SQUARINGS):
        result = jnp.where(i < k, result @ result, result)
    return result


def henaff_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """The upper triangle of Henaff et al. 2016's skew matrix: S[2k, 2k+1] = s_k ~ U[-pi, pi], zero elsewhere."""
    (n,) = shape
    hidden = round((1 + math.sqrt(1 + 8 * n)) / 2)  # n = H(H-1)/2
    rows, cols = np.triu_indices(hidden, 1)
    on_block = (rows % 2 == 0) & (cols == rows + 1)  # (2k, 2k+1)
    angles = jax.random.uniform(key, (n,), dtype, -math.pi, math.pi)
    return jnp.where(jnp.asarray(on_block), angles, 0.0)


def _bias_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """modReLU's bias, U[-0.01, 0.01] (the reference code's)."""
    return jax.random.uniform(key, shape, dtype, -0.01, 0.01)


def modrelu(z: jax.Array, b: jax.Array) -> jax.Array:
    """modReLU (Arjovsky et al. 2016) on real z: sign(z) relu(|z| + b)."""
    return jnp.sign(z) * jax.nn.relu(jnp.abs(z) + b)


@register
class ExpRNNCell(Cell):
    cell_name: ClassVar[str] = "exprnn"
    equations: ClassVar[str] = (
        "U = expm(A - A^T) (orthogonal); h' = modReLU(x W + h U), modReLU(z) = sign(z) relu(|z| + b)"
    )
    source: ClassVar[str] = "Lezcano-Casado & Martinez-Rubio 2019 (expRNN), Henaff init"
    recurrence_params: ClassVar[tuple[str, ...]] = ("A",)

    @nn.compact
    def weights(self, input_dim: int) -> dict[str, jax.Array]:
        """W (D, H), A (H(H-1)/2,) the upper triangle of the skew matrix, b (H,) modReLU's bias."""
        H = self.hidden
        return {
            "W": self.param("W", nn.initializers.he_normal(), (input_dim, H)),
            "A": self.param("A", henaff_init, (H * (H - 1) // 2,)),
            "b": self.param("b", _bias_init, (H,)),
        }

    def _terms(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x W (..., H), U = expm(S) (H, H), the modReLU bias (H,)."""
        p = self.weights(x.shape[-1])
        U = expm_skew(skew(p["A"], self.hidden))  # (H, H)
        return x @ p["W"], U, p["b"]

    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        xw, U, b = self._terms(x)
        h = perturbed(modrelu(xw + h @ U, b), eps, "h")  # (B, H)
        return (h,), h

    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, H)} -> h (B, T, H): U computed once, the step scanned over T."""
        xw, U, b = self._terms(inputs)  # (B, T, H)
        eps_t = jnp.zeros_like(xw) if eps is None else eps["h"]

        def step(h, xs):
            xw_t, eps_now = xs
            h = modrelu(xw_t + h @ U, b) + eps_now
            return h, h

        h0 = jnp.zeros_like(xw[:, 0])  # (B, H)
        _, hs = jax.lax.scan(step, h0, (jnp.swapaxes(xw, 0, 1), jnp.swapaxes(eps_t, 0, 1)), reverse=reverse)
        return jnp.swapaxes(hs, 0, 1)  # (T, B, H) -> (B, T, H)
