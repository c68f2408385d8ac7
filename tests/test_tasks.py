"""Tests of every registered task.

Parameterized over the registry ``lrd.tasks.TASKS``: a newly registered task gets
the generic checks of ``lrd.tasks.testing`` (shapes, mask, keys, jit, config
validation, analytic vs measured memoryless baseline) with no change here.
Built-in tasks must also have a NumPy reference below that recomputes the
targets and mask from the inputs alone; a task defined outside ``lrd.tasks``
without one is skipped by that test (add it to ``REFERENCES`` to test it).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
from pydantic import ValidationError

from lrd.tasks import TASKS, Batch, Task
from lrd.tasks.adding import Adding
from lrd.tasks.base import Baseline
from lrd.tasks.testing import CheckResult, check_config, check_partial_baselines, check_task

N_SAMPLES = 20_000  # sequences for the baseline check (standard error ~ 0.3% of accuracy)
N_REFERENCE = 400  # of those, how many the NumPy references re-derive

# Small configurations (short sequences, so the file stays fast); one per code path.
SMALL_CONFIGS: dict[str, list[dict]] = {
    "copy": [dict(gap=5)],
    "adding": [dict(gap=16), dict(gap=30, variant="hochreiter1997")],
    "delayed_recall": [dict(gap=6), dict(gap=6, distractor="blank")],
    "temporal_order": [dict(gap=20), dict(gap=30, n_relevant=3)],
    "selective_copy": [dict(gap=6, n_symbols=4)],
    "associative_recall": [dict(gap=3, n_pairs=4, n_queries=3)],
    "lookahead": [dict(gap=3)],
    "parity": [dict(gap=7)],
    "induction": [dict(gap=6, n_symbols=4)],
    "mqar": [dict(gap=16, n_pairs=3, vocab_size=16), dict(gap=20, n_pairs=2, vocab_size=10, power_a=1.0)],
    "flip_flop": [dict(gap=6), dict(gap=5, p_ignore=0.1)],
    "fuzzy_recall": [dict(gap=3, vocab_size=10, k_motif=2, v_motif=2), dict(gap=5)],
    "noisy_recall": [dict(gap=4, vocab_size=12, noise_vocab=4), dict(gap=3, frac_noise=0.0, noise_vocab=0)],
    "state_tracking": [
        dict(gap=6, target="every"),
        dict(gap=5, group="cyclic", modulus=5),
        dict(gap=4, group="s3", target="every"),
        dict(gap=4, group="s5"),
        dict(gap=3, group="a5", target="every"),
    ],
}
FALLBACK_GAPS = (1, 2, 4, 8, 16, 32, 64, 128)  # a task not listed above: its smallest valid gap, defaults otherwise


def is_builtin(cls: type[Task]) -> bool:
    return cls.__module__.startswith("lrd.tasks.")


def small_configs(name: str) -> list[dict]:
    if name in SMALL_CONFIGS:
        return SMALL_CONFIGS[name]
    for gap in FALLBACK_GAPS:
        try:
            TASKS[name](gap=gap)
        except ValidationError:
            continue
        return [dict(gap=gap)]
    return [dict(gap=FALLBACK_GAPS[-1])]  # constructing it in the test will show why it fails


CASES = [
    pytest.param(name, kwargs, id=f"{name}-" + "-".join(f"{k}={v}" for k, v in kwargs.items()))
    for name in sorted(TASKS)
    for kwargs in small_configs(name)
]


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """These tests are dominated by XLA compile time on CPU; optimisations only change speed."""
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@functools.cache
def checked(task: Task) -> CheckResult:
    """``check_task`` once per configuration; the reference tests reuse (part of) its batch."""
    result = check_task(task, n_samples=N_SAMPLES)
    return result._replace(batch=Batch(*(np.asarray(x[:N_REFERENCE]) for x in result.batch)))


# --- generic checks, every registered task ---------------------------------------
@pytest.mark.parametrize("name, kwargs", CASES)
def test_generic_checks(name, kwargs):
    checked(TASKS[name](**kwargs))


@pytest.mark.parametrize("name, kwargs", CASES)
def test_config_validation(name, kwargs):
    check_config(TASKS[name](**kwargs))


@pytest.mark.parametrize("name, kwargs", CASES)
def test_builtin_mask_is_exactly_the_scored_span(name, kwargs):
    """The mask is 1 exactly on scored_span; a task that draws its scored steps keeps them within it."""
    task = TASKS[name](**kwargs)
    if not is_builtin(type(task)):
        pytest.skip("user tasks only need masked steps within scored_span (checked by check_task)")
    first, last = task.scored_span
    t = np.arange(task.length)
    mask = checked(task).batch.mask
    span = np.broadcast_to((t >= first) & (t <= last), mask.shape)
    if task.scored_steps == "drawn":  # each sequence its own steps (its NumPy reference checks which), in the span
        assert np.all(mask[~span] == 0) and np.all(mask.sum(axis=1) > 0)
        assert mask[:, first].any() and mask[:, last].any()
    else:
        np.testing.assert_array_equal(mask, span)


def test_new_tasks_are_registered():
    assert set(SMALL_CONFIGS) <= set(TASKS)


def test_every_builtin_has_a_small_config_and_a_reference():
    for name, cls in TASKS.items():
        if is_builtin(cls):
            assert name in SMALL_CONFIGS, f"built-in task {name!r} has no entry in SMALL_CONFIGS"
            assert name in REFERENCES, f"built-in task {name!r} has no NumPy reference in REFERENCES"


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("adding", dict(gap=23, variant="hochreiter1997")),  # needs T/2 - 1 > 10 positions for the 2nd marker
        ("adding", dict(gap=1)),
        ("adding", dict(gap=16, variant="le2016")),  # misspelled Literal
        ("copy", dict(gap=5, loss_positions="every")),
        ("copy", dict(gap=5, n_symbols=0)),
        ("delayed_recall", dict(gap=5, distractor="noise")),
        ("temporal_order", dict(gap=9)),  # windows of width floor(T/10) would be empty
        ("temporal_order", dict(gap=20, n_relevant=4)),
        ("selective_copy", dict(gap=5, alphabet=1)),
        ("associative_recall", dict(gap=3, n_pairs=9, n_keys=8)),  # distinct keys impossible
        ("associative_recall", dict(gap=3, n_pairs=4, n_queries=5)),  # distinct queries impossible
        ("lookahead", dict(gap=3, n_scored=0)),
        ("parity", dict(gap=7, n_bits=3)),  # unknown key
        ("state_tracking", dict(gap=4, group="s3", modulus=3)),  # only the cyclic group has a modulus
        ("state_tracking", dict(gap=4, group="d4")),
        ("induction", dict(gap=4, n_symbols=1)),
        ("state_tracking", dict(gap=4, group="cyclic", modulus=1)),
        ("mqar", dict(gap=15, n_pairs=4)),  # 4 pairs need 4 query slots: length at least 16
        ("mqar", dict(gap=64, n_pairs=8, vocab_size=16)),  # 8 distinct keys of 1..7
        ("mqar", dict(gap=64, power_a=0.0)),
        ("flip_flop", dict(gap=1)),  # a write and a read need two instructions
        ("flip_flop", dict(gap=8, p_ignore=1.0)),  # no reads but the last
        ("fuzzy_recall", dict(gap=3, vocab_size=8, k_motif=4)),  # 3 key tokens cannot make a 4-token key
        ("fuzzy_recall", dict(gap=3, vocab_size=5)),  # 1 key and 2 value tokens, values of up to 3
        ("noisy_recall", dict(gap=4, vocab_size=19)),  # 16 noise tokens leave 1 key and 1 value
        ("noisy_recall", dict(gap=4, noise_vocab=0)),  # noise needs noise tokens
    ],
)
def test_impossible_configs_are_refused(name, kwargs):
    with pytest.raises(ValidationError):
        TASKS[name](**kwargs)


# --- NumPy references: targets and mask from the inputs alone ---------------------
def decode(inputs: np.ndarray) -> np.ndarray:
    """(B, T, D) one-hot inputs -> (B, T) token ids, checking they are exactly one-hot."""
    assert np.all((inputs == 0) | (inputs == 1)) and np.all(inputs.sum(-1) == 1), "inputs are not one-hot"
    return inputs.argmax(-1)


def ref_copy(inputs, task):
    tokens = decode(inputs)
    B, T = tokens.shape
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        (d,) = np.flatnonzero(row == task.alphabet + 1)  # the one delimiter
        symbols = row[:d][row[:d] != 0]
        assert len(symbols) == task.n_symbols and np.all(row[d + 1 :] == 0)
        targets[b, d + 1 : d + 1 + len(symbols)] = symbols  # recalled right after the delimiter
        mask[b, d + 1 : d + 1 + len(symbols)] = 1
    return targets, mask


def ref_adding(inputs, task):
    values, markers = inputs[..., 0].astype(np.float64), inputs[..., 1]
    B, T = values.shape
    targets, mask = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        marked = markers[b] == 1
        assert marked.sum() == 2
        total = values[b][marked].sum()
        targets[b, T - 1] = total if task.variant == "le2015" else 0.5 + total / 4
        mask[b, T - 1] = 1
    return targets, mask


def ref_delayed_recall(inputs, task):
    tokens = decode(inputs)
    K, D = task.n_symbols, task.n_distractors
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        (cue,) = np.flatnonzero(row == K + D + 1)
        (where,) = np.flatnonzero(row < K)  # the one symbol to remember
        middle = row[where + 1 : cue]
        assert len(middle) == task.gap
        assert np.all(middle == K + D) if task.distractor == "blank" else np.all((middle >= K) & (middle < K + D))
        targets[b, cue], mask[b, cue] = row[where], 1
    return targets, mask


def ref_temporal_order(inputs, task):
    tokens = decode(inputs)
    B, T = tokens.shape
    w = T // 10
    starts = [T // 10, T // 2] if task.n_relevant == 2 else [T // 10, 3 * T // 10, 6 * T // 10]
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        relevant = np.flatnonzero(row < 2)  # X = 0, Y = 1
        assert len(relevant) == task.n_relevant
        assert all(s <= p < s + w for p, s in zip(relevant, starts)), (relevant, starts, w)
        targets[b, T - 1] = sum(int(row[p]) << i for i, p in enumerate(relevant))
        mask[b, T - 1] = 1
    return targets, mask


def ref_selective_copy(inputs, task):
    tokens = decode(inputs)
    B, T = tokens.shape
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        cues = np.flatnonzero(row == task.alphabet + 1)
        np.testing.assert_array_equal(cues, np.arange(T - task.n_symbols, T))
        shown = np.flatnonzero(row[: cues[0]] != 0)
        assert len(shown) == task.n_symbols and shown.max() < task.gap + task.n_symbols
        targets[b, cues], mask[b, cues] = row[shown], 1
    return targets, mask


def ref_associative_recall(inputs, task):
    tokens = decode(inputs)
    B, T = tokens.shape
    blank = task.n_keys + task.n_values
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        fill = np.flatnonzero(row == blank)
        assert len(fill) == task.gap and np.all(np.diff(fill) == 1)
        stored = {}
        for k, v in row[: fill[0]].reshape(-1, 2):
            assert k < task.n_keys <= v < blank and k not in stored
            stored[k] = v - task.n_keys
        assert len(stored) == task.n_pairs
        queries = np.arange(fill[-1] + 1, T)
        assert len(set(row[queries])) == len(queries) == task.n_queries
        targets[b, queries] = [stored[k] for k in row[queries]]
        mask[b, queries] = 1
    return targets, mask


def ref_lookahead(inputs, task):
    tokens = decode(inputs)
    B, T = tokens.shape
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for t in range(T - task.gap):
        targets[:, t], mask[:, t] = tokens[:, t + task.gap], 1
    return targets, mask


def ref_parity(inputs, task):
    tokens = decode(inputs)
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        (cue,) = np.flatnonzero(row == 2)
        bits = row[:cue]
        assert len(bits) == task.gap and set(bits) <= {0, 1}
        targets[b, cue], mask[b, cue] = bits.sum() % 2, 1
    return targets, mask


def ref_induction(inputs, task):
    tokens = decode(inputs)
    trigger = task.n_symbols
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        where = np.flatnonzero(row == trigger)
        assert len(where) == 2 and where[1] == len(row) - 1 and where[0] <= task.gap, where
        targets[b, -1], mask[b, -1] = row[where[0] + 1], 1
    return targets, mask


def ref_state_tracking(inputs, task):
    """Compose the permutations one by one (apply the product so far, then the element), no table."""
    from lrd.tasks.state_tracking import group_elements

    elements = group_elements(task.group, task.modulus)
    index = {tuple(p): k for k, p in enumerate(elements)}
    tokens = decode(inputs)
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        assert row[-1] == len(elements) and len(row) == task.gap + 1
        product = np.arange(elements.shape[1])
        for t, element in enumerate(row[:-1]):
            product = elements[element][product]
            if task.target == "every":
                targets[b, t], mask[b, t] = index[tuple(product)], 1
        targets[b, -1], mask[b, -1] = index[tuple(product)], 1
    return targets, mask


def ref_mqar(inputs, task, scored):
    """Zoology's layout: the context, then each key once at an even offset after it, among noise.

    Noise tokens are drawn from the whole vocabulary, so a key may also appear as noise at
    an even offset: there the inputs alone cannot say which is the query, and the batch's
    mask (``scored``) must pick one of those steps."""
    tokens = decode(inputs)
    B, T = tokens.shape
    P, V = task.n_pairs, task.vocab_size
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        keys, values = row[: 2 * P : 2], row[1 : 2 * P : 2]
        assert np.all((keys >= 1) & (keys < V // 2)) and len(set(keys)) == P
        assert np.all(values >= V // 2) and len(set(values)) == P
        stored = dict(zip(keys, values))
        for key in keys:  # the query is the one step after the context, at an even offset, holding the key
            at = [t for t in range(2 * P, T, 2) if row[t] == key]
            picked = [t for t in at if scored[b, t]]
            assert len(picked) == 1, f"key {key} at {at}, of which the mask scores {picked}"
            targets[b, picked[0]], mask[b, picked[0]] = stored[key] - V // 2, 1
    return targets, mask


def ref_flip_flop(inputs, task, scored):
    tokens = decode(inputs)
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        ops, bits = row[0::2], row[1::2]
        assert ops[0] == 2 and ops[-1] == 3 and set(ops) <= {2, 3, 4} and set(bits) <= {0, 1}
        memory = None
        for j, (op, bit) in enumerate(zip(ops, bits)):
            if op == 2:
                memory = bit
            elif op == 3:
                assert bit == memory, "the bit after a read is the last written one"
                targets[b, 2 * j], mask[b, 2 * j] = memory, 1
    return targets, mask


def ref_noisy_recall(inputs, task):
    tokens = decode(inputs)
    K, V = task.n_keys, task.vocab_size
    targets, mask = np.zeros(tokens.shape, np.int64), np.zeros(tokens.shape)
    for b, row in enumerate(tokens):
        assert row[-2] == V - 1 and len(row) == 2 * task.gap + 2
        stored = {}
        for first, second in row[:-2].reshape(-1, 2):
            if first >= K + task.n_values:  # a noise pair
                assert V - 1 > second >= K + task.n_values
                continue
            assert first < K <= second < K + task.n_values and stored.get(first, second) == second
            stored[first] = second
        assert row[-1] in stored, "the query is a key of the sequence's pairs"
        targets[b, -1], mask[b, -1] = stored[row[-1]] - K, 1
    return targets, mask


def _runs(tokens, n_keys) -> list[list[int]]:
    """Maximal runs of key tokens (below n_keys) and of value tokens."""
    runs: list[list[int]] = []
    for token in tokens:
        if runs and (runs[-1][0] < n_keys) == (token < n_keys):
            runs[-1].append(int(token))
        else:
            runs.append([int(token)])
    return runs


def ref_fuzzy_recall(inputs, task, scored):
    """Split the stream into runs of key and value tokens (disjoint sets): pairs, the prefix, the query."""
    tokens = decode(inputs)
    B, T = tokens.shape
    K, V = task.n_keys, task.vocab_size
    targets, mask = np.zeros((B, T), np.int64), np.zeros((B, T))
    for b, row in enumerate(tokens):
        start = np.flatnonzero(row != V - 2)[0]  # after the front padding
        (prefix,) = np.flatnonzero(row == V - 1)
        runs = _runs(row[start:prefix], K)  # key, value, key, value, ...
        assert len(runs) == 2 * task.gap and all(r[0] < K for r in runs[0::2]) and all(r[0] >= K for r in runs[1::2])
        stored = {}
        for key, value in zip(runs[0::2], runs[1::2]):
            assert 1 <= len(key) <= task.k_motif and 1 <= len(value) <= task.v_motif
            assert len(set(key)) == len(key) and len(set(value)) == len(value)
            assert stored.setdefault(tuple(key), value) == value, "a key keeps its first value"
        query, *shown = _runs(row[prefix + 1 :], K)
        shown = shown[0] if shown else []
        value = stored[tuple(query)]
        assert shown == value[:-1], "the query's value, its last token left out"
        where = np.arange(T - len(value), T)
        targets[b, where], mask[b, where] = np.array(value) - K, 1
    return targets, mask


REFERENCES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "copy": ref_copy,
    "adding": ref_adding,
    "delayed_recall": ref_delayed_recall,
    "temporal_order": ref_temporal_order,
    "selective_copy": ref_selective_copy,
    "associative_recall": ref_associative_recall,
    "lookahead": ref_lookahead,
    "parity": ref_parity,
    "state_tracking": ref_state_tracking,
    "induction": ref_induction,
    "mqar": ref_mqar,
    "flip_flop": ref_flip_flop,
    "noisy_recall": ref_noisy_recall,
    "fuzzy_recall": ref_fuzzy_recall,
}


@pytest.mark.parametrize("name, kwargs", CASES)
def test_numpy_reference(name, kwargs):
    task = TASKS[name](**kwargs)
    if name not in REFERENCES:
        if is_builtin(type(task)):
            pytest.fail(f"built-in task {name!r} has no NumPy reference: add one to REFERENCES")
        pytest.skip(f"user task {name!r} has no NumPy reference (add one to REFERENCES to test its targets)")
    batch = checked(task).batch
    reference = REFERENCES[name]
    if task.scored_steps == "drawn":  # its reference may need the mask where the inputs are ambiguous
        reference = functools.partial(reference, scored=np.asarray(batch.mask))
    targets, mask = reference(np.asarray(batch.inputs), task)
    np.testing.assert_array_equal(batch.mask, mask)
    if task.kind == "classification":
        np.testing.assert_array_equal(batch.targets, targets)
    else:
        np.testing.assert_allclose(batch.targets, targets, rtol=1e-5, atol=1e-6)


# --- task-specific layouts --------------------------------------------------------
def test_copy_delimiter_and_blanks():
    task = TASKS["copy"](gap=5)  # the paper's 10 symbols
    tokens = decode(checked(task).batch.inputs)
    T, gap = task.length, task.gap
    assert gap + 20 == T
    assert np.all((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8))
    assert np.all(tokens[:, 10 : gap + 9] == 0), "gap-1 blanks after the symbols"
    assert np.all(tokens[:, gap + 9] == 9), "the delimiter is at index gap+9, gap steps after the last symbol"
    assert np.all(tokens[:, gap + 10 :] == 0), "10 blanks after the delimiter"


def marker_positions(batch) -> np.ndarray:
    """(B, 2) sorted positions whose marker channel is 1."""
    marked = np.asarray(batch.inputs)[..., 1] == 1
    assert np.all(marked.sum(1) == 2)
    return np.stack([np.flatnonzero(row) for row in marked])


def test_adding_le2015_markers():
    task = TASKS["adding"](gap=16)
    batch = checked(task).batch
    T, half = task.length, task.length // 2
    values, markers = np.asarray(batch.inputs[..., 0]), np.asarray(batch.inputs[..., 1])
    pos = marker_positions(batch)
    assert np.all(pos[:, 0] < half) and np.all(pos[:, 1] >= half), "one marker in each half"
    assert set(pos[:, 0]) == set(range(half)) and set(pos[:, 1]) == set(range(half, T)), "uniform over each half"
    assert np.all((markers == 0) | (markers == 1)), "no -1 end markers in le2015"
    assert np.all((values >= 0) & (values < 1))


def test_adding_second_only_partial_baseline():
    """Remembering only the second marked value: MSE Var(X1) = 1/12, metric 2 * tolerance (simulated)."""
    task = TASKS["adding"](gap=16)
    batch = check_task(task, n_samples=N_SAMPLES).batch
    measured = check_partial_baselines(task, batch)["second_only"]
    assert abs(measured["loss"] - 1 / 12) < 0.003 and abs(measured["metric"] - 0.08) < 0.01
    assert measured["loss"] < task.baseline().loss  # between remembering nothing and remembering both
    np.testing.assert_allclose(  # the prediction is X2 + 1/2, X2 the value marked in the second half
        np.asarray(task.partial_outputs("second_only", batch))[:, -1, 0],
        np.sum(np.asarray(batch.inputs[..., 0] * batch.inputs[..., 1])[:, 8:], axis=1) + 0.5,
        rtol=1e-6,
    )

    class WrongAnalytic(Adding):  # the memoryless 1/6 claimed for the partial predictor: the simulation refuses it
        def partial_baselines(self):
            return {"second_only": Baseline(loss=1 / 6, metric=0.08)}

    with pytest.raises(AssertionError, match="partial-memory"):
        check_partial_baselines(WrongAnalytic(gap=16), batch)
    assert TASKS["adding"](gap=30, variant="hochreiter1997").partial_baselines() == {}


def test_adding_hochreiter1997_markers():
    task = TASKS["adding"](gap=30, variant="hochreiter1997")
    batch = checked(task).batch
    T, half = task.length, task.length // 2
    values, markers = np.asarray(batch.inputs[..., 0]), np.asarray(batch.inputs[..., 1])
    pos = marker_positions(batch)
    assert np.all(pos[:, 0] < 10), "the first marker is one of the first 10 steps"
    assert np.all(pos[:, 1] < half), "the second is within [0, T/2)"
    assert set(pos.ravel()) == set(range(half)), "together they reach every step of [0, T/2)"
    ends = markers[:, [0, T - 1]]
    first_marked = np.any(pos == 0, axis=1)
    assert np.all(ends[~first_marked, 0] == -1) and np.all(ends[:, 1] == -1), "-1 at the unmarked first/last step"
    assert np.all(ends[first_marked, 0] == 1)
    assert np.all(markers[:, 1 : T - 1][markers[:, 1 : T - 1] != 1] == 0)
    # X1 = 0 when the first-drawn marker (one of the first 10 steps) is at t=0. When the other
    # marker is beyond step 9, the one at t=0 must be that first-drawn one. (When the second-drawn
    # marker lands on t=0, adding.py keeps its value; its 19/480 baseline assumes exactly that.)
    surely_first = (pos[:, 0] == 0) & (pos[:, 1] >= 10)
    assert surely_first.any() and np.all(values[surely_first, 0] == 0), "X1 = 0 when t=0 carries the first marker"
    assert np.all((values >= -1) & (values <= 1))


# --- the samples themselves, bitwise -------------------------------------------------
# Digests of sample(PRNGKey(11), 5) and memoryless_outputs of these configurations, recorded
# from the code before the task helpers (scored_mask, scored_targets, ...) replaced the
# hand-built masks and targets: a refactoring must not change a single sample.
DIGEST_CONFIGS = {
    "adding": [dict(gap=30), dict(gap=30, variant="hochreiter1997")],
    "associative_recall": [dict(gap=5), dict(gap=3, n_pairs=3, n_queries=2)],
    "copy": [dict(gap=7), dict(gap=3, n_symbols=4, alphabet=5)],
    "delayed_recall": [dict(gap=6), dict(gap=6, distractor="blank")],
    "lookahead": [dict(gap=4)],
    "parity": [dict(gap=9)],
    "selective_copy": [dict(gap=12, n_symbols=4, alphabet=6)],
    "temporal_order": [dict(gap=40), dict(gap=40, n_relevant=3)],
}


def _digest(array) -> str:
    array = np.ascontiguousarray(np.asarray(array))
    return f"{array.dtype}{list(array.shape)}:{hashlib.sha256(array.tobytes()).hexdigest()[:16]}"


def test_samples_are_bitwise_unchanged():
    recorded = json.loads((Path(__file__).parent / "data" / "task_samples.json").read_text())
    got = {}
    for name, configs in DIGEST_CONFIGS.items():
        for i, kwargs in enumerate(configs):
            task = TASKS[name](**kwargs)
            batch = task.sample(jax.random.PRNGKey(11), 5)
            for field, value in zip(
                ("inputs", "targets", "mask", "memoryless"), (*batch, task.memoryless_outputs(batch))
            ):
                got[f"{name}/{i}/{field}"] = _digest(value)
    assert got == recorded


def test_state_tracking_groups_are_groups():
    """Each group's table: closed, identity 0, every element invertible, associative; the sizes; S5 not abelian."""
    from lrd.tasks.state_tracking import group_elements, multiplication_table

    sizes = {("z2", 2): 2, ("cyclic", 5): 5, ("s3", 2): 6, ("s5", 2): 120, ("a5", 2): 60}
    for (group, modulus), size in sizes.items():
        table = multiplication_table(group_elements(group, modulus))
        assert table.shape == (size, size)
        assert all(sorted(row) == list(range(size)) for row in table)  # each row a permutation: cancellation
        assert (table[0] == np.arange(size)).all() and (table[:, 0] == np.arange(size)).all()  # identity
        a, b, c = np.random.default_rng(0).integers(0, size, (3, 200))
        assert (table[table[a, b], c] == table[a, table[b, c]]).all()  # associative
        assert (table == table.T).all() == (group in ("z2", "cyclic"))  # only the cyclic ones commute


def test_mqar_query_slots_follow_zoologys_power_law():
    """One pair: its query slot s (1-based) is drawn with probability proportional to s^(a-1), Zoology's p."""
    task = TASKS["mqar"](gap=2 + 2 * 8, n_pairs=1, vocab_size=8, power_a=0.3)
    mask = np.asarray(task.sample(jax.random.key(0), 40_000).mask)
    slots = (mask.argmax(axis=1) - 2) // 2
    p = np.arange(1, 9) ** (0.3 - 1.0)
    p /= p.sum()
    counts = np.bincount(slots, minlength=8)
    np.testing.assert_allclose(counts / counts.sum(), p, atol=5 * np.sqrt(p * (1 - p) / 40_000).max())


def test_flip_flop_instruction_frequencies():
    """FFL(p): the inner instructions are w, r, i with probabilities (1-p)/2, (1-p)/2, p."""
    task = TASKS["flip_flop"](gap=40, p_ignore=0.6)
    ops = decode(np.asarray(task.sample(jax.random.key(1), 2_000).inputs))[:, 2:-2:2]  # all but the first and last
    freq = np.array([(ops == op).mean() for op in (2, 3, 4)])
    np.testing.assert_allclose(freq, [0.2, 0.2, 0.6], atol=0.01)


def test_noisy_recall_noise_fraction():
    task = TASKS["noisy_recall"](gap=30, frac_noise=0.3)
    tokens = decode(np.asarray(task.sample(jax.random.key(2), 2_000).inputs))
    noisy = tokens[:, :-2:2] >= task.n_keys + task.n_values  # first token of each slot
    assert noisy.sum(axis=1).max() < 30, "one slot is always a pair"
    assert abs(noisy.mean() - 0.3 * 29 / 30) < 0.01
