"""The manual's short examples (docs/*.md, README.md) run as written.

A fenced block right after ``<!-- example -->`` is executed: a ``bash`` block line by line
(each line must exit 0), a ``python`` block as one script. They run in a fresh folder
that sees the repository's committed ``results/`` and ``experiments/`` (read through
links), so an example reads the committed studies and writes nothing into the repository.
Longer examples (training, the tutorial) are run by their own tests: ``tests/test_readme.py``
("Add a task", "Add a cell") and ``tests/test_tutorial.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(r"<!-- example -->\n```(\w+)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, str]]:
    """(page:index, language, body) of every marked example."""
    found = []
    for page in PAGES:
        for i, (lang, body) in enumerate(EXAMPLE.findall(page.read_text())):
            found.append((f"{page.relative_to(ROOT)}:{i}", lang, body))
    return found


def test_the_manual_has_examples_to_run():
    found = examples()
    assert len(found) >= 3, found
    assert {lang for _, lang, _ in found} == {"bash", "python"}, "examples are bash or python blocks"
    assert EXAMPLE.findall("<!-- example -->\n```bash\nlrd --version\n```\n") == [("bash", "lrd --version\n")]


def _workdir(tmp_path: Path) -> Path:
    for name in ("results", "experiments"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _env() -> dict[str, str]:
    # this checkout's lrd, whatever `pip install -e` pointed at
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize(("where", "lang", "body"), examples(), ids=[e[0] for e in examples()])
def test_a_docs_example_runs(where, lang, body, tmp_path, cache_dir):
    cwd = _workdir(tmp_path)
    if lang == "python":
        proc = subprocess.run(
            [sys.executable, "-c", body], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (where, proc.stderr)
        assert proc.stdout.strip(), f"{where}: a python example prints what it shows"
        return
    assert lang == "bash", f"{where}: an example is a bash or python block"
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines
    for line in lines:
        proc = subprocess.run(line, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (where, line, proc.stdout, proc.stderr)
        assert proc.stdout.strip(), (where, line, "prints nothing")
