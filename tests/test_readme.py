"""The README and the manual (docs/*.md): the "Add a task" and "Add a cell" examples run exactly as
written, end to end; every result number generated from the committed tables; no issue numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the README and the manual's pages
BLOCK = re.compile(r"<!-- (file|run): ([\w.\-]+) -->\n```\w*\n(.*?)```", re.S)


def readme_blocks() -> dict[tuple[str, str], str]:
    """The marked example blocks of every page (a name marked on two pages must hold the same text)."""
    blocks: dict[tuple[str, str], str] = {}
    for page in PAGES:
        for kind, name, body in BLOCK.findall(page.read_text()):
            assert blocks.setdefault((kind, name), body) == body, f"{page.name}: {kind} {name} differs elsewhere"
    return blocks


def test_add_a_task_example_end_to_end(tmp_path, cache_dir):
    blocks = readme_blocks()
    files = {name: body for (kind, name), body in blocks.items() if kind == "file"}
    assert {"first_bit.py", "first_bit.toml"} <= set(files)
    assert len(files["first_bit.py"].splitlines()) <= 40
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    assert shutil.which("lrd"), "the lrd console script is installed by `pip install -e .`"
    for line in blocks[("run", "add-task")].splitlines():
        proc = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    runs = pd.read_csv(tmp_path / "results" / "first_bit" / "runs.csv.gz")
    assert set(runs["task"]) == {"first_bit"}
    assert set(runs["status"]) == {"done"}
    assert (runs["baseline_metric"] == 0.5).all()
    # the example trains: the LSTM beats the coin flip at the short gap
    lstm_short = runs[(runs["model"] == "lstm") & (runs["gap"] == runs["gap"].min())]
    assert (lstm_short["final_metric"] > 0.9).all(), lstm_short["final_metric"]
    assert any((tmp_path / "results" / "first_bit" / "figures").glob("*memory_vs_gap.png"))


def test_add_a_cell_example_end_to_end(tmp_path, cache_dir):
    blocks = readme_blocks()
    files = {name: body for (kind, name), body in blocks.items() if kind == "file"}
    assert {"leaky.py", "leaky.toml"} <= set(files)
    assert len(files["leaky.py"].splitlines()) <= 30
    for name in ("leaky.py", "leaky.toml"):
        (tmp_path / name).write_text(files[name])
    for line in blocks[("run", "add-cell")].splitlines():
        proc = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    runs = pd.read_csv(tmp_path / "results" / "leaky" / "runs.csv.gz")
    assert set(runs["model"]) == {"leaky"} and set(runs["status"]) == {"done"}
    # the outside cell trains: well above the memoryless 1/8 on delayed recall at gap 5
    assert (runs["final_metric"] > 0.5).all(), runs["final_metric"]


# --- the README's numbers come from the committed tables ---------------------------------------------
def readme_numbers():
    """scripts/readme_numbers.py, imported (scripts/ is no package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "readme_numbers.py"
    spec = importlib.util.spec_from_file_location("readme_numbers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readmes_numbers_are_recomputed_from_the_committed_tables():
    script = readme_numbers()
    generated = script.generate()
    assert script.pages() == PAGES
    marked = set()
    for page in PAGES:
        found = script.found_in(page.read_text())
        assert set(found) <= set(generated), f"{page.name} marks parts the script does not generate"
        for name, value in found.items():
            assert value == generated[name], f"{page.name}: {name} differs from the tables (readme_numbers.py --write)"
        marked |= set(found)
    assert marked == set(generated), "every generated block and span is marked on some page"
    # the landing page quotes the delayed-recall study's findings, generated
    assert "delayed_recall-findings" in {k.split(":", 1)[1] for k in script.found_in(README.read_text())}
    # the generated parts hold what the runs table says, e.g. for delayed recall's LSTM at its longest gap
    from lrd import store
    from lrd.results import best_lr_runs, wilson_interval

    runs = best_lr_runs(store.load(README.parent / "results" / "delayed_recall").runs)  # at the chosen lr
    cell = runs[(runs["model"] == "lstm") & (runs["gap"] == runs["gap"].max())]
    # counted here from the runs table itself: solved on the evaluation metric, undecided = still improving
    k = int(((cell["status"] == "done") & (cell["final_metric"].astype("float32") >= np.float32(0.95 - 2**-22))).sum())
    m = int((cell["still_improving"] & ~cell["solved"]).sum())
    n = len(cell)
    assert k == int(cell["solved"].sum())
    lo, hi = wilson_interval(k, n - m)
    mean, lr = cell["final_metric"].mean(), cell["lr"].iloc[0]
    want = f"{k} solved / {m} undecided / {n} [{lo:.2f}, {hi:.2f}]; {mean:.3f}; lr {lr:g}"
    lstm = next(line for line in generated["block:reference-delayed_recall"].splitlines() if line.startswith("| lstm"))
    assert lstm.rstrip(" |").split(" | ")[-1].startswith(want)  # the last column is the longest gap


def test_rewrite_replaces_only_the_marked_parts():
    script = readme_numbers()
    text = "a <!-- n: x -->old<!-- /n --> b\n<!-- numbers: t -->\nstale\n<!-- /numbers -->\nc 0.5\n"
    out = script.rewrite(text, {"span:x": "1.25", "block:t": "| new |\n"})
    assert out == "a <!-- n: x -->1.25<!-- /n --> b\n<!-- numbers: t -->\n| new |\n<!-- /numbers -->\nc 0.5\n"
    assert script.found_in(out) == {"span:x": "1.25", "block:t": "| new |\n"}


# --- no result number typed by hand in a results section -----------------------------------------------
# the pages' sections that report the committed studies' results (each with its subsections); None: the whole page
RESULTS_SECTIONS = {
    "README.md": ("What lrd shows",),
    "docs/getting-started.md": ("What the default run produces",),
    "docs/studies.md": None,
    "docs/dynamics.md": (
        "What the committed delayed-recall study shows",
        "Checked against theory",
        "The treatment study",
    ),
}
# what may carry a digit there without being generated, each a narrow pattern (see hand_typed_numbers)
ALLOWED = {
    "generated block": r"<!-- numbers: [\w.\-]+ -->.*?<!-- /numbers -->",
    "generated span": r"<!-- n: [\w.\-]+ -->.*?<!-- /n -->",
    "quoted from a paper (marked)": r"<!-- cited -->.*?<!-- /cited -->",
    "code span (settings, formulas, files, commands)": r"`[^`\n]+`",
    "link or image target": r"\]\([^)\s]+\)",
    "citation year": r"\b(?:[A-Z][A-Za-z\-]+|et al\.) (?:19|20)\d\d[a-z]?\b",
    "a paper's section, table, equation or experiment": r"\b(?:exp\.|Table|Section|Sec\.|Eq\.|Fig\.) \d+[a-z]?\b",
    "a name with a digit (float32, log10, S6)": r"\b[A-Za-z][A-Za-z_]*\d\w*",
    "the Wilson interval's level": r"\bWilson 95%",
}


def results_text(text: str, wanted=("Reference studies",)) -> dict[str, str]:
    """Each section of a page's text headed by a name in ``wanted``, with its subsections, by heading."""
    lines = text.splitlines(keepends=True)
    sections = {}
    for i, line in enumerate(lines):
        heading = re.match(r"(#+) (.*)", line)
        if heading and heading.group(2).strip() in wanted:
            level = len(heading.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[j])),
                len(lines),
            )
            sections[heading.group(2).strip()] = "".join(lines[i + 1 : end])
    return sections


def hand_typed_numbers(text: str) -> list[str]:
    """The digits of ``text`` outside what ``ALLOWED`` allows, each with its context."""
    for pattern in ALLOWED.values():
        text = re.sub(pattern, lambda m: " " * len(m.group(0)), text, flags=re.S)  # keep positions
    return [text[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ") for m in re.finditer(r"\d+", text)]


def test_no_result_number_is_typed_by_hand_in_a_results_section():
    found = {}
    for page, wanted in RESULTS_SECTIONS.items():
        text = (ROOT / page).read_text()
        if wanted is None:  # the whole page reports results
            sections = {page: text}
        else:
            sections = {f"{page}: {name}": body for name, body in results_text(text, wanted).items()}
            assert len(sections) == len(wanted), f"{page}: a results section was renamed: update RESULTS_SECTIONS"
        for name, body in sections.items():
            assert re.search(r"<!-- (n|numbers): ", body), f"{name} holds no generated number"
            if numbers := hand_typed_numbers(body):
                found[name] = numbers
    assert not found, f"digits outside generated parts (generate them with scripts/readme_numbers.py): {found}"


ISSUE = re.compile(r"\bissues? #?\d+", re.I)


def test_no_issue_number_in_user_facing_text():
    """The README and the manual speak to users: no references to this project's issue tracker."""
    assert ISSUE.search("the protocol of issue 12") and ISSUE.search("(Issue #7)")
    assert not ISSUE.search("the programs issue several QRs")
    found = [f"{page.name}: {m.group(0)}" for page in PAGES for m in ISSUE.finditer(page.read_text())]
    assert not found, found


def test_the_hand_typed_number_check_finds_what_it_should():
    typed = [
        "the LSTM solves gap 200 with 3 of 5",
        "(13.2 min wall)",
        "an lr grid (1e-3 to 3e-2)",
        "Bai et al. 2018 report MSE 0.164",
        "leaves float32's range within about 130 steps",
    ]
    for text in typed:
        assert hand_typed_numbers(text), text
    allowed = [
        "Hochreiter & Schmidhuber 1997 (exp. 2c) and Bengio et al. 1994",
        "Gu & Dao 2023 (selective copying, Table 1",
        "with `steps = 300` and `1/(1 − f)`",
        "<!-- n: dyn-gap -->200<!-- /n --> and <!-- numbers: t -->\n| 5 |\n<!-- /numbers -->",
        "<!-- cited -->T = 600 MSE 0.164<!-- /cited -->",
        "![memory vs gap](results/x/figures/a_1.png) in float32 and log10 for S6",
    ]
    for text in allowed:
        assert not hand_typed_numbers(text), (text, hand_typed_numbers(text))
    assert results_text("# A\n1\n## Reference studies\nx 2\n### Sub\ny 3\n## Next\nz 4\n", ("Reference studies",)) == {
        "Reference studies": "x 2\n### Sub\ny 3\n"
    }
