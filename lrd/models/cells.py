"""Recurrent cells with one interface: ``(carry, x) -> (carry, h)``.

Every cell is a flax module whose carry is a tuple of states named by
``state_names`` (the output state ``h`` always last), created by
``initial_state``. A cell also takes an optional ``eps`` ({state name: (B, H)})
that it adds to each new state *as soon as that state is computed*, before
anything else uses it (the LSTM's h_t is computed from the perturbed c_t), so
that dL/d eps is exactly dL/d state_t (see ``lrd.probes``); zero by default.
Gated cells also ``sow`` their gate activations into the "intermediates"
collection (a no-op unless the caller asks for it with ``mutable``), which
``lrd.dynamics`` reads for its gate statistics.
Shapes: x (B, D), each state (B, H). Weights follow the textbook layout
``x @ W + h @ U + b`` with the gate blocks of W, U and b concatenated along
the last axis (one matmul per input, all gates at once).

Recurrent matrices U are initialised block by block (one H x H block per gate):
orthogonal by default (Saxe et al. 2014), or the identity (IRNN, Le, Jaitly &
Hinton 2015). Input matrices use LeCun normal, biases zero unless stated.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

RECURRENT_INITS = ("orthogonal", "identity")


def recurrent_init(kind: str, hidden: int, n_gates: int):
    """Initializer for a (H, n_gates*H) recurrent matrix, one H x H block per gate."""

    def init(key, shape, dtype=jnp.float32):
        assert shape == (hidden, n_gates * hidden), shape
        if kind == "identity":
            blocks = [jnp.eye(hidden, dtype=dtype)] * n_gates
        else:
            keys = jax.random.split(key, n_gates)
            blocks = [nn.initializers.orthogonal()(k, (hidden, hidden), dtype) for k in keys]
        return jnp.concatenate(blocks, axis=1)  # (H, G*H)

    return init


def perturbed(state: jax.Array, eps: dict[str, jax.Array] | None, name: str) -> jax.Array:
    """``state + eps[name]`` when probing, ``state`` otherwise."""
    return state if eps is None else state + eps[name]


class Cell(nn.Module):
    """Base class. Subclasses set ``name``, ``n_gates``, ``state_names``, ``equations``."""

    hidden: int
    recurrent_init: str = "orthogonal"

    name_: ClassVar[str]
    n_gates: ClassVar[int]
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    equations: ClassVar[str]
    source: ClassVar[str]

    @classmethod
    def initial_state(cls, batch_size: int, hidden: int) -> tuple[jax.Array, ...]:
        return tuple(jnp.zeros((batch_size, hidden), jnp.float32) for _ in cls.state_names)

    def gate_params(self, input_dim: int, bias_init=nn.initializers.zeros):
        """W (D, G*H), U (H, G*H), b (G*H)."""
        G, H = self.n_gates, self.hidden
        W = self.param("W", nn.initializers.lecun_normal(), (input_dim, G * H))
        U = self.param("U", recurrent_init(self.recurrent_init, H, G), (H, G * H))
        b = self.param("b", bias_init, (G * H,))
        return W, U, b


class RNNCell(Cell):
    name_: ClassVar[str] = "rnn"
    n_gates: ClassVar[int] = 1
    equations: ClassVar[str] = "h' = tanh(x W + h U + b)"
    source: ClassVar[str] = "Elman 1990 (tanh)"

    @nn.compact
    def __call__(self, carry, x, eps=None):
        (h,) = carry
        W, U, b = self.gate_params(x.shape[-1])
        candidate = jnp.tanh(x @ W + h @ U + b)  # (B, H)
        self.sow("intermediates", "candidate", candidate)
        h = perturbed(candidate, eps, "h")
        return (h,), h


class LSTMCell(Cell):
    """LSTM with a forget gate (Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000).

    Gate blocks in order i, f, g, o; no peepholes. The forget-gate bias starts at
    ``forget_bias`` (default 1.0, Gers et al. 2000; Jozefowicz, Zaremba & Sutskever 2015).
    """

    forget_bias: float = 1.0

    name_: ClassVar[str] = "lstm"
    n_gates: ClassVar[int] = 4
    state_names: ClassVar[tuple[str, ...]] = ("c", "h")
    equations: ClassVar[str] = (
        "i,f,g,o = split(x W + h U + b); c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c')"
    )
    source: ClassVar[str] = "Hochreiter & Schmidhuber 1997 with forget gate (Gers et al. 2000)"

    @nn.compact
    def __call__(self, carry, x, eps=None):
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


class GRUCell(Cell):
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

    name_: ClassVar[str] = "gru"
    n_gates: ClassVar[int] = 3
    equations: ClassVar[str] = (
        "r = sigmoid(x W_r + h U_r + b_r); z = sigmoid(x W_z + h U_z + b_z); "
        "n = tanh(x W_n + (r*h) U_n + b_n); h' = z h + (1-z) n"
    )
    source: ClassVar[str] = "Cho et al. 2014"

    @nn.compact
    def __call__(self, carry, x, eps=None):
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


CELLS: dict[str, type[Cell]] = {cls.name_: cls for cls in (RNNCell, LSTMCell, GRUCell)}
