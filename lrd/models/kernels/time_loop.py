"""A recurrent layer's time loop as two kernels joined by ``jax.custom_vjp``.

Forward: x W + b for all timesteps as one matmul, then the forward kernel
(``forward``) runs the recurrence on chip. Backward: the backward kernel
(``backward``) returns the pre-activation gradients dz_t; dL/d(xW + b) = dz flows
back to W, b and x through ordinary JAX, and dU = sum_t input_t^T dz_t is one
large matmul (input_t = h_{t-1}, or r_t * h_{t-1} for the GRU's candidate).

The probe: given a perturbation eps (the zeros ``lrd.probes`` differentiates by),
its cotangent is the backward kernel's carried dL/d state_t, i.e. exactly
dL/d eps_t, as on the scan path.

The batch is padded with zero rows to a multiple of the tile and cut back after;
padded rows get a zero cotangent, so they add nothing to any gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lrd.models.kernels import choice, equations
from lrd.models.kernels.backward import backward
from lrd.models.kernels.forward import KernelSpec, forward


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(spec: KernelSpec, xw: jax.Array, u: jax.Array, eps: tuple[jax.Array, ...] | None) -> jax.Array:
    """States h_t (T, B, H) of the recurrence driven by xw (T, B, G*H) with recurrent matrix U (H, G*H)."""
    hs, _ = forward(spec, xw, u, eps)
    return hs


def _recurrence_fwd(spec, xw, u, eps):
    hs, reserve = forward(spec, xw, u, eps)
    return hs, (hs, reserve, u)


def _recurrence_bwd(spec, residuals, dhs):
    hs, reserve, u = residuals
    H = spec.hidden
    dz, d_states = backward(spec, dhs, hs, reserve, u)  # (T, B, G*H), per state (T, B, H)
    zero = jnp.zeros_like(hs[:1])  # the initial state
    h_prev = jnp.concatenate([hs[1:], zero]) if spec.reverse else jnp.concatenate([zero, hs[:-1]])  # (T, B, H)
    inputs = equations.recurrent_inputs(spec.cell, h_prev, reserve, H)
    if all(x is h_prev for x in inputs):
        du = jnp.einsum("tbh,tbg->hg", h_prev, dz)  # (H, G*H)
    else:
        du = jnp.concatenate(
            [jnp.einsum("tbh,tbg->hg", x, dz[..., k * H : (k + 1) * H]) for k, x in enumerate(inputs)], axis=1
        )
    return dz, du, (tuple(d_states) if spec.probe else None)


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def kernel_layer(
    cell: str,
    inputs: jax.Array,
    W: jax.Array,
    U: jax.Array,
    b: jax.Array,
    perturbation: dict[str, jax.Array] | None,
    reverse: bool,
    interpret: bool,
    resident: bool | None = None,
    tile: int = 16,
) -> jax.Array:
    """The layer ``RecurrentLayer`` computes, on the kernels: inputs (B, T, D) -> states h (B, T, H).

    W (D, G*H), U (H, G*H), b (G*H) are the cell's parameters; ``perturbation``
    {state: (B, T, H)} as on the scan path (``lrd.models.network``). ``reverse`` runs
    the loop from t = T-1 down; ``interpret`` uses Pallas's interpreter; ``resident``
    holds U on chip (default: ``choice.resident``, by its size); ``tile`` is the
    number of batch rows per program.
    """
    B = inputs.shape[0]
    H = U.shape[0]
    resident = choice.resident(cell, H) if resident is None else resident
    pad = -B % tile
    spec = KernelSpec(cell, H, reverse, perturbation is not None, tile, resident, interpret)

    def time_major(x):  # (B, T, ...) -> (T, B + pad, ...)
        return jnp.pad(jnp.swapaxes(x, 0, 1), ((0, 0), (0, pad), (0, 0)))

    xw = jnp.einsum("btd,dg->tbg", inputs, W) + b  # (T, B, G*H): the input projection, one matmul
    xw = jnp.pad(xw, ((0, 0), (0, pad), (0, 0)))  # (T, B + pad, G*H)
    eps = None
    if perturbation is not None:
        eps = tuple(time_major(perturbation[name]) for name in equations.STATE_NAMES[cell])  # (T, B + pad, H)
    hs = recurrence(spec, xw, U, eps)  # (T, B + pad, H)
    return jnp.swapaxes(hs[:, :B], 0, 1)  # (B, T, H)
