"""The forward kernel: one program per batch tile runs the whole time loop on chip.

Grid: (batch tiles,); ``jax.vmap`` over seeds adds a leading grid axis (Pallas's
batching rule), so one launch covers (seeds, batch tiles). Each program holds its
tile's states in registers and loops over t with ``lax.fori_loop``; per step it
reads x_t W + b (precomputed for all t as one matmul before the kernel), multiplies
the states by U, and writes h_t and the reserve (``equations``) for the backward
kernel. Nothing of the recurrence leaves the chip between steps but those stores.

U: read once before the loop and kept on chip when it is small
(``KernelSpec.resident``); otherwise its gate blocks are re-read at every step,
from L2 on a GPU, where the 50 MB cache holds even the largest U allowed
(``lrd.models.kernels.choice``). Backend: Triton (``interpret`` runs the same
kernel in Pallas's interpreter, on any device, for tests).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lrd.models.kernels import equations


class KernelSpec(NamedTuple):
    """Static settings of one kernel launch (hashable: a custom_vjp's non-differentiable argument)."""

    cell: str
    hidden: int
    reverse: bool  # run the loop from t = T-1 down to 0
    probe: bool  # a perturbation is given (its cotangent, dL/d state_t, is wanted)
    tile: int  # batch rows per program
    resident: bool  # U read once before the loop (else: re-read at every step)
    interpret: bool  # Pallas interpret mode (tests, any device)
    num_warps: int = 4


def compiler_params(spec: KernelSpec):
    """Triton's launch settings (None in interpret mode)."""
    if spec.interpret:
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=spec.num_warps, num_stages=1)


def step_index(i, length: int, reverse: bool, backward: bool):
    """Time index of loop iteration i: the forward pass runs in the layer's direction, the backward against it."""
    return length - 1 - i if reverse != backward else i


def gate_blocks(ref, index, n: int, hidden: int) -> list[jax.Array]:
    """The ``n`` gate blocks (rows, H) of ref[index], a (rows, n*H) slice at timestep ``index``."""
    return [ref[index, :, pl.ds(k * hidden, hidden)] for k in range(n)]


def u_blocks(u_ref, n: int, hidden: int) -> list[jax.Array]:
    """The ``n`` gate blocks (H, H) of U (H, n*H)."""
    return [u_ref[:, pl.ds(k * hidden, hidden)] for k in range(n)]


def _forward_kernel(spec: KernelSpec, xw_ref, u_ref, *refs):
    """xw (T, rows, G*H), U (H, G*H), [eps (T, rows, H) per state] -> hs (T, rows, H), reserve (T, rows, R*H)."""
    n_states = len(equations.STATE_NAMES[spec.cell])
    eps_refs = refs[:n_states] if spec.probe else ()
    hs_ref, reserve_ref = refs[len(eps_refs) :]
    G, H = equations.GATES[spec.cell], spec.hidden
    length, rows = xw_ref.shape[0], xw_ref.shape[1]
    names = equations.STATE_NAMES[spec.cell]
    resident = u_blocks(u_ref, G, H) if spec.resident else None

    def body(i, states):
        t = step_index(i, length, spec.reverse, backward=False)
        u = resident if resident is not None else u_blocks(u_ref, G, H)
        eps = {name: ref[t] for name, ref in zip(names, eps_refs)} if spec.probe else None
        out = equations.forward(spec.cell, gate_blocks(xw_ref, t, G, H), u, dict(zip(names, states)), eps)
        hs_ref[t] = out.states["h"]
        for k, block in enumerate(out.reserve):
            reserve_ref[t, :, pl.ds(k * H, H)] = block
        return tuple(out.states[name] for name in names)

    zeros = tuple(jnp.zeros((rows, H), jnp.float32) for _ in names)
    jax.lax.fori_loop(0, length, body, zeros)


def forward(spec: KernelSpec, xw: jax.Array, u: jax.Array, eps: tuple[jax.Array, ...] | None):
    """Run the forward kernel. xw (T, B, G*H) with B a multiple of ``spec.tile``; eps (T, B, H) per state.

    Returns hs (T, B, H) and the reserve (T, B, R*H).
    """
    T, B, GH = xw.shape
    H, R = spec.hidden, equations.RESERVE_BLOCKS[spec.cell]
    rows = spec.tile
    seq = lambda width: pl.BlockSpec((T, rows, width), lambda b: (0, b, 0))
    in_specs = [seq(GH), pl.BlockSpec((H, GH), lambda b: (0, 0))]
    inputs = [xw, u]
    if eps is not None:
        in_specs += [seq(H)] * len(eps)
        inputs += list(eps)
    out_shape = (jax.ShapeDtypeStruct((T, B, H), jnp.float32), jax.ShapeDtypeStruct((T, B, R * H), jnp.float32))
    return pl.pallas_call(
        lambda *refs: _forward_kernel(spec, *refs),
        out_shape=out_shape,
        grid=(B // rows,),
        in_specs=in_specs,
        out_specs=(seq(H), seq(R * H)),
        interpret=spec.interpret,
        compiler_params=compiler_params(spec),
        name=f"lrd_{spec.cell}_forward",
    )(*inputs)
