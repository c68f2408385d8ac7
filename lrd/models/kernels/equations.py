"""One timestep of each cell, forward and backward, on a tile of rows: the code the kernels run.

The same equations as ``lrd.models.cells`` (see each cell's ``equations``), written
gate block by gate block so that every array a kernel loads or multiplies is
(rows, H) or (H, H): Triton needs power-of-two shapes, and 3H (the GRU) is not one.

Conventions, for a tile of ``rows`` sequences and hidden size H:

- ``xw``: the input projection of this step, x_t W + b, one (rows, H) block per gate,
  computed for all t before the loop as one large matmul.
- ``u``: the recurrent matrix U as (H, H) gate blocks.
- ``eps``: the probe's perturbation of this step, {state: (rows, H)}, or None; it is
  added to each new state as soon as that state is computed, as in the cells.
- ``reserve``: what the forward pass keeps for the backward pass (cuDNN's "reserve
  space"): the gate activations, and for the LSTM the perturbed cell state c_t.
  ``RESERVE_BLOCKS[cell]`` (rows, H) blocks per step.

Backward, with ``dh`` = dL/dh_t (the output's cotangent at t plus what flows back from
t+1) and for the LSTM ``dc`` = dL/dc_t coming from c_{t+1} = f c_t + ...:
returns the pre-activation gradients dz_t (one block per gate, the gradient of
``xw``), the part of dL/dh_{t-1} that flows through U, and the LSTM's dc_{t-1}.
Since each state is perturbed as it is computed, dL/d eps_t is the total dL/dh_t
(dL/dc_t) at that point of the backward loop: the probe reads it off for free.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
RESERVE_BLOCKS = {"rnn": 1, "lstm": 5, "gru": 3}  # rnn: tanh; lstm: i f g o c; gru: r z n
STATE_NAMES = {"rnn": ("h",), "lstm": ("c", "h"), "gru": ("h",)}

Blocks = list[jax.Array]


class Forward(NamedTuple):
    """One step forward: the new states {name: (rows, H)} and the reserve blocks."""

    states: dict[str, jax.Array]
    reserve: Blocks


class Backward(NamedTuple):
    """One step backward.

    dz:       dL/d(x_t W + b), one (rows, H) block per gate.
    dh_prev:  the part of dL/dh_{t-1} that flows through U (and, for the GRU, through z h).
    dc_prev:  the LSTM's dL/dc_{t-1} through the forget gate (None for other cells).
    d_states: dL/d state_t in full, {name: (rows, H)}: the probe's dL/d eps_t.
    """

    dz: Blocks
    dh_prev: jax.Array
    dc_prev: jax.Array | None
    d_states: dict[str, jax.Array]


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _dot_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b.T without materialising the transpose."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _plus(x: jax.Array, eps: dict[str, jax.Array] | None, name: str) -> jax.Array:
    return x if eps is None else x + eps[name]


def forward(cell: str, xw: Blocks, u: Blocks, states: dict[str, jax.Array], eps) -> Forward:
    """One step of ``cell`` on a tile; ``states`` are the previous states {name: (rows, H)}."""
    h = states["h"]
    if cell == "rnn":
        a = jnp.tanh(xw[0] + _dot(h, u[0]))
        return Forward({"h": _plus(a, eps, "h")}, [a])
    if cell == "lstm":
        i, f, g, o = (xw[k] + _dot(h, u[k]) for k in range(4))
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c = _plus(f * states["c"] + i * g, eps, "c")
        h = _plus(o * jnp.tanh(c), eps, "h")
        return Forward({"c": c, "h": h}, [i, f, g, o, c])
    if cell == "gru":
        r = jax.nn.sigmoid(xw[0] + _dot(h, u[0]))
        z = jax.nn.sigmoid(xw[1] + _dot(h, u[1]))
        n = jnp.tanh(xw[2] + _dot(r * h, u[2]))
        return Forward({"h": _plus(z * h + (1.0 - z) * n, eps, "h")}, [r, z, n])
    raise ValueError(f"no kernel equations for cell {cell!r}")


def backward(
    cell: str, u: Blocks, reserve: Blocks, h_prev: jax.Array, c_prev: jax.Array | None, dh: jax.Array, dc
) -> Backward:
    """One step back through ``cell``; ``reserve`` is this step's, ``h_prev``/``c_prev`` the previous states."""
    if cell == "rnn":
        (a,) = reserve
        da = dh * (1.0 - a * a)
        return Backward([da], _dot_t(da, u[0]), None, {"h": dh})
    if cell == "lstm":
        i, f, g, o, c = reserve
        tc = jnp.tanh(c)
        dc = dc + dh * o * (1.0 - tc * tc)  # dL/dc_t in full
        gates = [
            dc * g * i * (1.0 - i),
            dc * c_prev * f * (1.0 - f),
            dc * i * (1.0 - g * g),
            dh * tc * o * (1.0 - o),
        ]
        dh_prev = _dot_t(gates[0], u[0]) + _dot_t(gates[1], u[1]) + _dot_t(gates[2], u[2]) + _dot_t(gates[3], u[3])
        return Backward(gates, dh_prev, dc * f, {"c": dc, "h": dh})
    if cell == "gru":
        r, z, n = reserve
        dn = dh * (1.0 - z) * (1.0 - n * n)
        d_rh = _dot_t(dn, u[2])  # dL/d(r * h_prev)
        dr = d_rh * h_prev * r * (1.0 - r)
        dzg = dh * (h_prev - n) * z * (1.0 - z)
        dh_prev = dh * z + d_rh * r + _dot_t(dr, u[0]) + _dot_t(dzg, u[1])
        return Backward([dr, dzg, dn], dh_prev, None, {"h": dh})
    raise ValueError(f"no kernel equations for cell {cell!r}")


def recurrent_inputs(cell: str, h_prev: jax.Array, reserve: jax.Array, hidden: int) -> list[jax.Array]:
    """What each gate block of U multiplied, (..., H) per gate, for the weight gradient dU = sum input^T dz.

    Every gate multiplies h_{t-1}, except the GRU's candidate, which multiplies r_t * h_{t-1}.
    ``reserve`` is the whole reserve array (..., RESERVE_BLOCKS * H).
    """
    if cell == "gru":
        r = reserve[..., :hidden]
        return [h_prev, h_prev, r * h_prev]
    return [h_prev] * GATES[cell]
