"""The tutorial as a Jupyter notebook, generated from ``docs/tutorial.md`` with jupytext.

``docs/tutorial.md`` stays the one source: ``tests/test_docs.py`` runs its python blocks,
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
"""

from __future__ import annotations

import argparse
import pathlib
import re

import jupytext
import nbformat

SKIP_WORDS = {"no-run", "skip"}
_TEXT_BLOCK = re.compile(r"\A```text\n.*?\n```[ \t]*(\n|\Z)", re.DOTALL)
_CELL_MAGIC = re.compile(r"\A%%(\w+)\n")

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


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


def write(markdown: pathlib.Path, notebook: pathlib.Path) -> nbformat.NotebookNode:
    """Convert ``markdown`` and write the notebook to ``notebook``."""
    nb = reads(markdown.read_text())
    notebook.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(notebook))
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", type=pathlib.Path)
    parser.add_argument("notebook", type=pathlib.Path)
    args = parser.parse_args()
    nb = write(args.markdown, args.notebook)
    n = sum(c.cell_type == "code" for c in nb.cells)
    print(f"wrote {args.notebook}: {len(nb.cells)} cells, {n} of them code")


if __name__ == "__main__":
    main()
