"""The docs run as a reader runs them: in a fresh interpreter, without the suite's settings.

Each page runs in its own fresh ``python -W error`` process with JAX's default
configuration (no ``JAX_*`` environment variables from the test run, no ``XLA_FLAGS``,
no x64, default dtype promotion), one process per page. The suite's own configuration
(``conftest.py``: x64 enabled) would hide a block that builds float64 parameters without
enabling x64, which in a reader's fresh Python warns and silently runs in float32. One
setting is stricter than the default: rank promotion raises
(``JAX_NUMPY_RANK_PROMOTION=raise``), so doc code broadcasts explicitly, as the
package's own code does (a block that passes under it passes under the default, which
only allows more).

* ``docs/*.md``: the page's blocks run top to bottom in one namespace, as a reader who
  pastes them into one session in order.
  A page that needs float64 says so itself, with ``jax.config.update("jax_enable_x64",
  True)`` at the top of its first block.
* ``README.md``: every block runs alone, in a namespace of its own (the process is shared
  only to keep this fast), because a README reader copies one block, not the page.

The block conventions are ``tests/test_docs.py``'s: ```` ```python no-run ```` /
```` skip ```` blocks are not run; a ```` ```text ```` block right after a python block
is its expected output (``...`` is a wildcard). Any warning is an error.

``EXCLUDED`` lists the pages left out, with the reason (the tutorial: its sections run
fresh one by one in ``tests/test_tutorial_sections.py``).

Run one page by hand: ``python tests/test_docs_fresh.py docs/training.md``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ISOLATED = {"README.md"}  # pages whose blocks each run alone, in a namespace of their own
EXCLUDED: dict[str, str] = {  # page -> why it is not run here
    "docs/tutorial.md": "run section by section, each fresh, with and without torch, by "
    "tests/test_tutorial_sections.py (and top to bottom as a notebook by test_docs_site.py)",
}
COMPILE_CACHE_VARS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
TIMEOUT_S = 900  # per page; a loaded 2-core machine is slow to compile

# The child: reads the blocks as JSON on stdin, runs them, and writes one JSON result per
# block to the file named by argv[1] (stdout belongs to the blocks). It imports nothing
# but the standard library before the first block, so the blocks see a fresh interpreter.
_CHILD = r"""
import contextlib, io, json, sys, traceback
blocks = json.load(sys.stdin)
results = []
shared = {"__name__": "__main__"}
for b in blocks:
    ns = {"__name__": "__main__"} if b["isolated"] else shared
    code = compile("\n" * (b["line"] - 1) + b["code"], b["path"], "exec")
    out = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(out):
            exec(code, ns)
    except BaseException:
        error = traceback.format_exc()
    results.append({"stdout": out.getvalue(), "error": error})
    with open(sys.argv[1], "w") as f:
        json.dump(results, f)
    if error is not None:
        break
"""


def _parse_blocks(text: str):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_docs import parse_blocks
    finally:
        sys.path.pop(0)
    return parse_blocks(text)


def _output_matches(expected: str, got: str) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_docs import output_matches
    finally:
        sys.path.pop(0)
    return output_matches(expected, got)


def fresh_env() -> dict[str, str]:
    """The environment without the settings a test run may carry (JAX_*, XLA_FLAGS, ...),
    with rank promotion raising (see the module docstring)."""
    drop = ("JAX_", "XLA_FLAGS", "PYTHONWARNINGS", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # The suite's shared compilation cache (conftest.py) changes no value, only how often
    # the same program is compiled: kept.
    cache = {k: os.environ[k] for k in COMPILE_CACHE_VARS if k in os.environ}
    return {**env, **cache, "JAX_NUMPY_RANK_PROMOTION": "raise"}


def run_fresh(
    payload: list[dict],
    result_file: pathlib.Path,
    *,
    prelude: str = "",
    cwd: pathlib.Path = ROOT,
    timeout: float = TIMEOUT_S,
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``payload``'s blocks in one fresh ``python -W error`` (``prelude`` first, e.g.
    a module blocker); the process and one ``{"stdout", "error"}`` per block that ran."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", prelude + _CHILD, str(result_file)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=fresh_env(),
        timeout=timeout,
    )
    results = json.loads(result_file.read_text()) if result_file.exists() else []
    return proc, results


def run_page(path: pathlib.Path, tmp: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Run the python blocks of ``path`` in one fresh ``python -W error``; the failures."""
    rel = path.relative_to(root).as_posix()
    blocks = [b for b in _parse_blocks(path.read_text()) if b.runs]
    payload = [
        {"code": b.code, "line": b.line, "path": str(path), "isolated": rel in ISOLATED}
        for b in blocks
    ]
    proc, results = run_fresh(payload, tmp / "results.json", cwd=root)
    failures = []
    for n, (block, res) in enumerate(zip(blocks, results, strict=False)):
        where = f"{rel}: python block {n} (line {block.line})"
        if res["error"] is not None:
            failures.append(f"{where} raised in a fresh process:\n{res['error']}")
        elif block.expected is not None and not _output_matches(block.expected, res["stdout"]):
            failures.append(
                f"{where} printed\n{res['stdout']}\nbut the ```text block after it expects\n"
                f"{block.expected}"
            )
    if proc.returncode != 0 and not failures:
        failures.append(f"{rel}: the fresh process exited {proc.returncode}:\n{proc.stderr}")
    elif len(results) < len(blocks) and not failures:
        failures.append(f"{rel}: only {len(results)} of {len(blocks)} blocks ran:\n{proc.stderr}")
    return failures


def pages() -> list[pathlib.Path]:
    files = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    return [
        f
        for f in files
        if f.is_file()
        and f.relative_to(ROOT).as_posix() not in EXCLUDED
        and any(b.runs for b in _parse_blocks(f.read_text()))
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        problems = run_page((ROOT / sys.argv[1]).resolve(), pathlib.Path(d))
    print("\n\n".join(problems) or f"{sys.argv[1]}: every block ran fresh")
    sys.exit(1 if problems else 0)
else:
    import pytest

    @pytest.mark.parametrize("path", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
    def test_page_runs_fresh(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
        failures = run_page(path, tmp_path)
        if failures:
            pytest.fail("\n\n".join(failures), pytrace=False)

    def test_child_sees_default_jax_config(tmp_path: pathlib.Path) -> None:
        """The process really is fresh: x64 off, warnings are errors, README blocks alone."""
        page = tmp_path / "page.md"
        page.write_text(
            "```python\nimport jax, warnings\nprint(jax.config.jax_enable_x64)\n```\n\n"
            "```text\nFalse\n```\n\n"
            "```python\nwarnings.warn('boom')\n```\n"
        )
        failures = run_page(page, tmp_path, root=tmp_path)
        assert len(failures) == 1 and "UserWarning: boom" in failures[0], failures
        readme = tmp_path / "README.md"
        readme.write_text("```python\nx = 1\n```\n\n```python\nprint(x)\n```\n")
        failures = run_page(readme, tmp_path, root=tmp_path)
        assert len(failures) == 1 and "NameError" in failures[0], failures
