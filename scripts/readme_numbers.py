"""The README's numbers, computed from the committed tables (results/*/runs).

    python scripts/readme_numbers.py            # print every generated block and span
    python scripts/readme_numbers.py --write    # rewrite them in README.md in place
    python scripts/readme_numbers.py --check    # exit 1 if README.md differs from the tables

The README marks what this script generates, so that every number there can be
recomputed from the committed tables (``tests/test_readme.py`` checks it):

    <!-- numbers: NAME -->         a block (a table), up to <!-- /numbers -->
    <!-- n: NAME -->TEXT<!-- /n -->   an inline span

Per (task, gap, model) the tables report, at the chosen learning rate
(``lrd.results.summary``): the seeds that solved with the Wilson 95% interval of the
success rate, the mean final metric (what a reader compares with a paper), and, for
the adding problem, the mean final MSE.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lrd import store
from lrd.results import summary, wilson_interval

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- numbers: ([\w.-]+) -->\n)(.*?)(<!-- /numbers -->)", re.S)
SPAN = re.compile(r"(<!-- n: ([\w.-]+) -->)(.*?)(<!-- /n -->)", re.S)

REFERENCE = ("delayed_recall", "adding", "copy")  # the reference studies, in the README's order
SHIPPED = ("temporal_order", "parity", "associative_recall", "lookahead", "selective_copy")
MODEL_ORDER = ("rnn", "lstm", "gru", "bi-lstm")


def _models(rows: pd.DataFrame) -> list[str]:
    found = list(rows["model"].unique())
    return sorted(found, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))


def _setting(runs: pd.DataFrame) -> str:
    """'hidden 32, 1500 steps, lr 0.003, 3 seeds' of a study (each value or its range)."""

    def values(column: str) -> str:
        found = sorted(runs[column].unique())
        return f"{found[0]:g}" if len(found) == 1 else f"{found[0]:g}-{found[-1]:g}"

    return f"hidden {values('hidden')}, {values('steps')} steps, lr {values('lr')}, {runs['seed'].nunique()} seeds"


def _cell(row, loss: float | None) -> str:
    mse = f"MSE {loss:.2g}, " if loss is not None else ""
    return f"{row.solved}/{row.trained} [{row.success_lo:.2f}, {row.success_hi:.2f}]; {mse}{row.final_metric:.3f}" + (
        f"; {row.still_improving} still improving" if row.still_improving else ""
    )


def study_table(name: str) -> str:
    """Per model (rows) and gap (columns): solved seeds [Wilson 95%]; mean final metric; runs still improving."""
    results = store.load(ROOT / "results" / name)
    runs = results.runs
    table = summary(runs)
    losses = runs[runs["status"] == "done"].groupby(["gap", "model"])["final_loss"].mean()
    gaps = sorted(table["gap"].unique())
    metric = str(runs["metric_name"].iloc[0])
    head = f"`{name}`: {_setting(runs)}; solved at {metric} >= {runs['solve_threshold'].iloc[0]:g}"
    baseline = f"memoryless baseline {metric} {runs['baseline_metric'].iloc[0]:.3g}"
    if name == "adding":
        baseline += f", MSE {runs['baseline_loss'].iloc[0]:.3g}"
    lines = [
        f"{head} ({baseline})",
        "",
        "| model | " + " | ".join(f"gap {g}" for g in gaps) + " |",
        "|---|" + "---|" * len(gaps),
    ]
    for model in _models(table):
        cells = []
        for gap in gaps:
            row = next(table[(table["model"] == model) & (table["gap"] == gap)].itertuples(index=False))
            cells.append(_cell(row, float(losses.loc[(gap, model)]) if name == "adding" else None))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shipped_table() -> str:
    """One row per small shipped experiment: per model, the mean final metric and solved seeds at each gap."""
    lines = ["| experiment | setting | mean final metric (solved seeds) per gap |", "|---|---|---|"]
    for name in SHIPPED:
        runs = store.load(ROOT / "results" / name).runs
        table = summary(runs)
        parts = []
        for model in _models(table):
            mine = table[table["model"] == model].sort_values("gap")
            values = ", ".join(f"{r.gap}: {r.final_metric:.2f} ({r.solved}/{r.trained})" for r in mine.itertuples())
            parts.append(f"{model} {values}")
        gaps = ", ".join(str(g) for g in sorted(table["gap"].unique()))
        setting = f"gaps {gaps}; {_setting(runs)}; baseline {runs['baseline_metric'].iloc[0]:.3g}"
        lines.append(f"| `{name}` | {setting} | " + "; ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def _range(values, fmt: str) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def spans() -> dict[str, str]:
    """The inline numbers."""
    copy = store.load(ROOT / "results" / "copy").runs
    rnn = copy[copy["model"] == "rnn"]
    init = rnn.groupby("gap")["decay_length_init"].median()  # per gap, the median over seeds
    out = {
        "copy-rnn-decay-init": _range(init, ".1f"),
        "copy-rnn-factor": _range(np.exp(-1.0 / init.to_numpy(float)), ".2f"),
        "copy-rnn-hidden": f"{int(rnn['hidden'].iloc[0])}",
        "copy-gaps": _range(copy["gap"], ".0f"),
    }
    order = store.load(ROOT / "results" / "temporal_order").runs
    rnn50 = order[(order["model"] == "rnn") & (order["gap"] == 50)].sort_values("seed")
    out["temporal-order-rnn-50"] = " and ".join(f"{v:.2f}" for v in rnn50["final_metric"])
    out["temporal-order-chance"] = f"{order['baseline_metric'].iloc[0]:.2f}"
    reference = [store.load(ROOT / "results" / name).runs for name in REFERENCE]
    seeds = [runs["seed"].nunique() for runs in reference]
    out["reference-seeds"] = _range(seeds, ".0f")
    out["reference-lr"] = _range(np.concatenate([runs["lr"].unique() for runs in reference]), "g")
    out["reference-all-solved-lo"] = f"{wilson_interval(min(seeds), min(seeds))[0]:.2f}"
    return out


def generate() -> dict[str, str]:
    """Every generated block and span, by name (``block:NAME``, ``span:NAME``)."""
    blocks = {f"reference-{name}": study_table(name) for name in REFERENCE}
    blocks["shipped-experiments"] = shipped_table()
    return {**{f"block:{k}": v for k, v in blocks.items()}, **{f"span:{k}": v for k, v in spans().items()}}


def found_in(text: str) -> dict[str, str]:
    """The generated parts a README text holds now, by name."""
    found = {f"block:{m.group(2)}": m.group(3) for m in BLOCK.finditer(text)}
    found.update({f"span:{m.group(2)}": m.group(3) for m in SPAN.finditer(text)})
    return found


def rewrite(text: str, generated: dict[str, str]) -> str:
    """``text`` with every marked block and span replaced by its generated value."""
    text = BLOCK.sub(lambda m: m.group(1) + generated[f"block:{m.group(2)}"] + m.group(4), text)
    return SPAN.sub(lambda m: m.group(1) + generated[f"span:{m.group(2)}"] + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the marked parts of README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the tables")
    args = parser.parse_args()
    generated = generate()
    text = README.read_text()
    missing = sorted(set(generated) - set(found_in(text)))
    unknown = sorted(set(found_in(text)) - set(generated))
    if unknown:
        print(f"README.md marks parts this script does not generate: {', '.join(unknown)}", file=sys.stderr)
        return 1
    if args.write:
        README.write_text(rewrite(text, generated))
        if missing:
            print(f"not marked in README.md (not written): {', '.join(missing)}", file=sys.stderr)
        return 0
    if args.check:
        stale = [k for k, v in found_in(text).items() if v != generated[k]]
        for name in stale + missing:
            print(f"README.md: {name} differs from the tables (run scripts/readme_numbers.py --write)", file=sys.stderr)
        return 1 if stale or missing else 0
    for name, value in generated.items():
        print(f"== {name}\n{value}" if name.startswith("block:") else f"== {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
