"""Compile the time-loop kernels on this GPU and compare them with the scan path at TF32 tolerance.

    python scripts/kernel_check.py            # T in {100, 1000}, batch 128 and 100, hidden 128
    python scripts/kernel_check.py --quick    # T = 100 only

For each cell: the same parameters and inputs through the model on the scan
(``time_loop = "scan"``) and on the Pallas kernels (``"kernel"``); the outputs, the
parameter gradients and the per-timestep state gradients (the probe's dL/d eps_t)
of one loss are compared. On a GPU both paths multiply float32 matrices in TF32
(10-bit mantissa) by default, so they agree to about 1e-3 relative, not to float32
rounding; the check passes when every array's largest difference is at most
``--tol`` times its largest magnitude. The CPU tests (tests/test_kernels.py) compare
the same kernels in interpret mode at float32 tolerance. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lrd.models import ModelConfig, SequenceModel

CELLS = ("rnn", "lstm", "gru")


def relative_error(got, want) -> float:
    """Largest difference over the largest magnitude of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check(cell: str, T: int, batch: int, hidden: int, bidirectional: bool, seeds: int, tol: float, kernel: str) -> bool:
    """One comparison; ``seeds`` > 1 vmaps over that many parameter sets (the kernels' grid gains a seed axis)."""
    D = 10
    models = {
        path: SequenceModel(
            ModelConfig(cell=cell, hidden=hidden, bidirectional=bidirectional, time_loop=path), output_dim=D
        )
        for path in ("scan", kernel)
    }
    config = models["scan"].config
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, T, D))
    weights = jax.random.normal(jax.random.PRNGKey(1), (batch, T, D)) / np.sqrt(batch * T)
    keys = jax.random.split(jax.random.PRNGKey(2), seeds)
    params = jax.vmap(lambda k: models["scan"].init(k, x[:1, :1]))(keys)  # leading seed axis
    eps = config.zero_perturbation(batch, T)
    found, seconds = {}, {}
    for path, model in models.items():

        def loss(p, e, model=model):
            out = model.apply(p, x, e)  # (B, T, D)
            return jnp.sum(jnp.tanh(out) * weights), out

        grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        if seeds > 1:
            fn = jax.vmap(grad, in_axes=(0, None))
        else:  # one seed runs unbatched, as lrd.train.Program does
            fn = lambda p, e, grad=grad: jax.tree.map(lambda a: a[None], grad(jax.tree.map(lambda a: a[0], p), e))
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(params, eps).compile()
        seconds[path] = time.perf_counter() - start
        found[path] = jax.block_until_ready(compiled(params, eps))
    (_, out_s), (dp_s, de_s) = found["scan"]
    (_, out_k), (dp_k, de_k) = found[kernel]
    errors = {
        "outputs": relative_error(out_k, out_s),
        "param grads": max(relative_error(a, b) for a, b in zip(jax.tree.leaves(dp_k), jax.tree.leaves(dp_s))),
        "state grads": max(relative_error(a, b) for a, b in zip(jax.tree.leaves(de_k), jax.tree.leaves(de_s))),
    }
    ok = all(e <= tol for e in errors.values())
    print(
        f"{cell:5} T={T:<5} B={batch:<4} H={hidden:<4} {'bi ' if bidirectional else 'uni'} seeds {seeds}  "
        + "  ".join(f"{k} {v:.1e}" for k, v in errors.items())
        + f"  compile scan {seconds['scan']:.1f} s kernel {seconds[kernel]:.1f} s  {'ok' if ok else 'FAIL'}",
        flush=True,
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 100 only")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--tol", type=float, default=2e-2, help="largest difference / largest magnitude allowed")
    parser.add_argument("--interpret", action="store_true", help="the kernels in interpret mode (checks this script)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    kernel = "interpret" if args.interpret else "kernel"
    if jax.default_backend() != "gpu" and not args.interpret:
        print("no GPU: the kernels compile for a GPU only (the CPU tests run them in interpret mode)")
        return 1
    cases = [(100, 100, True, 1), (100, 128, False, 2)] + ([] if args.quick else [(1000, 128, False, 1)])
    results = [
        check(cell, T, batch, args.hidden, bi, seeds, args.tol, kernel)
        for T, batch, bi, seeds in cases
        for cell in CELLS
    ]
    print(f"{sum(results)} of {len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
