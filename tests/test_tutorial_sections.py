"""Every section of ``docs/tutorial.md`` runs alone, with and without torch.

The tutorial promises that each ``## `` section stands on its own: its own imports, its
own seed, no name or random state carried over from an earlier section. Here the page
is split at its ``## `` headings and each section's python blocks run alone, in order,
in a fresh ``python -W error`` with JAX's default configuration (the child process and
environment of ``tests/test_docs_fresh.py``), one process per section:

* with torch (when it is installed): each block's stdout must equal the ```` ```text ````
  block after it, compared as in ``tests/test_docs.py`` (``...`` is a wildcard);
* without torch (``import torch`` made to fail, as ``tests/test_packaging.py`` does):
  every section still runs to the end, and blocks whose code does not mention torch
  still print their expected output. Blocks that do mention torch print which reference
  they compared with, so their output is not compared on this track.

The text before the first ``## `` heading is section 0. Sections run one after the
other (the machine's cores are for the compilations inside each). Run one section by
hand: ``python tests/test_tutorial_sections.py 5`` (``--no-torch`` for the NumPy track).
"""

from __future__ import annotations

import pathlib
import re
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
TIMEOUT_S = 600  # per section, on a loaded 2-core machine

sys.path.insert(0, str(ROOT / "tests"))
try:
    from test_docs import Block, output_matches, parse_blocks
    from test_docs_fresh import run_fresh
    from test_packaging import BLOCK_TORCH
finally:
    sys.path.pop(0)

_HEADING = re.compile(r"^## (?P<title>.+)$")


def sections(text: str) -> list[tuple[str, list[Block]]]:
    """(title, runnable blocks) of each ``## `` section; the text before the first is 'intro'."""
    blocks = parse_blocks(text)
    lines = text.splitlines()
    inside = set()  # 0-based lines of fenced code, where a '## ' is not a heading
    for b in blocks:
        inside.update(range(b.line - 2, b.line + b.code.count("\n")))
    starts = [(0, "intro")]
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and i not in inside:
            starts.append((i, m.group("title")))
    result = []
    for k, (start, title) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        mine = [b for b in blocks if b.runs and start < b.line <= end]
        result.append((title, mine))
    return result


def _section_ids() -> list[str]:
    return [title.split(".")[0] if title[0].isdigit() else title for title, _ in _sections()]


def _sections() -> list[tuple[str, list[Block]]]:
    return [(t, b) for t, b in sections(TUTORIAL.read_text()) if b]


def run_section(title: str, blocks: list[Block], no_torch: bool) -> list[str]:
    """Run one section's blocks alone in a fresh process; the failures, as messages."""
    payload = [
        {"code": b.code, "line": b.line, "path": str(TUTORIAL), "isolated": False} for b in blocks
    ]
    track = "without torch" if no_torch else "with torch"
    prelude = BLOCK_TORCH if no_torch else ""
    with tempfile.TemporaryDirectory() as tmp:
        proc, results = run_fresh(
            payload, pathlib.Path(tmp) / "results.json", prelude=prelude, timeout=TIMEOUT_S
        )
    failures = []
    for block, res in zip(blocks, results, strict=False):
        where = f"docs/tutorial.md section {title!r}, {track}, block at line {block.line}"
        if res["error"] is not None:
            failures.append(f"{where} raised when run alone:\n{res['error']}")
            continue
        check = block.expected is not None and not (no_torch and "torch" in block.code)
        if check and not output_matches(block.expected, res["stdout"]):
            failures.append(
                f"{where} printed\n{res['stdout']}\nbut the ```text block after it expects\n"
                f"{block.expected}"
            )
    if len(results) < len(blocks) and not failures:
        failures.append(
            f"section {title!r}, {track}: the process ended (code {proc.returncode}) after "
            f"{len(results)} of {len(blocks)} blocks:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return failures


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("no_torch", [False, True], ids=["torch", "no-torch"])
@pytest.mark.parametrize("index", range(len(_sections())), ids=_section_ids())
def test_section_runs_alone(index: int, no_torch: bool) -> None:
    if not no_torch and not _torch_installed():
        pytest.skip("torch is not installed: the no-torch track covers this section")
    title, blocks = _sections()[index]
    failures = run_section(title, blocks, no_torch)
    assert not failures, "\n\n".join(failures)


def test_every_core_section_has_its_own_imports_and_seed() -> None:
    """No section leans on an earlier one: each imports what it uses, and seeds locally."""
    for title, blocks in _sections():
        code = "".join(b.code for b in blocks)
        assert "torch.manual_seed" not in code and "np.random.seed" not in code, (
            f"section {title!r} uses a global random state"
        )
        if "rng." in code:
            assert "np.random.default_rng(" in code, (
                f"section {title!r} draws from rng it did not make"
            )


def test_sections_split_at_headings_outside_code() -> None:
    text = "intro\n```python\nx = 1\n```\n## A\n```python\n## not a heading\n```\n## B\ntext\n"
    got = [(t, [b.line for b in bs]) for t, bs in sections(text)]
    assert got == [("intro", [3]), ("A", [7]), ("B", [])]


if __name__ == "__main__":  # python tests/test_tutorial_sections.py [--no-torch] [index ...]
    no_torch = "--no-torch" in sys.argv[1:]
    wanted = [a for a in sys.argv[1:] if a != "--no-torch"]
    ids = _section_ids()
    for k, (title, blocks) in enumerate(_sections()):
        if wanted and ids[k] not in wanted:
            continue
        failures = run_section(title, blocks, no_torch)
        print(f"{ids[k]:>6}: {'ok' if not failures else 'FAILED'}")
        for f in failures:
            print(f)
