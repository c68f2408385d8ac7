"""Length buckets (lrd.buckets): groups that differ only in their gap share one program, padded at the end."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from lrd.buckets import COST, Candidate, CostModel, can_pad, can_share, plan_buckets, right_pad
from lrd.experiment import experiment_from
from lrd.models.network import ModelConfig
from lrd.sweep import plan
from lrd.tasks import TASKS
from lrd.tasks.delayed_recall import DelayedRecall
from lrd.train import TrainConfig, Trainer

TRAIN = TrainConfig(
    steps=40,
    log_every=20,
    batch_size=8,
    eval_size=64,
    valid_size=64,
    probe_size=16,
    diagnostics=True,
    stop_when_solved=True,
    spectrum_size=4,
    eval_gaps=(9,),
)
MEMBERS = dict(seeds=[0, 1], lrs=[1e-2, 3e-2])


def _record_parts(result):
    """(numbers training decides, the per-timestep profiles and diagnostics) of a RunResult."""
    exact = {
        "final": result.final,
        "final_valid": result.final_valid,
        "steps_trained": result.steps_trained,
        "diverged_step": result.diverged_step,
        "eval_gaps": dict(result.eval_gaps),
        "records": [(r.step, r.metrics["metric"], r.grad_norm, r.block, r.stop_metric) for r in result.records],
    }
    close = [
        (r.metrics["loss"], r.state_norms, r.below_floor, r.log_gmean_norms, r.gmean_below_floor, r.dynamics)
        for r in result.records
    ]
    return exact, close


@pytest.mark.parametrize(
    "cell,task",
    [
        ("rnn", "delayed_recall"),
        ("lstm", "delayed_recall"),
        ("gru", "copy"),  # many scored positions
        ("lru", "parity"),  # a parallel cell, stepped by the scan on a CPU
    ],
)
def test_a_task_trained_in_a_bucket_gets_the_numbers_of_its_own_program(cell, task):
    """Training is bitwise the same (same parameters at every step, same evaluations and stops); the
    profiles and diagnostics, reduced over padded arrays cut to the real steps, agree to 1e-6 relative."""
    short, long = TASKS[task](gap=5), TASKS[task](gap=12)
    model = ModelConfig(cell=cell, hidden=8)
    alone = Trainer(short, model, TRAIN, 0.95).run(**MEMBERS)
    shared = Trainer(short, model, TRAIN, 0.95, bucket=(long, short))
    padded = shared.run(**MEMBERS, task=short)
    assert alone.bucket == () and padded.bucket == (5, 12)
    (exact_alone, close_alone), (exact_padded, close_padded) = _record_parts(alone), _record_parts(padded)
    jax.tree.map(np.testing.assert_array_equal, exact_padded, exact_alone)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), close_padded, close_alone)
    # the longer task runs in the same compiled programs, unpadded, with the numbers of its own
    longer = shared.run(**MEMBERS, task=long)
    assert shared.advance._cache_size() == 1 and shared.evaluate._cache_size() == 1
    jax.tree.map(
        np.testing.assert_array_equal,
        _record_parts(longer)[0],
        _record_parts(Trainer(long, model, TRAIN, 0.95).run(**MEMBERS))[0],
    )


def test_right_pad_adds_unscored_zero_steps_at_the_end():
    batch = DelayedRecall(gap=3).sample(jax.random.PRNGKey(0), 4)
    padded = right_pad(batch, 9)
    assert padded.inputs.shape == (4, 9, batch.inputs.shape[2]) and padded.mask.shape == (4, 9)
    np.testing.assert_array_equal(padded.inputs[:, :5], batch.inputs)
    assert not np.any(padded.inputs[:, 5:]) and not np.any(padded.mask[:, 5:]) and not np.any(padded.targets[:, 5:])


def test_only_classification_tasks_share_programs():
    """A regression loss in a branch changed the last bits of training (module docstring of lrd.buckets)."""
    assert can_share(DelayedRecall(gap=3)) and can_share(TASKS["copy"](gap=3))
    assert not can_share(TASKS["adding"](gap=3))
    experiment = experiment_from(EXPERIMENT.format(cells='"rnn"').replace("delayed_recall", "adding"))
    assert all(g.bucket == () for g in plan(experiment, set()))


def test_only_step_by_step_models_without_remedies_can_be_padded():
    assert can_pad(ModelConfig(cell="lstm", hidden=8), TRAIN)
    assert not can_pad(ModelConfig(cell="rnn", hidden=8, bidirectional=True), TRAIN)
    assert not can_pad(ModelConfig(cell="attention", hidden=8, heads=2), TRAIN)
    assert not can_pad(ModelConfig(cell="lstm", hidden=8), TRAIN.model_copy(update={"omega": 0.1}))
    assert not can_pad(ModelConfig(cell="lstm", hidden=8), TRAIN.model_copy(update={"floss": 0.1}))
    with pytest.raises(ValueError, match="cannot run padded sequences"):
        Trainer(
            DelayedRecall(gap=3),
            ModelConfig(cell="attention", hidden=8, heads=2),
            TRAIN,
            0.95,
            bucket=(DelayedRecall(gap=3), DelayedRecall(gap=6)),
        )


def _candidates(gaps, members=3, steps=800, cell="lstm"):
    model = ModelConfig(cell=cell, hidden=32)
    train = TrainConfig(steps=steps, batch_size=32, log_every=steps // 4, diagnostics=True)
    return [Candidate(DelayedRecall(gap=g), model, train, members) for g in gaps]


def _cost(candidates, buckets, cost):
    total = 0.0
    for bucket in buckets:
        top = max(candidates[i].task.length for i in bucket)
        total += cost.compile_cost(True) + sum(
            cost.padding_cost(
                c.model, c.task.input_dim, c.train.batch_size, c.members * c.train.steps, top - c.task.length
            )
            for c in (candidates[i] for i in bucket)
        )
    return total


def test_the_plan_weighs_compilation_against_padding():
    groups = _candidates([100, 10, 40])  # any order; buckets come back sorted by length
    assert plan_buckets(groups, CostModel(compile_s=1e3)) == [[1, 2, 0]]
    assert plan_buckets(groups, CostModel(compile_s=1e-3)) == [[1], [2], [0]]
    # with the measured constants: the default experiment in one program per cell; the delayed-recall
    # reference study (20 members, 2000 steps) pays more for padding than for compiling
    assert plan_buckets(_candidates([10, 40, 100]), COST) == [[0, 1, 2]]
    assert plan_buckets(_candidates([10, 50, 200], members=20, steps=2000), COST) == [[0], [1], [2]]


@pytest.mark.parametrize("compile_s", [0.5, 3.0, 20.0, 80.0])
def test_the_plan_is_the_cheapest_partition_into_runs_of_consecutive_lengths(compile_s):
    groups = _candidates([7, 30, 31, 90, 200], steps=300, members=2)
    cost = CostModel(compile_s=compile_s)
    best = min(
        _cost(groups, parts, cost)
        for cuts in itertools.product([False, True], repeat=len(groups) - 1)
        for parts in [_split(list(range(len(groups))), cuts)]
    )
    assert _cost(groups, plan_buckets(groups, cost), cost) == pytest.approx(best)


def _split(order, cuts):
    parts, current = [], [order[0]]
    for i, cut in zip(order[1:], cuts, strict=True):
        if cut:
            parts.append(current)
            current = []
        current.append(i)
    return [*parts, current]


EXPERIMENT = """\
name = "buckets"
seeds = [0, 1]

[task]
name = "delayed_recall"
gap = [3, 6]

[model]
cell = {cells}
hidden = 8

[train]
steps = 20
log_every = 10
batch_size = 8
"""


def test_a_sweep_plans_buckets_over_every_group_so_a_resumed_one_keeps_them(tmp_path):
    experiment = experiment_from(EXPERIMENT.format(cells='["rnn", "attention"]'))
    groups = plan(experiment, set())
    shared = {g.specs[0].task.gap: g.bucket for g in groups if g.specs[0].model.cell == "rnn"}
    assert {gap: tuple(t.gap for t in bucket) for gap, bucket in shared.items()} == {3: (3, 6), 6: (3, 6)}
    assert all(g.bucket == () for g in groups if g.specs[0].model.cell == "attention")  # no step-by-step loop
    done = {s.run_id for g in groups if g.specs[0].task.gap == 3 for s in g.specs}
    resumed = plan(experiment, done)
    assert [
        (g.specs[0].task.gap, tuple(t.gap for t in g.bucket)) for g in resumed if g.specs[0].model.cell == "rnn"
    ] == [(6, (3, 6))]
    assert plan(experiment, set(), {}) and all(g.bucket == () for g in plan(experiment, set(), {}))
