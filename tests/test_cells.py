"""Every registered cell against its source's equations, written again in NumPy (float64).

Also: the parallel-in-time form of the linear recurrences against a sequential
``lax.scan`` of the same step, the cells' initialisations, and the options ModelConfig
passes to (or refuses for) each cell.
"""

from __future__ import annotations

import itertools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
import scipy.linalg
from conftest import TINY

from lrd.models import CELLS, MatrixCell, ModelConfig
from lrd.models.scan import linear_recurrence, log_linear_recurrence, sequential_linear_recurrence

B, D, H = 3, 5, 4


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softplus(z):
    return np.logaddexp(0.0, z)


def _add(eps, name, state):
    """The state plus its perturbation, added the moment the state is computed."""
    return state if eps is None else state + eps[name]


def rnn_reference(carry, x, p, eps=None, **_):
    """Elman: h' = tanh(x W + h U + b)."""
    (h,) = carry
    h = _add(eps, "h", np.tanh(x @ p["W"] + h @ p["U"] + p["b"]))
    return (h,), h


def irnn_reference(carry, x, p, eps=None, **_):
    """Le et al. 2015: h' = relu(x W + h U + b)."""
    (h,) = carry
    h = _add(eps, "h", np.maximum(x @ p["W"] + h @ p["U"] + p["b"], 0.0))
    return (h,), h


def lstm_reference(carry, x, p, eps=None, **_):
    """LSTM with forget gate, gate blocks i, f, g, o; h' is computed from the (perturbed) c'."""
    c, h = carry
    Wi, Wf, Wg, Wo = np.split(p["W"], 4, axis=1)
    Ui, Uf, Ug, Uo = np.split(p["U"], 4, axis=1)
    bi, bf, bg, bo = np.split(p["b"], 4)
    i = _sigmoid(x @ Wi + h @ Ui + bi)
    f = _sigmoid(x @ Wf + h @ Uf + bf)
    g = np.tanh(x @ Wg + h @ Ug + bg)
    o = _sigmoid(x @ Wo + h @ Uo + bo)
    c_new = _add(eps, "c", f * c + i * g)
    h_new = _add(eps, "h", o * np.tanh(c_new))
    return (c_new, h_new), h_new


def gru_reference(carry, x, p, eps=None, **_):
    """Cho et al. 2014 eqs. 5-8, blocks r, z, n: reset before the recurrent matmul, h' = z h + (1 - z) n."""
    (h,) = carry
    Wr, Wz, Wn = np.split(p["W"], 3, axis=1)
    Ur, Uz, Un = np.split(p["U"], 3, axis=1)
    br, bz, bn = np.split(p["b"], 3)
    r = _sigmoid(x @ Wr + h @ Ur + br)
    z = _sigmoid(x @ Wz + h @ Uz + bz)
    n = np.tanh(x @ Wn + (r * h) @ Un + bn)
    h = _add(eps, "h", z * h + (1.0 - z) * n)
    return (h,), h


def _g(v):
    """Feng et al. 2024: g(v) = v + 1/2 for v >= 0, sigmoid(v) below."""
    return np.where(v >= 0, v + 0.5, _sigmoid(v))


def mingru_reference(carry, x, p, eps=None, log_space=True):
    """Feng et al. 2024: z = sigmoid(x W_z + b_z); c = g(x W_h + b_h) (or without g); h' = (1 - z) h + z c."""
    (h,) = carry
    Wz, Wh = np.split(p["W"], 2, axis=1)
    bz, bh = np.split(p["b"], 2)
    z = _sigmoid(x @ Wz + bz)
    c = _g(x @ Wh + bh) if log_space else x @ Wh + bh
    h = _add(eps, "h", (1.0 - z) * h + z * c)
    return (h,), h


def minlstm_reference(carry, x, p, eps=None, log_space=True):
    """Feng et al. 2024: f, i sigmoid gates normalised to f/(f+i), i/(f+i); h' = f' h + i' c."""
    (h,) = carry
    Wf, Wi, Wh = np.split(p["W"], 3, axis=1)
    bf, bi, bh = np.split(p["b"], 3)
    f, i = _sigmoid(x @ Wf + bf), _sigmoid(x @ Wi + bi)
    c = _g(x @ Wh + bh) if log_space else x @ Wh + bh
    h = _add(eps, "h", f / (f + i) * h + i / (f + i) * c)
    return (h,), h


def lru_reference(carry, x, p, eps=None, **_):
    """Orvieto et al. 2023: h' = lambda h + gamma (x B), y = Re(h' C) + x D, h complex stored as (Re h, Im h)."""
    (state,) = carry
    n = state.shape[-1] // 2
    lam = np.exp(-np.exp(p["nu_log"])) * (np.cos(np.exp(p["theta_log"])) + 1j * np.sin(np.exp(p["theta_log"])))
    h = lam * (state[:, :n] + 1j * state[:, n:]) + np.exp(p["gamma_log"]) * (x @ (p["B_re"] + 1j * p["B_im"]))
    if eps is not None:
        h = h + eps["h"][:, :n] + 1j * eps["h"][:, n:]
    y = np.real(h @ (p["C_re"] + 1j * p["C_im"])) + x @ p["D"]
    return (np.concatenate([h.real, h.imag], axis=-1),), y


def s6_reference(carry, x, p, eps=None, **_):
    """Gu & Dao 2023 S6: Delta = softplus(u W_x[:R] W_dt + b_dt), h' = exp(Delta A) h + Delta B u, y = h' C + D u."""
    (state,) = carry
    n_states = p["A_log"].shape[1]
    rank = p["W_dt"].shape[0]
    u = x @ p["W_u"] + p["b_u"]  # (B, H)
    proj = u @ p["W_x"]
    delta = _softplus(proj[:, :rank] @ p["W_dt"] + p["b_dt"])  # (B, H)
    Bt, Ct = proj[:, rank : rank + n_states], proj[:, rank + n_states :]  # (B, N)
    A = -np.exp(p["A_log"])  # (H, N)
    h = np.exp(delta[:, :, None] * A) * state.reshape(u.shape[0], -1, n_states)
    h = h + delta[:, :, None] * Bt[:, None, :] * u[:, :, None]  # (B, H, N)
    if eps is not None:
        h = h + eps["h"].reshape(h.shape)
    y = np.einsum("bhn,bn->bh", h, Ct) + p["D"] * u
    return (h.reshape(state.shape),), y


def s4d_reference(carry, x, p, eps=None, **_):
    """Gu et al. 2022 S4D with ZOH: h' = exp(dt A) h + (exp(dt A) - 1)/A u, y = 2 Re(sum C h') + D u."""
    (state,) = carry
    u = x @ p["W_u"] + p["b_u"]  # (B, H)
    A = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]  # (H, M)
    A_bar = np.exp(np.exp(p["log_dt"])[:, None] * A)
    half = state.shape[-1] // 2
    h = A_bar * (state[:, :half] + 1j * state[:, half:]).reshape(u.shape[0], *A.shape)
    h = h + (A_bar - 1.0) / A * u[:, :, None]
    if eps is not None:
        h = h + (eps["h"][:, :half] + 1j * eps["h"][:, half:]).reshape(h.shape)
    y = 2.0 * np.real(np.sum((p["C_re"] + 1j * p["C_im"]) * h, axis=-1)) + p["D"] * u
    flat = h.reshape(h.shape[0], -1)
    return (np.concatenate([flat.real, flat.imag], axis=-1),), y


def exprnn_reference(carry, x, p, eps=None, **_):
    """Lezcano-Casado & Martinez-Rubio 2019: U = expm(A - A^T), h' = modReLU(x W + h U) = sign(z) relu(|z| + b)."""
    (h,) = carry
    n = h.shape[-1]
    upper = np.zeros((n, n))
    upper[np.triu_indices(n, 1)] = p["A"]
    U = scipy.linalg.expm(upper - upper.T)
    z = x @ p["W"] + h @ U
    h = _add(eps, "h", np.sign(z) * np.maximum(np.abs(z) + p["b"], 0.0))
    return (h,), h


def _silu(z):
    return z * _sigmoid(z)


def _l2norm(z):
    return z / np.sqrt(np.sum(z * z, axis=-1, keepdims=True) + 1e-6)


def deltanet_reference(carry, x, p, eps=None, heads=1, eigen_range="[0,1]", **_):
    """Yang et al. 2024 DeltaNet per head: S' = (I - beta k k^T) S + beta k v^T, y = d^-1/2 S'^T q; q, k
    l2-normalised SiLU projections, v = silu(x W_v), beta = sigmoid (x 2 for eigenvalues in [-1, 1]); Gated
    DeltaNet (A_log present) scales the transition by alpha = exp(-exp(A_log) softplus(x W_a + b_dt))."""
    (state,) = carry
    n_batch, H = x.shape[0], p["W_q"].shape[1]
    d = H // heads
    split = lambda z: z.reshape(n_batch, heads, d)
    q, k = _l2norm(split(_silu(x @ p["W_q"]))), _l2norm(split(_silu(x @ p["W_k"])))
    v = split(_silu(x @ p["W_v"]))
    beta = _sigmoid(x @ p["W_beta"]) * (2.0 if eigen_range == "[-1,1]" else 1.0)  # (B, heads)
    alpha = np.exp(-np.exp(p["A_log"]) * _softplus(x @ p["W_a"] + p["b_dt"])) if "A_log" in p else np.ones_like(beta)
    S = state.reshape(n_batch, heads, d, d).copy()
    y = np.zeros((n_batch, heads, d))
    for b in range(n_batch):
        for h in range(heads):
            M = alpha[b, h] * (np.eye(d) - beta[b, h] * np.outer(k[b, h], k[b, h]))
            S[b, h] = M @ S[b, h] + beta[b, h] * np.outer(k[b, h], v[b, h])
    if eps is not None:
        S = S + eps["h"].reshape(S.shape)
    for b in range(n_batch):
        for h in range(heads):
            y[b, h] = S[b, h].T @ q[b, h] / np.sqrt(d)
    return (S.reshape(state.shape),), y.reshape(n_batch, H)


def mamba2_reference(carry, x, p, eps=None, heads=1, eigen_range="[0,1]", **_):
    """Dao & Gu 2024 Mamba-2 per head: a = exp(-Delta exp(A_log)) (2a - 1 for [-1, 1]), h' = a h + Delta B u^T,
    y = C^T h' + D u; B, C, Delta from x."""
    (state,) = carry
    n_batch, H = x.shape[0], p["W_u"].shape[1]
    P, N = H // heads, p["W_B"].shape[1]
    u = (x @ p["W_u"] + p["b_u"]).reshape(n_batch, heads, P)
    Bt, Ct = x @ p["W_B"], x @ p["W_C"]  # (B, N)
    delta = _softplus(x @ p["W_dt"] + p["b_dt"])  # (B, heads)
    a = np.exp(-delta * np.exp(p["A_log"]))
    a = 2.0 * a - 1.0 if eigen_range == "[-1,1]" else a
    h = state.reshape(n_batch, heads, N, P).copy()
    y = np.zeros((n_batch, heads, P))
    for b in range(n_batch):
        for j in range(heads):
            h[b, j] = a[b, j] * h[b, j] + delta[b, j] * np.outer(Bt[b], u[b, j])
    if eps is not None:
        h = h + eps["h"].reshape(h.shape)
    for b in range(n_batch):
        for j in range(heads):
            y[b, j] = h[b, j].T @ Ct[b] + p["D"][j] * u[b, j]
    return (h.reshape(state.shape),), y.reshape(n_batch, H)


def s6_signed_reference(carry, x, p, eps=None, eigen_range="[0,1]", **_):
    """S6 with the decay 2 exp(Delta A) - 1 (Grazzi et al. 2024) where eigen_range = "[-1,1]"."""
    if eigen_range == "[0,1]":
        return s6_reference(carry, x, p, eps)
    (state,) = carry
    n_states, rank = p["A_log"].shape[1], p["W_dt"].shape[0]
    u = x @ p["W_u"] + p["b_u"]
    proj = u @ p["W_x"]
    delta = _softplus(proj[:, :rank] @ p["W_dt"] + p["b_dt"])
    Bt, Ct = proj[:, rank : rank + n_states], proj[:, rank + n_states :]
    decay = 2.0 * np.exp(delta[:, :, None] * -np.exp(p["A_log"])) - 1.0
    h = decay * state.reshape(u.shape[0], -1, n_states) + delta[:, :, None] * Bt[:, None, :] * u[:, :, None]
    if eps is not None:
        h = h + eps["h"].reshape(h.shape)
    return (h.reshape(state.shape),), np.einsum("bhn,bn->bh", h, Ct) + p["D"] * u


REFERENCES = {
    "rnn": rnn_reference,
    "irnn": irnn_reference,
    "lstm": lstm_reference,
    "gru": gru_reference,
    "mingru": mingru_reference,
    "minlstm": minlstm_reference,
    "lru": lru_reference,
    "s6": s6_signed_reference,
    "s4d": s4d_reference,
    "deltanet": deltanet_reference,
    "gated_deltanet": deltanet_reference,
    "mamba2": mamba2_reference,
    "exprnn": exprnn_reference,
}
RECURRENT = sorted(name for name, cls in CELLS.items() if cls.recurrent)  # cells with a step (not attention)
# every cell with its default options, and the other code paths of some
STEP_CASES = [(name, {}) for name in RECURRENT] + [
    ("mingru", {"log_space": False}),
    ("minlstm", {"log_space": False}),
    ("irnn", {"recurrent_init": "orthogonal"}),
    ("s6", {"eigen_range": "[-1,1]"}),
    *((name, {"heads": 2, "eigen_range": "[-1,1]"}) for name in ("deltanet", "gated_deltanet", "mamba2")),
]
PARALLEL = sorted(name for name in RECURRENT if hasattr(CELLS[name], "sequence"))
PARALLEL_CASES = [(name, {}) for name in PARALLEL] + [
    ("mingru", {"log_space": False}),
    ("minlstm", {"log_space": False}),
    ("s6", {"eigen_range": "[-1,1]"}),
    *((name, {"heads": 2, "eigen_range": "[-1,1]"}) for name in ("deltanet", "gated_deltanet", "mamba2")),
]

# gated cells: which gate block's bias ``forget_bias`` sets (the gate that keeps the state)
KEEP_GATE = {"lstm": 1, "gru": 1}  # LSTM f of (i, f, g, o); GRU z of (r, z, n)
GATED = sorted(name for name, cls in CELLS.items() if "forget_bias" in cls.options())
MATRIX = sorted(name for name, cls in CELLS.items() if issubclass(cls, MatrixCell))


def _case_id(case) -> str:
    name, options = case
    return "-".join([name, *(f"{k}={v}" for k, v in options.items())])


def _reference(name: str):
    if name not in REFERENCES:
        pytest.fail(f"cell {name!r} is registered in CELLS but has no NumPy reference in tests/test_cells.py")
    return REFERENCES[name]


def _random_params(cell, *args, method=None):
    """The cell's parameters, each moved by N(0, 0.5^2) so that none is zero (biases take part)."""
    params = cell.init(jax.random.PRNGKey(0), *args, method=method)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(treedef, [p + 0.5 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def _cell_and_params(name: str, options: dict):
    """The cell, random non-zero parameters, a random carry and input."""
    config = ModelConfig(cell=name, hidden=H, **options)
    cell = config.cell_module()
    k_carry, k_x = jax.random.split(jax.random.PRNGKey(0))
    keys = jax.random.split(k_carry, len(cell.state_names))
    carry = tuple(0.8 * jax.random.normal(k, (B, config.state_size)) for k in keys)
    x = jax.random.normal(k_x, (B, D))  # (B, D)
    return config, cell, _random_params(cell, carry, x), carry, x


def _float64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _check_step(name, options, perturb: bool):
    reference = _reference(name)
    config, cell, params, carry, x = _cell_and_params(name, options)
    p = _float64(params["params"])
    assert all(np.all(v != 0.0) for v in p.values())  # every parameter really takes part
    keys = jax.random.split(jax.random.PRNGKey(7), len(cell.state_names))
    eps = {s: 0.3 * jax.random.normal(k, (B, config.state_size)) for s, k in zip(cell.state_names, keys)}
    eps = eps if perturb else None

    new_carry, y = cell.apply(params, carry, x, eps)
    expected_carry, expected_y = reference(_float64(carry), _float64(x), p, _float64(eps), **options)

    assert len(new_carry) == len(cell.state_names) == len(expected_carry)
    for state_name, got, want in zip(cell.state_names, new_carry, expected_carry):
        assert got.shape == (B, config.state_size) and got.dtype == jnp.float32, state_name
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: state {state_name}")
    assert y.shape == (B, H) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), expected_y, rtol=1e-5, atol=1e-5, err_msg=f"{name}: output")


@pytest.mark.parametrize("case", STEP_CASES, ids=_case_id)
def test_cell_step_matches_numpy_reference(case):
    _check_step(*case, perturb=False)


@pytest.mark.parametrize("case", STEP_CASES, ids=_case_id)
def test_perturbation_is_added_where_each_state_is_computed(case):
    """eps (used by the gradient probe) enters every state before anything else uses it."""
    _check_step(*case, perturb=True)


@pytest.mark.parametrize("name", ["rnn", "irnn", "lstm", "gru", "mingru", "minlstm"])
def test_output_is_the_last_state(name):
    _config, cell, params, carry, x = _cell_and_params(name, {})
    new_carry, y = cell.apply(params, carry, x)
    assert cell.state_names[-1] == "h"
    np.testing.assert_array_equal(np.asarray(y), np.asarray(new_carry[-1]))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_initial_state_is_zeros_per_state(name):
    carry = CELLS[name].initial_state(B, H)
    assert len(carry) == len(CELLS[name].state_names)
    for state in carry:
        assert state.shape == (B, CELLS[name].state_size(H)) and state.dtype == jnp.float32
        assert not np.any(np.asarray(state))


# --- parallel in time ---------------------------------------------------------------------
def _sequential(cell, params, inputs, eps, reverse):
    """The cell's step scanned over time by ``lax.scan``: outputs (B, T, H)."""
    carry = cell.initial_state(inputs.shape[0], cell.hidden, **{o: getattr(cell, o) for o in cell.options()})
    xs = (jnp.swapaxes(inputs, 0, 1), jax.tree.map(lambda e: jnp.swapaxes(e, 0, 1), eps))  # time first

    def step(carry, x_eps):
        return cell.apply(params, carry, *x_eps)

    _, ys = jax.lax.scan(step, carry, xs, reverse=reverse)
    return jnp.swapaxes(ys, 0, 1)  # (T, B, H) -> (B, T, H)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case", PARALLEL_CASES, ids=_case_id)
def test_parallel_form_equals_sequential_scan(case, reverse):
    name, options = case
    config = ModelConfig(cell=name, hidden=H, **options)
    cell = config.cell_module()
    T = 200
    k_x, k_eps = jax.random.split(jax.random.PRNGKey(3))
    inputs = jax.random.normal(k_x, (B, T, D))  # (B, T, D)
    eps = {"h": 0.3 * jax.random.normal(k_eps, (B, T, config.state_size))}
    params = _random_params(cell, inputs, method="sequence")
    for perturbation in (None, eps):
        parallel = cell.apply(params, inputs, perturbation, reverse, method="sequence")
        zeros = jax.tree.map(jnp.zeros_like, eps)
        sequential = _sequential(cell, params, inputs, zeros if perturbation is None else perturbation, reverse)
        assert parallel.shape == (B, T, H)
        # float32 round-off scales with the largest value (the expRNN's orthogonal U lets |h| grow to ~100)
        atol = 2e-5 * max(1.0, float(np.abs(sequential).max()))
        np.testing.assert_allclose(np.asarray(parallel), np.asarray(sequential), rtol=2e-4, atol=atol)


@pytest.mark.parametrize("reverse", [False, True])
def test_scans_match_numpy_loop(reverse):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.2, 1.0, (2, 7, 3)), rng.uniform(0.1, 2.0, (2, 7, 3))  # (B, T, N), positive for logs
    want, h = np.zeros_like(b), np.zeros((2, 3))
    for t in reversed(range(7)) if reverse else range(7):
        h = a[:, t] * h + b[:, t]
        want[:, t] = h
    for got in (
        linear_recurrence(jnp.asarray(a), jnp.asarray(b), reverse),
        sequential_linear_recurrence(jnp.asarray(a), jnp.asarray(b), reverse),
        log_linear_recurrence(jnp.log(jnp.asarray(a)), jnp.log(jnp.asarray(b)), reverse),
    ):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    lam = jnp.asarray(a * np.exp(1j * b), jnp.complex64)  # complex coefficients (the LRU)
    want_c, h = np.zeros(a.shape, complex), np.zeros((2, 3), complex)
    for t in reversed(range(7)) if reverse else range(7):
        h = np.asarray(lam)[:, t] * h + b[:, t]
        want_c[:, t] = h
    np.testing.assert_allclose(
        np.asarray(linear_recurrence(lam, jnp.asarray(b, jnp.complex64), reverse)), want_c, rtol=1e-5
    )


# --- attention ----------------------------------------------------------------------------
def _layer_norm(z, p):
    """flax's LayerNorm: epsilon 1e-6, biased variance."""
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-6) * p["scale"] + p["bias"]


def _gelu(z):
    """The tanh approximation (flax's default)."""
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def _dense(z, p):
    return z @ p["kernel"] + p["bias"]


def attention_reference(x, p, heads, reverse, eps=None):
    """Vaswani et al. 2017 pre-LN block, loops over batch, head and query: inputs (B, T, D) -> y (B, T, H)."""
    n_batch, T, _ = x.shape
    H = p["embed"]["kernel"].shape[1]
    d = H // heads
    t, i = np.arange(T)[:, None], np.arange(H)
    angle = t / 10000.0 ** (2 * (i // 2) / H)
    r = _dense(x, p["embed"]) + np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    if eps is not None:  # the residual stream entering the block
        r = r + eps["h"]
    q, k, v = np.split(_dense(_layer_norm(r, p["ln_1"]), p["qkv"]), 3, axis=-1)
    attended = np.zeros((n_batch, T, H))
    for b, head, query in itertools.product(range(n_batch), range(heads), range(T)):
        cols = slice(head * d, (head + 1) * d)
        keys = range(query, T) if reverse else range(query + 1)  # s >= t (backward) or s <= t
        scores = np.array([q[b, query, cols] @ k[b, s, cols] for s in keys]) / np.sqrt(d)
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        attended[b, query, cols] = sum(w * v[b, s, cols] for w, s in zip(weights, keys))
    m = r + _dense(attended, p["out"])
    o = m + _dense(_gelu(_dense(_layer_norm(m, p["ln_2"]), p["mlp_in"])), p["mlp_out"])
    return _layer_norm(o, p["ln_f"])


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anti-causal"])
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_matches_numpy_reference(heads, reverse):
    config = ModelConfig(cell="attention", hidden=H, heads=heads)
    cell = config.cell_module()
    T = 6
    k_x, k_eps = jax.random.split(jax.random.PRNGKey(3))
    inputs = jax.random.normal(k_x, (B, T, D))  # (B, T, D)
    eps = {"h": 0.3 * jax.random.normal(k_eps, (B, T, H))}
    params = _random_params(cell, jnp.zeros((1, 1, D)), method="sequence")  # initialised at T = 1: any length runs
    p = _float64(params["params"])
    for perturbation in (None, eps):
        got = cell.apply(params, inputs, perturbation, reverse, method="sequence")
        want = attention_reference(_float64(inputs), p, heads, reverse, _float64(perturbation))
        assert got.shape == (B, T, H)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_attention_is_causal():
    """Changing the last input changes no earlier output; anti-causal, changing the first changes no later one."""
    cell = ModelConfig(cell="attention", hidden=H).cell_module()
    inputs = jax.random.normal(jax.random.PRNGKey(0), (B, 5, D))  # (B, T, D)
    params = cell.init(jax.random.PRNGKey(1), inputs, method="sequence")
    changed = inputs.at[:, -1].add(1.0)
    before, after = (cell.apply(params, z, method="sequence") for z in (inputs, changed))
    np.testing.assert_array_equal(np.asarray(before[:, :-1]), np.asarray(after[:, :-1]))
    assert not np.allclose(before[:, -1], after[:, -1])
    first = inputs.at[:, 0].add(1.0)
    before, after = (cell.apply(params, z, None, True, method="sequence") for z in (inputs, first))
    np.testing.assert_array_equal(np.asarray(before[:, 1:]), np.asarray(after[:, 1:]))
    assert not np.allclose(before[:, 0], after[:, 0])


def test_attention_is_the_only_non_recurrent_cell_and_no_cell_depends_on_the_length():
    assert [name for name, cls in CELLS.items() if not cls.recurrent] == ["attention"]
    assert not any(cls.length_dependent for cls in CELLS.values())  # sinusoidal positions: no length in a shape


# --- initialisation -----------------------------------------------------------------------
def test_exprnn_henaff_initialisation():
    hidden, dim = 16, 50
    cell = ModelConfig(cell="exprnn", hidden=hidden).cell_module()
    p = cell.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, dim)), method="sequence")["params"]
    a = np.asarray(p["A"], np.float64)
    rows, cols = np.triu_indices(hidden, 1)
    blocks = (rows % 2 == 0) & (cols == rows + 1)
    assert a.shape == (hidden * (hidden - 1) // 2,) and blocks.sum() == hidden // 2
    assert not np.any(a[~blocks]) and np.all(np.abs(a[blocks]) <= np.pi) and np.all(a[blocks] != 0)
    upper = np.zeros((hidden, hidden))
    upper[rows, cols] = a
    U = scipy.linalg.expm(upper - upper.T)
    np.testing.assert_allclose(U @ U.T, np.eye(hidden), atol=1e-10)  # orthogonal
    np.testing.assert_allclose(np.diag(U)[::2], np.cos(a[blocks]), atol=1e-10)  # 2 x 2 rotations by s_k
    assert np.all(np.abs(np.asarray(p["b"])) <= 0.01) and np.ptp(np.asarray(p["b"])) > 0
    assert np.std(np.asarray(p["W"])) == pytest.approx(np.sqrt(2.0 / dim), rel=0.15)  # He normal


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
    assert set(GATED) == {"lstm", "gru"}
    assert set(MATRIX) == {"rnn", "irnn", "lstm", "gru"}


@pytest.mark.parametrize("name", MATRIX)
def test_recurrent_init_orthogonal_blocks(name):
    cell = ModelConfig(cell=name, hidden=H, recurrent_init="orthogonal").cell_module()
    U = np.asarray(cell.init(jax.random.PRNGKey(3), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]["U"])
    blocks = np.split(U, cell.n_gates, axis=1)  # n_gates x (H, H)
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
        assert not np.allclose(block, np.eye(H), atol=1e-2)  # not the identity init
    for a, b in itertools.pairwise(blocks):
        assert not np.allclose(a, b)  # one independent draw per gate


@pytest.mark.parametrize("name", MATRIX)
def test_recurrent_init_identity(name):
    cell = ModelConfig(cell=name, hidden=H, recurrent_init="identity").cell_module()
    params = cell.init(jax.random.PRNGKey(3), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]
    np.testing.assert_array_equal(np.asarray(params["U"]), np.tile(np.eye(H), (1, cell.n_gates)))
    assert np.any(np.asarray(params["W"]))  # input weights stay random


def test_recurrent_init_defaults():
    assert ModelConfig(cell="irnn").recurrent_init == "identity"  # Le et al. 2015
    assert {ModelConfig(cell=c).recurrent_init for c in ("rnn", "lstm", "gru")} == {"orthogonal"}
    cell = ModelConfig(cell="irnn", hidden=H).cell_module()
    params = cell.init(jax.random.PRNGKey(3), cell.initial_state(B, H), jnp.zeros((B, D)))["params"]
    np.testing.assert_array_equal(np.asarray(params["U"]), np.eye(H))
    np.testing.assert_array_equal(np.asarray(params["b"]), np.zeros(H))


@pytest.mark.parametrize("r_min, r_max, max_phase", [(0.9, 0.999, 2 * math.pi), (0.0, 0.5, 0.3)])
def test_lru_ring_initialisation(r_min, r_max, max_phase):
    hidden = 512
    cell = ModelConfig(cell="lru", hidden=hidden, r_min=r_min, r_max=r_max, max_phase=max_phase).cell_module()
    p = _float64(cell.init(jax.random.PRNGKey(0), jnp.zeros((1, 7, D)), method="sequence")["params"])
    modulus, phase = np.exp(-np.exp(p["nu_log"])), np.exp(p["theta_log"])
    assert np.all((modulus >= r_min - 1e-6) & (modulus <= r_max + 1e-6))
    assert np.all((phase >= 0) & (phase <= max_phase))
    # uniform on the ring: |lambda|^2 uniform on [r_min^2, r_max^2], so its mean is the midpoint
    np.testing.assert_allclose(np.mean(modulus**2), (r_min**2 + r_max**2) / 2, atol=0.03 * (r_max**2 - r_min**2) + 1e-3)
    np.testing.assert_allclose(np.mean(phase), max_phase / 2, rtol=0.1)
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-4)
    assert p["B_re"].shape == p["B_im"].shape == (D, hidden) and p["D"].shape == (D, hidden)
    np.testing.assert_allclose(np.std(p["B_re"]), 1 / np.sqrt(2 * D), rtol=0.1)
    np.testing.assert_allclose(np.std(p["C_im"]), 1 / np.sqrt(hidden), rtol=0.1)


def test_s4d_lin_initialisation():
    hidden = 256
    cell = ModelConfig(cell="s4d", hidden=hidden).cell_module()
    p = _float64(cell.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, D)), method="sequence")["params"])
    np.testing.assert_allclose(-np.exp(p["log_A_real"]), -0.5, rtol=1e-6)  # S4D-Lin: A = -1/2 + i pi m
    np.testing.assert_allclose(p["A_imag"], np.tile(np.pi * np.arange(8), (hidden, 1)), rtol=1e-6)
    dt = np.exp(p["log_dt"])
    assert np.all((dt >= 0.001 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5)))
    np.testing.assert_allclose(np.var(p["C_re"]) + np.var(p["C_im"]), 1.0, rtol=0.1)  # C complex standard normal


def test_s6_initialisation():
    hidden = 256
    cell = ModelConfig(cell="s6", hidden=hidden).cell_module()
    p = _float64(cell.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, D)), method="sequence")["params"])
    np.testing.assert_allclose(-np.exp(p["A_log"]), -np.tile(np.arange(1, 17), (hidden, 1)), rtol=1e-6)  # S4D-real
    dt = _softplus(p["b_dt"])  # the step size at zero input
    assert np.all((dt >= 0.001 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5)))
    np.testing.assert_allclose(np.mean(np.log(dt)), (np.log(0.001) + np.log(0.1)) / 2, atol=0.3)  # log-uniform
    np.testing.assert_array_equal(p["D"], np.ones(hidden))
    assert p["W_dt"].shape == (16, hidden) and np.all(np.abs(p["W_dt"]) <= 16**-0.5)  # R = ceil(H / 16)
    assert np.min(p["W_dt"]) < -0.2 and np.max(p["W_dt"]) > 0.2  # uniform on +-R^-1/2


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_min_cells_start_with_zero_biases(name):
    cell = ModelConfig(cell=name, hidden=H).cell_module()
    p = cell.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, D)), method="sequence")["params"]
    assert not np.any(np.asarray(p["b"])) and np.all(np.asarray(p["W"]) != 0)


# --- configuration ------------------------------------------------------------------------
def test_unknown_cell_suggests_a_name():
    with pytest.raises(pydantic.ValidationError, match="did you mean 'lstm'"):
        ModelConfig(cell="lstn")
    with pytest.raises(pydantic.ValidationError, match="did you mean 'mingru'"):
        ModelConfig(cell="minigru")
    with pytest.raises(
        pydantic.ValidationError,
        match="allowed: attention, deltanet, exprnn, gated_deltanet, gru, irnn, lru, lstm, mamba2, mingru, minlstm, "
        "rnn, s4d, s6",
    ):
        ModelConfig(cell="transformer")


def test_config_refuses_typos_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="hiden"):
        ModelConfig(cell="rnn", hiden=8)
    with pytest.raises(pydantic.ValidationError, match="hidden"):
        ModelConfig(cell="rnn", hidden=0)
    with pytest.raises(pydantic.ValidationError, match="recurrent_init"):
        ModelConfig(cell="rnn", recurrent_init="zeros")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(cell="lru", forget_bias=1.0), "forget_bias: cell 'lru' has no such option .its options: r_min"),
        (dict(cell="mingru", recurrent_init="identity"), "recurrent_init: cell 'mingru' has no such option"),
        (dict(cell="lstm", r_min=0.5), "r_min: cell 'lstm' has no such option"),
        (dict(cell="gru", log_space=True), "log_space: cell 'gru' has no such option"),
        (dict(cell="lru", r_min=0.9, r_max=0.5), r"r_min, r_max: need 0 <= r_min < r_max <= 1"),
        (dict(cell="lru", r_max=1.5), r"r_min, r_max: need 0 <= r_min < r_max <= 1"),
        (dict(cell="lru", r_min=-0.1), r"r_min, r_max: need"),
        (dict(cell="lru", max_phase=0.0), "max_phase: must be > 0"),
        (dict(cell="attention", hidden=6, heads=4), r"heads: must divide hidden \(6\); got 4"),
        (dict(cell="lstm", heads=2), "heads: cell 'lstm' has no such option"),
        (dict(cell="attention", heads=0), "heads"),
    ],
)
def test_options_a_cell_does_not_have_are_refused(options, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        ModelConfig(**options)


def test_refused_option_is_one_line_naming_the_key(write_experiment):
    from lrd.experiment import ExperimentError, load_experiment

    text = TINY.replace('cell = ["rnn", "lstm"]', 'cell = ["lstm", "lru"]\nforget_bias = 2.0')
    with pytest.raises(ExperimentError) as err:
        load_experiment(write_experiment(text))
    assert str(err.value).endswith(
        "exp.toml: model: forget_bias: cell 'lru' has no such option (its options: r_min, r_max, max_phase)"
    )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(n for n, cls in CELLS.items() if "forget_bias" in cls.dropped_options))
def test_forget_bias_dropped_for_ungated_cells(name):
    config = ModelConfig(cell=name, hidden=H, forget_bias=3.0)
    assert config.forget_bias is None
    assert config == ModelConfig(cell=name, hidden=H)  # a grid over forget_bias makes no duplicates
    assert not hasattr(config.cell_module(), "forget_bias")


def test_eigen_range_is_kept_where_a_cell_has_it_and_dropped_elsewhere():
    for name in ("s6", "mamba2", "deltanet", "gated_deltanet"):
        assert ModelConfig(cell=name, hidden=8, eigen_range="[-1,1]").eigen_range == "[-1,1]"
        assert ModelConfig(cell=name, hidden=8).eigen_range == "[0,1]"
        assert "eigen_range" not in ModelConfig(cell=name, hidden=8).model_dump()  # the default: out of the run id
    lstm = ModelConfig(cell="lstm", hidden=8, eigen_range="[-1,1]")
    assert lstm.eigen_range is None and lstm == ModelConfig(cell="lstm", hidden=8)  # one LSTM per grid over ranges
    with pytest.raises(pydantic.ValidationError, match="eigen_range"):
        ModelConfig(cell="deltanet", hidden=8, eigen_range="[-2,2]")


def test_forget_bias_is_dropped_only_for_the_plain_recurrent_cells():
    assert {n for n, cls in CELLS.items() if "forget_bias" in cls.dropped_options} == {"rnn", "irnn"}


@pytest.mark.parametrize("name", GATED)
def test_forget_bias_defaults_for_gated_cells(name):
    assert ModelConfig(cell=name).forget_bias == 1.0
    assert ModelConfig(cell=name, forget_bias=0.0).forget_bias == 0.0
    assert ModelConfig(cell=name, forget_bias=2.0).cell_module().forget_bias == 2.0


def test_cell_options_resolve_to_the_cell_defaults_and_reach_the_cell():
    lru = ModelConfig(cell="lru", r_min=0.5)
    assert (lru.r_min, lru.r_max, lru.max_phase) == (0.5, 0.999, 2 * math.pi)
    assert lru.cell_module().r_min == 0.5 and lru.forget_bias is None and lru.recurrent_init is None
    assert ModelConfig(cell="mingru").log_space is True
    assert ModelConfig(cell="minlstm", log_space=False).cell_module().log_space is False


def test_classic_cells_dump_as_before():
    """Options added for the new cells stay out of the classic cells' dump (and so their run ids)."""
    assert ModelConfig(cell="lstm", hidden=8).model_dump() == {
        "cell": "lstm",
        "hidden": 8,
        "layers": 1,
        "bidirectional": False,
        "merge": "concat",
        "recurrent_init": "orthogonal",
        "forget_bias": 1.0,
    }
    dump = ModelConfig(cell="lru", hidden=8).model_dump()
    assert dump["r_min"] == 0.9 and "log_space" not in dump
    assert ModelConfig(**dump) == ModelConfig(cell="lru", hidden=8)


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


# --- the listing --------------------------------------------------------------------------
def test_parameter_counts_follow_the_equations():
    from lrd.models import parameter_count

    d, h = 18, 32
    expected = {
        "rnn": d * h + h * h + h,
        "irnn": d * h + h * h + h,
        "gru": 3 * (d * h + h * h + h),
        "lstm": 4 * (d * h + h * h + h),
        "mingru": 2 * (d * h + h),
        "minlstm": 3 * (d * h + h),
        "lru": 3 * h + 2 * d * h + 2 * h * h + d * h,  # nu, theta, gamma; B re/im; C re/im; D
        "s6": d * h + h + h * (2 + 2 * 16) + 2 * h + h + h * 16 + h,  # W_u b_u; W_x (R=2); W_dt b_dt; A_log D
        "s4d": d * h + h + h + 4 * h * 8 + h,  # W_u b_u; log_dt; log_A_real, A_imag, C re/im (H x 8); D
        "deltanet": 3 * d * h + d,  # W_q, W_k, W_v; W_beta (one head)
        "gated_deltanet": 3 * d * h + d + d + 1 + 1,  # and W_a, b_dt, A_log
        "mamba2": d * h + h + 2 * d * 16 + d + 1 + 1 + 1,  # W_u b_u; W_B, W_C (N = 16); W_dt b_dt; A_log; D
        "exprnn": d * h + h * (h - 1) // 2 + h,  # W; the upper triangle of A; modReLU's b
        # embed; ln_1; qkv; out; ln_2; mlp_in (4h); mlp_out; ln_f
        "attention": d * h
        + h
        + 2 * h
        + 3 * (h * h + h)
        + h * h
        + h
        + 2 * h
        + 4 * h * h
        + 4 * h
        + 4 * h * h
        + h
        + 2 * h,
    }
    assert set(expected) == set(CELLS)
    for name, count in expected.items():
        assert parameter_count(ModelConfig(cell=name, hidden=h), d) == count, name
    two = ModelConfig(cell="lstm", hidden=h, layers=2, bidirectional=True)  # layer 2 reads 2h (concat)
    assert parameter_count(two, d) == 2 * expected["lstm"] + 2 * 4 * (2 * h * h + h * h + h)


def test_lrd_tasks_lists_every_cell_with_its_parameter_count(capsys):
    from lrd.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, cls in CELLS.items():
        assert f"│ {name} " in out, name
        assert cls.source.split()[0] in out
    assert "hidden 32" in out and "input width 18" in out
    assert "│ 3872 " in out  # the lru


@pytest.mark.parametrize(("hidden", "scale"), [(4, 1.0), (32, 1.0), (64, 3.0), (16, 0.01), (8, 100.0)])
def test_exprnn_expm_matches_scipy_and_is_orthogonal(hidden, scale):
    """expRNN's U = expm(S) without LAPACK (lrd.models.exprnn.expm_skew) against scipy's Pade expm."""
    from lrd.models.exprnn import expm_skew

    a = np.random.default_rng(hidden).normal(size=(hidden, hidden)) * scale
    s = (a - a.T).astype(np.float32)
    got = np.asarray(expm_skew(jnp.asarray(s)), np.float64)
    # float32 rounding doubles with each squaring (about 11 at scale 100, entries near 800): 5e-4 there
    np.testing.assert_allclose(got, scipy.linalg.expm(s.astype(np.float64)), atol=5e-4)
    np.testing.assert_allclose(got @ got.T, np.eye(hidden), atol=5e-4)
