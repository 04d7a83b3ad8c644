"""jaxseq installs and runs without torch; the wheel says so.

* ``import jaxseq`` (and every jaxseq module) never imports torch, checked in a fresh
  interpreter where torch *is* installed;
* in a fresh interpreter where ``import torch`` fails (as after ``pip install .``), every
  jaxseq module still imports and the README's JAX-only quickstart runs, while
  ``import torchseq`` fails with a message that names the ``torch`` extra;
* a wheel built with the standard build frontend requires torch only under the
  ``torch`` extra.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Makes ``import torch`` (and torch.*) fail as it does where torch is not installed.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)

IMPORT_ALL = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import jaxseq
    names = sorted(m.name for m in pkgutil.walk_packages(jaxseq.__path__, "jaxseq."))
    for name in names:
        importlib.import_module(name)
    print("imported", len(names), "modules")
    """
)

ASSERT_NO_TORCH = textwrap.dedent(
    """
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    assert not loaded, f"torch modules were imported: {loaded[:5]}"
    """
)


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _quickstart_blocks() -> str:
    """The python blocks of the README section "Quickstart (JAX only)"."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quickstart \(JAX only\)\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Quickstart (JAX only)' section"
    blocks = re.findall(r"^```python\n(.*?)^```", match.group(1), re.S | re.M)
    assert blocks, "the JAX-only quickstart has no python block"
    return "\n".join(blocks)


def test_import_jaxseq_does_not_import_torch():
    # torch is installed here (the dev environment); importing jaxseq must not load it.
    r = _run(IMPORT_ALL + ASSERT_NO_TORCH)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported ")
    assert int(r.stdout.split()[1]) >= 10  # the walk found the package's modules


def test_jaxseq_runs_where_torch_cannot_be_imported():
    code = BLOCK_TORCH + IMPORT_ALL + _quickstart_blocks() + ASSERT_NO_TORCH
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]


def test_torchseq_without_torch_names_the_extra():
    r = _run(BLOCK_TORCH + "import torchseq")
    assert r.returncode != 0
    assert "ImportError: torchseq needs PyTorch" in r.stderr
    assert "jaxseq[torch]" in r.stderr


def test_wheel_requires_torch_only_in_the_extra(tmp_path):
    pytest.importorskip("build")
    # Build from a copy, so that build/ and *.egg-info never race with the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("jaxseq", "torchseq", "seqfile"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = tmp_path.glob("jaxseq-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    requires = [
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    plain = [req for req in requires if "extra ==" not in req]
    names_plain = {re.split(r"[ <>=!;\[]", req)[0].lower() for req in plain}
    assert names_plain == {"jax", "flax", "optax", "numpy", "safetensors", "typing_extensions"}, (
        plain
    )
    torch_reqs = [req for req in requires if req.lower().startswith("torch")]
    assert torch_reqs and all('extra == "torch"' in req for req in torch_reqs), torch_reqs
    for package in ("jaxseq", "torchseq", "seqfile"):  # every module, subpackages included
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
        assert sources and sources <= set(names), sorted(sources - set(names))
    assert not any(n.startswith(("tests/", "parity_tests/", "examples/")) for n in names)


def _jaxseq_import_graph() -> dict[str, set[str]]:
    """``{module: modules of jaxseq it imports}``, from every import statement of the
    package (module level and function level; docstrings are not code)."""
    import ast

    root = pathlib.Path(__file__).resolve().parent.parent / "jaxseq"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule where one exists.
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [node.module]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    graph = _jaxseq_import_graph()
    assert graph["jaxseq.interop.convert"] >= {"jaxseq.interop.state_dict"}  # the graph is real
    # The package's own __init__ imports every public module; a submodule importing
    # ``jaxseq`` itself would close a cycle through it, so "jaxseq" stays in the graph.
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:  # depth-first, with the path on the stack
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not cycles, f"import cycles in jaxseq: {cycles[:5]}"
