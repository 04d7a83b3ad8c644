"""The docs cannot rot: the conventions of their code blocks, their parser, and docstrings.

Every ```python block of ``docs/*.md`` and ``README.md`` runs in
``tests/test_docs_fresh.py``, each page in a fresh ``python -W error`` as a reader runs
it (the tutorial: section by section in ``tests/test_tutorial_sections.py``). This file
holds what those runs share, the parser and the output comparison, with their tests, and
the checks of the public docstrings.

Conventions for code blocks in the markdown files
-------------------------------------------------

* A fenced block whose info string starts with ``python`` is run, e.g. ```` ```python ````.
* The blocks of one file run in order, in one shared namespace, as a reader who pastes
  them into one Python session would run them (the README's blocks each alone: a README
  reader copies one block). One file is one test
  (``test_page_runs_fresh[docs/training.md]``), and an error names the file, the block
  and the markdown line.
* ```` ```python no-run ```` (any info string ``python`` followed by ``no-run`` or
  ``skip``) is shown but not run: for snippets that need a GPU, the network, or that
  only show an API shape.
* Expected output: a fenced block with info string ``text`` that *immediately* follows
  a python block (only blank lines between) is the printed output of that block. The
  block's stdout must equal it, after stripping trailing whitespace on each line and
  blank lines at both ends. ``...`` is a wildcard matching any text, newlines included
  (doctest's ELLIPSIS), for output that varies from run to run, such as timings.
  A python block without a ``text`` block after it may print anything.
* Blocks run with JAX's default configuration (a page that needs float64 enables it
  itself) except that rank promotion raises, so doc code broadcasts explicitly
  (``b[None, :]``), as the package's own code does; any warning is an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import pydoc
import re

import pytest

import jaxseq
import jaxseq.nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP_WORDS = {"no-run", "skip"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclasses.dataclass
class Block:
    """One fenced code block: its info string, text and first line (1-based) in the file."""

    info: str
    code: str
    line: int  # line number of the first line of code
    expected: str | None = None  # the following ```text block, if any

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def runs(self) -> bool:
        words = self.info.split()
        return self.lang == "python" and not SKIP_WORDS.intersection(words[1:])


def parse_blocks(text: str) -> list[Block]:
    """All fenced blocks of a markdown text, with ``text`` blocks attached as expected output."""
    lines = text.splitlines()
    blocks: list[Block] = []
    # index into `blocks` of the last block, and whether only blank lines followed it
    adjacent = False
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                adjacent = False
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            j += 1
        body = "\n".join(lines[start:j])
        block = Block(info, body + "\n" if body else "", start + 1)
        if block.lang == "text" and adjacent and blocks and blocks[-1].lang == "python":
            blocks[-1].expected = block.code
        else:
            blocks.append(block)
        adjacent = True
        i = j + 1
    return blocks


def _normalize(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip("\n").splitlines()).strip("\n")


def output_matches(expected: str, got: str) -> bool:
    """``got == expected`` up to trailing whitespace, with ``...`` matching anything."""
    want, got = _normalize(expected), _normalize(got)
    if "..." not in want:
        return want == got
    pieces = want.split("...")
    first, last = pieces[0], pieces[-1]
    if not got.startswith(first) or not got.endswith(last) or len(first) + len(last) > len(got):
        return False
    pos, end = len(first), len(got) - len(last)
    for piece in pieces[1:-1]:
        k = got.find(piece, pos, end)
        if k < 0:
            return False
        pos = k + len(piece)
    return True


# --------------------------------------------------------------------------- the collector itself

_SAMPLE = """\
Intro.

```python
x = 2
print(x + 1)
```

```text
3
```

```python no-run
raise RuntimeError("not run")
```

```python
print(f"took {0.123:.3f} s")
print(x)
```
```text
took ... s
2
```

```bash
echo not python
```

```python
print("no expected output")
```
"""


def test_parse_blocks_attaches_text_and_skips() -> None:
    blocks = parse_blocks(_SAMPLE)
    assert [(b.lang, b.runs, b.line) for b in blocks] == [
        ("python", True, 4),
        ("python", False, 13),
        ("python", True, 17),
        ("bash", False, 26),
        ("python", True, 30),
    ]
    assert blocks[0].expected == "3\n"
    assert blocks[1].expected is None
    assert blocks[2].expected == "took ... s\n2\n"
    assert blocks[4].expected is None


def test_text_block_after_prose_is_not_expected_output() -> None:
    blocks = parse_blocks("```python\nprint(1)\n```\nsome prose\n```text\n1\n```\n")
    assert [b.lang for b in blocks] == ["python", "text"]
    assert blocks[0].expected is None


@pytest.mark.parametrize(
    ("expected", "got", "ok"),
    [
        ("3", "3\n", True),
        ("3", "4\n", False),
        ("a  \nb\n\n", "\na\nb   \n", True),
        ("took ... s\n2", "took 0.123 s\n2\n", True),
        ("took ... s\n2", "took 0.123 ms\n2\n", False),
        ("a\n...\nz", "a\nb\nc\nz\n", True),
        ("a...a", "a", False),  # the two ends may not overlap
        ("...", "anything\nat all", True),
        ("x ... y ... z", "x 1 y 2 z", True),
        ("x ... y ... z", "x 1 z 2 y", False),
    ],
)
def test_output_matches(expected: str, got: str, ok: bool) -> None:
    assert output_matches(expected, got) is ok


# --------------------------------------------------------------------------- docstrings
# `help(jaxseq.lstm)` must read well: every public name has a docstring; every public
# function and class has a `>>>` example (run by --doctest-modules); sequence functions
# and modules state their shapes in the (T, N, ...) notation; cells state their equations.

SEQUENCE_NAMES = {"rnn", "lstm", "gru", "masked_scan", "nn.RNN", "nn.LSTM", "nn.GRU"}
CELL_EQUATIONS = {  # a fragment of each cell's equations that its docstring must show
    "rnn_cell": ["h' = act(", "tanh", "relu"],
    "lstm_cell": ["sigmoid(", "c' = f * c + i * g", "h' = o * tanh(c')"],
    "gru_cell": ["n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))", "h' = (1 - z) * n + z * h"],
}
# Known gaps in files other than cells.py / scan.py, as strict xfails: fixing one makes
# its test XPASS, which fails, so the entry must then be deleted from this table.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _public() -> dict[str, object]:
    names = {name: getattr(jaxseq, name) for name in jaxseq.__all__}
    names |= {f"nn.{name}": getattr(jaxseq.nn, name) for name in jaxseq.nn.__all__}
    return names


def _checks() -> list:
    params = []
    for name, obj in _public().items():
        kinds = ["docstring"]
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and name != "nn.RNNBase":
            kinds.append("example")
        if name in SEQUENCE_NAMES:
            kinds.append("shapes")
        if name in CELL_EQUATIONS:
            kinds.append("equations")
        for kind in kinds:
            marks = ()
            if (name, kind) in KNOWN_GAPS:
                marks = pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(name, kind)])
            params.append(pytest.param(name, kind, marks=marks, id=f"{name}-{kind}"))
    return params


@pytest.mark.parametrize(("name", "kind"), _checks())
def test_public_docstring(name: str, kind: str) -> None:
    obj = _public()[name]
    doc = inspect.getdoc(obj) or ""
    if kind == "docstring":
        assert len(doc.split()) >= 8, f"{name}: docstring missing or shorter than a sentence"
        # help() shows it: the rendered page contains the docstring's first line
        assert doc.splitlines()[0].strip() in pydoc.render_doc(obj, renderer=pydoc.plaintext)
    elif kind == "example":
        assert ">>>" in doc, f"{name}: no >>> example in the docstring"
    elif kind == "shapes":
        assert "(T, N" in doc or "(N, T" in doc, f"{name}: docstring states no (T, N, ...) shapes"
    elif kind == "equations":
        missing = [frag for frag in CELL_EQUATIONS[name] if frag not in doc]
        assert not missing, f"{name}: docstring lacks the equations {missing}"
        assert "(N, I)" in doc and "(N, H)" in doc, f"{name}: docstring lacks (N, I)/(N, H) shapes"
    else:  # pragma: no cover
        raise AssertionError(kind)
