"""The backward kernel: the time loop in reverse, carrying dL/dh (and the LSTM's dL/dc) on chip.

Same grid as the forward kernel ((seeds,) batch tiles). Per step it adds the output's
cotangent dL/dh_t (from the layers above) to what flows back from step t+1, runs
``equations.backward`` on the reserve the forward kernel wrote, and stores the
pre-activation gradients dz_t: the gradient of x_t W + b, from which the weight
gradients follow as large matmuls after the kernel (``lrd.models.kernels.time_loop``).

The probe: with a perturbation, the carried dL/dh_t (and dL/dc_t) at each step is
dL/d eps_t; the kernel stores it too (one extra store per state and step), and the
custom VJP returns it as the perturbation's cotangent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lrd.models.kernels import equations
from lrd.models.kernels.forward import KernelSpec, compiler_params, gate_blocks, step_index, u_blocks


def _backward_kernel(spec: KernelSpec, dhs_ref, hs_ref, reserve_ref, u_ref, dz_ref, *d_state_refs):
    """dhs, hs (T, rows, H), reserve (T, rows, R*H), U (H, G*H) -> dz (T, rows, G*H), [d state (T, rows, H)]."""
    G, H, R = equations.GATES[spec.cell], spec.hidden, equations.RESERVE_BLOCKS[spec.cell]
    length, rows = hs_ref.shape[0], hs_ref.shape[1]
    names = equations.STATE_NAMES[spec.cell]
    lstm = spec.cell == "lstm"
    resident = u_blocks(u_ref, G, H) if spec.resident else None

    def body(i, carry):
        dh_next, dc_next = carry  # what flows back into step t from step t+1 (in the layer's direction)
        t = step_index(i, length, spec.reverse, backward=True)
        prev = jnp.maximum(t - 1, 0) if not spec.reverse else jnp.minimum(t + 1, length - 1)
        first = t == (length - 1 if spec.reverse else 0)  # no previous state: it is the zero initial state
        h_prev = jnp.where(first, 0.0, hs_ref[prev])
        c_prev = jnp.where(first, 0.0, reserve_ref[prev, :, pl.ds(4 * H, H)]) if lstm else None
        u = resident if resident is not None else u_blocks(u_ref, G, H)
        reserve = gate_blocks(reserve_ref, t, R, H)
        out = equations.backward(spec.cell, u, reserve, h_prev, c_prev, dhs_ref[t] + dh_next, dc_next)
        for k, block in enumerate(out.dz):
            dz_ref[t, :, pl.ds(k * H, H)] = block
        for name, ref in zip(names, d_state_refs):
            ref[t] = out.d_states[name]
        return out.dh_prev, (out.dc_prev if lstm else dc_next)

    zeros = jnp.zeros((rows, H), jnp.float32)
    jax.lax.fori_loop(0, length, body, (zeros, zeros))


def backward(spec: KernelSpec, dhs: jax.Array, hs: jax.Array, reserve: jax.Array, u: jax.Array):
    """Run the backward kernel: dz (T, B, G*H) and, when ``spec.probe``, dL/d state_t (T, B, H) per state."""
    T, B, H = hs.shape
    G, R = equations.GATES[spec.cell], equations.RESERVE_BLOCKS[spec.cell]
    rows = spec.tile
    seq = lambda width: pl.BlockSpec((T, rows, width), lambda b: (0, b, 0))
    n_states = len(equations.STATE_NAMES[spec.cell]) if spec.probe else 0
    state_shape = jax.ShapeDtypeStruct((T, B, H), jnp.float32)
    out_shape = (jax.ShapeDtypeStruct((T, B, G * H), jnp.float32), *[state_shape] * n_states)
    outs = pl.pallas_call(
        lambda *refs: _backward_kernel(spec, *refs),
        out_shape=out_shape,
        grid=(B // rows,),
        in_specs=[seq(H), seq(H), seq(R * H), pl.BlockSpec((H, G * H), lambda b: (0, 0))],
        out_specs=(seq(G * H),) + (seq(H),) * n_states,
        interpret=spec.interpret,
        compiler_params=compiler_params(spec),
        name=f"lrd_{spec.cell}_backward",
    )(dhs, hs, reserve, u)
    return outs[0], outs[1:]
