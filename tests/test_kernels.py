"""The Pallas time-loop kernels (lrd.models.kernels) against the scan path, in Pallas's interpret mode.

Two implementations of the same equations must agree: the layer on the kernels
(forward kernel, backward kernel, custom VJP) and the layer as ``lax.scan`` over
the cells, which JAX differentiates itself. Outputs, parameter gradients and
every timestep's state gradient (the probe's dL/d eps_t) are compared at float32
tolerance, for vmapped seeds, both directions and a batch that is not a multiple
of the kernel's tile. Shapes are small: the interpreter runs the kernels step by step.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
from conftest import as_upgraded

from lrd.experiment import load_experiment
from lrd.models import CELLS, ModelConfig, RNNCell, SequenceModel, kernels
from lrd.models.kernels import choice, choose, model_reason
from lrd.probes import probe
from lrd.tasks.copy import Copy
from lrd.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = {"rnn": 32, "lstm": 16, "gru": 16}


def close(got, want, rtol=1e-5):
    """Equal up to float32 summation order: each element within rtol of itself or of the array's scale."""
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.max(np.abs(want))))


def _models(cell: str, **options) -> dict[str, tuple[ModelConfig, SequenceModel]]:
    configs = {path: ModelConfig(cell=cell, time_loop=path, **options) for path in ("scan", "interpret")}
    return {path: (config, SequenceModel(config, output_dim=3)) for path, config in configs.items()}


# U held on chip for the whole loop, or re-read at every step (the strategy for a U too large to hold)
@pytest.mark.parametrize("cell,u_on_chip", [("rnn", True), ("lstm", False), ("gru", False)])
def test_kernel_equals_scan_outputs_parameter_and_state_gradients(cell, u_on_chip, monkeypatch):
    if not u_on_chip:
        monkeypatch.setattr(choice, "RESIDENT_BYTES", 0)
    assert kernels.resident(cell, HIDDEN[cell]) == u_on_chip
    seeds, B, T, D = 2, 20, 24, 5  # B = 20: the tile (16) does not divide it
    models = _models(cell, hidden=HIDDEN[cell], bidirectional=True)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    xs = jax.vmap(lambda k: jax.random.normal(k, (B, T, D)))(keys)  # (S, B, T, D)
    params = jax.vmap(lambda k: models["scan"][1].init(k, xs[0, :1, :1]))(keys)
    weights = jax.random.normal(jax.random.PRNGKey(1), (B, T, 3))  # a loss that weighs every output differently
    results = {}
    for path, (config, model) in models.items():

        def loss(p, eps, x, model=model):
            out = model.apply(p, x, eps)  # (B, T, 3)
            return jnp.sum(jnp.tanh(out) * weights), out

        def one_seed(p, x, config=config, loss=loss):
            (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
                p, config.zero_perturbation(B, T), x
            )
            return out, grads

        results[path] = jax.jit(jax.vmap(one_seed))(params, xs)
    (out_scan, (dp_scan, deps_scan)), (out_kernel, (dp_kernel, deps_kernel)) = results["scan"], results["interpret"]
    close(out_kernel, out_scan)
    assert jax.tree.structure(dp_kernel) == jax.tree.structure(dp_scan)
    for a, b in zip(jax.tree.leaves(dp_kernel), jax.tree.leaves(dp_scan)):
        close(a, b)
    states = CELLS[cell].state_names
    for direction in ("fwd", "bwd"):
        for state in states:
            got, want = deps_kernel["layer0"][direction][state], deps_scan["layer0"][direction][state]  # (S, B, T, H)
            assert got.shape == (seeds, B, T, HIDDEN[cell])
            assert float(jnp.min(jnp.abs(want[:, :, 0]))) >= 0 and float(jnp.max(jnp.abs(want))) > 0
            close(got, want)


def test_probe_norms_and_below_float32_flags_agree_on_a_long_gap():
    """A fast-decaying RNN: the gradient leaves float32's range within the sequence on both paths alike."""
    task = Copy(gap=30)  # T = 50
    models = _models("rnn", hidden=16)
    params = models["scan"][1].init(jax.random.PRNGKey(0), jnp.zeros((1, 1, task.input_dim)))
    cell = params["params"]["layer0_fwd"]["scan"]["cell"]
    cell["U"] = cell["U"] * 0.05  # dL/dh_t shrinks ~20x per step back from the loss: below 1e-38 within 30 steps
    batch = task.sample(jax.random.PRNGKey(1), 16)
    found = {
        path: jax.jit(lambda p, model=model: probe(task, model, p, batch))(params)
        for path, (_, model) in models.items()
    }
    norms = {path: np.asarray(r.state_norms["layer0"]["fwd"]["h"]) for path, r in found.items()}
    below = {path: np.asarray(r.below_floor["layer0"]["fwd"]["h"]) for path, r in found.items()}
    assert below["scan"].any() and not below["scan"].all()  # the case this test is about
    np.testing.assert_array_equal(below["interpret"], below["scan"])
    np.testing.assert_allclose(norms["interpret"], norms["scan"], rtol=1e-5)
    np.testing.assert_allclose(found["interpret"].loss, found["scan"].loss, rtol=1e-6)


def test_training_on_the_kernels_follows_the_scan():
    """lrd's training program (vmapped seeds, optimiser steps, probe, evaluation) on either time loop."""
    task = Copy(gap=6)  # T = 26
    train = TrainConfig(steps=4, log_every=2, batch_size=16, eval_size=16, probe_size=16)
    runs = {
        path: Trainer(task, ModelConfig(cell="gru", hidden=16, time_loop=path), train).run([0, 1])
        for path in ("scan", "interpret")
    }
    assert (runs["scan"].time_loop, runs["interpret"].time_loop) == ("scan", "interpret")
    for scan, kernel in zip(runs["scan"].records, runs["interpret"].records):
        close(kernel.metrics["loss"], scan.metrics["loss"], rtol=1e-4)
        close(kernel.state_norms["layer0"]["fwd"]["h"], scan.state_norms["layer0"]["fwd"]["h"], rtol=1e-4)
    close(runs["interpret"].final["loss"], runs["scan"].final["loss"], rtol=1e-4)


def test_kernels_lower_to_triton_for_a_gpu(monkeypatch):
    """Without a GPU, the kernels still go through Pallas's Triton lowering (power-of-two tiles, supported ops).

    U held on chip (rnn at H = 128, lstm at H = 16) and re-read every step (gru at H = 128); forward and
    backward kernels of both directions with the probe (four Triton kernels per model), for one seed and
    for two vmapped seeds (Pallas's batching rule adds a grid axis).
    """
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.zeros((20, 30, 5))  # (B, T, D)
    for cell, hidden in (("rnn", 128), ("lstm", 16), ("gru", 128)):
        config = ModelConfig(cell=cell, hidden=hidden, time_loop="kernel", bidirectional=True)
        model = SequenceModel(config, output_dim=3)
        params = model.init(jax.random.PRNGKey(0), x[:1, :1])
        grad = jax.grad(lambda p, e, model=model: jnp.sum(model.apply(p, x, e)), argnums=(0, 1))
        eps = config.zero_perturbation(20, 30)
        two = jax.tree.map(lambda a: jnp.stack([a, a]), (params, eps))  # two seeds
        for fn, args in ((grad, (params, eps)), (jax.vmap(grad), two)):
            lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
            assert lowered.as_text().count("__gpu$xla.gpu.triton") == 4, cell


def test_auto_keeps_the_scan_until_the_kernels_are_checked_on_a_gpu():
    assert not choice.GPU_CHECKED  # set by the first session whose scripts/gpu_check.sh passes
    assert choose("auto", "lstm", 128, "gpu") == "scan"
    assert choose("kernel", "lstm", 128, "gpu") == "kernel"


def test_time_loop_choice(monkeypatch):
    monkeypatch.setattr(choice, "GPU_CHECKED", True)
    assert choose("auto", "lstm", 128, "cpu") == "scan"
    assert choose("auto", "lstm", 128, "gpu") == "kernel"
    assert choose("auto", "lstm", 512, "gpu") == "scan"  # beyond the size limit
    assert choose("auto", "gru", 48, "gpu") == "scan"  # not a power of two
    assert choose("scan", "rnn", 64, "gpu") == "scan"
    assert choose("interpret", "rnn", 64, "cpu") == "interpret"
    assert choose("kernel", "rnn", 64, "gpu") == "kernel"
    with pytest.raises(ValueError, match=r"time_loop = 'kernel': .*GPU.*cpu"):
        choose("kernel", "rnn", 64, "cpu")
    with pytest.raises(pydantic.ValidationError, match=r"time_loop[\s\S]*power of two from 16 to 256 \(got 512\)"):
        ModelConfig(cell="lstm", hidden=512, time_loop="kernel")


def test_cells_linear_in_their_state_run_their_step_on_a_cpu_and_the_parallel_form_elsewhere():
    for cell in ("deltanet", "gated_deltanet", "lru", "mamba2", "mingru", "minlstm", "s4d", "s6"):
        assert choose("auto", cell, 64, "cpu") == "scan"  # the step is faster there (scripts/bench.py)
        assert choose("auto", cell, 64, "gpu") == "parallel"
        assert choose("parallel", cell, 64, "cpu") == "parallel"
        assert choose("scan", cell, 64, "gpu") == "scan"
    assert choose("auto", "exprnn", 64, "gpu") == "scan"  # its own loop: not linear in the state
    linear = "deltanet, gated_deltanet, lru, mamba2, mingru"
    with pytest.raises(ValueError, match=rf"time_loop = 'parallel': cell 'lstm' is not linear .*{linear}"):
        choose("parallel", "lstm", 64, "gpu")
    with pytest.raises(pydantic.ValidationError, match=r"time_loop[\s\S]*'parallel' cannot run this model"):
        ModelConfig(cell="gru", hidden=8, time_loop="parallel")


def test_a_user_cell_runs_on_the_scan(monkeypatch):
    class MyCell(RNNCell):
        cell_name = "mine"

    monkeypatch.setitem(CELLS, "mine", MyCell)
    monkeypatch.setitem(CELLS, "rnn", MyCell)  # even under a built-in name: the kernels know their own cells only
    assert model_reason("mine", 64) and model_reason("rnn", 64)
    assert choose("auto", "mine", 64, "gpu") == "scan"
    with pytest.raises(pydantic.ValidationError, match="built-in cells"):
        ModelConfig(cell="mine", hidden=64, time_loop="interpret")


def test_forcing_the_kernel_without_a_gpu_is_one_line_exit_2(write_experiment, tmp_path, capsys):
    from conftest import TINY

    from lrd.cli import main

    path = write_experiment(TINY.replace("hidden = 8", 'hidden = 16\ntime_loop = "kernel"'))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jax, "default_backend", lambda: "cpu")
        code = main(["run", str(path), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"lrd: error: {path}: model.time_loop = 'kernel': compiled kernels need a GPU"), lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "results").iterdir() if p.is_dir()))
def test_committed_results_keep_their_run_ids(name, tmp_path):
    """The default time_loop stays out of the run id: every committed run is still found as done."""
    stored = json.loads((ROOT / "results" / name / "experiment.json").read_text())["runs"]
    # the file as it was run, as lrd upgrade leaves it (stop_check = "probe" where its runs stopped so)
    experiment = load_experiment(as_upgraded(ROOT / "results" / name, tmp_path))
    assert {spec.run_id for spec in experiment.runs} == set(stored)
    assert all(spec.model.time_loop == "auto" for spec in experiment.runs)
