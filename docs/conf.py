"""Sphinx configuration of the documentation site: ``make docs`` builds it offline.

Pages are MyST markdown (``myst_nb``); the tutorial (``tutorial.md``) is converted to a
notebook with jupytext (``_ext/tutorial_nb.py``) and executed at build time; the API
reference is autodoc/autosummary over each public module's ``__all__``
(``_ext/apiref.py``, ``_ext/jaxseq_sphinx.py``), and the build fails if a public name is
undocumented. Warnings are errors (``sphinx-build -W --keep-going`` in the Makefile).
"""

from __future__ import annotations

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

# The tutorial's kernel runs JAX on the CPU, quietly; matplotlib draws without a screen.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "jaxseq / torchseq"
author = "the jaxseq authors"
copyright = "the jaxseq authors, Apache-2.0"
version = release = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings are Google style: Args:, Returns:
    "jaxseq_sphinx",
]

root_doc = "index"
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# --- MyST and myst-nb --------------------------------------------------------------------
myst_heading_anchors = 3  # GitHub-style #anchors, as the pages' own links use them
nb_custom_formats = {
    # Only the tutorial is a notebook: jupytext reads its ```python blocks as code cells.
    # myst-nb matches this key against the end of each source's path.
    "docs/tutorial.md": ["tutorial_nb.reads", {}, False],
}
nb_execution_mode = "force"  # execute the tutorial on every build
nb_execution_timeout = 600  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
suppress_warnings = [
    # One History class has three public names (seqfile.history, jaxseq.train,
    # torchseq.train); a signature's "History" finds all three, which is the same class.
    "ref.python",
]

# --- autodoc -----------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autosummary_generate = False  # the pages are written by the jaxseq-api directive
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- HTML ----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "jaxseq / torchseq"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
}
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else a browser asks for /favicon.ico and gets a 404
# pydata-sphinx-theme (under the book theme) logs a console error when no mode is set.
html_context = {"default_mode": "light"}
