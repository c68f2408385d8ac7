"""Every registered cell against its textbook equations, written again in NumPy (float64)."""

from __future__ import annotations

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
from conftest import TINY

from lrd.models import CELLS, ModelConfig

B, D, H = 3, 5, 4


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _add(eps, name, state):
    """The state plus its perturbation, added the moment the state is computed."""
    return state if eps is None else state + eps[name]


def rnn_reference(carry, x, W, U, b, eps=None):
    """Elman: h' = tanh(x W + h U + b)."""
    (h,) = carry
    return (_add(eps, "h", np.tanh(x @ W + h @ U + b)),)


def lstm_reference(carry, x, W, U, b, eps=None):
    """LSTM with forget gate, gate blocks i, f, g, o; h' is computed from the (perturbed) c'."""
    c, h = carry
    Wi, Wf, Wg, Wo = np.split(W, 4, axis=1)
    Ui, Uf, Ug, Uo = np.split(U, 4, axis=1)
    bi, bf, bg, bo = np.split(b, 4)
    i = _sigmoid(x @ Wi + h @ Ui + bi)
    f = _sigmoid(x @ Wf + h @ Uf + bf)
    g = np.tanh(x @ Wg + h @ Ug + bg)
    o = _sigmoid(x @ Wo + h @ Uo + bo)
    c_new = _add(eps, "c", f * c + i * g)
    return c_new, _add(eps, "h", o * np.tanh(c_new))


def gru_reference(carry, x, W, U, b, eps=None):
    """Cho et al. 2014 eqs. 5-8, blocks r, z, n: reset before the recurrent matmul, h' = z h + (1 - z) n."""
    (h,) = carry
    Wr, Wz, Wn = np.split(W, 3, axis=1)
    Ur, Uz, Un = np.split(U, 3, axis=1)
    br, bz, bn = np.split(b, 3)
    r = _sigmoid(x @ Wr + h @ Ur + br)
    z = _sigmoid(x @ Wz + h @ Uz + bz)
    n = np.tanh(x @ Wn + (r * h) @ Un + bn)
    return (_add(eps, "h", z * h + (1.0 - z) * n),)


REFERENCES = {"rnn": rnn_reference, "lstm": lstm_reference, "gru": gru_reference}

# gated cells: which gate block's bias ``forget_bias`` sets (the gate that keeps the state)
KEEP_GATE = {"lstm": 1, "gru": 1}  # LSTM f of (i, f, g, o); GRU z of (r, z, n)
GATED = sorted(name for name, cls in CELLS.items() if "forget_bias" in cls.__dataclass_fields__)


def _reference(name: str):
    if name not in REFERENCES:
        pytest.fail(f"cell {name!r} is registered in CELLS but has no NumPy reference in tests/test_cells.py")
    return REFERENCES[name]


def _cell_and_params(name: str):
    """The cell, random non-zero parameters, a random carry and input."""
    cell = ModelConfig(cell=name, hidden=H).cell_module()
    k_carry, k_x, k_init, k_perturb = jax.random.split(jax.random.PRNGKey(0), 4)
    carry = tuple(0.8 * jax.random.normal(k, (B, H)) for k in jax.random.split(k_carry, len(cell.state_names)))
    x = jax.random.normal(k_x, (B, D))  # (B, D)
    params = cell.init(k_init, carry, x)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k_perturb, len(leaves))
    leaves = [p + 0.5 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return cell, jax.tree.unflatten(treedef, leaves), carry, x


def _check_step(name, perturb: bool):
    reference = _reference(name)
    cell, params, carry, x = _cell_and_params(name)
    p = {k: np.asarray(v, np.float64) for k, v in params["params"].items()}
    assert p["W"].shape == (D, cell.n_gates * H) and p["U"].shape == (H, cell.n_gates * H)
    assert np.all(p["b"] != 0.0)  # the biases really take part in the comparison
    keys = jax.random.split(jax.random.PRNGKey(7), len(cell.state_names))
    eps = {s: 0.3 * jax.random.normal(k, (B, H)) for s, k in zip(cell.state_names, keys)} if perturb else None

    new_carry, y = cell.apply(params, carry, x, eps)
    expected = reference(
        tuple(np.asarray(s, np.float64) for s in carry),
        np.asarray(x, np.float64),
        p["W"],
        p["U"],
        p["b"],
        None if eps is None else {s: np.asarray(e, np.float64) for s, e in eps.items()},
    )

    assert len(new_carry) == len(cell.state_names) == len(expected)
    for state_name, got, want in zip(cell.state_names, new_carry, expected):
        assert got.shape == (B, H) and got.dtype == jnp.float32, state_name
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: state {state_name}")
    np.testing.assert_array_equal(np.asarray(y), np.asarray(new_carry[-1]))  # the output is h, the last state
    assert cell.state_names[-1] == "h"


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_step_matches_numpy_reference(name):
    _check_step(name, perturb=False)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_perturbation_is_added_where_each_state_is_computed(name):
    """eps (used by the gradient probe) enters every state before anything else uses it."""
    _check_step(name, perturb=True)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_initial_state_is_zeros_per_state(name):
    carry = CELLS[name].initial_state(B, H)
    assert len(carry) == len(CELLS[name].state_names)
    for state in carry:
        assert state.shape == (B, H) and state.dtype == jnp.float32
        assert not np.any(np.asarray(state))


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("forget_bias", [None, 2.5, -0.5])
def test_forget_bias_init(name, forget_bias):
    if name not in KEEP_GATE:
        pytest.fail(f"gated cell {name!r} has no KEEP_GATE entry in tests/test_cells.py")
    cell = ModelConfig(cell=name, hidden=H, forget_bias=forget_bias).cell_module()
    b = np.asarray(cell.init(jax.random.PRNGKey(0), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]["b"])
    expected = np.zeros((cell.n_gates, H))
    expected[KEEP_GATE[name]] = 1.0 if forget_bias is None else forget_bias
    np.testing.assert_array_equal(b, expected.ravel())


def test_gated_cells_are_detected():
    assert {"lstm", "gru"} <= set(GATED) and "rnn" not in GATED


@pytest.mark.parametrize("name", sorted(CELLS))
def test_recurrent_init_orthogonal_blocks(name):
    cell = ModelConfig(cell=name, hidden=H).cell_module()
    U = np.asarray(cell.init(jax.random.PRNGKey(3), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]["U"])
    blocks = np.split(U, cell.n_gates, axis=1)  # n_gates x (H, H)
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
        assert not np.allclose(block, np.eye(H), atol=1e-2)  # not the identity init
    for a, b in itertools.pairwise(blocks):
        assert not np.allclose(a, b)  # one independent draw per gate


@pytest.mark.parametrize("name", sorted(CELLS))
def test_recurrent_init_identity(name):
    cell = ModelConfig(cell=name, hidden=H, recurrent_init="identity").cell_module()
    params = cell.init(jax.random.PRNGKey(3), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]
    np.testing.assert_array_equal(np.asarray(params["U"]), np.tile(np.eye(H), (1, cell.n_gates)))
    assert np.any(np.asarray(params["W"]))  # input weights stay random


def test_unknown_cell_suggests_a_name():
    with pytest.raises(pydantic.ValidationError, match="did you mean 'lstm'"):
        ModelConfig(cell="lstn")
    with pytest.raises(pydantic.ValidationError, match="allowed: gru, lstm, rnn"):
        ModelConfig(cell="transformer")


def test_config_refuses_typos_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="hiden"):
        ModelConfig(cell="rnn", hiden=8)
    with pytest.raises(pydantic.ValidationError, match="hidden"):
        ModelConfig(cell="rnn", hidden=0)
    with pytest.raises(pydantic.ValidationError, match="recurrent_init"):
        ModelConfig(cell="rnn", recurrent_init="zeros")


@pytest.mark.parametrize("name", sorted(set(CELLS) - set(GATED)))
def test_forget_bias_dropped_for_ungated_cells(name):
    config = ModelConfig(cell=name, hidden=H, forget_bias=3.0)
    assert config.forget_bias is None
    assert config == ModelConfig(cell=name, hidden=H)  # a grid over forget_bias makes no duplicates
    assert not hasattr(config.cell_module(), "forget_bias")


@pytest.mark.parametrize("name", GATED)
def test_forget_bias_defaults_for_gated_cells(name):
    assert ModelConfig(cell=name).forget_bias == 1.0
    assert ModelConfig(cell=name, forget_bias=0.0).forget_bias == 0.0
    assert ModelConfig(cell=name, forget_bias=2.0).cell_module().forget_bias == 2.0


# --- the registry: cells added from outside the package ------------------------------
OUTSIDE_CELL = """
import flax.linen as nn
import jax.numpy as jnp

from lrd.models import Cell, perturbed, register


@register
class HalfLeaky(Cell):
    cell_name = "half_leaky_test"
    equations = "h' = h/2 + tanh(x W)/2"
    source = "tests/test_cells.py"

    @nn.compact
    def __call__(self, carry, x, eps=None):
        (h,) = carry
        W = self.param("W", nn.initializers.lecun_normal(), (x.shape[-1], self.hidden))
        h = perturbed(0.5 * h + 0.5 * jnp.tanh(x @ W), eps, "h")
        return (h,), h
"""


@pytest.fixture
def outside_cell(tmp_path):
    """The outside cell's file; its registration is undone afterwards so other tests see the built-ins only."""
    (tmp_path / "outside_cell.py").write_text(OUTSIDE_CELL)
    yield
    CELLS.pop("half_leaky_test", None)
    for module in [m for m in sys.modules if m.startswith("lrd_user_outside_cell")]:
        del sys.modules[module]


def test_cell_from_an_experiment_imports_trains(write_experiment, outside_cell):
    from lrd.experiment import load_experiment
    from lrd.train import Trainer

    text = 'imports = ["outside_cell.py"]\n' + TINY.replace('cell = ["rnn", "lstm"]', 'cell = "half_leaky_test"')
    text = text.replace("steps = 20", "steps = 4").replace("log_every = 10", "log_every = 2")
    experiment = load_experiment(write_experiment(text))
    assert "half_leaky_test" in CELLS and CELLS["half_leaky_test"].__module__.startswith("lrd_user_outside_cell")
    (spec,) = {(s.task, s.model, s.train): s for s in experiment.runs}.values()
    result = Trainer(spec.task, spec.model, spec.train).run([0, 1])
    losses = np.array([np.asarray(r.metrics["loss"]) for r in result.records])  # (log points, seeds)
    assert losses.shape == (3, 2) and np.all(np.isfinite(losses))
    assert not np.array_equal(losses[0], losses[-1])  # it trained
    assert np.all(np.asarray(result.diverged_step) == -1)


def test_registering_a_cell_name_twice_is_an_error():
    from lrd.models import register

    class Other(CELLS["rnn"]):
        cell_name = "rnn"

    with pytest.raises(ValueError, match="cell name 'rnn' is already registered by RNNCell"):
        register(Other)
    assert CELLS["rnn"].__name__ == "RNNCell"
    register(CELLS["rnn"])  # the same class again (a module imported twice) is fine


def test_a_cell_file_that_registers_a_taken_name_is_one_line(write_experiment, tmp_path):
    from lrd.experiment import ExperimentError, load_experiment

    (tmp_path / "dup_cell.py").write_text(OUTSIDE_CELL.replace('"half_leaky_test"', '"lstm"'))
    with pytest.raises(ExperimentError, match=r"dup_cell.py.*cell name 'lstm' is already registered by LSTMCell"):
        load_experiment(write_experiment('imports = ["dup_cell.py"]\n' + TINY))
