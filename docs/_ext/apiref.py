"""The API reference's contents, read from each public module's ``__all__``.

This module needs no Sphinx: ``docs/_ext/jaxseq_sphinx.py`` turns :func:`api_rst` into
the pages of ``docs/api/``, and ``tests/test_docs_site.py`` runs :func:`coverage_errors`
in the ordinary test suite. A name added to a module's ``__all__`` appears in the
reference with no edit here; a public name without a docstring fails both.

Documentation of a data constant (a table such as ``jaxseq.interop.LAYOUT``) is a ``#:``
comment right above its assignment, or a string literal right after it, as Sphinx's
autodoc reads them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import types

#: The modules whose ``__all__`` the reference documents, one page each (``api/<name>``).
API_MODULES: tuple[str, ...] = (
    "jaxseq",
    "jaxseq.nn",
    "jaxseq.linen",
    "jaxseq.options",
    "jaxseq.interop",
    "jaxseq.data",
    "jaxseq.train",
    "jaxseq.train_state",
    "jaxseq.linear_scan",
    "jaxseq.export",
    "jaxseq.regularizers",
    "jaxseq.testing",
    "jaxseq.models",
    "torchseq",
    "torchseq.models",
    "torchseq.data",
    "torchseq.train",
    "torchseq.train_state",
    "torchseq.checkpoint",
    "torchseq.segments",
    "torchseq.regularized",
)


def public_names(module_name: str) -> list[str]:
    """The names in ``module_name.__all__``, in its order."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"{module_name} has no __all__: the reference is built from it")
    return list(names)


def kind(obj: object) -> str:
    """Which autodoc directive documents ``obj``: module, class, function or data."""
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def attribute_doc(module_name: str, name: str) -> str:
    """The ``#:`` comment above, or the string literal after, ``name = ...`` in the module."""
    module = importlib.import_module(module_name)
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return ""
    lines = source.splitlines()
    body = ast.parse(source).body
    for i, node in enumerate(body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        comment = []
        j = node.lineno - 2  # the line above, 0-based
        while j >= 0 and lines[j].lstrip().startswith("#:"):
            comment.insert(0, lines[j].lstrip()[2:].strip())
            j -= 1
        if comment:
            return "\n".join(comment)
        following = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            return inspect.cleandoc(following.value.value)
    # A name the module re-exports: the documentation sits where it is defined.
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if any((a.asname or a.name) == name for a in node.names):
                return attribute_doc(node.module, name)
    return ""


def docstring(module_name: str, name: str) -> str:
    """The documentation a reader of ``module_name.name`` gets ('' when there is none)."""
    obj = getattr(importlib.import_module(module_name), name)
    if kind(obj) == "data":  # an instance's __doc__ is its type's: not documentation
        return attribute_doc(module_name, name)
    # A callable without a docstring of its own may be a documented alias (``Method =
    # Literal[...]`` with a ``#:`` comment): typing's special forms are callable.
    return inspect.getdoc(obj) or attribute_doc(module_name, name)


def page_modules() -> set[str]:
    """The modules with a page of their own."""
    return set(API_MODULES)


def first_class_name(cls: object) -> str:
    """The first public name of a class over the pages, in :data:`API_MODULES` order."""
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            if getattr(module, name) is cls:
                return f"{module_name}.{name}"
    raise ValueError(f"{cls!r} is not public")


def api_rst(module_name: str) -> str:
    """reStructuredText for one module's page: a summary table, then every public name.

    Submodules listed in ``__all__`` show their docstring here, or link to their own page
    when they have one.
    """
    module = importlib.import_module(module_name)
    names = public_names(module_name)
    lines = [
        f".. automodule:: {module_name}",
        "   :no-members:",
        "",
        f".. currentmodule:: {module_name}",
        "",
        ".. autosummary::",
        "   :nosignatures:",
        "",
    ]
    lines += [f"   {name}" for name in names]
    lines.append("")
    for name in names:
        obj = getattr(module, name)
        full = f"{module_name}.{name}"
        k = kind(obj)
        if k == "module":
            if full in page_modules():
                lines += [f".. rubric:: {full}", "", f"Its own page: :doc:`{full}`.", ""]
            else:
                lines += [f".. automodule:: {full}", "   :no-members:", ""]
        elif k == "class" and first_class_name(obj) != full:
            # one class under two public names (torchseq.train.History is jaxseq.train's):
            # documented once, the other name points there
            first = first_class_name(obj)
            lines += [f".. py:class:: {name}", f"   :module: {module_name}", ""]
            lines += [f"   The same class as :class:`{first}`.", ""]
        elif k == "class":
            lines += [f".. autoclass:: {full}", "   :members:", ""]
        elif k == "function":
            lines += [f".. autofunction:: {full}", ""]
        else:
            lines += [f".. autodata:: {full}", "   :no-value:", ""]
    return "\n".join(lines)


def coverage_errors() -> list[str]:
    """Every public name without a docstring, one message each (empty: all documented)."""
    errors = []
    for module_name in API_MODULES:
        for name in public_names(module_name):
            if not docstring(module_name, name).strip():
                errors.append(f"{module_name}.{name}: public (in __all__) but has no docstring")
    return errors
