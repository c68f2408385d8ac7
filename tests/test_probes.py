"""The gradient probe against jax.grad through a Python-unrolled model, every cell, and its numerics.

The reference steps the model with a Python loop over textbook cell equations (the
same equations test_cells.py checks the cells against), replaces one state by an
argument and differentiates the loss with respect to it: no scan, no perturbation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrd.models import CELLS, ModelConfig, SequenceModel
from lrd.probes import FLOOR, distance_from_loss, probe, safe_norm
from lrd.tasks.copy import Copy
from lrd.tasks.delayed_recall import DelayedRecall

BATCH, HIDDEN = 3, 4


def run_once(fn, *args):
    """``jax.jit(fn)(*args)`` compiled without LLVM optimisation: these programs run once,
    so compiling dominates (about half the time at the default level on CPU)."""
    compiled = jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})
    return compiled(*args)


CASES = {
    # name: (task, model, positions (layer, direction, t, state) whose dL/dstate is exactly zero)
    "rnn": (DelayedRecall(gap=4), ModelConfig(cell="rnn", hidden=HIDDEN), set()),
    "lstm": (DelayedRecall(gap=4), ModelConfig(cell="lstm", hidden=HIDDEN), set()),
    "gru": (DelayedRecall(gap=4), ModelConfig(cell="gru", hidden=HIDDEN), set()),
    # every position scored, so both directions carry gradient at every t
    "bi-lstm": (
        Copy(gap=2, n_symbols=2, loss_positions="all"),
        ModelConfig(cell="lstm", hidden=HIDDEN, bidirectional=True),
        set(),
    ),
    # length 4, scored at t = 3 only: the top backward states before it reach no loss,
    # the bottom ones do (through the top forward layer)
    "bi-gru-2layer-sum": (
        Copy(gap=2, n_symbols=1),
        ModelConfig(cell="gru", hidden=HIDDEN, layers=2, bidirectional=True, merge="sum"),
        {(1, "bwd", t, "h") for t in range(3)},
    ),
    "irnn": (DelayedRecall(gap=4), ModelConfig(cell="irnn", hidden=HIDDEN), set()),
    # the cells linear in their state (a "-parallel" twin of each below runs the associative scan)
    "lru": (DelayedRecall(gap=4), ModelConfig(cell="lru", hidden=HIDDEN), set()),
    "mingru": (DelayedRecall(gap=4), ModelConfig(cell="mingru", hidden=HIDDEN), set()),
    "minlstm": (DelayedRecall(gap=4), ModelConfig(cell="minlstm", hidden=HIDDEN), set()),
    "minlstm-linear-space": (
        DelayedRecall(gap=4),
        ModelConfig(cell="minlstm", hidden=HIDDEN, log_space=False),
        set(),
    ),
    "s6": (DelayedRecall(gap=4), ModelConfig(cell="s6", hidden=HIDDEN), set()),
    "s4d": (DelayedRecall(gap=4), ModelConfig(cell="s4d", hidden=HIDDEN), set()),
    "exprnn": (DelayedRecall(gap=4), ModelConfig(cell="exprnn", hidden=HIDDEN), set()),
    "deltanet": (DelayedRecall(gap=4), ModelConfig(cell="deltanet", hidden=HIDDEN), set()),
    "gated_deltanet-2heads-signed": (
        DelayedRecall(gap=4),
        ModelConfig(cell="gated_deltanet", hidden=HIDDEN, heads=2, eigen_range="[-1,1]"),
        set(),
    ),
    "mamba2-2heads-signed": (
        DelayedRecall(gap=4),
        ModelConfig(cell="mamba2", hidden=HIDDEN, heads=2, eigen_range="[-1,1]"),
        set(),
    ),
    # the residual stream entering a causal block: dL/dr_t through every later position that attends to t
    "attention": (DelayedRecall(gap=4), ModelConfig(cell="attention", hidden=HIDDEN), set()),
    # two blocks (each its own positions), the backward direction anti-causal; length 4 scored at t = 3:
    # the top backward block's positions before 3 reach no loss (as for the bi-gru below)
    "bi-attention-2layer-2heads": (
        Copy(gap=2, n_symbols=1),
        ModelConfig(cell="attention", hidden=HIDDEN, heads=2, layers=2, bidirectional=True),
        {(1, "bwd", t, "h") for t in range(3)},
    ),
    # stacked and both directions: the backward scan of the parallel form, and its perturbation
    "bi-lru-2layer": (
        Copy(gap=2, n_symbols=2, loss_positions="all"),
        ModelConfig(cell="lru", hidden=HIDDEN, layers=2, bidirectional=True),
        set(),
    ),
    "bi-mingru-2layer-sum": (
        Copy(gap=2, n_symbols=2, loss_positions="all"),
        ModelConfig(cell="mingru", hidden=HIDDEN, layers=2, bidirectional=True, merge="sum"),
        set(),
    ),
}

# the cells linear in their state run their step in lax.scan on a CPU ("auto"); the same cases on
# their parallel form (associative_scan), where the perturbation joins the input term of h_t
CASES.update(
    {
        f"{name}-parallel": (task, config.model_copy(update={"time_loop": "parallel"}), zero)
        for name, (task, config, zero) in list(CASES.items())
        if CELLS[config.cell].parallel
    }
)


def positions(config: ModelConfig, length: int) -> list[tuple[int, str, int, str]]:
    """Every (layer, direction, t, state_name) whose dL/dstate is probed (the lru: over (Re h, Im h))."""
    return [
        (layer, direction, t, state)
        for layer in range(config.layers)
        for direction in config.directions
        for t in range(length)
        for state in config.state_names
    ]


def rnn_step(p, carry, x, fix, **_):
    (h,) = carry
    h = fix("h", jnp.tanh(x @ p["W"] + h @ p["U"] + p["b"]))
    return (h,), h


def irnn_step(p, carry, x, fix, **_):
    (h,) = carry
    h = fix("h", jnp.maximum(x @ p["W"] + h @ p["U"] + p["b"], 0.0))
    return (h,), h


def lstm_step(p, carry, x, fix, **_):
    c, h = carry
    i, f, g, o = jnp.split(x @ p["W"] + h @ p["U"] + p["b"], 4, axis=-1)  # 4 x (B, H)
    c = fix("c", jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g))
    h = fix("h", jax.nn.sigmoid(o) * jnp.tanh(c))  # h_t is computed from c_t as replaced
    return (c, h), h


def gru_step(p, carry, x, fix, **_):
    (h,) = carry
    Wr, Wz, Wn = jnp.split(p["W"], 3, axis=1)
    Ur, Uz, Un = jnp.split(p["U"], 3, axis=1)
    br, bz, bn = jnp.split(p["b"], 3)
    r = jax.nn.sigmoid(x @ Wr + h @ Ur + br)
    z = jax.nn.sigmoid(x @ Wz + h @ Uz + bz)
    n = jnp.tanh(x @ Wn + (r * h) @ Un + bn)
    h = fix("h", z * h + (1.0 - z) * n)
    return (h,), h


def _g(v):
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def mingru_step(p, carry, x, fix, log_space):
    (h,) = carry
    k, v = jnp.split(x @ p["W"] + p["b"], 2, axis=-1)
    z = jax.nn.sigmoid(k)
    h = fix("h", (1.0 - z) * h + z * (_g(v) if log_space else v))
    return (h,), h


def minlstm_step(p, carry, x, fix, log_space):
    (h,) = carry
    k_f, k_i, v = jnp.split(x @ p["W"] + p["b"], 3, axis=-1)
    f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
    h = fix("h", f / (f + i) * h + i / (f + i) * (_g(v) if log_space else v))
    return (h,), h


def lru_step(p, carry, x, fix, **_):
    """h complex, stored (and replaced) as the real vector (Re h, Im h)."""
    (state,) = carry
    n = state.shape[-1] // 2
    lam = jnp.exp(-jnp.exp(p["nu_log"])) * jnp.exp(1j * jnp.exp(p["theta_log"]))
    h = lam * (state[:, :n] + 1j * state[:, n:]) + jnp.exp(p["gamma_log"]) * (x @ p["B_re"] + 1j * (x @ p["B_im"]))
    state = fix("h", jnp.concatenate([h.real, h.imag], axis=-1))
    y = state[:, :n] @ p["C_re"] - state[:, n:] @ p["C_im"] + x @ p["D"]  # Re(h C) + x D
    return (state,), y


def s6_step(p, carry, x, fix, **_):
    """h (H, N) stored (and replaced) flattened."""
    (state,) = carry
    n_states, rank = p["A_log"].shape[1], p["W_dt"].shape[0]
    u = x @ p["W_u"] + p["b_u"]
    proj = u @ p["W_x"]
    delta = jax.nn.softplus(proj[:, :rank] @ p["W_dt"] + p["b_dt"])
    Bt, Ct = proj[:, rank : rank + n_states], proj[:, rank + n_states :]
    h = jnp.exp(delta[:, :, None] * -jnp.exp(p["A_log"])) * state.reshape(u.shape[0], -1, n_states)
    h = fix("h", (h + delta[:, :, None] * Bt[:, None, :] * u[:, :, None]).reshape(state.shape))
    y = jnp.einsum("bhn,bn->bh", h.reshape(u.shape[0], -1, n_states), Ct) + p["D"] * u
    return (h,), y


def deltanet_step(p, carry, x, fix, heads=1, eigen_range="[0,1]", **_):
    """S (heads, d, d) stored (and replaced) flattened; Gated DeltaNet where A_log is there."""
    (state,) = carry
    n_batch, H = x.shape[0], p["W_q"].shape[1]
    d = H // heads
    unit = lambda z: z / jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-6)
    split = lambda z: z.reshape(n_batch, heads, d)
    q, k = unit(split(jax.nn.silu(x @ p["W_q"]))), unit(split(jax.nn.silu(x @ p["W_k"])))
    v = split(jax.nn.silu(x @ p["W_v"]))
    beta = jax.nn.sigmoid(x @ p["W_beta"]) * (2.0 if eigen_range == "[-1,1]" else 1.0)
    S = state.reshape(n_batch, heads, d, d)
    kS = jnp.einsum("bhd,bhde->bhe", k, S)  # k^T S
    S = S - beta[..., None, None] * k[..., :, None] * kS[..., None, :]  # (I - beta k k^T) S
    if "A_log" in p:
        S = jnp.exp(-jnp.exp(p["A_log"]) * jax.nn.softplus(x @ p["W_a"] + p["b_dt"]))[..., None, None] * S
    S = fix("h", (S + beta[..., None, None] * k[..., :, None] * v[..., None, :]).reshape(state.shape))
    y = jnp.einsum("bhde,bhd->bhe", S.reshape(n_batch, heads, d, d), q) / jnp.sqrt(d)
    return (S,), y.reshape(n_batch, H)


def mamba2_step(p, carry, x, fix, heads=1, eigen_range="[0,1]", **_):
    """h (heads, N, P) stored (and replaced) flattened."""
    (state,) = carry
    n_batch, H = x.shape[0], p["W_u"].shape[1]
    P, N = H // heads, p["W_B"].shape[1]
    u = (x @ p["W_u"] + p["b_u"]).reshape(n_batch, heads, P)
    delta = jax.nn.softplus(x @ p["W_dt"] + p["b_dt"])
    a = jnp.exp(-delta * jnp.exp(p["A_log"]))
    a = 2.0 * a - 1.0 if eigen_range == "[-1,1]" else a
    h = a[..., None, None] * state.reshape(n_batch, heads, N, P)
    h = h + delta[..., None, None] * (x @ p["W_B"])[:, None, :, None] * u[:, :, None, :]
    h = fix("h", h.reshape(state.shape)).reshape(n_batch, heads, N, P)
    y = jnp.einsum("bhnp,bn->bhp", h, x @ p["W_C"]) + p["D"][:, None] * u
    return (h.reshape(state.shape),), y.reshape(n_batch, H)


def s4d_step(p, carry, x, fix, **_):
    """h complex (H, M), stored (and replaced) as (Re h, Im h) flattened."""
    (state,) = carry
    u = x @ p["W_u"] + p["b_u"]
    A = -jnp.exp(p["log_A_real"]) + 1j * p["A_imag"]
    A_bar = jnp.exp(jnp.exp(p["log_dt"])[:, None] * A)
    half = state.shape[-1] // 2
    h = A_bar * (state[:, :half] + 1j * state[:, half:]).reshape(u.shape[0], *A.shape) + (A_bar - 1) / A * u[..., None]
    flat = h.reshape(u.shape[0], -1)
    state = fix("h", jnp.concatenate([flat.real, flat.imag], axis=-1))
    h = (state[:, :half] + 1j * state[:, half:]).reshape(h.shape)
    y = 2.0 * jnp.sum(h.real * p["C_re"] - h.imag * p["C_im"], axis=-1) + p["D"] * u
    return (state,), y


def exprnn_step(p, carry, x, fix, **_):
    (h,) = carry
    n = h.shape[-1]
    rows, cols = np.triu_indices(n, 1)
    upper = jnp.zeros((n, n)).at[rows, cols].set(p["A"])
    z = x @ p["W"] + h @ jax.scipy.linalg.expm(upper - upper.T)
    h = fix("h", jnp.sign(z) * jax.nn.relu(jnp.abs(z) + p["b"]))
    return (h,), h


def _layer_norm(z, p):
    mean = jnp.mean(z, -1, keepdims=True)
    return (z - mean) / jnp.sqrt(jnp.mean((z - mean) ** 2, -1, keepdims=True) + 1e-6) * p["scale"] + p["bias"]


def attention_layer(p, x, fix, reverse, heads):
    """The pre-LN block (test_cells.py checks the cell against it in NumPy), a loop over queries.

    The residual stream entering the block, r_t, goes through ``fix`` position by position before
    anything uses it. x (B, T, D) -> y (B, T, H).
    """
    B, T, _ = x.shape
    H = p["embed"]["kernel"].shape[1]
    d = H // heads
    t, i = np.arange(T)[:, None], np.arange(H)
    angle = t / 10000.0 ** (2 * (i // 2) / H)
    r = x @ p["embed"]["kernel"] + p["embed"]["bias"] + np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    r = jnp.stack([fix(t, "h", r[:, t]) for t in range(T)], axis=1)  # (B, T, H)
    qkv = _layer_norm(r, p["ln_1"]) @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = (z.reshape(B, T, heads, d) for z in jnp.split(qkv, 3, axis=-1))  # (B, T, heads, d)
    outs = []
    for query in range(T):
        keys = np.arange(query, T) if reverse else np.arange(query + 1)
        w = jax.nn.softmax(jnp.einsum("bhd,bshd->bhs", q[:, query], k[:, keys]) / np.sqrt(d), axis=-1)
        outs.append(jnp.einsum("bhs,bshd->bhd", w, v[:, keys]).reshape(B, H))
    m = r + jnp.stack(outs, axis=1) @ p["out"]["kernel"] + p["out"]["bias"]
    z = jax.nn.gelu(_layer_norm(m, p["ln_2"]) @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"])
    o = m + z @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]  # (B, T, H)
    return _layer_norm(o, p["ln_f"])


# textbook steps (checked against the cells in test_cells.py), returning (carry, output);
# ``fix(name, state)`` sees each new state the moment it is computed and returns what the
# rest of the model uses
STEPS = {
    "rnn": rnn_step,
    "irnn": irnn_step,
    "lstm": lstm_step,
    "gru": gru_step,
    "mingru": mingru_step,
    "minlstm": minlstm_step,
    "lru": lru_step,
    "s6": s6_step,
    "s4d": s4d_step,
    "exprnn": exprnn_step,
    "deltanet": deltanet_step,
    "gated_deltanet": deltanet_step,
    "mamba2": mamba2_step,
}


def unrolled_outputs(config: ModelConfig, params, inputs, replace=-1, value=None):
    """The model stepped by a Python loop; the state at ``positions(...)[replace]`` is replaced by ``value``.

    inputs (B, T, D) -> outputs (B, T, out), {position: state (B, H)}.
    """
    if config.cell not in STEPS and config.cell != "attention":
        pytest.fail(f"cell {config.cell!r} has no reference step in tests/test_probes.py")
    B, T, _ = inputs.shape
    index = {pos: i for i, pos in enumerate(positions(config, T))}
    states = {}
    x = inputs  # (B, T, D)
    for layer in range(config.layers):
        outs = []
        for direction in config.directions:
            layer_params = params["params"][f"layer{layer}_{direction}"]
            # scanned step by step (nn.scan) or whole-sequence (the parallel cells)
            cell_params = layer_params["scan"]["cell"] if "scan" in layer_params else layer_params["cell"]
            if config.cell == "attention":  # no recurrence: the residual stream at every position at once

                def fix_at(t, name, state, layer=layer, direction=direction):
                    pos = (layer, direction, t, name)
                    if value is not None:
                        state = jnp.where(replace == index[pos], value, state)
                    states[pos] = state
                    return state

                outs.append(attention_layer(cell_params, x, fix_at, direction == "bwd", config.heads))
                continue
            carry = tuple(jnp.zeros((B, config.state_size)) for _ in config.state_names)
            hs = [None] * T
            for t in range(T) if direction == "fwd" else reversed(range(T)):

                def fix(name, state, pos_t=(layer, direction, t)):
                    pos = (*pos_t, name)
                    if value is not None:
                        state = jnp.where(replace == index[pos], value, state)
                    states[pos] = state
                    return state

                options = {k: v for k, v in config.cell_options().items() if k in ("heads", "eigen_range")}
                step = STEPS[config.cell]
                carry, hs[t] = step(cell_params, carry, x[:, t], fix, log_space=config.log_space, **options)
            outs.append(jnp.stack(hs, axis=1))  # (B, T, H)
        if len(outs) == 1:
            x = outs[0]
        elif config.merge == "concat":
            x = jnp.concatenate(outs, axis=-1)  # (B, T, 2H)
        else:
            x = outs[0] + outs[1]  # (B, T, H)
    readout = params["params"]["readout"]
    return x @ readout["kernel"] + readout["bias"], states


def reference(task, config, params, batch):
    """Loss, {position: ||dL/dstate||_F over (B, H)} and {position: per-sequence norms (B,)}.

    One gradient per replaced state.

    Replacing the state at one position by an argument and differentiating with respect
    to it gives the total derivative dL/dstate_t. The positions are batched with vmap
    (replace is an index) so that one program is compiled, not one per position.
    """
    order = positions(config, task.length)

    def loss_and_grads(params, batch):
        outputs, clean = unrolled_outputs(config, params, batch.inputs)
        values = jnp.stack([clean[pos] for pos in order])  # (N, B, S), the states themselves

        def loss(value, replace):
            outputs, _ = unrolled_outputs(config, params, batch.inputs, replace, value)
            return task.training_loss(outputs, batch)

        grads = jax.vmap(jax.grad(loss))(values, jnp.arange(len(order)))  # (N, B, S)
        return task.training_loss(outputs, batch), grads

    loss, grads = run_once(loss_and_grads, params, batch)
    grads = np.asarray(grads, np.float64)  # (N, B, H)
    norms = np.linalg.norm(grads.reshape(len(order), -1), axis=1)  # (N,)
    return float(loss), dict(zip(order, norms)), dict(zip(order, np.linalg.norm(grads, axis=2)))


@functools.cache
def _setup(case: str):
    """Model, random parameters (biases non-zero), a batch and the probe's result for ``case``."""
    task, config, _ = CASES[case]
    model = SequenceModel(config, task.output_dim)
    batch = task.sample(jax.random.PRNGKey(0), BATCH)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch.inputs)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), jnp.float32), shapes)
    result = run_once(lambda params, batch: probe(task, model, params, batch), params, batch)
    return task, config, model, params, batch, result


def test_cases_cover_every_cell():
    assert {config.cell for _, config, _ in CASES.values()} == set(CELLS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_grad_norms_match_unrolled_reference(case):
    task, config, _model, params, batch, result = _setup(case)
    loss, expected, per_sequence = reference(task, config, params, batch)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5)  # the same model

    assert {pos for pos, norm in expected.items() if norm == 0.0} == CASES[case][2]
    for (layer, direction, t, state), want in expected.items():
        got = float(result.state_norms[f"layer{layer}"][direction][state][t])
        below = bool(result.below_floor[f"layer{layer}"][direction][state][t])
        where = f"{case}: layer{layer} {direction} t={t} {state}"
        if want == 0.0:
            assert below and got == FLOOR, where
        else:
            assert not below, where
            np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=where)
        log_gmean = float(result.log_gmean_norms[f"layer{layer}"][direction][state][t])
        if np.all(per_sequence[(layer, direction, t, state)] > 0):
            assert not bool(result.gmean_below_floor[f"layer{layer}"][direction][state][t]), where
            want_log = np.mean(np.log(per_sequence[(layer, direction, t, state)]))  # geometric mean over the batch
            np.testing.assert_allclose(log_gmean, want_log, rtol=1e-4, atol=1e-4, err_msg=where)
        else:
            assert bool(result.gmean_below_floor[f"layer{layer}"][direction][state][t]), where
    n_probed = sum(np.size(norms) for norms in jax.tree.leaves(result.state_norms))
    assert n_probed == len(expected)  # the probe measures exactly these positions


@pytest.mark.parametrize("case", ["lstm", "bi-gru-2layer-sum"])
def test_param_grads_equal_plain_grad(case):
    task, _config, model, params, batch, result = _setup(case)

    def loss_fn(params):
        return task.training_loss(model.apply(params, batch.inputs), batch)

    loss, grads = run_once(jax.value_and_grad(loss_fn), params)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-6)
    assert jax.tree.structure(result.param_grads) == jax.tree.structure(grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), result.param_grads, grads)
    flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in jax.tree.leaves(grads)])
    assert np.count_nonzero(flat) > flat.size // 2  # a non-trivial gradient
    np.testing.assert_allclose(result.grad_norm, np.linalg.norm(flat), rtol=1e-5)
    assert set(result.metrics) >= {"loss", "metric"}
    np.testing.assert_allclose(result.metrics["loss"], loss, rtol=1e-6)


# --- safe_norm ------------------------------------------------------------------


def test_safe_norm_does_not_underflow():
    g = jnp.full((3, 4, 5), 1e-25, jnp.float32)  # (B, T, H)
    assert float(jnp.sqrt(jnp.sum(g[:, 0] ** 2))) == 0.0  # the naive norm does underflow
    norm, below = safe_norm(g, (0, 2))
    assert norm.shape == below.shape == (4,)
    np.testing.assert_allclose(norm, np.sqrt(15) * 1e-25, rtol=1e-6)
    assert not np.any(below)


def test_safe_norm_ordinary_values():
    g = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5)) * jnp.arange(1, 5)[None, :, None]
    norm, below = safe_norm(g, (0, 2))
    np.testing.assert_allclose(norm, np.linalg.norm(np.asarray(g, np.float64), axis=(0, 2)), rtol=1e-6)
    assert not np.any(below)


def test_safe_norm_flags_zero_and_subnormal():
    g = np.ones((2, 3, 4), np.float32)
    g[:, 0] = 0.0
    g[:, 1] = 1e-40  # float32 subnormal (may be flushed to zero on CPU; either way not measurable)
    norm, below = safe_norm(jnp.asarray(g), (0, 2))
    np.testing.assert_array_equal(below, [True, True, False])
    np.testing.assert_array_equal(norm[:2], [FLOOR, FLOOR])
    np.testing.assert_allclose(norm[2], np.sqrt(8), rtol=1e-6)
    assert np.all(np.isfinite(norm))


def test_safe_norm_smallest_normal_is_measured():
    norm, below = safe_norm(jnp.full((4,), FLOOR, jnp.float32), (0,))
    assert not bool(below)
    np.testing.assert_allclose(norm, 2 * FLOOR, rtol=1e-6)


def test_distance_from_loss():
    task = Copy(gap=2, n_symbols=2)  # length 6, scored 4..5
    np.testing.assert_array_equal(distance_from_loss(task, "fwd"), [4, 3, 2, 1, 0, -1])
    np.testing.assert_array_equal(distance_from_loss(task, "bwd"), [-5, -4, -3, -2, -1, 0])
