"""Scanning cells over time, bidirectional and stacked layers, and the readout.

``RecurrentLayer`` scans one cell over the time axis with ``jax.lax.scan``
(through ``flax.linen.scan``) and returns the hidden state at every step.
It optionally passes the cell a *perturbation* to add to each new state:
zeros whose gradient is dL/d(state_t), the per-timestep gradient that
``lrd.probes`` reads off the same backward pass as the parameter gradients.

``SequenceModel`` stacks ``layers`` layers; with ``bidirectional`` each layer
runs a forward and a backward (time-reversed) scan and merges them per
timestep by concatenation or sum (Schuster & Paliwal 1997), then a linear
readout maps every timestep's state to the task's outputs; the task's mask
selects the scored positions.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lrd.models.cells import CELLS, Cell
from lrd.tasks.base import unknown_name_message

# perturbation / probe structure: {f"layer{l}": {"fwd"|"bwd": {state_name: (B, T, H)}}}
Perturbation = dict[str, dict[str, dict[str, jax.Array]]]


class ModelConfig(BaseModel):
    """A model: which cell, how wide, how deep, one or two directions, its initialisation."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cell: str
    hidden: int = Field(64, gt=0)
    layers: int = Field(1, gt=0)
    bidirectional: bool = False
    merge: Literal["concat", "sum"] = "concat"
    recurrent_init: Literal["orthogonal", "identity"] = "orthogonal"
    forget_bias: float | None = Field(
        None,
        description="initial bias of the gate that keeps the state: LSTM forget gate, GRU update gate; default 1.0",
    )

    @field_validator("cell")
    @classmethod
    def _known_cell(cls, value: str) -> str:
        if value not in CELLS:
            raise ValueError(unknown_name_message(value, CELLS))
        return value

    @model_validator(mode="after")
    def _resolve_cell_options(self):
        # forget_bias means something for gated cells only: default it there, drop it elsewhere,
        # so a grid over it does not create duplicate runs of the other cells.
        gated = "forget_bias" in CELLS[self.cell].__dataclass_fields__
        wanted = (1.0 if self.forget_bias is None else self.forget_bias) if gated else None
        object.__setattr__(self, "forget_bias", wanted)
        return self

    @property
    def label(self) -> str:
        """Short model name used in tables and figures, e.g. 'lstm', 'bi-gru'."""
        return ("bi-" if self.bidirectional else "") + self.cell

    @property
    def directions(self) -> tuple[str, ...]:
        return ("fwd", "bwd") if self.bidirectional else ("fwd",)

    @property
    def state_names(self) -> tuple[str, ...]:
        return CELLS[self.cell].state_names

    def cell_module(self, **kwargs) -> Cell:
        extra = {} if self.forget_bias is None else {"forget_bias": self.forget_bias}
        return CELLS[self.cell](hidden=self.hidden, recurrent_init=self.recurrent_init, **extra, **kwargs)

    def zero_perturbation(self, batch_size: int, length: int) -> Perturbation:
        zeros = jnp.zeros((batch_size, length, self.hidden), jnp.float32)
        return {
            f"layer{layer}": {d: {s: zeros for s in self.state_names} for d in self.directions}
            for layer in range(self.layers)
        }


class _PerturbedStep(nn.Module):
    """One scan step: the cell, given this step's perturbation (or None)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, carry, xs):
        x, eps = xs
        return self.config.cell_module(name="cell")(carry, x, eps)  # emits h


class RecurrentLayer(nn.Module):
    """Scan a cell over time. inputs (B, T, D) -> states h (B, T, H)."""

    config: ModelConfig
    reverse: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array, perturbation: dict[str, jax.Array] | None = None) -> jax.Array:
        scan = nn.scan(
            _PerturbedStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
            reverse=self.reverse,
        )
        carry = CELLS[self.config.cell].initial_state(inputs.shape[0], self.config.hidden)
        _, hs = scan(self.config, name="scan")(carry, (inputs, perturbation))
        return hs  # (B, T, H)


class SequenceModel(nn.Module):
    """Stacked (bi)directional recurrent layers and a per-timestep linear readout."""

    config: ModelConfig
    output_dim: int

    @nn.compact
    def __call__(self, inputs: jax.Array, perturbation: Perturbation | None = None) -> jax.Array:
        x = inputs  # (B, T, D)
        for layer in range(self.config.layers):
            outs = []
            for direction in self.config.directions:
                eps = None if perturbation is None else perturbation[f"layer{layer}"][direction]
                rnn = RecurrentLayer(self.config, reverse=direction == "bwd", name=f"layer{layer}_{direction}")
                outs.append(rnn(x, eps))  # (B, T, H)
            if len(outs) == 1:
                x = outs[0]
            elif self.config.merge == "concat":
                x = jnp.concatenate(outs, axis=-1)  # (B, T, 2H)
            else:
                x = outs[0] + outs[1]  # (B, T, H)
        return nn.Dense(self.output_dim, name="readout")(x)  # (B, T, output_dim)


# --- parameter counts ---------------------------------------------------------------------
MAX_HIDDEN = 1 << 16  # the widest model hidden_for_params considers


@functools.lru_cache(maxsize=256)
def param_count(config: ModelConfig, input_dim: int, output_dim: int) -> int:
    """Number of trained parameters (every leaf of the initialised params tree, readout included).

    Counted from the shapes ``SequenceModel.init`` would create (``jax.eval_shape``: nothing
    is allocated), so it holds for every registered cell, layer count and direction.
    """
    model = SequenceModel(config, output_dim)
    dummy = jnp.zeros((1, 1, input_dim), jnp.float32)  # (B, T, D): params do not depend on B or T
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def hidden_for_params(config: ModelConfig, input_dim: int, output_dim: int, target: int) -> int | None:
    """The hidden size whose ``param_count`` is closest to ``target`` (the smaller on a tie).

    ``None`` when ``target`` is below the count at hidden size 1 or above the count at
    ``MAX_HIDDEN``. The count grows with the hidden size, so a bisection finds it.
    """

    def count(hidden: int) -> int:
        return param_count(config.model_copy(update={"hidden": hidden}), input_dim, output_dim)

    if target < count(1) or target > count(MAX_HIDDEN):
        return None
    low, high = 1, 2  # grow to a bracket count(low) <= target <= count(high)
    while count(high) < target:
        low, high = high, min(2 * high, MAX_HIDDEN)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) <= target else (low, middle)
    return low if target - count(low) <= count(high) - target else high
