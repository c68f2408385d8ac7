"""||dL/dh_t|| at initialisation on copy: the ratio of the first timestep's norm to the last's.

    python scripts/gradient_ratio.py [--gap 100] [--hidden 128] [--seeds 5]

For each cell, initialises the model (orthogonal recurrent weights, forget bias 1.0),
draws one probe batch of 128 copy sequences (length gap+20) and prints
||dL/dh_0|| / ||dL/dh_{T-1}|| (layer 0, forward, with L the recall-position loss),
the geometric mean over seeds, and the median over seeds of the signed growth rate
(``lrd.dynamics.growth_rate``, 1/step) with its e-folding length.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from lrd.dynamics import e_folding_length, growth_rate, steps_from_start
from lrd.models import ModelConfig, SequenceModel
from lrd.probes import distance_from_loss, probe
from lrd.tasks.copy import Copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gap", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    task = Copy(gap=args.gap)
    print(
        f"copy gap {args.gap} (T={task.length}), hidden {args.hidden}, batch 128, {args.seeds} seeds, at initialisation"
    )
    print(f"{'cell':5} {'state':5} {'first/last':>12} {'growth rate':>12} {'e-folding':>10}")
    distance, start = distance_from_loss(task, "fwd"), steps_from_start(task.length, "fwd")
    for cell in ("rnn", "lstm", "gru"):
        config = ModelConfig(cell=cell, hidden=args.hidden)
        model = SequenceModel(config, task.output_dim)
        ratios, rates = {s: [] for s in config.state_names}, {s: [] for s in config.state_names}
        for seed in range(args.seeds):
            init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
            batch = task.sample(data_key, 128)
            params = model.init(init_key, batch.inputs[:1, :1])
            result = probe(task, model, params, batch)
            for state in config.state_names:
                norms = np.asarray(result.state_norms["layer0"]["fwd"][state], np.float64)
                ratios[state].append(norms[0] / norms[-1])
                log_gmean = np.asarray(result.log_gmean_norms["layer0"]["fwd"][state], np.float64)
                below = np.asarray(result.gmean_below_floor["layer0"]["fwd"][state], bool)
                rates[state].append(growth_rate(log_gmean, distance, start, below))
        for state in config.state_names:
            geo = float(np.exp(np.mean(np.log(ratios[state]))))
            rate = float(np.median(rates[state]))
            print(f"{cell:5} {state:5} {geo:>12.3g} {rate:>12.4f} {e_folding_length(rate):>10.1f}")


if __name__ == "__main__":
    main()
