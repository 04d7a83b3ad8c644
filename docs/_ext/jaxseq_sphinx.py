"""Sphinx extension of this project's docs: the API pages and their coverage check.

* ``.. jaxseq-api:: jaxseq.nn`` (in ``docs/api/*.rst``) expands to the module's summary
  table and an autodoc entry for every name in its ``__all__`` (:func:`apiref.api_rst`),
  so a new public name is documented with no edit to the docs.
* The coverage check (as Optax's docs have): the build fails if a public name of an
  :data:`apiref.API_MODULES` module has no docstring, or is missing from the reference,
  or a module has no page.
* Docstrings write shapes as ``(L_i, *)``, where reStructuredText would read ``*`` as the
  start of emphasis: :func:`escape_shape_stars` escapes such stars as autodoc reads them.
* Flax NNX classes show their ``__init__`` signature (:func:`class_signature`).
* The tutorial notebook is put beside the pages for download (:func:`copy_tutorial_notebook`).
"""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import apiref
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.inspect import stringify_signature


class PublicAPI(SphinxDirective):
    """``.. jaxseq-api:: MODULE``: document every name of ``MODULE.__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        if module_name not in apiref.API_MODULES:
            raise self.error(f"{module_name} is not in apiref.API_MODULES")
        self.env.note_dependency(__file__)
        return self.parse_text_to_nodes(apiref.api_rst(module_name))


_SHAPE_STAR = re.compile(r"(?<=[(\s])\*(?=[,)])")  # the * of (L_i, *) or (*, H)
_INLINE_LITERAL = re.compile(r"(``.*?``)", re.DOTALL)


def _escape_stars(text: str) -> str:
    parts = _INLINE_LITERAL.split(text)  # odd parts are ``literals`` (which may span lines)
    return "".join(p if i % 2 else _SHAPE_STAR.sub(r"\\*", p) for i, p in enumerate(parts))


def escape_shape_stars(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Escape the ``*`` of shapes such as (N, *) outside literals and examples, in place."""
    literal = []  # whether each line is in a ``::`` literal block or a >>> example
    literal_indent = None  # inside a literal block: the indent of the line that opened it
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and line.strip() and indent <= literal_indent:
            literal_indent = None
        literal.append(literal_indent is not None or line.lstrip().startswith((">>>", "...")))
        if line.rstrip().endswith("::"):
            literal_indent = indent
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and literal[j] == literal[i]:
            j += 1
        if not literal[i]:
            lines[i:j] = _escape_stars("\0".join(lines[i:j])).split("\0")  # a line may hold \n
        i = j


def class_signature(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: Any
) -> tuple[str, Any] | None:
    """A class's signature from its ``__init__`` where a metaclass hides it.

    Flax NNX modules are built by a metaclass whose ``__call__`` takes ``(*args,
    **kwargs)``, which autodoc (and ``inspect.signature``) would show.
    """
    if what != "class" or not signature or not signature.startswith("(*args"):
        return None
    init = inspect.signature(obj.__init__)
    params = list(init.parameters.values())[1:]  # without self
    return stringify_signature(init.replace(parameters=params), show_return_annotation=False), ret


def check_coverage(app: Sphinx, env: BuildEnvironment) -> None:
    """Fail the build when a public name is undocumented or absent from the reference."""
    errors = apiref.coverage_errors()
    objects = env.domains.python_domain.objects
    for module_name in apiref.API_MODULES:
        if f"api/{module_name}" not in env.found_docs:
            errors.append(f"{module_name}: no page docs/api/{module_name}.rst")
            continue
        for name in apiref.public_names(module_name):
            full = f"{module_name}.{name}"
            if full not in objects and full not in apiref.page_modules():
                errors.append(f"{full}: public (in __all__) but not in the API reference")
    if errors:
        raise ExtensionError("API reference coverage:\n  " + "\n  ".join(errors))


def copy_tutorial_notebook(app: Sphinx, exception: Exception | None) -> None:
    """Put the tutorial notebook beside the pages (``tutorial.ipynb``), for download.

    The executed one when myst-nb ran it, else the one generated from the markdown.
    """
    if exception is not None or app.builder.format != "html":
        return
    import tutorial_nb

    target = Path(app.outdir) / "tutorial.ipynb"
    executed = Path(app.outdir).parent / "jupyter_execute" / "tutorial.ipynb"
    if app.config.nb_execution_mode != "off" and executed.is_file():
        shutil.copyfile(executed, target)
    else:
        tutorial_nb.write(Path(app.srcdir) / "tutorial.md", target)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("jaxseq-api", PublicAPI)
    app.connect("autodoc-process-docstring", escape_shape_stars)
    app.connect("autodoc-process-signature", class_signature)
    app.connect("env-check-consistency", check_coverage)
    app.connect("build-finished", copy_tutorial_notebook)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
