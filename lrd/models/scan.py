"""Linear recurrences over the time axis, parallel in time (``jax.lax.associative_scan``).

For h_t = a_t h_{t-1} + b_t with h_{-1} = 0 (elementwise, a and b of the same shape),
the pairs (a_t, b_t) compose with the associative operator

    (a_i, b_i) o (a_j, b_j) = (a_j a_i, a_j b_i + b_j)

(Blelloch 1990; Martin & Cundy 2018; the LRU of Orvieto et al. 2023, NicolasZucchet/minimal-LRU),
so all T states come out of O(log T) parallel steps. ``reverse=True`` runs the
recurrence from the last step back: h_t = a_t h_{t+1} + b_t. The log-space form
(Heinsen 2023, used by minGRU/minLSTM, Feng et al. 2024) composes (log a, log b)
for positive a and b: (la_i, lb_i) o (la_j, lb_j) = (la_i + la_j, logaddexp(la_j + lb_i, lb_j)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _compose(left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    a_i, b_i = left
    a_j, b_j = right
    return a_j * a_i, a_j * b_i + b_j


def _compose_log(left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    la_i, lb_i = left
    la_j, lb_j = right
    return la_i + la_j, jnp.logaddexp(la_j + lb_i, lb_j)


def linear_recurrence(a: jax.Array, b: jax.Array, reverse: bool = False) -> jax.Array:
    """All states h (B, T, ...) of h_t = a_t h_{t-1} + b_t from h_{-1} = 0; a, b (B, T, ...), real or complex."""
    _, h = jax.lax.associative_scan(_compose, (a, b), reverse=reverse, axis=1)
    return h  # (B, T, ...)


def log_linear_recurrence(log_a: jax.Array, log_b: jax.Array, reverse: bool = False) -> jax.Array:
    """The same recurrence for a, b > 0 given as logs: returns h (B, T, N) (not its log)."""
    _, log_h = jax.lax.associative_scan(_compose_log, (log_a, log_b), reverse=reverse, axis=1)
    return jnp.exp(log_h)  # (B, T, N)


def sequential_linear_recurrence(a: jax.Array, b: jax.Array, reverse: bool = False) -> jax.Array:
    """The same states by a sequential ``lax.scan`` over T (a reference and a speed baseline)."""

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    _, h = jax.lax.scan(step, jnp.zeros_like(b[:, 0]), (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1)), reverse=reverse)
    return jnp.swapaxes(h, 0, 1)  # (T, B, N) -> (B, T, N)


def _compose_matrix(
    left: tuple[jax.Array, jax.Array], right: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    M_i, U_i = left
    M_j, U_j = right
    return M_j @ M_i, M_j @ U_i + U_j


def matrix_linear_recurrence(M: jax.Array, U: jax.Array, reverse: bool = False) -> jax.Array:
    """All states S (B, T, ..., d, e) of S_t = M_t S_{t-1} + U_t from S_{-1} = 0.

    M (B, T, ..., d, d), U (B, T, ..., d, e).

    The matrix form of ``linear_recurrence`` (the same operator, with matrix products in the
    order of time), for the delta rule's transitions M_t = I - beta_t k_t k_t^T: O(T log T d^3)
    work in O(log T) parallel steps. ``reverse=True``: S_t = M_t S_{t+1} + U_t.
    """
    _, S = jax.lax.associative_scan(_compose_matrix, (M, U), reverse=reverse, axis=1)
    return S
