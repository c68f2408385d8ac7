"""lrd.remedies against independent computations: Omega and the flossed exponents from materialised
Jacobians in NumPy, their gradients against finite differences, and training with them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrd import dynamics, remedies
from lrd.models import ModelConfig, SequenceModel
from lrd.tasks.adding import Adding
from lrd.train import TrainConfig, get_trainer

B, H = 3, 4


@functools.cache
def _setup(cell: str = "rnn", scale: float = 0.7):
    """A tiny model with random parameters on a batch of the adding problem (T = 8)."""
    task = Adding(gap=8)
    config = ModelConfig(cell=cell, hidden=H)
    model = SequenceModel(config, task.output_dim)
    batch = task.sample(jax.random.PRNGKey(3), B)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch.inputs)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), jnp.float32), shapes)
    return task, model, batch, params


def _jacobians(model, params, inputs):
    """(T, B, n, n) materialised J_t = ds_t/ds_(t-1) along each sequence, float64."""
    cell = model.config.cell_module()
    cell_params = dynamics.layer0_cell_params(params)
    prev_states, _ = dynamics.cell_trajectory(cell, cell_params, inputs)
    step = dynamics.cell_step(cell, cell_params)
    T, Bn = prev_states.shape[:2]
    return np.array(
        [
            [np.asarray(jax.jacfwd(step)(prev_states[t, b], inputs[b, t]), np.float64) for b in range(Bn)]
            for t in range(T)
        ]
    )


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_omega_matches_numpy(cell):
    task, model, batch, params = _setup(cell)
    g = np.asarray(remedies.state_gradients(model, task, params, batch), np.float64)  # (B, T, n)
    J = _jacobians(model, params, batch.inputs)  # (T, B, n, n)
    terms = []
    for t in range(1, J.shape[0]):
        for b in range(B):
            carried = g[b, t] @ J[t, b]  # g_t J_t
            terms.append((np.linalg.norm(carried) / np.linalg.norm(g[b, t]) - 1.0) ** 2)
    got = float(remedies.omega_penalty(model, task, params, batch))
    assert got == pytest.approx(np.mean(terms), rel=1e-4)


def test_state_gradients_are_the_probes_perturbation_gradients():
    """g_t of Omega is dL/ds_t: the probe's per-timestep norms, recomputed from it."""
    from lrd.probes import probe

    task, model, batch, params = _setup("lstm")
    g = np.asarray(remedies.state_gradients(model, task, params, batch), np.float64)  # (B, T, 2H): (c, h)
    norms = probe(task, model, params, batch).state_norms["layer0"]["fwd"]
    np.testing.assert_allclose(np.linalg.norm(g[..., :H], axis=(0, 2)), norms["c"], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(g[..., H:], axis=(0, 2)), norms["h"], rtol=1e-5)


def test_flossed_exponents_match_the_materialised_product():
    _, model, batch, params = _setup("rnn")
    k = 2
    n = H
    q0 = np.asarray(dynamics.householder_qr(jax.random.normal(jax.random.PRNGKey(0), (n, k))).q, np.float64)
    J = _jacobians(model, params, batch.inputs)
    T = J.shape[0]
    burn = T // dynamics.BURN_IN
    want = []
    for b in range(min(B, remedies.FLOSS_SEQUENCES)):
        product = [np.eye(n)]
        for t in range(T):
            product.append(J[t, b] @ product[-1])
        r_burn = np.linalg.qr(product[burn] @ q0)[1]
        r_end = np.linalg.qr(product[T] @ q0)[1]
        want.append(np.log(np.abs(np.diag(r_end)) / np.abs(np.diag(r_burn))) / (T - burn))
    want_loss = np.mean(np.sum(np.square(want), axis=1))
    got = float(remedies.floss_penalty(model, params, batch.inputs, k))
    assert got == pytest.approx(want_loss, rel=1e-3)


@pytest.mark.parametrize("name", ["omega", "floss"])
def test_gradient_matches_finite_differences(name):
    """The derivative along a random direction of the parameters, against a central difference.

    Omega holds g_t = dL/ds_t constant (Pascanu et al.): its gradient is that of the penalty
    with g_t fixed at the parameters' own, so the difference is taken with g_t fixed too.
    """
    task, model, batch, params = _setup("rnn", scale=0.5)
    rng = np.random.default_rng(1)
    direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    if name == "omega":
        g = remedies.state_gradients(model, task, params, batch)
        grad = jax.grad(lambda p: remedies.omega_penalty(model, task, p, batch))(params)
        f = lambda p: remedies.omega_penalty(model, task, p, batch, g=g)
    else:
        f = lambda p: remedies.floss_penalty(model, p, batch.inputs, 2)
        grad = jax.grad(f)(params)
    analytic = sum(
        float(jnp.sum(g * d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    )
    eps = 1e-3  # the central difference converges quadratically: 3% off at 1e-2 for floss, 0.03% at 1e-3
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
    numeric = (float(f(shifted(1.0))) - float(f(shifted(-1.0)))) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=5e-3, abs=1e-4)
    assert abs(analytic) > 1e-3  # a direction along which the regulariser changes: the check has teeth


def _train(**settings):
    task = Adding(gap=10)
    config = TrainConfig(steps=40, log_every=20, batch_size=16, lr=1e-2, eval_size=64, probe_size=16, **settings)
    trainer = get_trainer(task, ModelConfig(cell="rnn", hidden=8), config)
    return trainer.run([0])


def test_remedies_train_and_change_the_trajectory():
    plain = _train()
    with_omega = _train(omega=1.0)
    flossed = _train(floss=1.0, floss_k=2, floss_every=5)
    for result in (with_omega, flossed):
        assert np.isfinite(result.records[-1].metrics["loss"]).all()
        assert not np.array_equal(result.records[-1].metrics["loss"], plain.records[-1].metrics["loss"])


def test_a_remedy_at_zero_is_no_setting_at_all(write_experiment):
    """omega = 0 and floss = 0 written out give the run ids of a file without them; a weight makes a new run."""
    from lrd.experiment import load_experiment

    base = 'name = "r"\nseeds = [0]\n[task]\nname = "adding"\ngap = 10\n[model]\ncell = "rnn"\nhidden = 8\n'
    base += "[train]\nsteps = 20\nlog_every = 10\n"
    ids = lambda extra: [r.run_id for r in load_experiment(write_experiment(base + extra)).runs]
    assert ids("omega = 0.0\nfloss = 0.0\nfloss_k = 1\nfloss_every = 1\n") == ids("")
    assert ids("omega = 0.1\n") != ids("") and ids("floss = 0.1\n") != ids("")


def test_flossing_moves_the_top_exponent_towards_zero():
    """Gradient descent on the flossing loss alone takes a contracting RNN's top exponent towards 0."""
    _, model, batch, params = _setup("rnn", scale=0.3)  # small weights: a contracting map, exponent << 0
    loss = lambda p: remedies.floss_penalty(model, p, batch.inputs, 1)
    before = float(loss(params))
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.05 * g, p, jax.grad(loss)(p)))
    for _ in range(30):
        params = step(params)
    after = float(loss(params))
    assert after < 0.5 * before, (before, after)


def test_omega_gradient_is_finite_where_the_carried_gradient_vanishes():
    """U = 0: every J_t is zero, so g_t J_t = 0; the norm's gradient at zero must not be NaN (it diverged training)."""
    task, model, batch, params = _setup("rnn")
    cell = dynamics.layer0_cell_params(params)
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.zeros_like(p) if getattr(path[-1], "key", None) == "U" and p is cell["U"] else p, params
    )
    value, grad = jax.value_and_grad(lambda p: remedies.omega_penalty(model, task, p, batch))(zeroed)
    assert float(value) == pytest.approx(1.0, abs=1e-3)  # every ratio 0: (0 - 1)^2
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
