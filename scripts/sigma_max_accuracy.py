"""How close the default sigma_max(J_t) (2 warm-started block power iterations) is to a converged one.

    python scripts/sigma_max_accuracy.py

At initialisation, delayed recall gap 40, hidden 32 (forget bias 3 for the LSTM and GRU),
8 probe sequences: the ratio of sigma_max with 2 iterations to sigma_max with 60, over
every timestep (Rayleigh-Ritz values never exceed the true one, so the ratio is <= 1),
and the top Lyapunov exponents for reference.
"""

from __future__ import annotations

import jax
import numpy as np

from lrd import dynamics
from lrd.models import ModelConfig, SequenceModel
from lrd.tasks.delayed_recall import DelayedRecall


def main() -> None:
    task = DelayedRecall(gap=40)
    batch = task.sample(jax.random.PRNGKey(0), 8)
    for cell in ("rnn", "lstm", "gru", "mingru"):
        extra = {"forget_bias": 3.0} if cell in ("lstm", "gru") else {}
        config = ModelConfig(cell=cell, hidden=32, **extra)
        params = SequenceModel(config, task.output_dim).init(jax.random.PRNGKey(1), batch.inputs)
        out = {
            n: dynamics.model_dynamics(
                config,
                params,
                batch.inputs,
                lyapunov_k=4,
                iterations=n,
                spectrum_size=8,
                saturation=0.1,
                key=jax.random.PRNGKey(0),
            )
            for n in (2, 60)
        }
        ratio = np.asarray(out[2].sigma_max) / np.asarray(out[60].sigma_max)  # (T,)
        print(
            f"{cell:7} sigma_max(2 it) / sigma_max(60 it): median {np.median(ratio):.3f}, min {ratio.min():.3f};"
            f" Lyapunov exponents {np.round(np.asarray(out[60].lyapunov), 3)}"
        )


if __name__ == "__main__":
    main()
