"""The README's "Add a task" example, run exactly as written, end to end."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- (file|run): ([\w.\-]+) -->\n```\w*\n(.*?)```", re.S)


def readme_blocks() -> dict[tuple[str, str], str]:
    return {(kind, name): body for kind, name, body in BLOCK.findall(README.read_text())}


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
    runs = pd.read_csv(tmp_path / "results" / "first_bit" / "summary.csv")
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
    runs = pd.read_csv(tmp_path / "results" / "leaky" / "summary.csv")
    assert set(runs["model"]) == {"leaky"} and set(runs["status"]) == {"done"}
    # the outside cell trains: well above the memoryless 1/8 on delayed recall at gap 5
    assert (runs["final_metric"] > 0.5).all(), runs["final_metric"]
