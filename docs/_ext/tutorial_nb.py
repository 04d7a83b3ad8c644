"""The tutorial as a Jupyter notebook, generated from ``docs/tutorial.md`` with jupytext.

``docs/tutorial.md`` stays the one source: ``tests/test_tutorial_sections.py`` runs its blocks,
GitHub shows it, and this module reads it with jupytext's Markdown format (each
```` ```python ```` block a code cell, the prose markdown cells) and fixes what that
format does not know of the tutorial's conventions (``tests/test_docs.py``):

* a ```` ```python no-run ```` block is shown, not run: it stays a markdown code block;
* a ```` ```text ```` block right after a code cell is that cell's expected output: it is
  dropped, since the executed notebook shows the real output in its place;
* a block in another language (```` ```bash ````) stays a markdown code block, where
  jupytext would turn it into a ``%%bash`` cell.

The Sphinx build reads the tutorial through :func:`reads` (``nb_custom_formats`` in
``docs/conf.py``) and myst-nb executes it; ``make notebook`` writes the ``.ipynb``::

    python docs/_ext/tutorial_nb.py docs/tutorial.md docs/_build/tutorial.ipynb

The notebook that command writes opens with one more code cell, :func:`install_cell`, so
that it runs in a Python where jaxseq is not installed: the cell installs the checkout it
was generated from (named relative to the notebook's folder, where Jupyter starts the
kernel: ``../..`` from ``docs/_build/``), optax and matplotlib; torch stays optional (the
tutorial's NumPy track). Where jaxseq is importable the cell only says so. The docs page
and the site's copy of the notebook (``jaxseq_sphinx.py``) have no such cell.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re

import jupytext
import nbformat

SKIP_WORDS = {"no-run", "skip"}
_TEXT_BLOCK = re.compile(r"\A```text\n.*?\n```[ \t]*(\n|\Z)", re.DOTALL)
_CELL_MAGIC = re.compile(r"\A%%(\w+)\n")

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

#: The checkout this file belongs to (``docs/_ext/`` is two folders below it).
ROOT = pathlib.Path(__file__).resolve().parents[2]

#: What the install cell prints where jaxseq is already importable.
NOTHING_TO_INSTALL = "jaxseq is importable: nothing to install"

_INSTALL = """\
# Setup: where this kernel cannot import jaxseq, install the checkout this notebook was
# generated from ({checkout}, relative to the notebook's folder, where Jupyter starts
# the kernel), optax and matplotlib. torch is optional: without it, the checks compare
# with NumPy. Where jaxseq is importable, this cell changes nothing.
import importlib
import importlib.util
import pathlib
import subprocess
import sys

if importlib.util.find_spec("jaxseq") is None:
    checkout = pathlib.Path({checkout}).resolve()
    if not (checkout / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"no jaxseq checkout at {{checkout}}: start Jupyter in the notebook's folder, "
            "or install jaxseq, optax and matplotlib into this kernel's Python yourself"
        )
    pip = [sys.executable, "-m", "pip", "install", str(checkout), "optax", "matplotlib"]
    print("installing:", " ".join(pip[3:]))
    subprocess.run(pip, check=True)
    importlib.invalidate_caches()
else:
    print({done})
"""


def _fence(lang: str, code: str) -> str:
    ticks = "```"
    while ticks in code:
        ticks += "`"
    return f"{ticks}{lang}\n{code}\n{ticks}"


def reads(text: str) -> nbformat.NotebookNode:
    """The notebook for a markdown text written with ``tests/test_docs.py``'s conventions."""
    nb = jupytext.reads(text, fmt="md")
    cells = []
    previous = None
    for cell in nb.cells:
        if cell.cell_type == "code":
            info = str(cell.metadata.get("incorrectly_encoded_metadata", ""))
            magic = _CELL_MAGIC.match(cell.source)
            if SKIP_WORDS.intersection(info.split()):
                cell = nbformat.v4.new_markdown_cell(_fence(f"python {info}", cell.source))
            elif magic:
                lang, code = magic.group(1), cell.source[magic.end() :]
                cell = nbformat.v4.new_markdown_cell(_fence(lang, code))
            else:
                cell = nbformat.v4.new_code_cell(cell.source)
        elif previous is not None and previous.cell_type == "code":
            source = _TEXT_BLOCK.sub("", cell.source, count=1).lstrip("\n")
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_markdown_cell(cell.source)
        previous = cell
        if cell.source.strip():
            cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata["kernelspec"] = dict(KERNELSPEC)
    out.metadata["language_info"] = {"name": "python"}
    out.metadata["jaxseq"] = {"generated_from": "docs/tutorial.md (edit the markdown)"}
    nbformat.validate(out)
    return out


def install_cell(checkout: str) -> nbformat.NotebookNode:
    """The setup cell: installs jaxseq from ``checkout`` (a path relative to the notebook's
    folder), optax and matplotlib when jaxseq is not importable; else prints
    :data:`NOTHING_TO_INSTALL`."""
    source = _INSTALL.format(checkout=json.dumps(checkout), done=json.dumps(NOTHING_TO_INSTALL))
    return nbformat.v4.new_code_cell(source.rstrip("\n"))


def relative_checkout(notebook: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    """``root`` relative to the folder of ``notebook``, which must lie inside ``root``: the
    notebook names its checkout by a relative path only (``../..`` from ``docs/_build``)."""
    folder, root = notebook.resolve().parent, root.resolve()
    if not folder.is_relative_to(root):
        raise ValueError(
            f"{notebook}: a notebook with the install cell must be written inside the "
            f"checkout it installs ({root.name}/); pass --no-install-cell to write it elsewhere"
        )
    return pathlib.Path(os.path.relpath(root, folder)).as_posix()


def write(
    markdown: pathlib.Path, notebook: pathlib.Path, *, install_from: pathlib.Path | None = None
) -> nbformat.NotebookNode:
    """Convert ``markdown`` and write the notebook to ``notebook``.

    With ``install_from`` (a checkout that holds ``notebook``), the notebook opens with
    :func:`install_cell` for that checkout, named relative to the notebook.
    """
    nb = reads(markdown.read_text())
    if install_from is not None:
        nb.cells.insert(0, install_cell(relative_checkout(notebook, install_from)))
        nbformat.validate(nb)
    notebook.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(notebook))
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", type=pathlib.Path)
    parser.add_argument("notebook", type=pathlib.Path)
    parser.add_argument(
        "--no-install-cell",
        action="store_true",
        help="leave out the first cell, which installs this checkout where jaxseq is missing",
    )
    args = parser.parse_args()
    nb = write(args.markdown, args.notebook, install_from=None if args.no_install_cell else ROOT)
    n = sum(c.cell_type == "code" for c in nb.cells)
    print(f"wrote {args.notebook}: {len(nb.cells)} cells, {n} of them code")


if __name__ == "__main__":
    main()
