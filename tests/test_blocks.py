"""Cells in blocks ([model] block): parameter counts, causality, the probe per layer, the diagnostics' inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrd.models import ModelConfig, parameter_count
from lrd.models.network import SequenceModel, param_count
from lrd.tasks.delayed_recall import DelayedRecall
from lrd.train import TrainConfig, Trainer

D, H, K = 11, 16, 8  # input width, hidden, classes


def _bare_cell(cell: str, input_dim: int) -> int:
    """Parameters of one bare layer of ``cell`` reading ``input_dim`` inputs."""
    return parameter_count(ModelConfig(cell=cell, hidden=H), input_dim)


@pytest.mark.parametrize("cell", ["lstm", "mamba2", "deltanet"])
def test_parameter_counts_add_the_blocks_parts(cell):
    """embed, then per layer the norm(s), the cell on width H and the block's own parts; final norm; readout."""
    inner = 8 * H // 3
    embed, norm, readout = D * H + H, H, H * K + K
    residual = norm + _bare_cell(cell, H) + norm + (H * 2 * inner + inner * H)  # the gated MLP has no biases
    mamba = norm + (H * 2 * H + 2 * H) + (4 * H + H) + _bare_cell(cell, H) + (H * H + H)  # in, conv, cell, out
    for block, per_layer in (("residual", residual), ("mamba", mamba)):
        for layers in (1, 2):
            config = ModelConfig(cell=cell, hidden=H, block=block, layers=layers)
            assert param_count(config, D, K) == embed + layers * per_layer + norm + readout, (block, layers)
    assert param_count(ModelConfig(cell=cell, hidden=H), D, K) == _bare_cell(cell, D) + readout


@pytest.mark.parametrize(("cell", "block"), [("lstm", "residual"), ("mamba2", "mamba"), ("deltanet", "residual")])
def test_a_block_is_causal(cell, block):
    model = SequenceModel(ModelConfig(cell=cell, hidden=H, block=block, layers=2), K)
    x = jax.random.normal(jax.random.key(0), (2, 9, D))
    params = model.init(jax.random.key(1), x)
    changed = x.at[:, 5].add(1.0)
    before, after = model.apply(params, x), model.apply(params, changed)
    np.testing.assert_array_equal(before[:, :5], after[:, :5])
    assert not np.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize(("cell", "block"), [("lstm", "residual"), ("mamba2", "mamba")])
def test_the_probe_reads_each_layers_state_gradient_in_a_block(cell, block):
    """The perturbation's gradient at (layer, t) against a central difference of the loss along it."""
    config = ModelConfig(cell=cell, hidden=H, block=block, layers=2)
    task = DelayedRecall(gap=6)
    model = SequenceModel(config, task.output_dim)
    batch = task.sample(jax.random.key(2), 4)
    params = model.init(jax.random.key(3), batch.inputs)
    zeros = config.zero_perturbation(4, task.length)

    def loss(perturbation):
        return task.training_loss(model.apply(params, batch.inputs, perturbation), batch)

    grads = jax.grad(loss)(zeros)
    state = config.state_names[-1]
    delta = 1e-2
    for layer in ("layer0", "layer1"):
        for t in (1, task.length - 2):
            g = grads[layer]["fwd"][state][:, t]  # (B, S)
            direction = g / jnp.linalg.norm(g)

            def moved(sign, layer=layer, t=t, direction=direction):
                eps = jax.tree.map(lambda z: z, zeros)
                eps[layer]["fwd"][state] = eps[layer]["fwd"][state].at[:, t].set(sign * delta * direction)
                return loss(eps)

            slope = (moved(1.0) - moved(-1.0)) / (2 * delta)
            np.testing.assert_allclose(float(slope), float(jnp.linalg.norm(g)), rtol=2e-2, err_msg=f"{layer} t={t}")


def test_the_diagnostics_read_layer_0s_cell_on_the_inputs_it_receives():
    """``cell_inputs=True`` gives the sequence whose trajectory is the layer's output in the model."""
    from lrd.dynamics import cell_trajectory, layer0_cell_params

    config = ModelConfig(cell="rnn", hidden=H, block="residual", layers=2)
    model = SequenceModel(config, K)
    x = jax.random.normal(jax.random.key(4), (3, 7, D))
    params = model.init(jax.random.key(5), x)
    seen = model.apply(params, x, cell_inputs=True)
    assert seen.shape == (3, 7, H) and not np.allclose(seen[..., :D], x)
    _, captured = model.apply(params, x, capture_intermediates=True, mutable=["intermediates"])
    layer_out = captured["intermediates"]["layer0_fwd"]["__call__"][0]  # (B, T, H)
    states, _ = cell_trajectory(
        config.cell_module(), layer0_cell_params(params), seen
    )  # the state each step starts from
    np.testing.assert_allclose(
        np.asarray(states[1:]), np.swapaxes(np.asarray(layer_out), 0, 1)[:-1], rtol=1e-5, atol=1e-6
    )
    bare = SequenceModel(ModelConfig(cell="rnn", hidden=H), K)
    bare_params = bare.init(jax.random.key(5), x)
    np.testing.assert_array_equal(bare.apply(bare_params, x, cell_inputs=True), x)


def test_a_model_in_a_block_trains_with_its_diagnostics():
    train = TrainConfig(
        steps=20, log_every=10, batch_size=8, lr=3e-3, eval_size=64, probe_size=8, spectrum_size=4, diagnostics=True
    )
    result = Trainer(DelayedRecall(gap=4), ModelConfig(cell="lstm", hidden=8, block="residual"), train).run([0])
    assert np.isfinite(result.final["loss"]).all()
    lyapunov = result.records[-1].dynamics.lyapunov
    assert np.isfinite(lyapunov).all()


def test_block_settings_are_checked_and_stay_out_of_old_run_ids(write_experiment):
    from pydantic import ValidationError

    from lrd.buckets import can_pad
    from lrd.experiment import ExperimentError, load_experiment

    assert "block" not in ModelConfig(cell="lstm").model_dump()  # the default keeps stored run ids
    assert ModelConfig(cell="attention", block="residual").block == "bare"  # a block already: dropped
    assert ModelConfig(cell="lstm", block="residual").model_dump()["block"] == "residual"
    with pytest.raises(ValidationError, match="block"):
        ModelConfig(cell="lstm", block="residual", bidirectional=True)
    with pytest.raises(ValidationError):
        ModelConfig(cell="lstm", block="transformer")
    assert not can_pad(ModelConfig(cell="lstm", block="residual"), TrainConfig())
    text = """
name = "blocks"
[task]
name = "delayed_recall"
gap = 4
[model]
cell = "rnn"
hidden = 8
block = "residual"
[train]
steps = 50
omega = 1.0
"""
    with pytest.raises(ExperimentError, match=r"train\.omega.*'residual' block.*model\.block = 'bare'"):
        load_experiment(write_experiment(text))
