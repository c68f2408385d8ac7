"""Adding problem, in the two conventions the literature mixes up.

The literature has several incompatible adding problems (value range, marker
placement, target scaling, length); results only compare within one. Both
conventions here use a fixed length T = ``gap`` (so a shape compiles once);
each input step is a pair (value, marker) and the target is read at the last
step only (mask = 1 there). ``metric`` is the fraction of sequences whose
absolute error is below ``tolerance`` (0.04, Hochreiter & Schmidhuber's
"processed correctly" criterion); ``loss`` is the MSE at the last step.

``variant = "le2015"`` (default; Le, Jaitly & Hinton 2015, used by
Arjovsky et al. 2016): values U[0, 1]; exactly one marker uniformly in the
first half [0, T/2) and one uniformly in the second half [T/2, T); target =
the sum of the two marked values. Memoryless baseline: predict E[sum] = 1,
MSE = Var(X1 + X2) = 2/12 = 1/6 (the 0.1767 stated in one well-known README
is not this number); metric P(|X1 + X2 - 1| < 0.04) = 2(0.04 - 0.04^2/2) = 0.0784.

Partial-memory baseline ``second_only`` (le2015 only): the best predictor that
remembers the second marked value X2 (always in the second half, so the last
marked value seen) but not the first. Given X2, the target X1 + X2 has
conditional mean X2 + E[X1] = X2 + 1/2, so it predicts that; its error is
X1 - 1/2 with X1 ~ U[0, 1] independent of X2, hence MSE = Var(X1) = 1/12 and
metric P(|X1 - 1/2| < u) = 2u = 0.08 for u = 0.04 <= 1/2. A model between 1/12
and 1/6 has learnt to use one of the two values; below 1/12, both.

``variant = "hochreiter1997"`` (Hochreiter & Schmidhuber 1997, experiment
4): values U[-1, 1]; the first marker (value X1) is one of the first 10 steps,
the second (X2) one of the T/2 - 1 still unmarked steps of [0, T/2); the
marker channel is -1 at the first and last step unless marked, 0 elsewhere; if
X1's marker is at t=0, X1 is set to 0 (the paper's rule, which names X1 only);
target 0.5 + (X1 + X2)/4. Differences from the paper: no random
length extension (T to T + T/10), so shapes stay fixed. Memoryless baseline:
predict 0.5, MSE = (Var X1 + Var X2)/16 = (0.9/3 + 1/3)/16 = 19/480 ≈ 0.0396;
metric 0.9 P(|U1+U2| < 0.16) + 0.1 P(|U2| < 0.16) = 0.9*0.1536 + 0.1*0.16 = 0.15424.

``gap`` is the sequence length T (as in Le et al. and Arjovsky et al.). A drawn
example, le2015, gap=6 (value/marker per step)::

    values : 0.42 0.91 0.13 0.77 0.35 0.60
    markers:    0    1    0    0    1    0
    target :                         (at t=5)  0.91 + 0.35 = 1.26
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, model_validator

from lrd.tasks.base import Baseline, Batch, Task, constant_outputs, register


@register
class Adding(Task):
    name: ClassVar[str] = "adding"
    kind: ClassVar[Literal["classification", "regression"]] = "regression"
    metric_name: ClassVar[str] = "fraction with |error| < tolerance"
    source: ClassVar[str] = "Le et al. 2015 / Arjovsky et al. 2016 (default); Hochreiter & Schmidhuber 1997 exp. 4"
    convention: ClassVar[str] = (
        "gap = length T; le2015: U[0,1] values, one marker per half, target the sum, MSE "
        "(baseline 1/6); hochreiter1997: U[-1,1], target 0.5+(X1+X2)/4 (baseline 19/480)"
    )

    variant: Literal["le2015", "hochreiter1997"] = "le2015"
    tolerance: float = Field(0.04, gt=0.0, le=0.5, description="|error| below this counts as correct")

    @model_validator(mode="after")
    def _long_enough(self):
        minimum = 2 if self.variant == "le2015" else 24
        if self.gap < minimum:
            raise ValueError(f"gap must be at least {minimum} for variant {self.variant!r}")
        return self

    @property
    def length(self) -> int:
        return self.gap

    @property
    def input_dim(self) -> int:
        return 2

    @property
    def output_dim(self) -> int:
        return 1

    @property
    def scored_span(self) -> tuple[int, int]:
        return self.length - 1, self.length - 1

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        T, half = self.length, self.length // 2
        k_val, k_first, k_second = jax.random.split(key, 3)
        t = jnp.arange(T)
        if self.variant == "le2015":
            values = jax.random.uniform(k_val, (batch_size, T))  # (B, T)
            first = jax.random.randint(k_first, (batch_size,), 0, half)
            second = jax.random.randint(k_second, (batch_size,), half, T)
            markers = ((t == first[:, None]) | (t == second[:, None])).astype(jnp.float32)
            target = jnp.sum(values * markers, axis=1)  # (B,)
        else:
            values = jax.random.uniform(k_val, (batch_size, T), minval=-1.0, maxval=1.0)
            first = jax.random.randint(k_first, (batch_size,), 0, 10)
            # uniform over the T/2 - 1 positions of [0, T/2) other than `first`
            second = jax.random.randint(k_second, (batch_size,), 0, half - 1)
            second = second + (second >= first)
            values = values.at[:, 0].set(jnp.where(first == 0, 0.0, values[:, 0]))
            marked = (t == first[:, None]) | (t == second[:, None])
            ends = (t == 0) | (t == T - 1)
            markers = jnp.where(marked, 1.0, jnp.where(ends, -1.0, 0.0))
            target = 0.5 + jnp.sum(values * marked, axis=1) / 4.0
        inputs = jnp.stack([values, markers], axis=-1)  # (B, T, 2)
        targets = self.scored_targets(target[:, None].astype(jnp.float32))  # (B, T)
        return Batch(inputs.astype(jnp.float32), targets, self.scored_mask(batch_size))

    def baseline(self) -> Baseline:
        if self.variant == "le2015":
            u = self.tolerance
            return Baseline(loss=1.0 / 6.0, metric=min(1.0, 2 * (u - u * u / 2)))
        v = 4 * self.tolerance  # |X1 + X2| < 4 * tolerance
        both = 2 * (2 * v - v * v / 2) / 4 if v <= 2 else 1.0  # triangular density (2-|s|)/4 on [-2, 2]
        one = min(1.0, v)  # |X2| < v with X2 ~ U[-1, 1]
        return Baseline(loss=(0.9 / 3 + 1 / 3) / 16, metric=0.9 * both + 0.1 * one)

    def memoryless_outputs(self, batch: Batch) -> jax.Array:
        return constant_outputs(batch, 1.0 if self.variant == "le2015" else 0.5)

    def partial_baselines(self) -> dict[str, Baseline]:
        if self.variant != "le2015":
            return {}
        return {"second_only": Baseline(loss=1.0 / 12.0, metric=min(1.0, 2 * self.tolerance))}

    def partial_outputs(self, name: str, batch: Batch) -> jax.Array:
        if name not in self.partial_baselines():
            raise KeyError(f"adding ({self.variant}) has no partial baseline {name!r}")
        values, markers = batch.inputs[..., 0], batch.inputs[..., 1]  # (B, T) each
        second_half = jnp.arange(self.length) >= self.length // 2  # (T,)
        x2 = jnp.sum(values * markers * second_half, axis=1)  # (B,) the second marked value
        return jnp.broadcast_to((x2 + 0.5)[:, None, None], (*batch.mask.shape, 1)).astype(jnp.float32)
