"""MkDocs hooks for the manual (mkdocs.yml names this file).

The manual's pages show the committed studies' figures, which live in ``results/``, outside
``docs/``: every ``results/.../*.png`` a page links to is added to the site under the same path,
so a page writes ``![...](results/delayed_recall/figures/x.png)`` and the strict build checks it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"\]\((results/[\w./-]+\.png)\)")


def on_files(files: Files, config) -> Files:
    wanted = sorted({m for page in (ROOT / "docs").glob("*.md") for m in FIGURE.findall(page.read_text())})
    for uri in wanted:
        if (ROOT / uri).is_file():  # a missing figure stays missing: the strict build reports the link
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
