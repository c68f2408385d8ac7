"""The vmapped trainer: independent, reproducible members (seed, learning rate), one compilation, divergence,
stopping when solved, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrd.models import ModelConfig
from lrd.results import reaches
from lrd.tasks.adding import Adding
from lrd.tasks.copy import Copy
from lrd.tasks.delayed_recall import DelayedRecall
from lrd.train import OPTIMIZERS, STOP_LEVEL, VALID_FOLD, TrainConfig, Trainer, get_trainer, stop_check_size

TASK = Adding(gap=10)
MODEL = ModelConfig(cell="lstm", hidden=8)
TRAIN = TrainConfig(steps=20, batch_size=16, log_every=10, eval_size=64, probe_size=16)


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    return get_trainer(TASK, MODEL, TRAIN)


@pytest.fixture(scope="module")
def pair(trainer):
    """Seeds 0 and 1 trained together."""
    return trainer.run([0, 1])


def _outputs(result):
    """Everything a run reports, as one tree with a leading member axis on every leaf."""
    return {
        "records": result.records,
        "final": result.final,
        "final_valid": result.final_valid,
        "diverged_step": result.diverged_step,
        "steps_trained": result.steps_trained,
    }


def _assert_close(got, want, rtol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if np.issubdtype(got.dtype, np.floating):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    else:
        np.testing.assert_array_equal(got, want)


def test_run_shapes(pair):
    assert [int(r.step[0]) for r in pair.records] == [0, 10, 20]
    assert pair.final["loss"].shape == (2,)
    assert pair.records[0].state_norms["layer0"]["fwd"]["c"].shape == (2, TASK.length)
    losses = np.stack([r.metrics["loss"] for r in pair.records])  # (3, S)
    assert np.all(np.isfinite(losses))
    assert np.all(losses[0] != losses[-1])  # training moved
    assert losses[0, 0] != losses[0, 1]  # seeds differ


def test_vmap_over_seeds_equals_single_seed_runs(trainer, pair):
    both = _outputs(pair)
    for i, seed in enumerate(pair.seeds):
        single = _outputs(trainer.run([seed]))
        assert jax.tree.structure(single) == jax.tree.structure(both)
        jax.tree.map(lambda b, s, i=i: _assert_close(b[i], s[0], rtol=1e-5), both, single)


def test_same_seeds_are_bitwise_reproducible(trainer, pair):
    again = _outputs(trainer.run([0, 1]))
    jax.tree.map(np.testing.assert_array_equal, again, _outputs(pair))


def test_advance_compiles_once_for_any_n(trainer, pair):
    programs = {"init": trainer.init, "advance": trainer.advance, "evaluate": trainer.evaluate}
    compiled = {name: f._cache_size() for name, f in programs.items()}
    assert compiled["advance"] >= 1  # the run above compiled it

    state = trainer.initial_state([5, 6])  # same shapes as the run's state, new values
    step = 0
    for n in (3, 0, TRAIN.log_every, 7):
        state, record = trainer.advance(state, n, 0)
        step += n
        np.testing.assert_array_equal(record.step, [step, step])  # n is honoured although traced
        np.testing.assert_array_equal(state.step, [step, step])
    trainer.evaluate(state, 0)
    assert {name: f._cache_size() for name, f in programs.items()} == compiled


def test_a_run_in_a_learning_rate_grid_equals_the_run_alone(trainer):
    """Members (seed, lr) of a 2 x 3 grid in one program; each equals its run trained alone at that lr."""
    seeds, lrs = [0, 0, 0, 1, 1, 1], [1e-3, 3e-3, 1e-2] * 2
    grid = _outputs(trainer.run(seeds, lrs=lrs))
    finals = grid["final"]["loss"]
    assert len(set(finals[:3].tolist())) == 3, "the learning rates train differently"
    for i in (1, 5):  # (0, 3e-3) and (1, 1e-2); alone, each runs unvmapped (Program's single-member path)
        alone = _outputs(trainer.run([seeds[i]], lrs=[lrs[i]]))  # as a sweep trains a single-lr group
        jax.tree.map(lambda g, a, i=i: _assert_close(g[i], a[0], rtol=1e-5), grid, alone)


def _tiny(steps: int, log_every: int, **more) -> TrainConfig:
    """A training configuration small enough that compiling, not training, is most of a test's time."""
    return TrainConfig(steps=steps, batch_size=4, log_every=log_every, eval_size=4, valid_size=4, probe_size=4, **more)


def test_compilations_do_not_grow_with_the_learning_rate_grid():
    """One learning rate or three: the same three programs (init, advance, evaluate), each compiled once."""
    counts = {}
    tiny = _tiny(steps=2, log_every=1)
    for lrs in ([3e-3], [1e-3, 3e-3, 1e-2]):
        trainer = Trainer(Adding(gap=4), ModelConfig(cell="rnn", hidden=4), tiny)  # fresh: nothing compiled yet
        seeds = [0, 1] * len(lrs)
        trainer.run(seeds, lrs=[lr for lr in lrs for _ in range(2)])
        counts[len(lrs)] = [p._cache_size() for p in (trainer.init, trainer.advance, trainer.evaluate)]
    assert counts == {1: [1, 1, 1], 3: [1, 1, 1]}


def _compiled_programs(caplog) -> list[str]:
    """The names of the jitted functions XLA compiled, from JAX's compile log."""
    return [
        r.getMessage().split("jit(")[1].split(")")[0]
        for r in caplog.records
        if "Finished XLA compilation" in r.getMessage()
    ]


def test_compile_compiles_every_program_of_a_run_so_the_run_compiles_none(caplog):
    """Trainer.compile (the programs at once, in threads) leaves run nothing to compile; same numbers."""
    tiny = _tiny(steps=4, log_every=2, diagnostics=True)
    trainer = Trainer(Adding(gap=4), ModelConfig(cell="gru", hidden=4), tiny)  # fresh: nothing compiled yet
    reference = trainer.run([7, 8])  # also compiles the helpers (key stacking) outside the log below
    with caplog.at_level("DEBUG"), jax.log_compiles(True):
        fresh = Trainer(Adding(gap=4), ModelConfig(cell="gru", hidden=4), tiny)
        fresh.compile(2)
        compiled = _compiled_programs(caplog)
        caplog.clear()
        result = fresh.run([7, 8])
        assert _compiled_programs(caplog) == []
    assert sorted(compiled) == sorted(["members", "_advance", "_evaluate", "_diagnose"])  # members: init's lax.map
    jax.tree.map(np.testing.assert_array_equal, _outputs(result), _outputs(reference))


def test_a_single_learning_rate_gives_the_numbers_of_a_constant_one(pair, monkeypatch):
    """The learning rate as a state value (inject_hyperparams) changes no bit against optax's constant form."""

    def constant_lr_chain(self, lr=None):
        opt = OPTIMIZERS[self.optimizer](self.lr)
        return opt if self.clip == 0 else optax.chain(optax.clip_by_global_norm(self.clip), opt)

    monkeypatch.setattr(TrainConfig, "optimizer_chain", constant_lr_chain)
    constant = Trainer(TASK, MODEL, TRAIN).run([0, 1])
    jax.tree.map(np.testing.assert_array_equal, _outputs(constant), _outputs(pair))


def test_validation_set_is_a_stream_of_its_own(pair):
    """fold_in(key, VALID_FOLD) shares no 32-bit word with the keys split(key, 4) gives init, data, probe and eval."""
    for seed in (0, 1, 12345):
        key = jax.random.PRNGKey(seed)
        split_words = set(np.asarray(jax.random.split(key, 4)).ravel().tolist()) | set(np.asarray(key).tolist())
        assert not split_words & set(np.asarray(jax.random.fold_in(key, VALID_FOLD)).tolist())
    assert set(pair.final_valid) == set(pair.final)
    assert np.all(pair.final_valid["loss"] != pair.final["loss"])  # other sequences, other numbers


def test_the_validation_size_leaves_the_evaluation_alone():
    """valid_size 4 (one lax.map with the evaluation chunks) or 300 (a loop of its own): the same final metrics."""
    finals = []
    for valid_size in (4, 300):
        train = TrainConfig(steps=2, batch_size=4, log_every=1, eval_size=4, valid_size=valid_size, probe_size=4)
        result = Trainer(Adding(gap=4), ModelConfig(cell="rnn", hidden=4), train).run([0, 1])
        assert all(np.all(np.isfinite(v)) for v in result.final_valid.values())
        finals.append(result.final)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), *finals)


def test_stop_when_solved_freezes_each_run_at_its_own_solve():
    """A run stops at the first log point where its metric on the stop check set (validation sequences, not the
    probe batch) reaches the threshold; the others go on; each run's numbers are those it has alone; a group whose
    members all stopped ends early."""
    task = DelayedRecall(gap=2)
    train = TrainConfig(
        steps=40, batch_size=16, log_every=10, eval_size=64, probe_size=16, valid_size=64, stop_when_solved=True
    )
    with pytest.raises(ValueError, match="stop_threshold"):
        get_trainer(task, MODEL, train)  # stop_when_solved without the threshold to stop at
    trainer = get_trainer(task, MODEL, train, 0.5)
    assert trainer.stop_check_size == stop_check_size(0.5, 5)  # 5 checks: step 0 and 4 blocks
    both = trainer.run([0, 0], lrs=[3e-2, 1e-5])  # the tiny learning rate never solves
    check = np.stack([r.stop_metric for r in both.records])  # (log points, S)
    assert len(both.records) == 5  # the slow member kept the group to the end
    first = int(np.argmax(reaches(check[:, 0], 0.5)))
    assert 0 < first < 4 and not np.any(reaches(check[:, 1], 0.5))
    assert not np.array_equal(check[:, 0], np.stack([r.metrics["metric"] for r in both.records])[:, 0])
    np.testing.assert_array_equal(both.steps_trained, [first * train.log_every, train.steps])
    np.testing.assert_array_equal(check[first:, 0], check[first, 0])  # frozen: the check metric stays put

    alone = trainer.run([0], lrs=[3e-2])
    assert len(alone.records) == first + 1  # alone, it stops the group at its solve
    np.testing.assert_array_equal(alone.steps_trained, [first * train.log_every])
    for k in both.final:
        np.testing.assert_allclose(both.final[k][0], alone.final[k][0], rtol=1e-5)
        np.testing.assert_allclose(both.final_valid[k][0], alone.final_valid[k][0], rtol=1e-5)


def test_stop_margin_stops_at_the_first_check_that_clears_the_threshold_by_it():
    """With stop_margin m a run stops at the first check reaching threshold + m, later than it stops without; the
    check set is the threshold's; without stop_when_solved a margin is refused."""
    task = DelayedRecall(gap=2)
    base = dict(steps=60, batch_size=16, log_every=5, eval_size=64, probe_size=16, valid_size=64, stop_when_solved=True)
    margin_trainer = get_trainer(task, MODEL, TrainConfig(**base, stop_margin=0.4), 0.3)
    assert margin_trainer.stop_check_size == stop_check_size(0.3, 13)
    margin = margin_trainer.run([0], lrs=[1e-2])
    early = get_trainer(task, MODEL, TrainConfig(**base), 0.3).run([0], lrs=[1e-2])
    check = np.array([r.stop_metric[0] for r in margin.records])
    stop = int(margin.steps_trained[0]) // base["log_every"]
    assert reaches(check[stop], 0.7) and not np.any(reaches(check[:stop], 0.7))
    assert 0 < early.steps_trained[0] < margin.steps_trained[0] < base["steps"]
    with pytest.raises(ValueError, match="stop_when_solved"):
        TrainConfig(stop_margin=0.01)


def test_the_probe_stop_rule_of_before_stops_on_the_probe_metric():
    """stop_check = "probe", kept to reproduce the runs trained before the validation check: a run stops at the
    first log point where its probe metric (the logged metric) is >= the threshold, with no stop check set."""
    train = TrainConfig(
        steps=40, batch_size=16, log_every=10, eval_size=64, probe_size=16, stop_when_solved=True, stop_check="probe"
    )
    trainer = get_trainer(DelayedRecall(gap=2), MODEL, train, 0.5)
    assert trainer.stop_check_size == 0
    both = trainer.run([0, 0], lrs=[3e-2, 1e-5])
    probe_metric = np.stack([r.metrics["metric"] for r in both.records])  # (log points, S)
    assert all(r.stop_metric is None for r in both.records)
    first = int(np.argmax(probe_metric[:, 0] >= np.float32(0.5)))
    assert 0 < first < 4 and not np.any(probe_metric[:, 1] >= np.float32(0.5))
    np.testing.assert_array_equal(both.steps_trained, [first * train.log_every, train.steps])


def _binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (independent of the Chernoff bound)."""
    from math import exp, lgamma, log

    return sum(
        exp(lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) + i * log(p) + (n - i) * log(1 - p))
        for i in range(k, n + 1)
    )


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("checks", [1, 41, 61])
def test_the_stop_check_set_bounds_a_false_stop_over_all_checks(threshold, checks):
    """A model 0.05 below the threshold passes one check with probability below STOP_LEVEL / checks (exact binomial
    tail at the derived size), so any of the checks with probability below STOP_LEVEL (union bound); at a tenth of
    the size it would not."""
    n = stop_check_size(threshold, checks)
    p = threshold - 0.05
    need = next(k for k in range(n + 1) if reaches(np.float32(k / n), threshold))  # the fewest correct that pass
    assert checks * _binomial_tail(n, p, need) < STOP_LEVEL
    small = max(1, n // 10)
    need_small = next(k for k in range(small + 1) if reaches(np.float32(k / small), threshold))
    assert checks * _binomial_tail(small, p, need_small) > STOP_LEVEL  # the size is not idly large
    assert stop_check_size(threshold, 10 * checks) > n  # more checks, a stricter level per check


def test_a_synthetic_model_of_known_accuracy_rarely_stops_and_a_good_one_does():
    """Bernoulli outcomes: a model of accuracy 0.90 against 0.95, checked 41 times on sets of the derived size;
    the 64-sequence probe batch of before passes it about one check in nine."""
    rng = np.random.default_rng(0)
    n = stop_check_size(0.95, 41)
    trials = 200_000
    fraction = rng.binomial(n, 0.90, size=trials) / n
    assert reaches(fraction, 0.95).mean() < STOP_LEVEL / 41
    probe = rng.binomial(64, 0.90, size=trials) / 64
    assert 0.09 < reaches(probe, 0.95).mean() < 0.13  # the 0.11
    good = rng.binomial(n, 0.97, size=trials) / n
    assert reaches(good, 0.95).mean() > 0.99  # a model above the threshold stops


def test_divergence_is_marked(pair):
    bad_train = TrainConfig(
        steps=20, batch_size=16, optimizer="sgd", lr=1e30, clip=0.0, log_every=10, eval_size=64, probe_size=16
    )
    bad = get_trainer(TASK, MODEL, bad_train).run([0])
    losses = np.concatenate([r.metrics["loss"] for r in bad.records])
    assert np.isfinite(losses[0]) and not np.all(np.isfinite(losses))  # it really goes non-finite
    assert bad.diverged_step[0] >= 0
    np.testing.assert_array_equal(pair.diverged_step, [-1, -1])  # the normal config does not


def test_one_diverging_seed_leaves_the_other_untouched(trainer):
    """A non-finite seed (seed 0 given a NaN readout bias) is frozen; seed 1's numbers do not change."""
    clean = trainer.initial_state([0, 1])
    poisoned = trainer.initial_state([0, 1])
    bias = poisoned.params["params"]["readout"]["bias"]  # (S, 1)
    params = jax.tree.map(lambda x: x, poisoned.params)
    params["params"]["readout"]["bias"] = bias.at[0].set(jnp.nan)
    poisoned = poisoned._replace(params=params)
    seed0_params = jax.tree.map(lambda x: np.array(x[0]), poisoned.params)  # copies: the state is donated

    outputs = {}
    for name, state in (("clean", clean), ("poisoned", poisoned)):
        records = []
        for _ in range(2):
            state, record = trainer.advance(state, TRAIN.log_every, 0)
            records.append(jax.device_get(record))
        outputs[name] = {
            "records": records,
            "final": jax.device_get(trainer.evaluate(state, 0).final),
            "params": state.params,
        }
        outputs[name]["diverged_step"] = np.asarray(state.diverged_step)

    np.testing.assert_array_equal(outputs["clean"]["diverged_step"], [-1, -1])
    np.testing.assert_array_equal(outputs["poisoned"]["diverged_step"], [0, -1])
    assert np.isnan(outputs["poisoned"]["final"]["loss"][0])
    jax.tree.map(lambda p, p0: np.testing.assert_array_equal(p[0], p0), outputs["poisoned"]["params"], seed0_params)
    jax.tree.map(lambda p, c: np.testing.assert_array_equal(p[1], c[1]), outputs["poisoned"], outputs["clean"])


LEARNING = {
    # final evaluation loss below half the memoryless baseline, one seed; about 30 s each on 2 CPU cores
    "copy": (
        Copy(gap=10),
        ModelConfig(cell="lstm", hidden=128),
        TrainConfig(steps=400, batch_size=64, lr=1e-2, log_every=100, eval_size=256, probe_size=16),
    ),
    "adding": (
        Adding(gap=20),
        ModelConfig(cell="lstm", hidden=64),
        TrainConfig(steps=200, batch_size=64, lr=1e-2, log_every=100, eval_size=256, probe_size=16),
    ),
}


@pytest.mark.parametrize("name", sorted(LEARNING))
def test_lstm_learns(name):
    task, model, train = LEARNING[name]
    result = Trainer(task, model, train).run([0])
    baseline = task.baseline()
    assert result.diverged_step[0] == -1
    assert result.final["loss"][0] < 0.5 * baseline.loss, (result.final, baseline)


# --- per-parameter-group learning rates ---------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_recurrence_params_train_at_the_reduced_rate(optimizer):
    """Two steps: the recurrence parameters move by factor x their full-rate move, the rest as at factor 1."""
    from lrd.models import CELLS, SequenceModel
    from lrd.train import recurrence_rate

    config = ModelConfig(cell="lru", hidden=4)
    params = SequenceModel(config, 3).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 5)))
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)
    moves = {}
    for factor in (1.0, 0.1):
        train = TrainConfig(optimizer=optimizer, lr=0.01, clip=0.0, recurrence_lr_factor=factor)
        tx = recurrence_rate(train.optimizer_chain(), factor, CELLS["lru"].recurrence_params)
        state, total = tx.init(params), jax.tree.map(jnp.zeros_like, params)
        for _ in range(2):
            updates, state = tx.update(grads, state, params)
            total = jax.tree.map(jnp.add, total, updates)
        moves[factor] = total["params"]
    for module in ("layer0_fwd", "readout"):
        for name, full in moves[1.0][module].get("cell", moves[1.0][module]).items():
            reduced = moves[0.1][module].get("cell", moves[0.1][module])[name]
            assert np.all(np.asarray(full) != 0), name
            expected = 0.1 * full if module != "readout" and name in ("nu_log", "theta_log", "gamma_log") else full
            np.testing.assert_allclose(reduced, expected, rtol=1e-5, err_msg=f"{module}/{name}")


def test_recurrence_lr_factor_enters_the_run_id_only_away_from_its_default(tmp_path):
    from conftest import TINY

    from lrd.experiment import load_experiment

    def runs(cells: str, extra: str = ""):
        path = tmp_path / "exp.toml"
        path.write_text(TINY.replace('["rnn", "lstm"]', cells).replace("steps = 20", "steps = 20" + extra))
        return load_experiment(path).runs

    assert "recurrence_lr_factor" not in runs('["lru"]')[0].config()["train"]  # stored runs keep their ids
    assert [r.run_id for r in runs('["lstm", "lru"]')] == [
        r.run_id for r in runs('["lstm", "lru"]', "\nrecurrence_lr_factor = 1.0")
    ]
    grid = runs('["lstm", "lru"]', "\nrecurrence_lr_factor = [1.0, 0.1]")
    # the lstm has no recurrence parameters: the factor is dropped, one run per seed, not two
    assert sorted((r.model.cell, r.train.recurrence_lr_factor) for r in grid) == [
        ("lru", 0.1),
        ("lru", 0.1),
        ("lru", 1.0),
        ("lru", 1.0),
        ("lstm", 1.0),
        ("lstm", 1.0),
    ]
    reduced = [r for r in grid if r.train.recurrence_lr_factor == 0.1]
    assert all(r.config()["train"]["recurrence_lr_factor"] == 0.1 for r in reduced)


def _jobs(keys: list[tuple], members: list[tuple[int, float]]) -> list:
    """One backend job per group key, each training ``members`` (seed, learning rate)."""
    from lrd import backends

    return [backends.make_job(i, key, members, ()) for i, key in enumerate(keys)]


def _assert_each_as_alone(outcomes, keys: list[tuple]) -> None:
    """One outcome per job, none failed, each bitwise what its group gives trained alone (seeds 0 and 1)."""
    assert sorted(o.index for o in outcomes) == list(range(len(keys)))
    for outcome in outcomes:
        assert outcome.error is None
        alone = Trainer(*keys[outcome.index]).run([0, 1], lrs=[1e-3, 1e-3])
        jax.tree.map(np.testing.assert_array_equal, _outputs(outcome.result), _outputs(alone))


def test_the_local_backend_compiles_the_next_group_while_a_group_trains(caplog):
    """Each group's programs compile once, the second group's in the thread that compiles ahead; plain numbers."""
    from lrd import backends

    tiny = _tiny(steps=4, log_every=2)
    keys = [(Adding(gap=gap), ModelConfig(cell="rnn", hidden=4), tiny, None) for gap in (3, 5)]
    with caplog.at_level("DEBUG"), jax.log_compiles(True):
        outcomes = list(backends.LocalBackend().run(_jobs(keys, [(0, 1e-3), (1, 1e-3)]), lambda event: None))
    lowered_in = [r.threadName for r in caplog.records if r.getMessage().startswith("Compiling jit(_advance)")]
    assert lowered_in == ["MainThread", f"{backends.COMPILE_THREAD}-ahead"]  # once per group, the second ahead
    assert [o.index for o in outcomes] == [0, 1]  # one after another, in order
    _assert_each_as_alone(outcomes, keys)


def test_two_workers_train_groups_at_once_with_the_numbers_of_one(caplog):
    """Two groups train in two threads at once; each gives the numbers it gives alone; progress arrives here."""
    import threading

    from lrd import backends

    tiny = _tiny(steps=4, log_every=2)
    keys = [
        (Adding(gap=gap), ModelConfig(cell=cell, hidden=4), tiny, None) for gap in (3, 5) for cell in ("rnn", "gru")
    ]
    jobs = _jobs(keys, [(0, 1e-3), (1, 1e-3)])
    events = []
    with caplog.at_level("DEBUG"), jax.log_compiles(True):
        outcomes = list(
            backends.LocalBackend(workers=2).run(jobs, lambda e: events.append((e, threading.current_thread())))
        )
    trained_in = {r.threadName for r in caplog.records if r.getMessage().startswith("Compiling jit(_advance)")}
    assert trained_in == {f"{backends.COMPILE_THREAD}-worker-0", f"{backends.COMPILE_THREAD}-worker-1"}
    assert {e.index for e, _ in events if isinstance(e, backends.Started)} == set(range(len(jobs)))
    assert all(thread is threading.main_thread() for _, thread in events)
    _assert_each_as_alone(outcomes, keys)


def test_two_workers_stop_when_the_caller_stops_reading(monkeypatch):
    """Closing the outcomes early (an interrupt) stops both workers at a block and starts no other group."""
    import threading
    import time

    from lrd import backends

    begun = []
    real_train = backends.train
    monkeypatch.setattr(backends, "train", lambda job, emit: begun.append(job.index) or real_train(job, emit))
    slow = _tiny(steps=40, log_every=2)
    keys = [(Adding(gap=gap), ModelConfig(cell="rnn", hidden=4), slow, None) for gap in (3, 4, 5, 6, 7, 8)]
    jobs = _jobs(keys, [(0, 1e-3)])
    outcomes = backends.LocalBackend(workers=2).run(jobs, lambda event: None)
    first = next(outcomes)
    outcomes.close()  # returns once both workers have stopped
    assert first.error is None
    assert not [t for t in threading.enumerate() if t.name.startswith(f"{backends.COMPILE_THREAD}-worker")]
    begun_then = list(begun)
    time.sleep(0.5)
    assert begun == begun_then  # no group began after the close
    assert len(begun) <= 3  # the finished group, the other worker's, and at most one taken as the first ended


def test_one_worker_waits_for_the_compilation_ahead_when_the_caller_stops_reading(monkeypatch):
    """Closing the outcomes early leaves no compile-ahead thread running (inside XLA at exit, it aborts the process)."""
    import threading
    import time

    from lrd import backends

    def slow_ahead(job):  # a compilation ahead that is still under way when the first outcome arrives
        thread = threading.Thread(target=time.sleep, args=(1.0,), name=f"{backends.COMPILE_THREAD}-ahead", daemon=True)
        thread.start()
        return thread

    monkeypatch.setattr(backends, "compile_ahead", slow_ahead)
    small = _tiny(steps=2, log_every=1)
    keys = [(Adding(gap=gap), ModelConfig(cell="rnn", hidden=4), small, None) for gap in (3, 4, 5)]
    outcomes = backends.LocalBackend(workers=1).run(_jobs(keys, [(0, 1e-3)]), lambda event: None)
    assert next(outcomes).error is None
    outcomes.close()
    assert not [t for t in threading.enumerate() if t.name == f"{backends.COMPILE_THREAD}-ahead" and t.is_alive()]


def test_two_workers_trace_their_models_one_at_a_time(monkeypatch):
    """Every flax module class made while two groups compile and train at once is made under MODEL_LOCK.

    flax edits its base classes' dataclass fields while it makes a class (``nn.scan``, while
    tracing); two threads doing so at once failed a group once ("dictionary changed size during
    iteration")."""
    import flax.linen

    from lrd import backends
    from lrd.models.network import MODEL_LOCK

    held = []
    real_scan = flax.linen.scan

    def scan(*args, **kwargs):
        held.append(MODEL_LOCK._is_owned())  # type: ignore[attr-defined]
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(flax.linen, "scan", scan)
    unseen = _tiny(steps=4, log_every=2)
    keys = [(Adding(gap=5), ModelConfig(cell=cell, hidden=7), unseen, None) for cell in ("rnn", "lstm", "gru")]
    outcomes = list(backends.LocalBackend(workers=2).run(_jobs(keys, [(0, 1e-3), (1, 1e-3)]), lambda event: None))
    assert [o.error for o in outcomes] == [None, None, None]
    assert held and all(held), f"{held.count(False)} of {len(held)} module classes made without the lock"


def test_test_sets_are_scored_with_the_evaluation_program_and_keys(caplog):
    """A test set identical to the trained task scores its final metrics exactly; flip-flop's own differ.

    Their programs compile with the run's others (``Trainer.compile``), so the run compiles none."""
    from lrd.tasks.flip_flop import FlipFlop

    class Echo(FlipFlop):  # its one test set is the trained distribution itself
        def test_sets(self):
            return {"same": self, "sparse": self.with_params(p_ignore=0.98)}

    train = TrainConfig(steps=20, log_every=10, batch_size=8, lr=3e-3, eval_size=64, probe_size=8, diagnostics=False)
    trainer = Trainer(Echo(gap=6), ModelConfig(cell="lstm", hidden=8), train)
    assert {"evaluate_on_same_6", "evaluate_on_sparse_6"} <= set(trainer.programs(2))
    trainer.compile(2)
    with caplog.at_level("DEBUG"), jax.log_compiles(True):
        result = trainer.run([0, 1])
    assert not [name for name in _compiled_programs(caplog) if name.startswith("_evaluate")]
    assert set(result.test_sets) == {"same", "sparse"}
    for k in ("loss", "metric"):
        np.testing.assert_array_equal(result.test_sets["same"][k], result.final[k])
    assert not np.array_equal(result.test_sets["sparse"]["loss"], result.final["loss"])
    assert set(FlipFlop(gap=6).test_sets()) == {"sparse", "dense"}
    assert FlipFlop(gap=6).test_sets()["sparse"] == FlipFlop(gap=6, p_ignore=0.98)
