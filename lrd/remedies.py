"""Remedies for vanishing gradients as training regularisers: Pascanu's Omega and gradient flossing.

Both act on layer 0, forward direction (the cell the diagnostics measure, ``lrd.dynamics``),
along the training batch's own trajectory, and are added to the training loss when their
weight is above zero ([train] ``omega``, ``floss``; off by default and then out of the run id).

Omega (Pascanu, Mikolov & Bengio 2013, eq. 9): with g_t = dL/ds_t, the gradient of the
loss with respect to the state at step t (the probe's perturbation gradient, held constant,
as the paper treats it) and J_t = ds_t/ds_(t-1),

    Omega = mean over the batch and t = 1 .. T-1 of (||g_t J_t|| / ||g_t|| - 1)^2,

the squared relative change of the backpropagated norm across one step: zero when every
step preserves it. The paper sums over t; the mean keeps the weight independent of the
length. Terms whose g_t is below float32's smallest normal (a gradient that has already
vanished, where the ratio is round-off) are left out of the mean.

Gradient flossing (Engelken 2023, "Gradient flossing", NeurIPS): the top ``floss_k``
Lyapunov exponents of the product of J_t along ``FLOSS_SEQUENCES`` sequences of the batch
(QR iteration from a fixed orthonormal start, after the burn-in of ``lrd.dynamics``),
differentiated through the QR steps, are pushed towards zero:

    floss = mean over the sequences of sum_(i <= k) lambda_i^2,

every ``floss_every`` optimiser steps (Engelken flosses during training at intervals).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrd.dynamics import BURN_IN, FLOOR, cell_step, cell_trajectory, householder_qr, layer0_cell_params

FLOSS_SEQUENCES = 8  # sequences of the training batch the flossed exponents are computed on (Engelken uses a few)


def state_gradients(model, task, params, batch) -> jax.Array:
    """g_t = dL/ds_t of layer 0, forward direction: (B, T, n), n the cell's whole state (its states concatenated)."""
    B, T = batch.mask.shape
    zeros = model.config.zero_perturbation(B, T)

    def loss(perturbation):
        return task.training_loss(model.apply(params, batch.inputs, perturbation), batch)

    grads = jax.grad(loss)(zeros)["layer0"]["fwd"]
    return jnp.concatenate([grads[name] for name in model.config.state_names], axis=-1)


def omega_penalty(model, task, params, batch, g: jax.Array | None = None) -> jax.Array:
    """Pascanu's Omega of ``params`` on ``batch`` (see the module docstring); g_t held constant.

    ``g``: the state gradients (B, T, n) to use; default those of ``params`` (``state_gradients``).
    """
    g = jax.lax.stop_gradient(state_gradients(model, task, params, batch) if g is None else g)  # (B, T, n)
    cell = model.config.cell_module()
    cell_params = layer0_cell_params(params)
    prev_states, _ = cell_trajectory(cell, cell_params, batch.inputs)  # (T, B, n): s_(t-1)
    step = cell_step(cell, cell_params)

    def back(s, x, cotangent):  # g_t J_t: the gradient carried one step back
        _, vjp = jax.vjp(lambda s: step(s, x), s)
        return vjp(cotangent)[0]

    inputs = jnp.swapaxes(batch.inputs, 0, 1)  # (T, B, D)
    g = jnp.swapaxes(g, 0, 1)  # (T, B, n)
    g_norm = jnp.linalg.norm(g, axis=-1)  # (T, B)
    measured = g_norm >= FLOOR
    # ||g_t J_t|| / ||g_t|| = ||u_t J_t|| with u_t = g_t / ||g_t||, the vjp being linear: a unit cotangent keeps
    # the carried vector from underflowing, and the norm is floored so that its gradient is finite at zero
    unit = g / jnp.where(measured, g_norm, 1.0)[..., None]
    carried = jax.vmap(jax.vmap(back))(prev_states, inputs, unit)  # (T, B, n)
    ratio = jnp.sqrt(jnp.maximum(jnp.sum(carried**2, axis=-1), FLOOR))
    terms = jnp.where(measured, (ratio - 1.0) ** 2, 0.0)[1:]  # t = 1 .. T-1: s_0's predecessor is the zero start
    return jnp.sum(terms) / jnp.maximum(jnp.sum(measured[1:]), 1)


def flossed_exponents(step, prev_states: jax.Array, inputs: jax.Array, q0: jax.Array) -> jax.Array:
    """The top-k Lyapunov exponents of one sequence, (k,), differentiable: QR iteration after the burn-in."""
    length = prev_states.shape[0]
    burn = length // BURN_IN

    def body(carry, xs):
        q, log_r = carry
        s, x, t = xs
        _, jvp = jax.linearize(lambda s: step(s, x), s)
        q, r = householder_qr(jax.vmap(jvp, in_axes=1, out_axes=1)(q))
        log_r = log_r + jnp.where(t >= burn, jnp.log(jnp.maximum(jnp.abs(jnp.diagonal(r)), FLOOR)), 0.0)
        return (q, log_r), None

    k = q0.shape[1]
    (_, log_r), _ = jax.lax.scan(body, (q0, jnp.zeros((k,), jnp.float32)), (prev_states, inputs, jnp.arange(length)))
    return log_r / (length - burn)


def floss_penalty(model, params, inputs: jax.Array, k: int) -> jax.Array:
    """Engelken's flossing loss: the mean over FLOSS_SEQUENCES sequences of the sum of the top k exponents squared."""
    cell = model.config.cell_module()
    cell_params = layer0_cell_params(params)
    m = min(FLOSS_SEQUENCES, inputs.shape[0])
    prev_states, _ = cell_trajectory(cell, cell_params, inputs[:m])  # (T, m, n)
    n = prev_states.shape[-1]
    q0 = householder_qr(jax.random.normal(jax.random.PRNGKey(0), (n, min(k, n)))).q  # a fixed start
    step = cell_step(cell, cell_params)
    exponents = jax.vmap(lambda s, x: flossed_exponents(step, s, x, q0), in_axes=(1, 0))(prev_states, inputs[:m])
    return jnp.mean(jnp.sum(exponents**2, axis=-1))
