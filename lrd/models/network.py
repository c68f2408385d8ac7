"""Scanning cells over time, bidirectional and stacked layers, and the readout.

``RecurrentLayer`` runs one cell over the time axis and returns its output at
every step: with the cell's whole-sequence ``sequence`` method where the cell
has one (the linear recurrences, with ``jax.lax.associative_scan``), otherwise
by scanning the step with ``jax.lax.scan`` (through ``flax.linen.scan``).
It optionally passes the cell a *perturbation* to add to each new state:
zeros whose gradient is dL/d(state_t), the per-timestep gradient that
``lrd.probes`` reads off the same backward pass as the parameter gradients.

``SequenceModel`` stacks ``layers`` layers; with ``bidirectional`` each layer
runs a forward and a backward (time-reversed) scan and merges them per
timestep by concatenation or sum (Schuster & Paliwal 1997), then a linear
readout maps every timestep's state to the task's outputs; the task's mask
selects the scored positions.

``block`` puts each layer's cell in the block the modern papers compare cells in
(the layers then keep the width ``hidden``, the inputs embedded to it by a linear map):

* ``"bare"`` (the default): the cell alone, its outputs the next layer's inputs;
* ``"residual"``: a pre-norm residual block, x + cell(RMSNorm(x)), then
  x + MLP(RMSNorm(x)) with a gated MLP (SwiGLU, inner width 8/3 hidden, as fla's
  ``GatedMLP`` and Llama), and an RMSNorm before the readout;
* ``"mamba"``: Mamba's block (Gu & Dao 2023, fig. 3), x + W_out(cell(silu(conv(u))) *
  silu(z)) with (u, z) = RMSNorm(x) W_in, a causal depthwise convolution of width 4
  and expansion 1 (Mamba expands by 2; here the cell keeps the width ``hidden`` so its
  state and probe are the bare cell's); Mamba-2's norm before W_out is left out.

The probe's perturbation joins each layer's cell state as in the bare model, and the
diagnostics read layer 0's cell on the inputs that cell receives (``cell_inputs``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer, model_validator

from lrd.models import kernels
from lrd.models.cells import CELLS, Cell
from lrd.names import unknown_name_message

# perturbation / probe structure: {f"layer{l}": {"fwd"|"bwd": {state_name: (B, T, S)}}}, S = config.state_size
Perturbation = dict[str, dict[str, dict[str, jax.Array]]]


# ModelConfig fields that are cell options: each is passed to the cells that have it as a field.
CELL_OPTIONS = (
    "recurrent_init",
    "recurrent_gain",
    "forget_bias",
    "r_min",
    "r_max",
    "max_phase",
    "log_space",
    "heads",
    "eigen_range",
)
# Options added after the first results were stored: left out of the dump (the run's hash and
# the runs table) when the cell does not have them, so the classic cells' run ids stay the same.
LATER_OPTIONS = ("r_min", "r_max", "max_phase", "log_space", "heads", "recurrent_gain", "eigen_range", "block")
# Options every cell without them drops (as a cell's ``dropped_options``): a grid over cells and eigenvalue
# ranges runs each cell once per range it has (the LSTM once), as Grazzi et al. compare them
DROPPED_BY_ALL = ("eigen_range",)
# Later options that cells have, with the value that reproduces the runs stored before them: left out of the
# dump at that value too
LATER_DEFAULTS = {"recurrent_gain": 1.0, "eigen_range": "[0,1]", "block": "bare"}


class ModelConfig(BaseModel):
    """A model: which cell, how wide, how deep, one or two directions, the cell's options.

    Cell options (``CELL_OPTIONS``) default to None, meaning the cell's own default; after
    validation each holds the value the cell uses, or None where the cell has no such
    option. Setting an option the cell does not have is an error naming the key, except
    the options a cell lists in ``dropped_options`` (``forget_bias`` on the rnn) and those of
    ``DROPPED_BY_ALL`` (``eigen_range``, on every cell without it), which
    are dropped so a grid over them does not create duplicate runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cell: str
    hidden: int = Field(64, gt=0)
    layers: int = Field(1, gt=0)
    bidirectional: bool = False
    merge: Literal["concat", "sum"] = "concat"
    block: Literal["bare", "residual", "mamba"] = Field(
        "bare", description="the cell alone, or in a pre-norm residual block with a gated MLP, or in Mamba's block"
    )
    recurrent_init: Literal["orthogonal", "identity"] | None = Field(
        None, description="initialisation of the recurrent matrices (rnn, irnn, lstm, gru)"
    )
    recurrent_gain: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="scale of the initial recurrent matrices: sigma_max(U) = gain (rnn, irnn, lstm, gru; default 1)",
    )
    forget_bias: float | None = Field(
        None,
        allow_inf_nan=False,
        description="initial bias of the gate that keeps the state: LSTM forget gate, GRU update gate; default 1.0",
    )
    r_min: float | None = Field(None, description="lru: smallest eigenvalue modulus of the ring initialisation")
    r_max: float | None = Field(None, description="lru: largest eigenvalue modulus of the ring initialisation")
    max_phase: float | None = Field(None, description="lru: largest eigenvalue phase of the ring initialisation")
    log_space: bool | None = Field(None, description="mingru/minlstm: the log-space form (positive candidate g)")
    heads: int | None = Field(
        None, gt=0, description="attention, deltanet, gated_deltanet, mamba2: heads per layer; must divide hidden"
    )
    eigen_range: Literal["[0,1]", "[-1,1]"] | None = Field(
        None,
        description="s6, mamba2, deltanet, gated_deltanet: the range of the state transition's eigenvalues "
        '(Grazzi et al. 2024); default "[0,1]"',
    )
    time_loop: kernels.TimeLoop = Field(
        "auto", description="the time loop: lax.scan or the Pallas kernels (lrd.models.kernels.choice)"
    )

    @field_validator("cell")
    @classmethod
    def _known_cell(cls, value: str) -> str:
        if value not in CELLS:
            hint = 'imports = ["my_cell.py"] at the top of the experiment file'
            raise ValueError(unknown_name_message(value, CELLS, imports_hint=hint))
        return value

    @field_validator("time_loop")
    @classmethod
    def _kernels_fit(cls, value: str, info: ValidationInfo) -> str:
        if value in ("kernel", "interpret") and {"cell", "hidden"} <= info.data.keys():
            reason = kernels.model_reason(info.data["cell"], info.data["hidden"])
            if reason:
                raise ValueError(f"{value!r} cannot run this model: {reason}; allowed here: 'auto' or 'scan'")
        if value == "parallel" and "cell" in info.data:
            reason = kernels.parallel_reason(info.data["cell"])
            if reason:
                raise ValueError(f"'parallel' cannot run this model: {reason}; allowed here: 'auto' or 'scan'")
        return value

    @model_validator(mode="after")
    def _resolve_cell_options(self) -> ModelConfig:
        cell = CELLS[self.cell]
        defaults = {f.name: f.default for f in dataclasses.fields(cell)}
        for option in CELL_OPTIONS:
            value = getattr(self, option)
            if option in defaults:
                object.__setattr__(self, option, defaults[option] if value is None else value)
            elif value is not None and option not in cell.dropped_options and option not in DROPPED_BY_ALL:
                allowed = ", ".join(cell.options()) or "none"
                raise ValueError(f"{option}: cell {self.cell!r} has no such option (its options: {allowed})")
            else:
                object.__setattr__(self, option, None)
        if self.r_min is not None and self.r_max is not None and not 0.0 <= self.r_min < self.r_max <= 1.0:
            raise ValueError(f"r_min, r_max: need 0 <= r_min < r_max <= 1 (got {self.r_min}, {self.r_max})")
        if self.max_phase is not None and not self.max_phase > 0.0:
            raise ValueError(f"max_phase: must be > 0 (got {self.max_phase})")
        if self.heads is not None and self.hidden % self.heads:
            raise ValueError(f"heads: must divide hidden ({self.hidden}); got {self.heads}")
        if cell.is_block:  # attention is a whole block already: it drops the setting, as eigen_range is dropped
            object.__setattr__(self, "block", "bare")
        if self.block != "bare" and self.bidirectional:
            raise ValueError(f"block: a {self.block!r} block runs one direction; allowed with bidirectional: 'bare'")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_later_options(self, handler) -> dict:
        data = handler(self)
        data = {k: v for k, v in data.items() if not (k in LATER_OPTIONS and (v is None or LATER_DEFAULTS.get(k) == v))}
        # the time loop changes how, not what, is computed: at its default ("auto") it stays out of the
        # dump, so the run ids of runs stored before the setting existed still hold
        return {k: v for k, v in data.items() if not (k == "time_loop" and v == "auto")}

    @property
    def label(self) -> str:
        """Short model name used in tables and figures, e.g. 'lstm', 'bi-gru'."""
        return ("bi-" if self.bidirectional else "") + self.cell

    @property
    def directions(self) -> tuple[str, ...]:
        return ("fwd", "bwd") if self.bidirectional else ("fwd",)

    def time_loop_path(self, backend: str | None = None) -> str:
        """The time loop the layers run on ``backend`` (default: JAX's): "scan", "kernel" or "interpret"."""
        return kernels.choose(self.time_loop, self.cell, self.hidden, backend or jax.default_backend())

    @property
    def state_names(self) -> tuple[str, ...]:
        return CELLS[self.cell].state_names

    @property
    def state_size(self) -> int:
        """Width of each state (and of its perturbation); 2 x hidden for a complex state stored as (Re, Im)."""
        return CELLS[self.cell].state_size(self.hidden, **self.cell_options())

    def cell_options(self) -> dict:
        """The cell's options as this configuration sets them: {option: value}."""
        return {option: getattr(self, option) for option in CELLS[self.cell].options() if option in CELL_OPTIONS}

    def cell_module(self, **kwargs) -> Cell:
        return CELLS[self.cell](hidden=self.hidden, **self.cell_options(), **kwargs)

    def zero_perturbation(self, batch_size: int, length: int) -> Perturbation:
        zeros = jnp.zeros((batch_size, length, self.state_size), jnp.float32)
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
    """Run a cell over time: inputs (B, T, D) -> outputs (B, T, H).

    With the cell's ``sequence`` method when it has one (a whole-sequence, e.g. parallel,
    form), otherwise by scanning its step ``__call__`` with ``lax.scan``, or, as
    ``config.time_loop`` chooses, running the same step equations on the Pallas kernels
    (``lrd.models.kernels``) with the parameters the scan made at init.
    """

    config: ModelConfig
    reverse: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array, perturbation: dict[str, jax.Array] | None = None) -> jax.Array:
        path = self.config.time_loop_path()
        cls = CELLS[self.config.cell]
        if cls.parallel and path == "scan":  # a parallel cell step by step; parameters where `sequence` has them
            cell = self.config.cell_module(name="cell")
            lifted = nn.scan(
                lambda module, carry, xs: module(carry, *xs),
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
                reverse=self.reverse,
            )
            carry = cls.initial_state(inputs.shape[0], self.config.hidden, **self.config.cell_options())
            _, hs = lifted(cell, carry, (inputs, perturbation))
            return hs  # (B, T, H)
        if hasattr(cls, "sequence"):  # the whole sequence at once (parallel in time, or a cell's own loop)
            return self.config.cell_module(name="cell").sequence(inputs, perturbation, self.reverse)  # (B, T, H)
        if path != "scan" and not self.is_initializing():  # the parameters the scan made at init
            W, U, b = (self.variables["params"]["scan"]["cell"][k] for k in ("W", "U", "b"))
            interpret = path == "interpret"
            return kernels.kernel_layer(self.config.cell, inputs, W, U, b, perturbation, self.reverse, interpret)
        scan = nn.scan(
            _PerturbedStep,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
            reverse=self.reverse,
        )
        carry = CELLS[self.config.cell].initial_state(inputs.shape[0], self.config.hidden, **self.config.cell_options())
        _, hs = scan(self.config, name="scan")(carry, (inputs, perturbation))
        return hs  # (B, T, H)


class SequenceModel(nn.Module):
    """Stacked (bi)directional recurrent layers, bare or in blocks, and a per-timestep linear readout."""

    config: ModelConfig
    output_dim: int

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        perturbation: Perturbation | None = None,
        readout: bool = True,
        cell_inputs: bool = False,
    ) -> jax.Array:
        """Outputs (B, T, output_dim); with ``readout = False`` the last layer's states (B, T, H or 2H).

        ``cell_inputs = True``: the sequence that layer 0's forward cell receives (the diagnostics' inputs).
        """
        if cell_inputs and not self.is_initializing():
            if self.config.block == "bare":
                return inputs
            return self._mixer_inputs(0, self._embed(inputs))[0]
        x = self._bare(inputs, perturbation) if self.config.block == "bare" else self._blocks(inputs, perturbation)
        head = nn.Dense(self.output_dim, name="readout")
        if not readout:
            if self.is_initializing():
                head(x)  # the readout's parameters exist whichever way the model is first called
            return x
        return head(x)  # (B, T, output_dim)

    def _bare(self, inputs: jax.Array, perturbation: Perturbation | None) -> jax.Array:
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
        return x

    def _blocks(self, inputs: jax.Array, perturbation: Perturbation | None) -> jax.Array:
        x = self._embed(inputs)  # (B, T, H), the residual stream
        for layer in range(self.config.layers):
            eps = None if perturbation is None else perturbation[f"layer{layer}"]["fwd"]
            cell_in, gate = self._mixer_inputs(layer, x)
            y = RecurrentLayer(self.config, name=f"layer{layer}_fwd")(cell_in, eps)
            if gate is not None:  # Mamba's block
                y = nn.Dense(self.config.hidden, name=f"layer{layer}_out")(y * nn.silu(gate))
            x = x + y
            if self.config.block == "residual":
                x = x + GatedMLP(self.config.hidden, name=f"layer{layer}_mlp")(
                    nn.RMSNorm(name=f"layer{layer}_mlp_norm")(x)
                )
        return nn.RMSNorm(name="final_norm")(x)

    def _embed(self, inputs: jax.Array) -> jax.Array:
        """The inputs (B, T, D) mapped linearly to the blocks' width (B, T, H)."""
        return nn.Dense(self.config.hidden, name="embed")(inputs)

    def _mixer_inputs(self, layer: int, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """What layer ``layer``'s cell receives from the residual stream ``x``, and Mamba's gate branch z."""
        normed = nn.RMSNorm(name=f"layer{layer}_norm")(x)
        if self.config.block != "mamba":
            return normed, None
        u, z = jnp.split(nn.Dense(2 * self.config.hidden, name=f"layer{layer}_in")(normed), 2, axis=-1)
        return nn.silu(CausalConv(name=f"layer{layer}_conv")(u)), z


class GatedMLP(nn.Module):
    """The block's MLP: W_down(silu(x W_gate) * x W_up), inner width 8/3 of ``width`` (SwiGLU)."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        inner = max(1, 8 * self.width // 3)
        gate, up = jnp.split(nn.Dense(2 * inner, use_bias=False, name="up")(x), 2, axis=-1)
        return nn.Dense(self.width, use_bias=False, name="down")(nn.silu(gate) * up)


class CausalConv(nn.Module):
    """Mamba's short convolution: depthwise over time, causal, ``width`` taps, with a bias."""

    width: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # (B, T, C)
        channels = x.shape[-1]
        bound = 1.0 / math.sqrt(self.width)  # PyTorch's Conv1d default for groups = channels
        uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
        w = self.param("kernel", uniform, (self.width, channels))  # w[k] weighs x_{t-k}
        b = self.param("bias", uniform, (channels,))
        T = x.shape[1]
        padded = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0)))
        return b + sum(w[k] * padded[:, self.width - 1 - k : self.width - 1 - k + T] for k in range(self.width))


def readout(model: SequenceModel, params, states: jax.Array) -> jax.Array:
    """The readout of ``model`` applied to last-layer ``states`` (B, T, H): the same Dense as inside the model."""
    return nn.Dense(model.output_dim).apply({"params": params["params"]["readout"]}, states)  # type: ignore[return-value]


# --- parameter counts ---------------------------------------------------------------------
MAX_HIDDEN = 1 << 16  # the widest model hidden_for_params considers


def parameter_count(config: ModelConfig, input_dim: int) -> int:
    """Trainable parameters of the recurrent layers of ``config`` for inputs of width ``input_dim``.

    The readout is left out (it depends on the task's output, not on the cell). Counted from
    the shapes alone (``jax.eval_shape``), so nothing is computed.
    """
    model = SequenceModel(config, output_dim=1)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2, input_dim), jnp.float32))
    layers = {k: v for k, v in shapes["params"].items() if k != "readout"}
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(layers))


# Held by every thread that traces a model: flax makes module classes while tracing (``nn.scan``), and while it
# makes one it takes fields out of its base classes' dataclass fields and puts them back
# (flax.linen.kw_only_dataclasses). A second thread tracing then can meet a half-edited class: "RuntimeError:
# dictionary changed size during iteration", seen once when two groups began at once (lrd.backends.in_workers).
# Tracing holds Python's lock anyway, so taking turns costs little; the compiled programs run without it.
MODEL_LOCK = threading.RLock()


@functools.lru_cache(maxsize=256)
def param_count(config: ModelConfig, input_dim: int, output_dim: int) -> int:
    """Number of trained parameters of the whole model (every leaf of the params tree, readout included).

    ``[model] params = N`` matches this count (``parameter_count`` counts the recurrent layers alone).

    Counted from the shapes ``SequenceModel.init`` would create (``jax.eval_shape``: nothing
    is allocated), so it holds for every registered cell, layer count and direction.
    """
    with MODEL_LOCK:
        model = SequenceModel(config, output_dim)
        dummy = jnp.zeros((1, 1, input_dim), jnp.float32)  # (B, T, D): params do not depend on B or T
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def hidden_for_params(config: ModelConfig, input_dim: int, output_dim: int, target: int) -> int | None:
    """The hidden size whose ``param_count`` is closest to ``target`` (the smaller on a tie).

    Only multiples of ``config.heads`` are allowed where the cell has heads (attention), so
    the sizes searched are k x unit, k = 1, 2, ... ``None`` when ``target`` is below the count
    at the smallest size or above the count at the largest up to ``MAX_HIDDEN``. The count
    grows with the hidden size, so a bisection finds it.
    """
    unit = config.heads or 1

    def count(k: int) -> int:
        return param_count(config.model_copy(update={"hidden": k * unit}), input_dim, output_dim)

    top = MAX_HIDDEN // unit
    if target < count(1) or target > count(top):
        return None
    low, high = 1, 2  # grow to a bracket count(low) <= target <= count(high)
    while count(high) < target:
        low, high = high, min(2 * high, top)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) <= target else (low, middle)
    return unit * (low if target - count(low) <= count(high) - target else high)
