"""IRNN: a ReLU RNN with the identity recurrent initialisation.

Source: Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks of
rectified linear units". Equations::

    h_t = relu(x_t W + h_{t-1} U + b)

Initialisation (the paper's): U = I (the identity), b = 0. Input weights W: LeCun
normal here, as for the other cells (the paper draws them from N(0, 0.001) on the
adding problem). ``recurrent_init = "orthogonal"`` gives a ReLU RNN with an
orthogonal U instead. ``forget_bias`` is dropped, as for the rnn.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Carry, Eps, MatrixCell, perturbed, register


@register
class IRNNCell(MatrixCell):
    recurrent_init: str = "identity"

    cell_name: ClassVar[str] = "irnn"
    n_gates: ClassVar[int] = 1
    equations: ClassVar[str] = "h' = relu(x W + h U + b); U = I, b = 0 at initialisation"
    source: ClassVar[str] = "Le, Jaitly & Hinton 2015 (IRNN)"
    dropped_options: ClassVar[tuple[str, ...]] = ("forget_bias",)

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        W, U, b = self.gate_params(x.shape[-1])
        h = perturbed(jnp.maximum(x @ W + h @ U + b, 0.0), eps, "h")  # (B, H)
        return (h,), h
