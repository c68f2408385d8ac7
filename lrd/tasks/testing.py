"""Task-independent checks that every task must pass; run them on your own task.

    from lrd.tasks.testing import check_task
    check_task(MyTask(gap=8))            # raises AssertionError naming what failed

``check_task`` runs, in order (each is also usable alone):

* ``check_config``   the configuration refuses gap <= 0, wrong types and unknown
                     keys (pydantic ``ValidationError``), is frozen, and
                     round-trips through ``params()``;
* ``check_sampling`` ``sample`` under ``jax.jit`` (batch size static) traces
                     once for several keys; same key -> identical batch (also
                     across independent traces), different keys -> different
                     batches; returns the ``n_samples`` batch the next two
                     checks use;
* ``check_batch``    shapes and dtypes, finite inputs, class ids in range, and
                     a 0/1 mask within ``scored_span`` that is 1 at both of its
                     ends: the same for every sequence, or (``scored_steps =
                     "drawn"``) at least one step in every sequence, both ends
                     reached by some sequence of the batch;
* ``check_baseline`` the analytic ``baseline()`` and ``extra_baselines()`` agree
                     with the metrics of ``memoryless_outputs`` measured on
                     those sequences, within ``n_sigma`` standard errors (plus a
                     small float32 allowance); so does each of
                     ``partial_baselines()`` with its ``partial_outputs``.

These checks do not know what a task computes: a task-specific reference
(recomputing the targets from the inputs) belongs in its own test.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import ValidationError

from lrd.tasks.base import Baseline, Batch, Task

FLOAT_ATOL = 1e-5  # float32 allowance on top of the statistical tolerance (relative to max(1, |value|))


class CheckResult(NamedTuple):
    """What ``check_task`` measured.

    measured: memoryless loss, metric and extras, averaged over ``batch``.
    batch:    the (n_samples, T, ...) batch drawn under ``jit`` with ``jax.random.key(seed)``.
    """

    measured: dict[str, float]
    batch: Batch


def check_task(task: Task, *, n_samples: int = 20_000, n_sigma: float = 5.0, seed: int = 0) -> CheckResult:
    """Run every generic check on ``task``; raise AssertionError naming the first failure."""
    check_config(task)
    batch = check_sampling(task, jax.random.key(seed), n_samples)
    check_batch(task, batch)
    measured = check_baseline(task, batch, n_sigma=n_sigma)
    check_partial_baselines(task, batch, n_sigma=n_sigma)
    return CheckResult(measured, batch)


def check_config(task: Task) -> None:
    """Bad gaps, wrong types and unknown keys are refused; the config is frozen and round-trips."""
    cls, params = type(task), task.params()
    assert "gap" in params, f"{task!r}: params() must include 'gap'"
    assert cls(**params) == task, f"{task!r}: {cls.__name__}(**task.params()) does not give the same task"
    bad = {
        "gap=0": {**params, "gap": 0},
        "gap=-3": {**params, "gap": -3},
        "gap='10' (a string)": {**params, "gap": str(params["gap"])},
        "gap=1.5 (a float)": {**params, "gap": 1.5},
        "an unknown key": {**params, "not_a_parameter": 1},
    }
    for what, kwargs in bad.items():
        try:
            cls(**kwargs)
        except ValidationError:
            continue
        raise AssertionError(f"{cls.__name__} accepted {what}; it must raise pydantic.ValidationError")
    try:
        task.gap = params["gap"] + 1  # type: ignore[misc]  # must raise: tasks are frozen
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{cls.__name__} is not frozen: assigning task.gap succeeded")


def check_sampling(task: Task, key: jax.Array, batch_size: int) -> Batch:
    """Reproducible from the key, different across keys, jit-able with the batch size static.

    Returns the jitted batch for ``key``. Two independent traces must give the same
    program and constants, which catches randomness that does not come from the key
    (e.g. NumPy's global generator, which ``jit`` would freeze at trace time).
    """
    name = _name(task)
    traces = []

    def sample(k):
        traces.append(None)
        return task.sample(k, batch_size)

    jitted = jax.jit(sample)
    a, again = jitted(key), jitted(key)
    other = jitted(jax.random.fold_in(key, 7))
    assert len(traces) == 1, f"{name}: jitted sample() traced {len(traces)} times for keys of one shape"
    for field in Batch._fields:
        assert np.array_equal(getattr(a, field), getattr(again, field)), f"{name}: same key gave different {field}"
    assert not (np.array_equal(a.inputs, other.inputs) and np.array_equal(a.targets, other.targets)), (
        f"{name}: two different keys gave the same batch"
    )
    first, second = (jax.make_jaxpr(lambda k: task.sample(k, batch_size))(key) for _ in range(2))
    same = str(first.jaxpr) == str(second.jaxpr) and len(first.consts) == len(second.consts)
    same = same and all(np.array_equal(c, d) for c, d in zip(first.consts, second.consts))
    assert same, f"{name}: two traces of sample() differ: it uses randomness or state other than its key"
    return a


def check_batch(task: Task, batch: Batch) -> None:
    """Shapes, dtypes, value ranges and the mask of one batch."""
    name = _name(task)
    assert isinstance(batch, Batch), f"{name}: sample() must return a Batch, got {type(batch).__name__}"
    B, T = batch.mask.shape
    assert task.length == T, f"{name}: mask has {T} steps, task.length is {task.length}"
    expect = {
        "inputs": ((B, T, task.input_dim), jnp.float32),
        "targets": ((B, T), jnp.int32 if task.kind == "classification" else jnp.float32),
        "mask": ((B, T), jnp.float32),
    }
    for field, (shape, dtype) in expect.items():
        value = getattr(batch, field)
        assert value.shape == shape, f"{name}: {field} has shape {value.shape}, expected {shape}"
        assert value.dtype == dtype, f"{name}: {field} has dtype {value.dtype}, expected {jnp.dtype(dtype)}"
    inputs, targets, mask = (np.asarray(x) for x in batch)
    assert np.all(np.isfinite(inputs)), f"{name}: inputs are not all finite"
    if task.kind == "classification":
        assert targets.min() >= 0 and targets.max() < task.output_dim, (
            f"{name}: class ids span [{targets.min()}, {targets.max()}], outside [0, output_dim={task.output_dim})"
        )
    else:
        assert task.output_dim == 1, f"{name}: a regression task has output_dim 1, got {task.output_dim}"
        assert np.all(np.isfinite(targets)), f"{name}: targets are not all finite"
    assert np.all((mask == 0) | (mask == 1)), f"{name}: mask has values other than 0 and 1"
    if task.scored_steps == "fixed":
        assert np.all(mask == mask[:1]), f"{name}: the mask differs between sequences (scored_steps is 'fixed')"
    else:
        assert np.all(mask.sum(axis=1) > 0), f"{name}: a sequence has nothing scored (its mask is all 0)"
    first, last = task.scored_span
    assert 0 <= first <= last < T, f"{name}: scored_span {(first, last)} is not within [0, {T})"
    anywhere = mask.max(axis=0)  # (T,) 1 where some sequence is scored
    scored = np.flatnonzero(anywhere)
    assert scored.size > 0, f"{name}: nothing is scored (mask is all 0)"
    assert scored.min() >= first and scored.max() <= last, (
        f"{name}: mask scores steps {scored.min()}..{scored.max()}, outside scored_span {(first, last)}"
    )
    assert anywhere[first] == 1 and anywhere[last] == 1, (
        f"{name}: the ends of scored_span {(first, last)} are not both scored "
        f"(mask: {anywhere[first]}, {anywhere[last]})"
    )


def check_baseline(task: Task, batch: Batch, *, n_sigma: float = 5.0) -> dict[str, float]:
    """``baseline()``/``extra_baselines()`` against the metrics of ``memoryless_outputs`` on ``batch``.

    A metric over the batch is the mean of the per-sequence metrics weighted by
    their numbers of scored steps (equal weights where every sequence scores the
    same number); the sequences are i.i.d., and the standard error is that of this
    ratio estimator. Passes when each measured mean is within ``n_sigma`` standard
    errors (plus ``FLOAT_ATOL``) of its analytic value. Returns the measured means.
    """
    name = _name(task)
    analytic = task.baseline()
    assert isinstance(analytic, Baseline), f"{name}: baseline() must return a Baseline"
    expected = {"loss": float(analytic.loss), "metric": float(analytic.metric), **task.extra_baselines()}
    return _check_predictor(task, batch, task.memoryless_outputs(batch), expected, "memoryless", n_sigma)


def check_partial_baselines(task: Task, batch: Batch, *, n_sigma: float = 5.0) -> dict[str, dict[str, float]]:
    """Each of ``partial_baselines()`` against the loss and metric of its ``partial_outputs`` on ``batch``."""
    measured = {}
    for key, analytic in task.partial_baselines().items():
        assert isinstance(analytic, Baseline), f"{_name(task)}: partial_baselines()[{key!r}] must be a Baseline"
        expected = {"loss": float(analytic.loss), "metric": float(analytic.metric)}
        outputs = task.partial_outputs(key, batch)
        measured[key] = _check_predictor(task, batch, outputs, expected, f"partial-memory ({key})", n_sigma)
    return measured


def _check_predictor(
    task: Task, batch: Batch, outputs: jax.Array, expected: dict[str, float], what: str, n_sigma: float
) -> dict[str, float]:
    """The metrics of ``outputs`` on ``batch`` against their ``expected`` analytic values; the measured means."""
    name = _name(task)
    # outputs (B, T, output_dim) is an argument of the jitted evaluation below, so XLA cannot fold it
    shape = (*batch.mask.shape, task.output_dim)
    assert outputs.shape == shape and outputs.dtype == jnp.float32, (
        f"{name}: the {what} outputs are {outputs.shape} {outputs.dtype}, expected {shape} float32"
    )

    @jax.jit
    def evaluate(outputs, batch):
        one = lambda o, b: task.metrics(o[None], Batch(*(x[None] for x in b)))
        return task.metrics(outputs, batch), jax.vmap(one)(outputs, batch)

    whole, each = evaluate(outputs, batch)
    missing = set(expected) - set(whole)
    assert not missing, f"{name}: metrics() lacks {sorted(missing)}, which have analytic baselines"
    measured = {}
    weights = np.asarray(batch.mask, np.float64).sum(axis=1)  # (B,) scored steps per sequence
    for k in whole:
        values = np.asarray(each[k], np.float64)  # (B,) one value per sequence
        mean, se = _ratio_mean(values, weights)
        assert math.isclose(float(whole[k]), mean, rel_tol=1e-4, abs_tol=1e-5), (
            f"{name}: metric {k!r} of the batch ({float(whole[k])}) is not the mean over its sequences ({mean})"
        )
        measured[k] = mean
        if k in expected:
            want = expected[k]
            tol = n_sigma * se + FLOAT_ATOL * max(1.0, abs(want))
            assert abs(mean - want) <= tol, (
                f"{name}: {what} {k} measured {mean:.6f} +- {se:.2g} (s.e., {values.size} sequences) "
                f"but the analytic baseline is {want:.6f} (tolerance {tol:.2g})"
            )
    assert 0.0 <= measured["metric"] <= 1.0, f"{name}: {what} metric {measured['metric']} is outside [0, 1]"
    return measured


def _ratio_mean(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """The weighted mean sum(w v) / sum(w) of i.i.d. pairs and its standard error (the ratio
    estimator's, by the delta method); with equal weights, the mean and std(ddof=1)/sqrt(n)."""
    n = values.size
    mean = float(np.sum(weights * values) / np.sum(weights))
    spread = np.sum((weights * (values - mean)) ** 2) / (n - 1)
    return mean, float(math.sqrt(spread * n) / np.sum(weights))


def _name(task: Task) -> str:
    return f"{type(task).__name__}({', '.join(f'{k}={v!r}' for k, v in task.params().items())})"
