"""lrd.dynamics against independent computations: jacfwd + NumPy SVD, materialised products of
Jacobians, a linear recurrence with known eigenvalues, synthetic gradient profiles, NumPy gate
equations and quantiles, and training runs whose clip threshold lies above or below every norm."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrd import dynamics
from lrd.models import CELLS, ModelConfig, SequenceModel
from lrd.tasks.adding import Adding
from lrd.train import TrainConfig, get_trainer

B, T, D, H = 3, 7, 2, 4

RECURRENT_CELLS = sorted(name for name, cell in CELLS.items() if cell.recurrent)  # attention has no J_t


@functools.cache
def _model(cell: str, scale: float = 0.8):
    """A tiny model with random parameters (biases non-zero), random inputs and its layer-0 cell."""
    config = ModelConfig(cell=cell, hidden=H)
    model = SequenceModel(config, 1)
    inputs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))  # (B, T, D)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), jnp.float32), shapes)
    cell_params = dynamics.layer0_cell_params(params)
    return config, params, inputs, config.cell_module(), cell_params


# --- largest singular value and Lyapunov exponents --------------------------------------------
@pytest.mark.parametrize("cell", RECURRENT_CELLS)
def test_sigma_max_matches_jacfwd_and_numpy_svd(cell):
    _, _, inputs, module, cell_params = _model(cell)
    prev_states, _ = dynamics.cell_trajectory(module, cell_params, inputs)  # (T, B, n)
    step = dynamics.cell_step(module, cell_params)
    n = prev_states.shape[-1]
    q0 = dynamics.orthonormal_start(n, 2, jax.random.PRNGKey(2))
    spectrum = jax.jit(jax.vmap(lambda s, x: dynamics.jacobian_spectrum(step, s, x, q0, 200), in_axes=(1, 0)))(
        prev_states, inputs
    )
    jacobian = jax.jit(jax.jacfwd(step))
    for b in range(B):
        for t in range(T):
            J = np.asarray(jacobian(prev_states[t, b], inputs[b, t]), np.float64)  # (n, n)
            want = np.linalg.svd(J, compute_uv=False)[0]
            np.testing.assert_allclose(spectrum.sigma_max[b, t], want, rtol=1e-4, err_msg=f"{cell} b={b} t={t}")


@pytest.mark.parametrize("cell", RECURRENT_CELLS)
def test_lyapunov_matches_materialised_product(cell):
    _, _, inputs, module, cell_params = _model(cell)
    prev_states, _ = dynamics.cell_trajectory(module, cell_params, inputs)  # (T, B, n)
    step = dynamics.cell_step(module, cell_params)
    n = prev_states.shape[-1]
    k = 3
    q0 = dynamics.orthonormal_start(n, k, jax.random.PRNGKey(3))
    got = jax.jit(lambda s, x: dynamics.jacobian_spectrum(step, s, x, q0, 5))(prev_states[:, 0], inputs[0])
    burn = T // dynamics.BURN_IN
    products = [np.eye(n)]  # J_t ... J_1
    for t in range(T):
        products.append(np.asarray(jax.jacfwd(step)(prev_states[t, 0], inputs[0, t]), np.float64) @ products[-1])
    _, r_burn = np.linalg.qr(products[burn] @ np.asarray(q0, np.float64))
    _, r = np.linalg.qr(products[T] @ np.asarray(q0, np.float64))
    # the volume grown after the burn-in: diag(R_T) / diag(R_B), as R_T = R_(T<-B) R_B
    volume = np.abs(np.diag(r)) / np.maximum(np.abs(np.diag(r_burn)), 1e-300)
    # a ReLU-like cell (irnn, exprnn's modReLU) can switch units, or all of them, off: zero volume, no exponent
    floor = max(1e-5 * volume[0], 1e-30)
    measured = (volume > floor) & (np.abs(np.diag(r_burn)) > 1e-30)
    np.testing.assert_allclose(got.lyapunov[measured], np.log(volume[measured]) / (T - burn), rtol=1e-3, atol=1e-4)
    assert np.all(np.asarray(got.lyapunov)[~measured] < np.log(floor) / (T - burn) + 1e-3)
    # an exponent whose volume fell below the float32 resolution is flagged as round-off in some step
    assert np.all(np.asarray(got.roundoff)[~measured] > 0)


def _linear_exponents(lambdas: np.ndarray, k: int, length: int, starts: int) -> np.ndarray:
    """Errors of the k top exponents of h_t = A h_(t-1), A = Q diag(lambdas) Q^T, from ``starts`` random Q_0."""
    n = len(lambdas)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))
    A = jnp.asarray(q @ np.diag(lambdas) @ q.T, jnp.float32)
    states, inputs = jnp.zeros((length, n)), jnp.zeros((length, 1))
    spectrum = jax.jit(lambda q0: dynamics.jacobian_spectrum(lambda s, x: A @ s, states, inputs, q0, 1))
    starts_q0 = [dynamics.orthonormal_start(n, k, jax.random.PRNGKey(s)) for s in range(starts)]
    got = [np.asarray(spectrum(q0).lyapunov) for q0 in starts_q0]
    return np.array(got) - np.log(np.abs(lambdas[:k]))


def test_burn_in_removes_the_finite_time_bias_of_a_random_start(monkeypatch):
    """Separated eigenvalues, T = 64: without the burn-in a random Q_0 costs up to 0.06 per step; with it, < 0.005."""
    lambdas = np.array([0.95, -0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05])
    with_burn_in = _linear_exponents(lambdas, 4, 64, 20)
    assert np.abs(with_burn_in).max() < 0.005
    monkeypatch.setattr(dynamics, "BURN_IN", 10**9)  # T // BURN_IN = 0: every step counted
    without = _linear_exponents(lambdas, 4, 64, 20)
    assert np.abs(without).max() > 0.04  # the bias the burn-in removes is real at this length


def test_rank_loss_is_flagged_as_round_off_and_full_rank_is_not():
    """A map that keeps 2 of 6 directions: exponents 3 and 4 are round-off in every step, 1 and 2 never."""
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    keep = jnp.asarray(q @ np.diag([0.9, 0.7, 0, 0, 0, 0]) @ q.T, jnp.float32)
    full = jnp.asarray(q @ np.diag([0.9, 0.7, 0.5, 0.4, 0.3, 0.2]) @ q.T, jnp.float32)
    states, inputs = jnp.zeros((40, 6)), jnp.zeros((40, 1))
    q0 = dynamics.orthonormal_start(6, 4, jax.random.PRNGKey(0))
    lost = dynamics.jacobian_spectrum(lambda s, x: keep @ s, states, inputs, q0, 1)
    np.testing.assert_allclose(lost.roundoff, [0, 0, 1, 1])
    np.testing.assert_allclose(lost.lyapunov[:2], np.log([0.9, 0.7]), atol=1e-3)
    kept = dynamics.jacobian_spectrum(lambda s, x: full @ s, states, inputs, q0, 1)
    np.testing.assert_allclose(kept.roundoff, 0)


def test_lyapunov_of_linear_recurrence_are_log_eigenvalues():
    """h_t = A h_{t-1}, A = Q diag(lambda) Q^T: the exponents converge to ln|lambda|, largest first."""
    lambdas = np.array([1.3, -0.9, 0.6, 0.35, 0.1, 0.05])
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
    A = jnp.asarray(q @ np.diag(lambdas) @ q.T, jnp.float32)
    length = 400
    states = jnp.zeros((length, 6))  # the Jacobian of a linear map does not depend on the state
    inputs = jnp.zeros((length, 1))
    q0 = dynamics.orthonormal_start(6, 4, jax.random.PRNGKey(0))
    got = jax.jit(lambda s, x: dynamics.jacobian_spectrum(lambda s, x: A @ s, s, x, q0, 30))(states, inputs)
    np.testing.assert_allclose(got.lyapunov, np.log(np.abs(lambdas[:4])), atol=0.01)
    np.testing.assert_allclose(got.sigma_max, 1.3, rtol=1e-4)  # symmetric A: sigma_max = max |lambda|


def test_rnn_pmb_bound_holds_and_is_reported_only_for_the_rnn():
    config, params, inputs, module, cell_params = _model("rnn", scale=1.5)
    out = jax.jit(
        lambda p, x: dynamics.model_dynamics(
            config, p, x, lyapunov_k=2, iterations=50, spectrum_size=B, saturation=0.1, key=jax.random.PRNGKey(0)
        )
    )(params, inputs)
    U = np.asarray(cell_params["U"], np.float64)
    _, gates = dynamics.cell_trajectory(module, cell_params, inputs)
    h = np.asarray(gates["candidate"], np.float64)  # (T, B, H)
    bound = np.linalg.svd(U, compute_uv=False)[0] * np.max(1 - h**2, axis=-1)  # (T, B)
    np.testing.assert_allclose(out.pmb_bound, np.exp(np.mean(np.log(bound), axis=1)), rtol=1e-4)
    assert np.all(np.asarray(out.sigma_max) <= np.asarray(out.pmb_bound) * (1 + 1e-5))
    lstm = _model("lstm")
    other = dynamics.model_dynamics(
        lstm[0],
        lstm[1],
        lstm[2],
        lyapunov_k=2,
        iterations=5,
        spectrum_size=B,
        saturation=0.1,
        key=jax.random.PRNGKey(0),
    )
    assert np.all(np.isnan(other.pmb_bound))


# --- growth rate -------------------------------------------------------------------------------
def _profile(rate: float, length: int = 60):
    """ln N at distance d = length-1-t from a loss at the last step: a + rate * d."""
    distance = length - 1 - np.arange(length)
    return 0.3 + rate * distance, distance, dynamics.steps_from_start(length, "fwd")


@pytest.mark.parametrize("rate", [0.05, -0.1, -0.01])
def test_growth_rate_recovers_the_signed_rate(rate):
    log_norms, distance, start = _profile(rate)
    assert dynamics.growth_rate(log_norms, distance, start) == pytest.approx(rate, rel=1e-9)


def test_growth_rate_ignores_readout_term_and_initial_transient():
    log_norms, distance, start = _profile(-0.05)
    spiked = log_norms.copy()
    spiked[distance <= 2] += np.log(1e3)  # the direct readout term at distances 0..2
    spiked[start <= 2] += np.log(50.0)  # the transient near t = 0
    assert dynamics.growth_rate(spiked, distance, start) == pytest.approx(-0.05, rel=1e-9)
    naive = np.polyfit(distance, spiked, 1)[0]  # a fit over every distance is biased
    assert abs(naive - -0.05) > 0.01


def test_growth_rate_left_out_and_too_short():
    log_norms, distance, start = _profile(0.02)
    below = np.zeros_like(distance, bool)
    below[20:30] = True
    log_norms[20:30] = -87.0  # floored, flagged: not measurements
    assert dynamics.growth_rate(log_norms, distance, start, below) == pytest.approx(0.02, rel=1e-9)
    assert np.isnan(dynamics.growth_rate(np.zeros(2), np.array([1, 0]), np.arange(2)))  # fewer than three points


def test_e_folding_length_only_for_a_vanishing_gradient():
    assert dynamics.e_folding_length(-0.25) == pytest.approx(4.0)
    assert np.isnan(dynamics.e_folding_length(0.1))
    assert np.isnan(dynamics.e_folding_length(0.0))
    assert np.isnan(dynamics.e_folding_length(float("nan")))


# --- gates -------------------------------------------------------------------------------------
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_gates(cell: str, cell_params, inputs) -> dict[str, np.ndarray]:
    """The gates of the textbook equations (as tests/test_cells.py), stepped in NumPy: {gate: (T, B, H)}."""
    W, U, b = (np.asarray(cell_params[k], np.float64) for k in ("W", "U", "b"))
    x = np.asarray(inputs, np.float64)
    c = h = np.zeros((x.shape[0], H))
    out = {}
    for t in range(x.shape[1]):
        if cell == "lstm":
            i, f, g, o = np.split(x[:, t] @ W + h @ U + b, 4, axis=-1)
            gates = {"input": _sigmoid(i), "forget": _sigmoid(f), "candidate": np.tanh(g), "output": _sigmoid(o)}
            c = gates["forget"] * c + gates["input"] * gates["candidate"]
            h = gates["output"] * np.tanh(c)
        else:
            Wr, Wz, Wn = np.split(W, 3, axis=1)
            Ur, Uz, Un = np.split(U, 3, axis=1)
            br, bz, bn = np.split(b, 3)
            r = _sigmoid(x[:, t] @ Wr + h @ Ur + br)
            z = _sigmoid(x[:, t] @ Wz + h @ Uz + bz)
            n = np.tanh(x[:, t] @ Wn + (r * h) @ Un + bn)
            gates = {"reset": r, "update": z, "candidate": n}
            h = z * h + (1 - z) * n
        for name, value in gates.items():
            out.setdefault(name, []).append(value)
    return {name: np.stack(values) for name, values in out.items()}


def _preimage(g, sigmoid):
    """logit or artanh, clipped to the histogram's range as lrd.dynamics counts values beyond it."""
    with np.errstate(divide="ignore"):
        z = np.log(g / (1 - g)) if sigmoid else np.arctanh(g)
    return np.clip(z, -dynamics.HIST_RANGE, dynamics.HIST_RANGE)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gate_statistics_match_numpy(cell):
    config, params, inputs, module, cell_params = _model(cell, scale=2.0)
    _, stored = dynamics.cell_trajectory(module, cell_params, inputs)
    reference = numpy_gates(cell, cell_params, inputs)
    assert set(stored) == set(reference)
    for name, values in reference.items():
        np.testing.assert_allclose(stored[name], values, rtol=1e-5, atol=1e-6, err_msg=name)

    out = dynamics.model_dynamics(
        config, params, inputs, lyapunov_k=2, iterations=5, spectrum_size=B, saturation=0.3, key=jax.random.PRNGKey(0)
    )
    keep = {"lstm": "forget", "gru": "update"}[cell]  # the gate that weighs the old state
    for name, values in stored.items():
        values = np.asarray(values, np.float64)
        sigmoid = name in dynamics.SIGMOID_GATES
        # the q-th quantile is the smallest x with F(x) >= q; the histogram finds its bin (pre-image space)
        want = np.quantile(values, dynamics.QUANTILES, method="inverted_cdf")
        got_z, want_z = (_preimage(np.asarray(q, np.float64), sigmoid) for q in (out.quantiles[name], want))
        width = 2 * dynamics.HIST_RANGE / dynamics.HIST_BINS  # one bin, and float32's sigmoid/tanh round trip
        np.testing.assert_array_less(np.abs(got_z - want_z), 1.5 * width, err_msg=name)
        scaled = 4 * values * (1 - values) if name in dynamics.SIGMOID_GATES else 1 - values**2
        assert float(out.saturated[name]) == pytest.approx(np.mean(scaled < 0.3), abs=1e-6)
    assert 0 < max(float(v) for v in out.saturated.values()) < 1  # the threshold separates something
    tau = 1 / (1 - np.quantile(np.asarray(stored[keep], np.float64), dynamics.QUANTILES, method="inverted_cdf"))
    np.testing.assert_allclose(out.time_constant, tau, rtol=0.015)
    np.testing.assert_allclose(out.time_constant, 1 / (1 - np.asarray(out.quantiles[keep], np.float64)), rtol=1e-4)


# --- block statistics inside the training scan --------------------------------------------------
def test_block_statistics_against_numpy():
    rng = np.random.default_rng(0)
    losses = rng.uniform(1.0, 1.5, 12).astype(np.float32)
    losses[[3, 8]] = [4.0, 3.5]  # two spikes above twice the median
    norms = rng.uniform(0.2, 3.0, 12).astype(np.float32)
    taken = np.ones(12, bool)
    taken[10:] = False  # steps after the block's end: ignored even though their loss is huge
    losses[10:] = 100.0
    got = jax.jit(dynamics.block_statistics, static_argnums=(3, 4))(losses, norms, taken, 1.0, 2.0)
    np.testing.assert_allclose(got.grad_norm_max, norms[:10].max(), rtol=1e-6)
    np.testing.assert_allclose(got.grad_norm_mean, norms[:10].mean(), rtol=1e-6)
    np.testing.assert_allclose(got.clipped_fraction, np.mean(norms[:10] >= 1.0), rtol=1e-6)
    assert float(got.loss_spikes) == np.sum(losses[:10] > 2 * np.median(losses[:10])) == 2
    empty = dynamics.block_statistics(losses, norms, np.zeros(12, bool), 1.0, 2.0)
    assert all(np.isnan(float(v)) for v in empty)


def _tiny_run(**train):
    config = TrainConfig(steps=6, log_every=3, batch_size=8, eval_size=8, probe_size=8, **train)
    return get_trainer(Adding(gap=5), ModelConfig(cell="rnn", hidden=4), config).run([0])


@pytest.mark.parametrize("clip, want", [(1e-6, 1.0), (1e6, 0.0)])
def test_clipped_fraction_is_one_below_and_zero_above_every_norm(clip, want):
    result = _tiny_run(clip=clip, diagnostics=False)
    blocks = [r.block for r in result.records[1:]]
    assert [float(b.clipped_fraction[0]) for b in blocks] == [want, want]
    assert all(0 < float(b.grad_norm_mean[0]) <= float(b.grad_norm_max[0]) for b in blocks)
    assert np.isnan(result.records[0].block.clipped_fraction[0])  # step 0: no block behind it
    assert result.records[0].dynamics is None  # switched off


def test_diagnostics_do_not_change_training():
    on, off = _tiny_run(clip=1e6, lyapunov_k=3, diagnostics=True), _tiny_run(clip=1e6, diagnostics=False)
    for a, b in zip(on.records, off.records, strict=True):
        jax.tree.map(
            np.testing.assert_array_equal, (a.metrics, a.grad_norm, a.block), (b.metrics, b.grad_norm, b.block)
        )
    jax.tree.map(np.testing.assert_array_equal, on.final, off.final)
    assert on.records[-1].dynamics.lyapunov.shape == (1, 3)
    assert set(on.records[-1].dynamics.quantiles) == {"candidate"}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_diagnostics_are_a_program_of_their_own_with_the_numbers_of_one_program(cell):
    """The training block is the same program with the diagnostics on or off; their numbers are
    those of the diagnostics computed in the training block's own program, as before (bitwise)."""
    train = dict(steps=4, log_every=2, batch_size=4, probe_size=4, eval_size=4, lyapunov_k=2)
    model = ModelConfig(cell=cell, hidden=8)
    on = get_trainer(Adding(gap=5), model, TrainConfig(**train, diagnostics=True))
    off = get_trainer(Adding(gap=5), model, TrainConfig(**train, diagnostics=False))
    state = on.initial_state([0, 1], [1e-2, 3e-2])
    assert on.advance.lower(state, 2, 0).as_text() == off.advance.lower(state, 2, 0).as_text()

    def fused(state, n):  # the diagnostics inside the block's program, as they were computed before
        state, record = on._advance(state, n, 0)
        return state, record._replace(dynamics=on._diagnose(state, 0))

    with jax.threefry_partitionable(False):
        _, want = jax.jit(jax.vmap(fused, in_axes=(0, None)))(state, 2)
    got = on.run([0, 1], lrs=[1e-2, 3e-2]).records[1]
    jax.tree.map(np.testing.assert_array_equal, got.dynamics, jax.device_get(want.dynamics))


# --- no LAPACK inside the training loop (the XLA CPU stall; docs/reliability.md) -----------------
def _custom_calls(text: str) -> list[str]:
    import re

    return re.findall(r"custom_call @(\w+)", text)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_training_and_evaluation_programs_hold_no_custom_call(cell):
    """Batched LAPACK calls inside the looped training program deadlocked XLA's CPU thread pool.

    The training block, the diagnostics (every one on) and the evaluation are plain HLO; the
    initialisation, run once per group before any loop, may hold the orthogonal
    initialiser's QR and nothing else, on one matrix at a time (no member axis: the
    members are mapped, not vmapped), which jaxlib runs inline, off the pool.
    """
    heads = {"heads": 2} if cell == "attention" else {}
    train = TrainConfig(
        steps=2, log_every=1, batch_size=2, probe_size=2, eval_size=4, diagnostics=CELLS[cell].recurrent
    )
    trainer = get_trainer(Adding(gap=4), ModelConfig(cell=cell, hidden=4, **heads), train)
    state = trainer.initial_state([0, 1], [1e-3, 3e-3])
    assert _custom_calls(trainer.advance.lower(state, 1, 0).as_text()) == []
    assert _custom_calls(trainer.evaluate.lower(state, 0).as_text()) == []
    if train.diagnostics:
        assert _custom_calls(trainer.diagnose.lower(state, 0).as_text()) == []
    members = (jnp.stack([jax.random.PRNGKey(0)] * 2), jnp.ones(2))
    init = trainer.init.lower(members).as_text()
    assert set(_custom_calls(init)) <= {"lapack_sgeqrf_ffi", "lapack_sorgqr_ffi"}
    import re

    calls = re.findall(r"custom_call @lapack_\w+\((.*)", init)
    assert all('num_batch_dims = "0"' in call for call in calls), calls  # never batched over the members


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_initialisation_one_member_at_a_time_draws_the_same_weights(cell):
    """The init program maps the members (lax.map, no batched LAPACK: docs/reliability.md); same weights as vmapped."""
    from lrd.train import Trainer

    trainer = get_trainer(Adding(gap=4), ModelConfig(cell=cell, hidden=48), TrainConfig(steps=2, log_every=1))
    members = (jnp.stack([jax.random.PRNGKey(s) for s in range(3)]), jnp.asarray([1e-3, 3e-3, 1e-2]))
    vmapped = jax.jit(jax.vmap(Trainer._init.__get__(trainer)))
    with jax.threefry_partitionable(False):
        jax.tree.map(np.testing.assert_array_equal, trainer.init(members), vmapped(members))


@pytest.mark.parametrize(("n", "k"), [(8, 4), (64, 4), (33, 8), (5, 5), (3, 1)])
def test_householder_qr_matches_numpy(n, k):
    a = np.random.default_rng(n * k).normal(size=(n, k)).astype(np.float32)
    got = dynamics.householder_qr(jnp.asarray(a))
    q, r = np.linalg.qr(a.astype(np.float64))  # LAPACK's signs: the same factors, not only the same span
    np.testing.assert_allclose(got.q, q, atol=2e-6)
    np.testing.assert_allclose(got.r, r, atol=2e-5 * np.abs(r).max())
    np.testing.assert_allclose(np.asarray(got.q).T @ np.asarray(got.q), np.eye(k), atol=1e-6)


def test_householder_qr_of_a_rank_deficient_matrix_stays_orthonormal():
    a = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    a[:, 1] = 0.0  # a unit switched off: J Q loses a column
    got = dynamics.householder_qr(jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(got.q).T @ np.asarray(got.q), np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.abs(np.diagonal(got.r)), np.abs(np.diagonal(np.linalg.qr(a)[1])), atol=1e-5)
    zero = dynamics.householder_qr(jnp.zeros((4, 2)))
    np.testing.assert_array_equal(zero.q, np.eye(4, 2))
    np.testing.assert_array_equal(zero.r, 0.0)


@pytest.mark.parametrize("shape", [(64, 4), (32, 32), (128, 128), (10, 3)])
def test_top_singular_value_matches_numpy_svd(shape):
    a = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    want = np.linalg.svd(a.astype(np.float64), compute_uv=False)[0]
    np.testing.assert_allclose(float(dynamics.top_singular_value(jnp.asarray(a))), want, rtol=2e-6)


def test_top_singular_value_of_repeated_huge_and_zero_matrices():
    assert float(dynamics.top_singular_value(jnp.diag(jnp.asarray([2.0, 2.0, 1.0])))) == pytest.approx(2.0, rel=1e-6)
    assert float(dynamics.top_singular_value(1e30 * jnp.eye(3))) == pytest.approx(1e30, rel=1e-6)  # a^T a overflows
    assert float(dynamics.top_singular_value(jnp.zeros((3, 3)))) == 0.0


# --- the curse of memory ------------------------------------------------------------------------
@pytest.mark.parametrize("form", dynamics.MEMORY_FORMS)
def test_memory_sensitivity_follows_zucchet_and_orvieto(form):
    """Measured E[(dh_T/dtheta)^2] within 10% of the analytic curve (sampling error 2.2% at 4096 sequences)."""
    for lam in (0.6, 0.95):
        length = int(20 / (1 - lam)) + 50
        got = dynamics.memory_sensitivity(lam, form, length=length, batch=4096, key=jax.random.PRNGKey(7))
        want = float(dynamics.memory_sensitivity_theory(lam, form))
        assert 0.9 < got / want < 1.1, (form, lam, got, want)


def test_memory_sensitivity_theory_plain_normalised_and_lru_at_one():
    lam = np.array([0.9, 0.999])
    plain = dynamics.memory_sensitivity_theory(lam, "plain")
    np.testing.assert_allclose(plain, (1 + lam**2) / (1 - lam**2) ** 3)
    np.testing.assert_allclose(dynamics.memory_sensitivity_theory(lam, "normalised"), plain * (1 - lam**2))
    assert abs(float(dynamics.memory_sensitivity_theory(0.99999, "lru")) - 0.5) < 1e-3  # bounded: it tends to 1/2
    with pytest.raises(ValueError, match="form must be one of"):
        dynamics.memory_sensitivity_theory(0.5, "other")


def test_committed_curse_of_memory_table_recomputes():
    """docs/checks/curse_of_memory.csv, what docs/dynamics.md quotes, is what the script measures (first rows)."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    path = Path(__file__).resolve().parents[1] / "scripts" / "curse_of_memory.py"
    spec = importlib.util.spec_from_file_location("curse_of_memory", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = pd.read_csv(script.TABLE)
    assert len(table) == len(script.LAMBDAS) * len(dynamics.MEMORY_FORMS)
    for row in table[table["lam"] == script.LAMBDAS[0]].itertuples():
        got = dynamics.memory_sensitivity(
            row.lam, row.form, length=row.length, batch=script.BATCH, key=jax.random.PRNGKey(0)
        )
        assert got == pytest.approx(row.measured, rel=1e-4)
        assert row.theory == pytest.approx(float(dynamics.memory_sensitivity_theory(row.lam, row.form)), rel=1e-5)
