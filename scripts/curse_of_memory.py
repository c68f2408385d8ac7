"""The curse of memory (Zucchet & Orvieto 2024), measured against its analytic curve.

    python scripts/curse_of_memory.py

For h_t = lambda h_(t-1) + gamma x_t with white-noise input, the sensitivity of the last
state to the eigenvalue, E[(d h_T / d theta)^2], measured by forward-mode autodiff over
BATCH sequences (``lrd.dynamics.memory_sensitivity``) for the plain recurrence (gamma = 1,
theta = lambda), the normalised one (gamma = sqrt(1 - lambda^2), theta = lambda) and lrd's
LRU cell (theta = nu_log, lambda = exp(-exp(nu_log)), its own normalisation), at eigenvalues
from 0.5 to 0.995, against ``memory_sensitivity_theory``. Writes the table
docs/checks/curse_of_memory.csv (what docs/dynamics.md quotes, through
scripts/readme_numbers.py) and the figure docs/figures/curse_of_memory.png.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd

from lrd import dynamics

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "checks" / "curse_of_memory.csv"
FIGURE = ROOT / "docs" / "figures" / "curse_of_memory.png"
LAMBDAS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
BATCH = 8192  # sequences: the squared tangent is a scaled chi-square, relative standard error sqrt(2/BATCH) = 1.6%
SETTLE = 20  # steps per 1/(1 - lambda): lambda^(2 SETTLE / (1 - lambda)) ~ e^-40, the sum has converged


def measure() -> pd.DataFrame:
    rows = []
    for form in dynamics.MEMORY_FORMS:
        for i, lam in enumerate(LAMBDAS):
            length = int(SETTLE / (1 - lam)) + 50
            key = jax.random.PRNGKey(i)
            measured = dynamics.memory_sensitivity(lam, form, length=length, batch=BATCH, key=key)
            theory = float(dynamics.memory_sensitivity_theory(lam, form))
            row = {"form": form, "lam": lam, "length": length, "batch": BATCH, "measured": measured, "theory": theory}
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.assign(ratio=table["measured"] / table["theory"])


def draw(table: pd.DataFrame) -> None:
    from matplotlib.figure import Figure

    from lrd.plots.writing import save_figure

    labels = {
        "plain": "plain: d/d\u03bb, \u03b3 = 1",
        "normalised": "normalised: d/d\u03bb, \u03b3 = \u221a(1-\u03bb\u00b2)",
        "lru": "LRU cell: d/d\u03bd, \u03bb = exp(-exp(\u03bd))",
    }
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    grid = np.linspace(0.5, 0.995, 200)
    for (form, rows), color in zip(table.groupby("form", sort=False), ("C0", "C1", "C2"), strict=True):
        ax.plot(1 - grid, dynamics.memory_sensitivity_theory(grid, form), color=color, linewidth=1.4)
        ax.plot(1 - rows["lam"], rows["measured"], "o", color=color, label=labels[form])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("1 - \u03bb (the eigenvalue's distance from 1)")
    ax.set_ylabel("E[(d h_T / d\u03b8)\u00b2]")
    ax.set_title("The curse of memory: sensitivity to the eigenvalue\nlines: theory (T \u2192 \u221e); dots: measured")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, FIGURE)


def main() -> None:
    table = measure()
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(TABLE, index=False, float_format="%.6g")
    draw(table)
    print(table.to_string(index=False))
    print(f"wrote {TABLE.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
