"""Per-timestep gradient norms ||dL/d state_t|| (their growth rate with distance: ``lrd.dynamics``).

Method: each cell adds a zero *perturbation* eps_t to each recurrent state
the moment it computes it (``lrd.models.cells``). Since state_t + eps_t is what
the rest of the computation sees (for the LSTM, h_t = o tanh(c_t + eps_c) too),
dL/d eps_t = dL/d state_t, the total derivative
of the loss with respect to the state at time t. Differentiating with respect
to the parameters and the perturbation together gives every timestep's
gradient in the *same* backward pass as the parameter gradients, instead of T
separate backward passes.

The norm reported for a batch is the Frobenius norm over the batch and hidden
units of dL/d state_t, where L is the batch-mean training loss
(Pascanu, Mikolov & Bengio 2013, fig. 2 plot the same quantity). The probe
also returns, per timestep, the log of the geometric mean over the batch of the
per-sequence norms ||dL/d state_t[b]||_2 (over hidden units): the quantity the
signed growth rate of ``lrd.dynamics`` is fitted to, which one large sequence
cannot dominate.

Underflow: for a tanh RNN the norm falls roughly geometrically with the
distance from the loss, so over long gaps it leaves float32's range. Measured
here on the copy study (hidden 64, orthogonal U, results/copy): a decay length
of 5.5-6.9 steps at initialisation, about 0.84 per step. Each step multiplies
the gradient by diag(1 - h_t^2) U^T; an orthogonal U keeps the norm, so the
factor is set by tanh' = 1 - h_t^2, i.e. by how hard inputs and state drive the
units. It therefore depends on the initialisation, input scaling and width, and
a figure from another setting (an earlier version of this docstring quoted about
0.97 per step) does not carry over. The norm
is computed with a max-rescaling so that squaring cannot underflow; values
whose largest entry is below float32's smallest normal number (FLOOR, about
1.2e-38; XLA on CPU flushes subnormals to zero) are not measurements: they
are returned as FLOOR and flagged ``below_floor``, never as a silent zero.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrd.buckets import Single, View
from lrd.models.network import Perturbation, SequenceModel
from lrd.schema import FLOOR
from lrd.tasks.base import Batch, Task


class ProbeResult(NamedTuple):
    """Loss, metrics and gradients of one batch, from one forward and one backward pass.

    loss:         scalar training loss.
    metrics:      the task's metrics (``loss``, ``metric``, extras), scalars.
    param_grads:  dL/dparams, same tree as the parameters.
    grad_norm:    global norm of ``param_grads`` (before any clipping).
    state_norms:  {layer: {direction: {state: (T,)}}} ||dL/d state_t||, floored at FLOOR.
    below_floor:  same tree, bool (T,): True where the norm was not measurable in float32.
    log_gmean_norms:   same tree, (T,) mean over the batch of ln ||dL/d state_t[b]|| (floored at FLOOR).
    gmean_below_floor: same tree, bool (T,): True where any sequence's norm was not measurable.
    """

    loss: jax.Array
    metrics: dict[str, jax.Array]
    param_grads: dict
    grad_norm: jax.Array
    state_norms: Perturbation
    below_floor: Perturbation
    log_gmean_norms: Perturbation
    gmean_below_floor: Perturbation


def safe_norm(g: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Euclidean norm over ``axes`` without underflow in the squares; (norm, below_floor)."""
    scale = jnp.max(jnp.abs(g), axis=axes)
    below = scale < FLOOR
    safe_scale = jnp.where(below, 1.0, scale)
    expand = jnp.expand_dims(safe_scale, axes)
    norm = safe_scale * jnp.sqrt(jnp.sum((g / expand) ** 2, axis=axes))
    return jnp.where(below, FLOOR, norm), below


def probe(task: Task | View, model: SequenceModel, params, batch: Batch) -> ProbeResult:
    """Loss, metrics, parameter gradients and per-timestep state-gradient norms of ``batch``.

    ``task``: a task, or a view of one (``lrd.buckets``: in a length bucket, the padded
    steps' norms are computed too and cut off on the host).
    """
    B, T = batch.mask.shape
    zeros = model.config.zero_perturbation(B, T)
    view = Single(task) if isinstance(task, Task) else task

    def loss_fn(params, perturbation):
        both = lambda task, outputs, b: (task.training_loss(outputs, b), task.metrics(outputs, b))  # (B, T, out)
        return view.score(model, params, batch, both, perturbation)

    (loss, metrics), (param_grads, state_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, zeros
    )
    is_pair = lambda x: isinstance(x, tuple)

    def reduced(state_grads):  # per timestep, over the batch (and the units)
        norms = jax.tree.map(lambda g: safe_norm(g, (0, 2)), state_grads)  # leaves (T,), (T,)
        per_sequence = jax.tree.map(lambda g: safe_norm(g, (2,)), state_grads)  # leaves (B, T), (B, T)
        return (
            jax.tree.map(lambda p: p[0], norms, is_leaf=is_pair),
            jax.tree.map(lambda p: p[1], norms, is_leaf=is_pair),
            jax.tree.map(lambda p: jnp.mean(jnp.log(p[0]), axis=0), per_sequence, is_leaf=is_pair),
            jax.tree.map(lambda p: jnp.any(p[1], axis=0), per_sequence, is_leaf=is_pair),
        )

    if isinstance(view, Single):
        state_norms, below_floor, log_gmean, gmean_below = reduced(state_grads)
    else:  # reduced over the real steps alone, as unpadded, then padded again to the bucket's length
        real = lambda n: jax.tree.map(lambda g: g[:, :n], state_grads)
        again = lambda n: lambda x: jnp.pad(x, (0, T - n))
        state_norms, below_floor, log_gmean, gmean_below = view.per_task(
            lambda n: jax.tree.map(again(n), reduced(real(n)))
        )
    return ProbeResult(
        loss=loss,
        metrics=metrics,
        param_grads=param_grads,
        grad_norm=global_norm(param_grads),
        state_norms=state_norms,
        below_floor=below_floor,
        log_gmean_norms=log_gmean,
        gmean_below_floor=gmean_below,
    )


def global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def distance_from_loss(task: Task, direction: str) -> np.ndarray:
    """Steps between each timestep and the nearest scored position that its gradient comes from.

    Forward states reach later losses, so distance = first_scored - t (negative inside
    or after the scored window); backward states reach earlier ones, t - last_scored.
    """
    first, last = task.scored_span
    t = np.arange(task.length)
    return (first - t) if direction == "fwd" else (t - last)
