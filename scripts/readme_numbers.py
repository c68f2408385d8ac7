"""The numbers of the README and of the manual (docs/*.md), computed from the committed tables (results/*/runs).

    python scripts/readme_numbers.py            # print every generated block and span
    python scripts/readme_numbers.py --write    # rewrite them in README.md and docs/*.md in place
    python scripts/readme_numbers.py --check    # exit 1 if a page differs from the tables

The pages mark what this script generates, so that every number there can be
recomputed from the committed tables (``tests/test_readme.py`` checks it); a block or
span may appear on several pages, and every one is generated on at least one:

    <!-- numbers: NAME -->         a block (a table), up to <!-- /numbers -->
    <!-- n: NAME -->TEXT<!-- /n -->   an inline span

Per (task, gap, model) the tables report, at the chosen learning rate
(``lrd.results.summary``): the seeds that solved with the Wilson 95% interval of the
success rate, the mean final metric (what a reader compares with a paper), and, for
the adding problem, the mean final MSE.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lrd import store
from lrd.results import (
    OUTCOME_RULE,
    best_lr_runs,
    early_exponent,
    fit_line,
    growth_and_exponent,
    outcome_counts,
    outcome_text,
    pascanu_condition,
    rank_auc,
    spectrum_statistic,
    summary,
    wilson_interval,
    with_setting_labels,
)
from lrd.schema import Results

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _load(folder: Path) -> Results:
    """A committed study's tables, read once per process (every block and span reads from them; none alters them)."""
    return store.load(folder)


README = ROOT / "README.md"


def pages() -> list[Path]:
    """The pages whose marked parts this script generates: the README and every page of the manual."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


BLOCK = re.compile(r"(<!-- numbers: ([\w.-]+) -->\n)(.*?)(<!-- /numbers -->)", re.S)
SPAN = re.compile(r"(<!-- n: ([\w.-]+) -->)(.*?)(<!-- /n -->)", re.S)

REFERENCE = ("delayed_recall", "adding", "copy")  # the reference studies, in the README's order
SHIPPED = (
    *("temporal_order", "parity", "state_tracking", "induction", "associative_recall", "lookahead"),
    "selective_copy",
)
MODEL_ORDER = ("rnn", "lstm", "gru", "bi-lstm")


def _models(rows: pd.DataFrame) -> list[str]:
    found = list(rows["model"].unique())
    return sorted(found, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else len(MODEL_ORDER), m))


def _setting(runs: pd.DataFrame) -> str:
    """'hidden 32, 1500 steps, lr 0.003, 3 seeds' of a study (each value or its range)."""

    def values(column: str) -> str:
        found = sorted(runs[column].unique())
        return f"{found[0]:g}" if len(found) == 1 else f"{found[0]:g}-{found[-1]:g}"

    lrs = sorted(runs["lr"].unique())
    lr = f"lr {lrs[0]:g}" if len(lrs) == 1 else "lr grid " + ", ".join(f"{v:g}" for v in lrs)
    stops = "stop_when_solved" in runs and bool(runs["stop_when_solved"].fillna(False).any())
    budget = f"at most {values('steps')} steps" if stops else f"{values('steps')} steps"
    return f"hidden {values('hidden')}, {budget}, {lr}, {runs['seed'].nunique()} seeds"


def _lr_text(lr: float, at_edge: bool) -> str:
    """The chosen learning rate as the tables print it: "0.01 (edge)" when it is the grid's smallest or largest."""
    return f"{lr:g}" + (" (edge)" if at_edge else "")


def _cell(row, loss: float | None) -> str:
    mse = f"MSE {loss:.2g}, " if loss is not None else ""
    lr = f"; lr {_lr_text(row.lr, row.lr_at_edge)}" if row.lrs > 1 else ""
    counts = outcome_text(row.solved, row.undecided, row.trained)
    return f"{counts} [{row.success_lo:.2f}, {row.success_hi:.2f}]; {mse}{row.final_metric:.3f}{lr}"


def study_table(name: str) -> str:
    """Per model (rows) and gap (columns): solved seeds [Wilson 95%]; mean final metric; runs still improving."""
    results = _load(ROOT / "results" / name)
    runs = results.runs
    table = summary(runs)
    chosen = best_lr_runs(runs)  # the runs at each configuration's chosen learning rate
    losses = chosen[chosen["status"] == "done"].groupby(["gap", "model"])["final_loss"].mean()
    gaps = sorted(table["gap"].unique())
    metric = str(runs["metric_name"].iloc[0])
    head = f"`{name}`: {_setting(runs)}; solved at {metric} >= {runs['solve_threshold'].iloc[0]:g}"
    baseline = f"memoryless baseline {metric} {runs['baseline_metric'].iloc[0]:.3g}"
    if name == "adding":
        baseline += f", MSE {runs['baseline_loss'].iloc[0]:.3g}"
    lines = [
        f"{head} ({baseline}). {OUTCOME_RULE}",
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


TREATMENT_SETTINGS = {"recurrent_init": "identity", "omega": "omega", "floss": "flossing"}


def _treatment_rows() -> pd.DataFrame:
    """Per condition of the treatment study, at its chosen learning rate: outcomes, growth rate and top exponent.

    Columns: condition (the remedies applied, "none" for the untreated), the ``summary`` columns, and the
    medians over the condition's runs of the top Lyapunov exponent at the first logged step and at the
    last trained one (``growth_and_exponent``).
    """
    results = _load(ROOT / "results" / "treatment")
    runs = results.runs
    table = summary(runs).reset_index(drop=True)
    chosen = best_lr_runs(runs)
    labelled = with_setting_labels(chosen)
    exponents = growth_and_exponent(chosen, results.curves, results.dynamics).merge(
        labelled[["run", "model"]].rename(columns={"model": "label"}), on="run"
    )
    medians = exponents.pivot_table(index="label", columns="stage", values="top_exponent", aggfunc="median")
    rows = []
    for row in table.itertuples(index=False):
        settings = dict(part.split("=", 1) for part in row.model.split(", ")[1:])
        applied = [
            words
            for key, words in TREATMENT_SETTINGS.items()
            if key in settings and settings[key] not in ("orthogonal", "0")
        ]
        rows.append(
            {
                **row._asdict(),
                "condition": " + ".join(applied) or "none",
                "exponent_init": medians.loc[row.model, "init"],
                "exponent_final": medians.loc[row.model, "final"],
            }
        )
    order = {"none": 0}
    out = pd.DataFrame(rows)
    return out.sort_values("condition", key=lambda c: c.map(lambda v: (order.get(v, 1), v.count("+"), v)))


def treatment_table() -> str:
    """The treatment study: per condition, the outcomes, the metric, growth rate and top exponent init -> end."""
    rows = _treatment_rows()
    runs = _load(ROOT / "results" / "treatment").runs
    lines = [
        f"`treatment`: gap {int(runs['gap'].iloc[0])}; {_setting(runs)}. {OUTCOME_RULE}",
        "",
        "| remedies | outcomes [95% CI] | final metric | growth rate init → end | top exponent init → end | lr |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.itertuples(index=False):
        lines.append(
            f"| {r.condition} | {outcome_text(r.solved, r.undecided, r.trained)} [{r.success_lo:.2f}, "
            f"{r.success_hi:.2f}] | {r.final_metric:.3f} | {r.growth_rate_init:+.3f} → {r.growth_rate_final:+.3f} "
            f"| {r.exponent_init:+.3f} → {r.exponent_final:+.3f} | {_lr_text(r.lr, r.lr_at_edge)} |"
        )
    return "\n".join(lines) + "\n"


def treatment_findings() -> str:
    """Per remedy alone against the untreated: does the top exponent end nearer zero, and does success follow."""
    rows = _treatment_rows().set_index("condition")
    base = rows.loc["none"]
    parts = []
    for remedy in TREATMENT_SETTINGS.values():
        if remedy not in rows.index:
            continue
        r = rows.loc[remedy]
        nearer = abs(r.exponent_final) < abs(base.exponent_final)
        more = r.solved > base.solved
        parts.append(
            f"{remedy} ends with the top exponent at {r.exponent_final:+.3f} against {base.exponent_final:+.3f} "
            f"untreated ({'nearer zero' if nearer else 'not nearer zero'}) and solves {r.solved} of {r.trained} "
            f"against {base.solved} of {base.trained} ({'success follows' if more else 'success does not follow'})"
        )
    recall = summary(_load(ROOT / "results" / "delayed_recall").runs)
    gap = int(_load(ROOT / "results" / "treatment").runs["gap"].iloc[0])
    lstm = recall[(recall["model"] == "lstm") & (recall["gap"] == gap)].iloc[0]
    best = rows.sort_values("solved").iloc[-1]
    parts.append(
        f"the best condition ({best.name}) solves {best.solved} of {best.trained}; the LSTM of the delayed-recall "
        f"study, at the same gap, {lstm.solved} of {lstm.trained}"
    )
    return "; ".join(parts)


STATE_TRACKING = ROOT / "results" / "state_tracking_study"
STATE_ORDER = ("lstm", "lru", "mamba2", "deltanet", "attention")


def _chosen_configuration(runs: pd.DataFrame) -> dict[str, object]:
    """One configuration's runs at its chosen learning rate: parameters, outcome counts, chance, the rate (and
    whether it is the grid's edge) and the mean final metric over the seeds."""
    counts = outcome_counts(runs)
    return {
        "params": int(runs["param_count"].iloc[0]),
        "solved": counts.solved,
        "undecided": counts.undecided,
        "trained": counts.trained,
        "chance": float(runs["baseline_metric"].iloc[0]),
        "lr": float(runs["lr"].iloc[0]),
        "lr_at_edge": bool(runs["lr_at_edge"].iloc[0]),
        "metric": float(runs["final_metric"].mean()),
    }


def _state_tracking_rows() -> pd.DataFrame:
    """Per group and model (eigenvalue range in the label) at the chosen learning rate: the outcomes at the training
    length, the parameter count, and the mean accuracy at the training length and at every evaluation length."""
    results = _load(STATE_TRACKING)
    chosen = with_setting_labels(best_lr_runs(results.runs))
    chosen["model"] = chosen["model"].str.replace(", eigen_range=", " ", regex=False)
    at_gaps = results.eval_gaps.pivot_table(index="run", columns="test_gap", values="metric")
    rows: list[dict[object, object]] = []
    for (group, model), runs in chosen.groupby(["task_group", "model"]):
        means = at_gaps.loc[runs["run"]].mean()
        rows.append(
            {
                "group": group,
                "model": model,
                **_chosen_configuration(runs),
                "train_gap": int(runs["gap"].iloc[0]),
                **{int(gap): float(value) for gap, value in means.items()},
            }
        )
    out = pd.DataFrame(rows)
    rank = lambda m: (
        STATE_ORDER.index(m.split()[0]) if m.split()[0] in STATE_ORDER else len(STATE_ORDER),
        "[-1,1]" in m,  # the papers' range [0, 1] first
        m,
    )
    return out.sort_values(["group", "model"], key=lambda c: c.map(rank) if c.name == "model" else c)


def state_tracking_table() -> str:
    """The state-tracking study: per group and model, outcomes at the training length, accuracy at every length."""
    rows = _state_tracking_rows()
    gaps = sorted(c for c in rows.columns if isinstance(c, int))
    runs = _load(STATE_TRACKING).runs
    lines = [
        f"`state_tracking_study`: {_setting(runs)}; target at every step. {OUTCOME_RULE}",
        "",
        f"| group | model | params | outcomes at {rows['train_gap'].iloc[0]} | accuracy at "
        + ", ".join(str(g) for g in [rows["train_gap"].iloc[0], *gaps])
        + " | chance | lr |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in rows.iterrows():
        accuracies = ", ".join(f"{v:.2f}" for v in [r["metric"], *(r[g] for g in gaps)])
        lines.append(
            f"| {r['group']} | {r['model']} | {r['params']:,} | "
            f"{outcome_text(r['solved'], r['undecided'], r['trained'])} | {accuracies} | {r['chance']:.2f} | "
            f"{_lr_text(r['lr'], r['lr_at_edge'])} |"
        )
    return "\n".join(lines) + "\n"


def state_tracking_findings() -> str:
    """Per group: the models whose accuracy at the longest evaluation length stays within 0.05 of chance, and those
    above it, with the numbers."""
    rows = _state_tracking_rows()
    longest = max(c for c in rows.columns if isinstance(c, int))
    parts = []
    for group, mine in rows.groupby("group", sort=True):
        chance = float(mine["chance"].iloc[0])
        near = mine[mine[longest] < chance + 0.05]
        above = mine[mine[longest] >= chance + 0.05].sort_values(longest, ascending=False)
        listed = lambda table: ", ".join(f"{r.model} {r[longest]:.2f}" for _, r in table.iterrows()) or "none"
        parts.append(
            f"on {group} at length {longest} (chance {chance:.2f}) within 0.05 of chance: {listed(near)}; "
            f"above it: {listed(above)}"
        )
    return "; ".join(parts)


RECALL = ROOT / "results" / "recall"
RECALL_ORDER = ("attention", "lstm", "mamba2", "deltanet", "lru")


def _recall_rows() -> pd.DataFrame:
    """Per number of pairs, model and width at the chosen learning rate: outcomes, parameters, mean accuracy."""
    chosen = best_lr_runs(_load(RECALL).runs)
    rows: list[dict[object, object]] = []
    for (pairs, model, hidden), runs in chosen.groupby(["task_n_pairs", "model", "hidden"]):
        rows.append({"pairs": int(pairs), "model": model, "hidden": int(hidden), **_chosen_configuration(runs)})
    out = pd.DataFrame(rows)
    rank = lambda m: RECALL_ORDER.index(m) if m in RECALL_ORDER else len(RECALL_ORDER)
    return out.sort_values(["pairs", "model", "hidden"], key=lambda c: c.map(rank) if c.name == "model" else c)


def recall_table() -> str:
    """The recall study: per number of pairs and model (rows), per width (columns) outcomes and mean accuracy."""
    rows = _recall_rows()
    runs = _load(RECALL).runs
    widths = sorted(rows["hidden"].unique())
    lines = [
        f"`recall`: sequence length {int(runs['gap'].iloc[0])}, {_setting(runs)}; each cell: outcomes at the chosen "
        f"learning rate; mean accuracy (chance {rows['chance'].iloc[0]:.3f}); parameters. {OUTCOME_RULE}",
        "",
        "| pairs | model | " + " | ".join(f"width {w}" for w in widths) + " |",
        "|---|---|" + "---|" * len(widths),
    ]
    for (pairs, model), mine in rows.groupby(["pairs", "model"], sort=False):
        cells = []
        for width in widths:
            r = mine[mine["hidden"] == width].iloc[0]
            lr = _lr_text(r["lr"], r["lr_at_edge"])
            counts = outcome_text(r["solved"], r["undecided"], r["trained"])
            cells.append(f"{counts}; {r['metric']:.2f}; {r['params']:,} (lr {lr})")
        lines.append(f"| {pairs} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recall_findings() -> str:
    """Per number of pairs: each model's mean accuracy from the narrowest to the widest model, and which solved."""
    rows = _recall_rows()
    parts = []
    for pairs, mine in rows.groupby("pairs", sort=True):
        accuracies = "; ".join(
            f"{model} " + ", ".join(f"{v:.2f}" for v in group.sort_values("hidden")["metric"])
            for model, group in mine.groupby("model", sort=False)
        )
        solved = mine[mine["solved"] == mine["trained"]]
        everywhere = [m for m, g in solved.groupby("model", sort=False) if len(g) == mine["hidden"].nunique()]
        parts.append(
            f"with {pairs} pairs, accuracy from width {mine['hidden'].min()} to {mine['hidden'].max()}: {accuracies}; "
            f"every seed solved at every width: {', '.join(everywhere) or 'none'}; "
            f"{int(mine['solved'].sum())} of {int(mine['trained'].sum())} runs at the chosen rates solved, "
            f"{int(mine['undecided'].sum())} undecided (still improving at the end of the budget)"
        )
    return "; ".join(parts)


def shipped_table() -> str:
    """One row per small shipped experiment: per model, the mean final metric and solved seeds at each gap."""
    lines = ["| experiment | setting | mean final metric (solved seeds) per gap |", "|---|---|---|"]
    for name in SHIPPED:
        runs = _load(ROOT / "results" / name).runs
        table = summary(runs)
        parts = []
        for model in _models(table):
            mine = table[table["model"] == model].sort_values("gap")
            values = ", ".join(
                f"{r.gap}: {r.final_metric:.2f} ({outcome_text(r.solved, r.undecided, r.trained)})"
                for r in mine.itertuples()
            )
            parts.append(f"{model} {values}")
        gaps = ", ".join(str(g) for g in sorted(table["gap"].unique()))
        setting = f"gaps {gaps}; {_setting(runs)}; baseline {runs['baseline_metric'].iloc[0]:.3g}"
        lines.append(f"| `{name}` | {setting} | " + "; ".join(parts) + " |")
    return "\n".join([*lines, "", OUTCOME_RULE]) + "\n"


MODERN_ORDER = ("lstm", "gru", "lru", "mingru", "s6", "attention")


def modern_table() -> str:
    """The modern study: per model (rows) its parameter count per task, and per task and gap (columns) the
    outcomes at the chosen lr; mean final metric; growth rate of ln ||dL/dstate_t|| per step at
    initialisation -> at the end (median over seeds)."""
    runs = _load(ROOT / "results" / "modern").runs
    table = summary(runs)
    columns = sorted({(r.task, r.gap) for r in table.itertuples()})
    tasks = sorted({task for task, _ in columns})
    lines = [
        "| model | params (" + " / ".join(tasks) + ") | " + " | ".join(f"{task} {gap}" for task, gap in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    params = runs.groupby(["model", "task"])["param_count"].first()  # the input and output sizes differ by task
    for model in sorted(table["model"].unique(), key=lambda m: (*MODERN_ORDER, m).index(m)):
        cells = []
        for task, gap in columns:
            row = next(table[(table["model"] == model) & (table["task"] == task) & (table["gap"] == gap)].itertuples())
            rate = (
                f"; {round(row.growth_rate_init, 3) + 0.0:+.3f} → {round(row.growth_rate_final, 3) + 0.0:+.3f}"
                if np.isfinite(row.growth_rate_init) and np.isfinite(row.growth_rate_final)
                else ""
            )
            cells.append(f"{outcome_text(row.solved, row.undecided, row.trained)}; {row.final_metric:.2f}{rate}")
        counts = " / ".join(f"{int(params[model, task]):,}" for task in tasks)
        lines.append(f"| {model} | {counts} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", OUTCOME_RULE]) + "\n"


def _range(values, fmt: str) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def _group_keys(runs: pd.DataFrame) -> list[str]:
    """The columns that tell a study's groups apart (one compiled program each: seeds x learning rates)."""
    return [k for k in ("task", "gap", "model", "hidden") if k in runs]


def _group_steps(runs: pd.DataFrame) -> tuple[int, int]:
    """(steps the groups trained, steps they were budgeted): a group runs until its last member stops."""
    keys = _group_keys(runs)
    runs = runs.assign(trained=runs["steps_trained"] if "steps_trained" in runs else runs["steps"])
    per_group = runs.groupby(keys).agg(trained=("trained", "max"), budget=("steps", "max"))
    return int(per_group["trained"].sum()), int(per_group["budget"].sum())


def _group_seconds(runs: pd.DataFrame) -> float:
    """Seconds the study's groups took to train, compilation included (each group's ``wall_time_s`` once)."""
    keys = _group_keys(runs)
    return float(runs.groupby(keys)["wall_time_s"].first().sum())


def _median_over_runs(dynamics: pd.DataFrame, runs: pd.Series, quantity: str, step: str, gate=None, index=None):
    """Per run the median over ``index`` (or the value at ``index``) of a quantity at step 0 / the last log point,
    then the median over the runs."""
    d = spectrum_statistic(dynamics[dynamics["run"].isin(runs)], quantity, gate=gate, index=index)
    last = d.groupby("run")["step"].transform("max")
    return float(d.loc[d["step"] == (0 if step == "init" else last), "value"].median())


def dynamics_spans() -> dict[str, str]:
    """The vanishing-gradient section's numbers: the delayed-recall study at its longest gap, chosen lr."""
    results = _load(ROOT / "results" / "delayed_recall")
    runs = best_lr_runs(results.runs)
    gap = int(runs["gap"].max())
    runs = runs[(runs["gap"] == gap) & (runs["status"] == "done")]
    out = {"dyn-gap": f"{gap}", "dyn-forget-bias": f"{runs['forget_bias'].dropna().iloc[0]:g}"}
    by_model = {m: g["run"] for m, g in runs.groupby("model")}
    dyn = results.dynamics
    for model, gate in (("rnn", "candidate"), ("lstm", "forget"), ("gru", "update")):
        ids = by_model[model]
        rates = runs[runs["model"] == model]
        for step in ("init", "final"):
            out[f"dyn-{model}-growth-{step}"] = f"{round(rates[f'growth_rate_{step}'].median(), 3) + 0.0:+.3f}"
            out[f"dyn-{model}-sigma-{step}"] = f"{_median_over_runs(dyn, ids, 'sigma_max', step):.2f}"
            lyapunov = _median_over_runs(dyn, ids, "lyapunov", step, index=1)
            out[f"dyn-{model}-lyap-{step}"] = f"{round(lyapunov, 3) + 0.0:+.3f}"
            out[f"dyn-{model}-saturated-{step}"] = f"{_median_over_runs(dyn, ids, 'saturated', step, gate):.2f}"
            if model != "rnn":
                tau = _median_over_runs(dyn, ids, "time_constant", step, index=50)
                out[f"dyn-{model}-tau-{step}"] = f"{tau:.0f}" if tau >= 10 else f"{tau:.1f}"
    for step in ("init", "final"):
        out[f"dyn-rnn-pmb-{step}"] = f"{_median_over_runs(dyn, by_model['rnn'], 'pmb_bound', step):.2f}"
    out["dyn-rnn-factor-init"] = f"{np.exp(float(out['dyn-rnn-growth-init'])):.2f}"
    unused = ("gru-saturated", "gru-sigma", "lstm-saturated", "lstm-sigma-final", "lstm-lyap-final")
    return {k: v for k, v in out.items() if not k.removeprefix("dyn-").startswith(unused)}


NAMES = {"rnn": "the tanh RNN", "lstm": "the LSTM", "gru": "the GRU", "bi-lstm": "the bidirectional LSTM"}


def _outcomes_at(row) -> str:
    """'every seed', 'none of 5', '3 of 5 (2 undecided)': a summary row's outcome in words."""
    undecided = f" ({row.undecided} undecided)" if row.undecided else ""
    if row.solved == row.trained:
        return "every seed"
    if row.solved == 0:
        return f"none of {row.trained}{undecided}"
    return f"{row.solved} of {row.trained}{undecided}"


def findings(name: str) -> str:
    """A study's outcomes in one sentence, per model and gap, at the chosen learning rates (``summary``)."""
    table = summary(_load(ROOT / "results" / name).runs)
    parts = []
    for model in _models(table):
        mine = table[table["model"] == model].sort_values("gap")
        gaps = ", ".join(f"gap {r.gap} with {_outcomes_at(r)}" for r in mine.itertuples())
        parts.append(f"{NAMES.get(model, model)} solves {gaps}")
    return "; ".join(parts)


def diagnostics_studies() -> str:
    """The committed studies whose runs carry the dynamics table (trained with diagnostics = true), in words."""
    found = []
    for folder in sorted(p for p in (ROOT / "results").iterdir() if (p / "experiment.json").is_file()):
        runs = _load(folder).runs
        if "diagnostics" in runs and bool(runs["diagnostics"].fillna(False).astype(bool).any()):
            found.append(f"`{folder.name}`")
    return ", ".join(found) if found else "none"


def modern_longest() -> str:
    """Who solves delayed recall at the modern study's longest gap, in words."""
    table = summary(_load(ROOT / "results" / "modern").runs)
    rows = table[table["task"] == "delayed_recall"]
    gap = int(rows["gap"].max())
    at = rows[rows["gap"] == gap]
    order = sorted(at["model"], key=lambda m: (*MODERN_ORDER, m).index(m))
    parts = [f"{m} {_outcomes_at(next(at[at['model'] == m].itertuples()))}" for m in order]
    return f"at gap {gap} the seeds that solve delayed recall: " + ", ".join(parts)


def engelken_identity() -> str:
    """The growth rate against the top Lyapunov exponent over the delayed-recall study's runs, at init and end."""
    results = _load(ROOT / "results" / "delayed_recall")
    table = growth_and_exponent(results.runs, results.curves, results.dynamics)
    parts = []
    for stage, words in (("init", "at initialisation"), ("final", "at the end of training")):
        rows = table[table["stage"] == stage]
        fit = fit_line(rows["top_exponent"], rows["growth_rate"])
        parts.append(
            f"{words} slope {fit.slope:.2f}, intercept {fit.intercept:+.3f} per step, r = {fit.r:.3f} ({fit.n} runs)"
        )
    per_model = []
    for model in _models(table):
        rows = table[table["model"] == model]
        per_model.append(f"{model} {fit_line(rows['top_exponent'], rows['growth_rate']).r:.2f}")
    return "; ".join(parts) + "; r per cell, both stages together: " + ", ".join(per_model)


def curse_of_memory() -> dict[str, str]:
    """Spans of docs/dynamics.md from docs/checks/curse_of_memory.csv (scripts/curse_of_memory.py)."""
    table = pd.read_csv(ROOT / "docs" / "checks" / "curse_of_memory.csv")
    out = {
        "com-points": f"{len(table)}",
        "com-lams": f"{table['lam'].min():g} to {table['lam'].max():g}",
        "com-ratio": f"{table['ratio'].min():.3f} to {table['ratio'].max():.3f}",
        "com-batch": f"{int(table['batch'].iloc[0])}",
        "com-se": f"{math.sqrt(2 / table['batch'].iloc[0]):.1%}",
    }
    top = table[table["lam"] == table["lam"].max()].set_index("form")
    for form in ("plain", "normalised", "lru"):
        out[f"com-{form}-top"] = f"{top.loc[form, 'measured']:.3g} (theory {top.loc[form, 'theory']:.3g})"
    return out


def reproduce_time() -> tuple[str, str]:
    """(minutes, count) of training over every committed study that scripts/reproduce.sh reruns."""
    seconds, count = 0.0, 0
    for folder in sorted((ROOT / "results").iterdir()):
        if (ROOT / "experiments" / f"{folder.name}.toml").exists() and (folder / "tables").exists():
            seconds += _group_seconds(_load(folder).runs)
            count += 1
    return f"{seconds / 60:.0f}", f"{count}"


def pascanu_findings() -> str:
    """Per initial gain of the pascanu study: sigma_max(U) max tanh', the growth rate at init, solved per gap."""
    folder = ROOT / "results" / "pascanu"
    if not folder.exists():
        return "not run yet"
    results = _load(folder)
    table = pascanu_condition(results.runs, results.dynamics)
    chosen = set(best_lr_runs(results.runs)["run"])
    parts = []
    for gain, rows in table.groupby("gain", sort=True):
        per_gap = []
        for gap, at in rows[rows["run"].isin(chosen)].groupby("gap", sort=True):
            counts = outcome_counts(results.runs[results.runs["run"].isin(at["run"])])
            undecided = f" ({counts.undecided} undecided)" if counts.undecided else ""
            per_gap.append(f"gap {gap} {counts.solved} of {counts.decided}{undecided}")
        parts.append(
            f"gain {gain:g} (measured {rows['sigma_gamma'].median():.2f}, growth rate at init "
            f"{rows['growth_rate_init'].median():+.3f} per step): solved at {', '.join(per_gap)}"
        )
    return "; ".join(parts)


def roundoff_counts() -> str:
    """How many delayed-recall runs had their top exponent, or a lower one, at float32 round-off at some log point."""
    dynamics = _load(ROOT / "results" / "delayed_recall").dynamics
    flags = dynamics[dynamics["quantity"] == "lyapunov_roundoff"]
    if flags.empty:
        return "not measured (a study trained before the flag)"
    runs = flags["run"].nunique()
    top = flags[(flags["index"] == 1) & (flags["value"] > 0)]["run"].nunique()
    lower = flags[(flags["index"] > 1) & (flags["value"] > 0)]["run"].nunique()
    return f"the top exponent in {top} of {runs} runs, a lower one in {lower}"


def early_prediction(step: int) -> str:
    """AUC of the top Lyapunov exponent at log step ``step`` for solved against failed runs, per cell and gap."""
    results = _load(ROOT / "results" / "delayed_recall")
    table = early_exponent(results.runs, results.dynamics, step)
    parts = []
    for (model, gap), rows in table.groupby(["model", "gap"], sort=True):
        got = rank_auc(rows["top_exponent"], rows["solved"])
        if got.positives and got.negatives:
            counts = f"{got.positives} solved, {got.negatives} failed"
            parts.append(f"{model} gap {gap} {got.auc:.2f} [{got.lo:.2f}, {got.hi:.2f}] ({counts})")
    return "; ".join(parts) if parts else "no cell and gap has both outcomes"


def modern_selective_copy() -> str:
    """Selective copy in the modern study, per gap: the best recurrence by mean final metric, and attention."""
    table = summary(_load(ROOT / "results" / "modern").runs)
    rows = table[table["task"] == "selective_copy"]
    parts = []
    for gap in sorted(rows["gap"].unique()):
        at = rows[rows["gap"] == gap]
        recurrent = at[at["model"] != "attention"].sort_values(["final_metric", "model"], ascending=[False, True])
        best = recurrent.iloc[0]
        metric, solved = f"{best['final_metric']:.2f}", _outcomes_at(best)
        text = f"at gap {gap} the best recurrence is {best['model']} ({metric}, solved by {solved})"
        attention = at[at["model"] == "attention"]
        if len(attention):
            a = attention.iloc[0]
            text += f" and attention reaches {a['final_metric']:.2f} (solved by {_outcomes_at(a)})"
        parts.append(text)
    return "; ".join(parts)


def modern_recall_of(model: str) -> str:
    """One model's delayed-recall outcomes in the modern study, gap by gap, in words."""
    table = summary(_load(ROOT / "results" / "modern").runs)
    rows = table[(table["task"] == "delayed_recall") & (table["model"] == model)].sort_values("gap")
    return f"the {model.upper() if len(model) <= 4 else model} solves " + ", ".join(
        f"gap {r.gap} with {_outcomes_at(r)}" for r in rows.itertuples()
    )


def _gaps_text(gaps) -> str:
    """'30, 300 and 1000'."""
    gaps = [str(int(g)) for g in sorted(set(gaps))]
    return gaps[0] if len(gaps) == 1 else ", ".join(gaps[:-1]) + " and " + gaps[-1]


def dynamics_outcomes() -> dict[str, str]:
    """The outcome sentences of the delayed-recall diagnostics section, at its longest gap (``summary``)."""
    table = summary(_load(ROOT / "results" / "delayed_recall").runs)
    gap = int(table["gap"].max())
    at = {r.model: r for r in table[table["gap"] == gap].itertuples()}
    bias = float(_load(ROOT / "results" / "delayed_recall").runs["forget_bias"].dropna().iloc[0])
    return {
        "dyn-rnn-solves": f"the tanh RNN solves gap {gap} with {_outcomes_at(at['rnn'])}",
        "dyn-gru-solves": f"it solves gap {gap} with {_outcomes_at(at['gru'])}",
        "dyn-forget-gate-init": f"σ({bias:g}) ≈ {1 / (1 + np.exp(-bias)):.2f}",
        "dyn-seeds": f"{int(table.loc[table['gap'] == gap, 'trained'].max())}",
    }


def modern_spans() -> dict[str, str]:
    """The modern study's setting and the findings its prose quotes, from its tables."""
    results = _load(ROOT / "results" / "modern")
    runs = results.runs
    table = summary(runs)
    longest = int(runs["gap"].max())
    out = {
        "modern-gaps": _gaps_text(runs["gap"]),
        "modern-setting": f"{_setting(runs)}, batch {_range(runs['batch_size'], '.0f')}",
        "modern-seeds": f"{runs['seed'].nunique()}",
        "modern-steps": f"{_range(runs['steps'], '.0f')}",
        "modern-longest-gap": f"{longest}",
    }
    # the LRU on selective copy: the gaps where no seed solved and its mean metric is within 0.02 of the baseline
    lru = table[(table["model"] == "lru") & (table["task"] == "selective_copy")]
    flat = lru[(lru["solved"] == 0) & (lru["final_metric"] - lru["baseline_metric"] <= 0.02)]
    out["modern-lru-baseline-gaps"] = (
        f"at gap{'s' if len(flat) > 1 else ''} {_gaps_text(flat['gap'])}" if len(flat) else "at no gap"
    )
    # the minGRU's gradient at initialisation: the distance from which it lies below float32's range (median
    # over its seeds of the first such distance), delayed recall at the longest gap, layer 0 forward
    grads = results.grad_norms
    ids = runs.loc[(runs["model"] == "mingru") & (runs["task"] == "delayed_recall") & (runs["gap"] == longest), "run"]
    g = grads[grads["run"].isin(ids) & (grads["step"] == 0) & (grads["layer"] == 0) & (grads["direction"] == "fwd")]
    below = g[g["below_floor"] & (g["distance"] >= 0)].groupby("run")["distance"].min()
    out["modern-mingru-floor"] = f"{float(np.median(below)):.0f}"
    return out


def spans() -> dict[str, str]:
    """The inline numbers."""
    copy = _load(ROOT / "results" / "copy").runs
    out = {"copy-gaps": _range(copy["gap"], ".0f")}
    out.update(dynamics_spans())
    order = _load(ROOT / "results" / "temporal_order").runs
    rnn50 = order[(order["model"] == "rnn") & (order["gap"] == 50)].sort_values("seed")
    out["temporal-order-rnn-50"] = " and ".join(f"{v:.2f}" for v in rnn50["final_metric"])
    out["temporal-order-chance"] = f"{order['baseline_metric'].iloc[0]:.2f}"
    reference = {name: _load(ROOT / "results" / name).runs for name in REFERENCE}
    seeds = [runs["seed"].nunique() for runs in reference.values()]
    if (ROOT / "results" / "modern").exists():
        modern = _load(ROOT / "results" / "modern").runs
        out["modern-minutes"] = f"{_group_seconds(modern) / 60:.1f}"
        out["modern-runs"] = f"{len(modern)}"
        out.update(modern_spans())
    for name in REFERENCE:
        out[f"{name}-findings"] = findings(name)
    recall = reference["delayed_recall"]
    gaps = ", ".join(str(g) for g in sorted(recall["gap"].unique()))
    out["delayed_recall-setting"] = f"gaps {gaps}; {_setting(recall)}"
    out["diagnostics-studies"] = diagnostics_studies()
    if (ROOT / "results" / "modern").exists():
        out["modern-longest"] = modern_longest()
        out["modern-selective-copy"] = modern_selective_copy()
        for model in ("lru", "lstm", "gru"):
            out[f"modern-recall-{model}"] = modern_recall_of(model)
    out["reference-all-solved-lo"] = f"{wilson_interval(min(seeds), min(seeds))[0]:.2f}"
    out["reference-none-solved-hi"] = f"{wilson_interval(0, min(seeds))[1]:.2f}"
    out["reference-seeds"] = _range(seeds, ".0f")
    lrs = pd.concat([runs["lr"] for runs in reference.values()])
    out["reference-lr-range"] = f"{lrs.min():g} to {lrs.max():g}"
    out["adding-steps"] = _range(reference["adding"]["steps"], ".0f")
    out.update(dynamics_outcomes())
    out["dyn-engelken"] = engelken_identity()
    out["dyn-roundoff"] = roundoff_counts()
    out["dyn-pascanu"] = pascanu_findings()
    if (ROOT / "results" / "treatment").exists():
        out["treatment-findings"] = treatment_findings()
    if STATE_TRACKING.exists():
        out["state-tracking-findings"] = state_tracking_findings()
    if RECALL.exists():
        out["recall-findings"] = recall_findings()
    out["reproduce-minutes"], out["reproduce-studies"] = reproduce_time()
    out.update(curse_of_memory())
    every = int(_load(ROOT / "results" / "delayed_recall").runs["log_every"].iloc[0])
    out["dyn-early-log-step"] = f"{every}"
    out["dyn-early-init"] = early_prediction(0)
    out["dyn-early-first"] = early_prediction(every)
    for name, runs in reference.items():
        trained, budget = _group_steps(runs)
        out[f"{name}-steps-saved"] = f"{1 - trained / budget:.0%}"
        out[f"{name}-runs"] = f"{len(runs)}"
        out[f"{name}-minutes"] = f"{_group_seconds(runs) / 60:.1f}"
    return out


def generate() -> dict[str, str]:
    """Every generated block and span, by name (``block:NAME``, ``span:NAME``)."""
    blocks = {f"reference-{name}": study_table(name) for name in REFERENCE}
    blocks["shipped-experiments"] = shipped_table()
    if (ROOT / "results" / "modern").exists():
        blocks["modern"] = modern_table()
    if (ROOT / "results" / "treatment").exists():
        blocks["treatment"] = treatment_table()
    if STATE_TRACKING.exists():
        blocks["state-tracking"] = state_tracking_table()
    if RECALL.exists():
        blocks["recall"] = recall_table()
    return {**{f"block:{k}": v for k, v in blocks.items()}, **{f"span:{k}": v for k, v in spans().items()}}


def found_in(text: str) -> dict[str, str]:
    """The generated parts a page's text holds now, by name."""
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
    mode.add_argument("--write", action="store_true", help="rewrite the marked parts of README.md and docs/*.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if a page differs from the tables")
    args = parser.parse_args()
    generated = generate()
    texts = {page: page.read_text() for page in pages()}
    marked = {name for text in texts.values() for name in found_in(text)}
    missing = sorted(set(generated) - marked)
    for page, text in texts.items():
        unknown = sorted(set(found_in(text)) - set(generated))
        if unknown:
            where = page.relative_to(ROOT)
            print(f"{where} marks parts this script does not generate: {', '.join(unknown)}", file=sys.stderr)
            return 1
    if args.write:
        for page, text in texts.items():
            if rewrite(text, generated) != text:
                page.write_text(rewrite(text, generated))
        if missing:
            print(f"not marked on any page (not written): {', '.join(missing)}", file=sys.stderr)
        return 0
    if args.check:
        stale = [(page, k) for page, text in texts.items() for k, v in found_in(text).items() if v != generated[k]]
        for page, name in stale:
            where = page.relative_to(ROOT)
            print(f"{where}: {name} differs from the tables (run scripts/readme_numbers.py --write)", file=sys.stderr)
        for name in missing:
            print(f"{name} is marked on no page (README.md, docs/*.md)", file=sys.stderr)
        return 1 if stale or missing else 0
    for name, value in generated.items():
        print(f"== {name}\n{value}" if name.startswith("block:") else f"== {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
