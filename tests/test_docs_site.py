"""The documentation site (``make docs``): API coverage, the tutorial notebook, the build.

* The coverage check runs without Sphinx: every name in the ``__all__`` of the documented
  modules has a docstring and is on its module's API page (``docs/_ext/apiref.py``).
* The tutorial notebook is generated from ``docs/tutorial.md`` with jupytext
  (``docs/_ext/tutorial_nb.py``) and run top to bottom in a kernel of this interpreter.
  The one ``make notebook`` writes opens with a cell that installs the checkout where
  jaxseq is missing; that cell runs here alone, with pip replaced by a stand-in.
* The site builds with warnings as errors. Here the tutorial's execution is off (the
  notebook test and ``tests/test_tutorial_sections.py`` run its code already); ``make docs`` executes it.

The last two need the ``docs`` extra, which ``make test`` installs; without it they skip.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import apiref  # noqa: E402
from test_docs import parse_blocks  # noqa: E402

# ---------------------------------------------------------------------------- API coverage


@pytest.mark.parametrize("module_name", apiref.API_MODULES)
def test_public_names_have_docstrings(module_name: str) -> None:
    missing = [
        name for name in apiref.public_names(module_name) if not apiref.docstring(module_name, name)
    ]
    assert not missing, f"{module_name}: public names without a docstring: {missing}"


@pytest.mark.parametrize("module_name", apiref.API_MODULES)
def test_reference_lists_every_public_name(module_name: str) -> None:
    page = DOCS / "api" / f"{module_name}.rst"
    assert page.is_file(), f"no API page {page.relative_to(ROOT)}"
    assert f".. jaxseq-api:: {module_name}" in page.read_text()
    assert module_name in (DOCS / "api" / "index.md").read_text().split()
    rst = apiref.api_rst(module_name)
    summary = rst.split(".. autosummary::")[1].split("\n\n", 2)[1]
    for name in apiref.public_names(module_name):
        full = f"{module_name}.{name}"
        assert f"   {name}" in summary.splitlines(), f"{full} not in the summary table"
        entry = rf"^\.\. auto(class|function|data|module):: {re.escape(full)}$"
        alias = f".. py:class:: {name}\n   :module: {module_name}\n"  # a class documented once
        documented = re.search(entry, rst, re.M) or alias in rst
        assert documented or full in apiref.page_modules(), f"{full} has no autodoc entry"


def test_coverage_errors_name_an_undocumented_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import jaxseq

    def undocumented(x):  # no docstring
        return x

    monkeypatch.setattr(jaxseq, "undocumented", undocumented, raising=False)
    monkeypatch.setattr(jaxseq, "__all__", [*jaxseq.__all__, "undocumented"])
    assert "jaxseq.undocumented: public (in __all__) but has no docstring" in (
        apiref.coverage_errors()
    )
    assert ".. autofunction:: jaxseq.undocumented" in apiref.api_rst("jaxseq")


def test_data_constants_are_documented_by_comment() -> None:
    assert "identity" in apiref.attribute_doc("jaxseq.interop", "LAYOUT")
    assert "(rtol, atol)" in apiref.attribute_doc("jaxseq.testing", "TOLERANCES")
    assert apiref.kind(apiref.importlib.import_module("jaxseq.testing").TOLERANCES) == "data"


# ---------------------------------------------------------------------------- the notebook


def _tutorial_notebook():
    pytest.importorskip("jupytext", reason="needs the docs extra: pip install -e '.[docs]'")
    import tutorial_nb

    return tutorial_nb.reads((DOCS / "tutorial.md").read_text())


def test_notebook_has_the_tutorials_code_cells() -> None:
    nb = _tutorial_notebook()
    code = [c.source.strip() for c in nb.cells if c.cell_type == "code"]
    blocks = [b.code.strip() for b in parse_blocks((DOCS / "tutorial.md").read_text()) if b.runs]
    assert code == blocks  # every block test_docs.py runs, no-run blocks not
    for prev, cell in zip(nb.cells, nb.cells[1:], strict=False):
        if prev.cell_type == "code" and cell.cell_type == "markdown":
            assert not cell.source.startswith("```text"), "expected output left in the notebook"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_conversion_follows_the_markdown_conventions() -> None:
    pytest.importorskip("jupytext", reason="needs the docs extra: pip install -e '.[docs]'")
    import tutorial_nb

    text = (
        "Intro.\n\n```python\nprint(1)\n```\n\n```text\n1\n```\n\nProse after.\n\n"
        "```python no-run\nraise RuntimeError\n```\n\n```bash\nls\n```\n"
    )
    cells = [(c.cell_type, c.source) for c in tutorial_nb.reads(text).cells]
    assert cells == [
        ("markdown", "Intro."),
        ("code", "print(1)"),
        ("markdown", "Prose after."),  # the expected output is gone: the run shows it
        ("markdown", "```python no-run\nraise RuntimeError\n```"),  # shown, not run
        ("markdown", "```bash\nls\n```"),  # not a %%bash cell
    ]


def test_notebook_runs_top_to_bottom() -> None:
    nb = _tutorial_notebook()
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    printed = "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )
    assert "True" in printed


# The install cell runs in a child with pip out of reach: ``subprocess.run`` prints the
# command it was given as JSON instead of running it. With ``missing``, the cell sees no
# jaxseq (``importlib.util.find_spec("jaxseq")`` is None).
_NO_PIP = textwrap.dedent(
    """\
    import importlib.util, json, subprocess, sys
    if sys.argv[1] == "missing":
        _find_spec = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "jaxseq" else _find_spec(name, *a)
    subprocess.run = lambda cmd, **kw: print("pip command:", json.dumps(cmd))
    """
)


def _make_notebook(tmp_path: pathlib.Path):
    """The notebook ``make notebook`` writes, in a stand-in checkout under ``tmp_path``."""
    pytest.importorskip("jupytext", reason="needs the docs extra: pip install -e '.[docs]'")
    import tutorial_nb

    checkout = tmp_path / "checkout"
    notebook = checkout / "docs" / "_build" / "tutorial.ipynb"
    tutorial_nb.write(DOCS / "tutorial.md", notebook, install_from=checkout)
    return tutorial_nb, checkout, notebook


def _first_cell(notebook: pathlib.Path) -> str:
    import nbformat

    return nbformat.read(str(notebook), as_version=4).cells[0].source


def _run_install_cell(source: str, notebook: pathlib.Path, jaxseq: str):
    """Run the cell alone with this interpreter (the venv's), in the notebook's folder."""
    return subprocess.run(
        [sys.executable, "-c", _NO_PIP + source, jaxseq],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_notebook_installs_the_checkout_relative_to_the_notebook(
    tmp_path: pathlib.Path,
) -> None:
    tutorial_nb, checkout, notebook = _make_notebook(tmp_path)
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    first, rest = nb.cells[0], nb.cells[1:]
    assert first.cell_type == "code"
    assert 'importlib.util.find_spec("jaxseq") is None' in first.source
    assert 'pathlib.Path("../..")' in first.source  # docs/_build/ -> the checkout
    pip = '[sys.executable, "-m", "pip", "install", str(checkout), "optax", "matplotlib"]'
    assert pip in first.source  # torch stays optional: the tutorial has a NumPy track
    # the rest is the notebook the site runs; no absolute path of this machine anywhere
    site = tutorial_nb.reads((DOCS / "tutorial.md").read_text())
    assert [(c.cell_type, c.source) for c in rest] == [(c.cell_type, c.source) for c in site.cells]
    text = notebook.read_text()
    assert str(tmp_path) not in text and str(ROOT) not in text
    # `make notebook` itself: the repository root, from docs/_build/
    assert tutorial_nb.ROOT == ROOT
    assert tutorial_nb.relative_checkout(ROOT / "docs" / "_build" / "tutorial.ipynb") == "../.."
    with pytest.raises(ValueError, match="inside the checkout"):
        tutorial_nb.relative_checkout(tmp_path / "elsewhere.ipynb", root=checkout)


def test_install_cell_is_a_no_op_where_jaxseq_is_importable(tmp_path: pathlib.Path) -> None:
    tutorial_nb, _, notebook = _make_notebook(tmp_path)
    proc = _run_install_cell(_first_cell(notebook), notebook, "importable")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tutorial_nb.NOTHING_TO_INSTALL + "\n"


def test_install_cell_installs_the_checkout_where_jaxseq_is_missing(
    tmp_path: pathlib.Path,
) -> None:
    _, checkout, notebook = _make_notebook(tmp_path)
    source = _first_cell(notebook)
    proc = _run_install_cell(source, notebook, "missing")  # no pyproject.toml there yet
    assert proc.returncode == 1 and "FileNotFoundError: no jaxseq checkout" in proc.stderr
    assert "pip command" not in proc.stdout
    (checkout / "pyproject.toml").write_text('[project]\nname = "jaxseq"\n')
    proc = _run_install_cell(source, notebook, "missing")
    assert proc.returncode == 0, proc.stderr
    command = json.loads(proc.stdout.split("pip command:", 1)[1])
    assert command == [
        sys.executable, "-m", "pip", "install", str(checkout.resolve()), "optax", "matplotlib",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- the site


def test_site_builds_without_warnings(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("sphinx", reason="needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    out = tmp_path / "html"
    cmd = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
        "-D", "nb_execution_mode=off", "-d", str(tmp_path / "doctrees"), str(DOCS), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    assert (out / "index.html").is_file()
    api = (out / "api" / "jaxseq.html").read_text()
    assert 'id="jaxseq.lstm"' in api
    nn_page = (out / "api" / "jaxseq.nn.html").read_text()
    assert 'id="jaxseq.nn.LSTM"' in nn_page and "proj_size" in nn_page
    for page in ["tutorial", "parity", "speed", "resuming", "architecture", "porting"]:
        assert (out / f"{page}.html").is_file(), page
    for example in ["classify", "forecast", "charlm", "why_recurrence"]:
        assert (out / "gallery" / f"{example}.html").is_file(), example
    pictures = {"classify": "classify_curves.png", "forecast": "forecast.png"}
    pictures |= {"charlm": "charlm_loss.png", "why_recurrence": "why_recurrence.png"}
    for example, png in pictures.items():
        assert png in (out / "gallery" / f"{example}.html").read_text(), example
        assert (out / "_images" / png).is_file(), png
    assert "masked_bidirectional.png" in (out / "tutorial.html").read_text()
    assert 'href="tutorial.ipynb"' in (out / "index.html").read_text()
    assert '"kernelspec"' in (out / "tutorial.ipynb").read_text()
