"""Pallas kernels that run a recurrent layer's whole time loop on chip, forward and backward.

  equations   one timestep of rnn, lstm, gru, forward and backward, gate block by gate block
  forward     the forward kernel: grid (seeds, batch tiles), the loop over t inside
  backward    the backward kernel: the loop in reverse, carrying dL/dh (dL/dc), the probe's cotangent
  time_loop   the two joined with ``jax.custom_vjp``; the layer's entry point ``kernel_layer``
  choice      which time loop a layer runs (``[model] time_loop``), the size limits and the U strategy

Backend: Triton (``jax.experimental.pallas.triton``), chosen over Mosaic GPU because it
compiles on every CUDA GPU JAX supports (not only Hopper and later) and its
tile-level programming model fits a batch tile times H matmul per step; interpret
mode runs the same kernels on any device (the CPU tests).
"""

from lrd.models.kernels.choice import (
    MAX_HIDDEN,
    TIME_LOOPS,
    TimeLoop,
    backend_reason,
    choose,
    model_reason,
    parallel_reason,
    resident,
)
from lrd.models.kernels.time_loop import kernel_layer

__all__ = [
    "MAX_HIDDEN",
    "TIME_LOOPS",
    "TimeLoop",
    "backend_reason",
    "choose",
    "kernel_layer",
    "model_reason",
    "parallel_reason",
    "resident",
]
