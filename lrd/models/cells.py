"""Recurrent cells with one interface: ``(carry, x) -> (carry, y)``, and their registry ``CELLS``.

Every cell is a flax module whose carry is a tuple of states named by
``state_names`` (for the classic cells the output ``y`` is the last state
``h``), created by ``initial_state``. A cell also takes an optional ``eps``
({state name: (B, S)}) that it adds to each new state *as soon as that state is
computed*, before anything else uses it (the LSTM's h_t is computed from the
perturbed c_t), so that dL/d eps is exactly dL/d state_t (see ``lrd.probes``);
zero by default. Gated cells also ``sow`` their gate activations into the
"intermediates" collection (a no-op unless the caller asks for it with
``mutable``), which ``lrd.dynamics`` reads for its gate statistics.
Shapes: x (B, D), each state (B, S) with S = ``state_size(H)``
(H for the classic cells), the output y (B, H). The classic cells in this file
(rnn, lstm, gru) follow the textbook layout
``x @ W + h @ U + b`` with the gate blocks of W, U and b concatenated along
the last axis (one matmul per input, all gates at once).

Recurrent matrices U are initialised block by block (one H x H block per gate):
orthogonal by default (Saxe et al. 2014), or the identity (as the IRNN of Le,
Jaitly & Hinton 2015, ``lrd.models.irnn``). Input matrices use LeCun normal,
biases zero unless stated.

Registry: a cell class is made available to experiment files by the ``@register``
decorator, keyed by its class attribute ``cell_name`` (flax reserves ``name``
for a module instance's name, so cells cannot use the attribute tasks use). A
cell may live outside the package: a file named in an experiment's ``imports``
that defines and registers one is all it takes (see the README, "Add a cell").

A cell may also define ``sequence(inputs, eps, reverse)``: the whole sequence at
once, inputs (B, T, D) and eps {state: (B, T, S)} -> outputs (B, T, H);
``RecurrentLayer`` then uses it instead of scanning ``__call__`` step by step. A
cell whose recurrence is linear in the state computes it there with
``jax.lax.associative_scan`` and sets ``parallel = True``: then ``[model] time_loop``
chooses between that parallel form and its step scanned over T.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, ...]
Eps = dict[str, jax.Array] | None  # {state name: (B, S)} per step, or (B, T, S) for a whole sequence


def recurrent_init(kind: str, hidden: int, n_gates: int, gain: float = 1.0) -> Callable:
    """Initializer for a (H, n_gates*H) recurrent matrix, one H x H block per gate, times ``gain``.

    ``gain`` scales every singular value of each block (orthogonal or identity: all ones) to
    ``gain``: sigma_max(U) = gain, the quantity of Pascanu et al.'s (2013) vanishing condition.

    The orthogonal blocks' QR is a LAPACK call on CPU; the initialisation program runs the
    members one at a time (``Program(sequential=True)`` in lrd.train) so that no batched
    LAPACK call can deadlock XLA's intra-op pool (docs/reliability.md).
    """

    def init(key, shape, dtype=jnp.float32):
        assert shape == (hidden, n_gates * hidden), shape
        if kind == "identity":
            blocks = [jnp.eye(hidden, dtype=dtype)] * n_gates
        else:
            blocks = [nn.initializers.orthogonal()(k, (hidden, hidden), dtype) for k in jax.random.split(key, n_gates)]
        U = jnp.concatenate(blocks, axis=1)  # (H, G*H)
        return U if gain == 1.0 else gain * U  # at the default the same program, bit for bit

    return init


def perturbed(state: jax.Array, eps: Eps, name: str) -> jax.Array:
    """``state + eps[name]`` when probing, ``state`` otherwise."""
    return state if eps is None else state + eps[name]


# --- registry ------------------------------------------------------------------
CELLS: dict[str, type[Cell]] = {}


def register(cls: type[Cell]) -> type[Cell]:
    """Class decorator: make a cell available by its ``cell_name`` in experiment files.

    Registering a second class under a name already taken is an error (re-registering
    the same class, as a module imported twice does, is not).
    """
    name = cls.__dict__.get("cell_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"cell class {cls.__qualname__} must set a class attribute cell_name (a non-empty string)")
    if name in CELLS and CELLS[name] is not cls:
        raise ValueError(f"cell name {name!r} is already registered by {CELLS[name].__qualname__}")
    CELLS[name] = cls
    return cls


class Cell(nn.Module):
    """Base class of every cell.

    Class attributes a subclass sets:
      cell_name: registry key used in experiment files (``cell = "lstm"``).
      state_names: the recurrent states, in carry order; each is probed.
      equations / source: one line each, shown by ``lrd cells``.
      dropped_options: ModelConfig options the cell accepts and ignores, so a grid
        over them does not duplicate its runs (the rnn drops ``forget_bias``); any
        other option the cell does not have as a field is refused.
      recurrence_params: names of the parameters that set the recurrence itself (the
        LRU's nu, theta, gamma; an SSM's A and step size), which ``[train]
        recurrence_lr_factor`` trains at a reduced rate, as their sources do; () for none.
      recurrent: False for a layer with no step ``(carry, x) -> (carry, y)`` (attention),
        which only has ``sequence``.
      parallel: True for a cell linear in its state whose ``sequence`` computes all T
        states at once with ``jax.lax.associative_scan``; its step ``__call__`` computes
        the same states one by one, and ``[model] time_loop`` chooses between the two
        (``lrd.models.kernels.choice``: the step on a CPU, where it is faster).
      length_dependent: True for a model whose parameters depend on the sequence length
        (attention with learned absolute positions, say); such a model cannot be evaluated
        at other gaps (``train.eval_gaps``). False for every recurrent cell.
      is_block: the cell is itself a whole block (its own norms, residual and MLP:
        attention), so ``[model] block`` is dropped for it: a grid over cells in blocks
        runs it once, as its own block.

    Dataclass fields besides ``hidden`` are the cell's options, set from the
    ModelConfig fields of the same name.
    """

    hidden: int

    cell_name: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    equations: ClassVar[str]
    source: ClassVar[str]
    dropped_options: ClassVar[tuple[str, ...]] = ()
    recurrence_params: ClassVar[tuple[str, ...]] = ()
    recurrent: ClassVar[bool] = True
    parallel: ClassVar[bool] = False
    length_dependent: ClassVar[bool] = False
    is_block: ClassVar[bool] = False

    @classmethod
    def state_size(cls, hidden: int, **options) -> int:
        """Width S of each state (and of its perturbation) for ``hidden`` units and the cell's ``options``
        (the delta-rule cells' state depends on ``heads``; the others ignore them)."""
        return hidden

    @classmethod
    def initial_state(cls, batch_size: int, hidden: int, **options) -> Carry:
        """Zeros, one (B, S) array per state."""
        size = cls.state_size(hidden, **options)
        return tuple(jnp.zeros((batch_size, size), jnp.float32) for _ in cls.state_names)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The cell's option names (its dataclass fields besides ``hidden``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("hidden", "parent", "name"))


class MatrixCell(Cell):
    """A cell with the textbook layout ``x W + h U + b`` (gate blocks concatenated) and ``n_gates`` gates."""

    recurrent_init: str = "orthogonal"
    recurrent_gain: float = 1.0

    n_gates: ClassVar[int]

    def gate_params(
        self, input_dim: int, bias_init: Callable = nn.initializers.zeros
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """W (D, G*H), U (H, G*H), b (G*H)."""
        G, H = self.n_gates, self.hidden
        W = self.param("W", nn.initializers.lecun_normal(), (input_dim, G * H))
        U = self.param("U", recurrent_init(self.recurrent_init, H, G, self.recurrent_gain), (H, G * H))
        b = self.param("b", bias_init, (G * H,))
        return W, U, b


@register
class RNNCell(MatrixCell):
    cell_name: ClassVar[str] = "rnn"
    n_gates: ClassVar[int] = 1
    equations: ClassVar[str] = "h' = tanh(x W + h U + b)"
    source: ClassVar[str] = "Elman 1990 (tanh)"
    dropped_options: ClassVar[tuple[str, ...]] = ("forget_bias",)

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        W, U, b = self.gate_params(x.shape[-1])
        candidate = jnp.tanh(x @ W + h @ U + b)  # (B, H)
        self.sow("intermediates", "candidate", candidate)
        h = perturbed(candidate, eps, "h")
        return (h,), h


@register
class LSTMCell(MatrixCell):
    """LSTM with a forget gate (Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000).

    Gate blocks in order i, f, g, o; no peepholes. The forget-gate bias starts at
    ``forget_bias`` (default 1.0, Gers et al. 2000; Jozefowicz, Zaremba & Sutskever 2015).
    """

    forget_bias: float = 1.0

    cell_name: ClassVar[str] = "lstm"
    n_gates: ClassVar[int] = 4
    state_names: ClassVar[tuple[str, ...]] = ("c", "h")
    equations: ClassVar[str] = (
        "i,f,g,o = split(x W + h U + b); c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c')"
    )
    source: ClassVar[str] = "Hochreiter & Schmidhuber 1997 with forget gate (Gers et al. 2000)"

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        c, h = carry
        H = self.hidden

        def bias_init(key, shape, dtype=jnp.float32):
            return jnp.zeros(shape, dtype).at[H : 2 * H].set(self.forget_bias)

        W, U, b = self.gate_params(x.shape[-1], bias_init)
        z = x @ W + h @ U + b  # (B, 4H)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        for name, gate in (("input", i), ("forget", f), ("candidate", g), ("output", o)):
            self.sow("intermediates", name, gate)
        c = perturbed(f * c + i * g, eps, "c")
        h = perturbed(o * jnp.tanh(c), eps, "h")
        return (c, h), h


@register
class GRUCell(MatrixCell):
    """GRU exactly as Cho et al. 2014 (eqs. 5-8), the textbook form.

    Gate blocks in order r, z, n. The reset gate r multiplies the state *before*
    the recurrent matmul of the candidate; the update gate z weighs the *old*
    state: h' = z h + (1 - z) n. (cuDNN, PyTorch and flax apply r after the
    matmul instead; that variant is not used here.)

    ``forget_bias`` initialises the bias of z, the gate that keeps the old state
    (the GRU's counterpart of the LSTM forget gate). With the textbook zero bias
    z starts near 1/2, so at initialisation the state, and its gradient, halves
    at every step; the default 1.0 (z near 0.73) mirrors the LSTM's forget bias
    (Jozefowicz et al. 2015). Set it to 0.0 for the plain zero initialisation.
    """

    forget_bias: float = 1.0

    cell_name: ClassVar[str] = "gru"
    n_gates: ClassVar[int] = 3
    equations: ClassVar[str] = (
        "r = sigmoid(x W_r + h U_r + b_r); z = sigmoid(x W_z + h U_z + b_z); "
        "n = tanh(x W_n + (r*h) U_n + b_n); h' = z h + (1-z) n"
    )
    source: ClassVar[str] = "Cho et al. 2014"

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array, eps: Eps = None) -> tuple[Carry, jax.Array]:
        (h,) = carry
        H = self.hidden

        def bias_init(key, shape, dtype=jnp.float32):
            return jnp.zeros(shape, dtype).at[H : 2 * H].set(self.forget_bias)

        W, U, b = self.gate_params(x.shape[-1], bias_init)
        xw = x @ W + b  # (B, 3H)
        rz = jax.nn.sigmoid(xw[:, : 2 * H] + h @ U[:, : 2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        n = jnp.tanh(xw[:, 2 * H :] + (r * h) @ U[:, 2 * H :])
        for name, gate in (("reset", r), ("update", z), ("candidate", n)):
            self.sow("intermediates", name, gate)
        h = perturbed(z * h + (1.0 - z) * n, eps, "h")
        return (h,), h
