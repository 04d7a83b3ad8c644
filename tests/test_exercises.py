"""The exercises (``exercises/``): every part's solution passes its check, wrong answers
fail it, and the skeletons are the solutions with the student's parts taken out.

* A part's skeleton is loaded and *filled*: the functions the student writes are
  replaced by the solution's, and the part's check runs on the result. The rest of the
  skeleton (the given code, e.g. part 10's ``custom_vjp`` wiring) is the skeleton's own.
* Each check compares against float64 NumPy loops written in ``exercises/check.py``; a
  deliberately wrong answer per part (the LSTM's forget gate dropped, the GRU's other
  reset variant, an output-only ``where`` with NaN padding, ...) must make it print FAIL.
* The solutions also run as a student runs them, at JAX's defaults (float32, standard
  dtype promotion), in a subprocess.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests._jit import JIT

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_exercises_check", ROOT / "exercises" / "check.py")
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = check  # dataclasses look their module up there
_spec.loader.exec_module(check)

NUMBERS = [pt.number for pt in check.PARTS]


def filled(number: int, **wrong):
    """Part ``number``'s skeleton with the solution's functions put in (or ``wrong`` ones)."""
    pt = check.part(number)
    skeleton, solution = check.load(pt.path()), check.load(pt.path(solutions=True))
    for name in pt.names:
        setattr(skeleton, name, wrong.get(name, getattr(solution, name)))
    return skeleton


def run(number: int, module, capsys) -> tuple[bool, str]:
    ok = check.check_part(number, vars(module))
    return ok, capsys.readouterr().out


def _lines(out: str, verdict: str) -> list[str]:
    """The comparison lines that end in ``verdict`` (not the part's summary line)."""
    lines = out.splitlines()
    return [s for s in lines if s.rstrip().endswith(verdict) and not s.lstrip().startswith("part ")]


# --------------------------------------------------------------------------- (a) solutions


@pytest.mark.parametrize("number", NUMBERS)
def test_filled_skeleton_passes_its_check(number: int, capsys) -> None:
    ok, out = run(number, filled(number), capsys)
    assert ok, out
    assert not _lines(out, "FAIL") and len(_lines(out, "OK")) >= 3, out
    diffs = [float(d) for d in re.findall(r"max \|diff\| = (\S+)", out)]
    assert diffs and max(diffs) < 1e-13, out  # float64 references: exact, not "close"
    mags = [float(m) for m in re.findall(r"\|ref\| <= +(\S+)", out)]
    assert min(mags) > 0.1, out  # the references are not trivially zero


@pytest.mark.parametrize("number", NUMBERS)
def test_skeleton_is_the_solution_without_the_students_code(number: int, capsys) -> None:
    pt = check.part(number)

    def shape(path: pathlib.Path) -> tuple[str, list[str]]:
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree, clean=False) or ""
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in pt.names:
                node.body = node.body[:1]  # the docstring stays: it is the task
        return doc, [ast.dump(node) for node in tree.body[1:]]

    (doc_s, code_s), (doc_a, code_a) = shape(pt.path()), shape(pt.path(solutions=True))
    assert code_s == code_a  # the given code, signatures and docstrings agree
    questions = re.findall(r"^\d\. ", doc_a, re.M)
    assert len(questions) >= 3 and doc_a.count("   Answer: ") == len(questions)
    assert "Answer" not in doc_s and len(re.findall(r"^\d\. ", doc_s, re.M)) == len(questions)
    assert f"exercises/solutions/{pt.stem}.py" in doc_s
    ok, out = run(number, check.load(pt.path()), capsys)  # the skeleton as given
    assert not ok and "not implemented yet" in out, out


# --------------------------------------------------------------------------- (b) wrong answers


def _sol(number: int):
    return check.load(check.part(number).path(solutions=True))


def _lstm_no_forget_gate(p, carry, x_t):
    h, c = carry
    gates = x_t @ p["weight_ih"].T + h @ p["weight_hh"].T + (p["bias_ih"] + p["bias_hh"])[None, :]
    i, _, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(i) * jnp.tanh(g)  # exact from c = 0
    return (jax.nn.sigmoid(o) * jnp.tanh(c), c), jax.nn.sigmoid(o) * jnp.tanh(c)


def _masked_scan_output_where_only(cell, p, carry, xs, lengths):
    """The tutorial's first masked_scan: right values, NaN gradients with NaN padding."""

    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]
        new_c, y = cell(p, c, x_t)
        new_c = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_c, c)
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    return jax.lax.scan(step, carry, (jnp.arange(xs.shape[0], dtype=lengths.dtype), xs))


def _masked_scan_no_freeze(cell, p, carry, xs, lengths):
    def step(c, inputs):
        t, x_t = inputs
        valid = (t < lengths)[:, None]
        new_c, y = cell(p, c, jnp.where(valid, x_t, jnp.zeros_like(x_t)))
        return new_c, jnp.where(valid, y, jnp.zeros_like(y))

    return jax.lax.scan(step, carry, (jnp.arange(xs.shape[0], dtype=lengths.dtype), xs))


def _bidirectional_flipped(cell, p_fwd, p_rev, carry, xs, lengths):
    """The reverse direction as a reversed scan without the mask: starts on padding."""
    sol = _sol(7)
    c_f, y_f = sol.masked_scan(cell, p_fwd, carry, xs, lengths)
    c_r, y_r = jax.lax.scan(lambda c, x: cell(p_rev, c, x), carry, xs, reverse=True)
    return jnp.concatenate([y_f, y_r], axis=-1), (c_f, c_r)


def _stack_direction_major(*args, **kwargs):
    out, (h_n, c_n) = _sol(8).lstm_stack(*args, **kwargs)
    order = [0, 2, 1, 3]  # l0 fwd, l1 fwd, l0 rev, l1 rev: not torch's order
    return out, (h_n[jnp.asarray(order)], c_n[jnp.asarray(order)])


def _predict_last_output(params, xs, lengths):
    sol = _sol(9)
    N, H = xs.shape[1], params["weight_hh"].shape[0]
    _, ys = sol.masked_scan(sol.elman_cell, params, jnp.zeros((N, H), xs.dtype), xs, lengths)
    return (ys[-1] @ params["head.weight"].T + params["head.bias"][None, :])[:, 0]


def _bwd_without_carry(residuals, cotangents):
    """The backward scan that drops what flows back from later steps (dh = da W_hh)."""
    p, xs, h0, hs = residuals
    no_recurrence = p | {"weight_hh": jnp.zeros_like(p["weight_hh"])}
    return _sol(10).rnn_scan_bwd((no_recurrence, xs, h0, hs), cotangents)


WRONG = {
    "elman: b_hh left out": (
        1,
        {
            "elman_cell": lambda p, h, x: (
                (jnp.tanh(x @ p["weight_ih"].T + p["bias_ih"][None, :] + h @ p["weight_hh"].T),) * 2
            )
        },
        "elman_cell: new carry",
    ),
    "rnn_scan: a Python loop (right values, unrolled)": (
        2,
        {"rnn_scan": lambda p, xs, h0: _python_loop_scan(p, xs, h0)},
        "rnn_scan: one lax.scan",
    ),
    "lstm: forget gate dropped": (3, {"lstm_cell": _lstm_no_forget_gate}, "lstm_cell: c'"),
    "gru: the other reset variant": (
        4,
        {"gru_cell": lambda p, h, x, reset_after=True: _sol(4).gru_cell(p, h, x, not reset_after)},
        "gru_cell: h', reset after",
    ),
    "length_mask: t <= length": (
        5,
        {
            "length_mask": lambda lengths, T: (
                jnp.arange(T, dtype=lengths.dtype)[:, None] <= lengths[None, :]
            )
        },
        "length_mask: (T, N)",
    ),
    "masked_scan: carry not frozen": (
        6,
        {"masked_scan": _masked_scan_no_freeze},
        "masked_scan (LSTM): h_n",
    ),
    "reverse_padded: the whole padded array flipped": (
        7,
        {"reverse_padded": lambda xs, lengths: xs[::-1]},
        "reverse_padded:",
    ),
    "bidirectional: reverse scan without the mask": (
        7,
        {"bidirectional": _bidirectional_flipped},
        "bidirectional: reverse half",
    ),
    "lstm_stack: h_n direction-major": (
        8,
        {"lstm_stack": _stack_direction_major},
        "lstm_stack: h_n",
    ),
    "predict: ys[-1] instead of h_n": (9, {"predict": _predict_last_output}, "predict:"),
    "backward scan: dh_T not carried": (
        10,
        {"rnn_scan_bwd": _bwd_without_carry},
        "backward scan: d/d weight_hh",
    ),
    "combine: steps in the wrong order": (
        11,
        {"combine": lambda first, second: _sol(11).combine(second, first)},
        "combine(s1, s2)",
    ),
}


def _python_loop_scan(p, xs, h0):
    sol, h, ys = _sol(2), h0, []
    for x_t in xs:
        h, y = sol.elman_cell(p, h, x_t)
        ys.append(y)
    return h, jnp.stack(ys)


@pytest.mark.parametrize("case", list(WRONG))
def test_wrong_answer_fails_its_check(case: str, capsys) -> None:
    number, wrong, failing_line = WRONG[case]
    ok, out = run(number, filled(number, **wrong), capsys)
    assert not ok, out
    assert any(line.strip().startswith(failing_line) for line in _lines(out, "FAIL")), out
    assert f"part {number:02d}: FAIL" in out


def test_output_where_only_is_right_on_values_and_wrong_on_gradients(capsys) -> None:
    """The double-where trap as the check shows it: forward lines OK, gradient lines FAIL."""
    _, out = run(6, filled(6, masked_scan=_masked_scan_output_where_only), capsys)
    fails, oks = _lines(out, "FAIL"), _lines(out, "OK")
    assert fails and all("NaN in padding" in line for line in fails), out
    assert sum("masked_scan (LSTM)" in line for line in oks) == 3, out
    assert "part 06: FAIL" in out


# --------------------------------------------------------------------------- (c) the VJP


def test_backward_scan_vjp_matches_jax_grad() -> None:
    sol = _sol(10)
    rng = np.random.default_rng(0)
    T, N, I, H = 7, 3, 2, 4
    p = {
        k: jnp.asarray(rng.uniform(-0.7, 0.7, s))
        for k, s in {
            "weight_ih": (H, I),
            "weight_hh": (H, H),
            "bias_ih": (H,),
            "bias_hh": (H,),
        }.items()
    }
    xs, h0 = jnp.asarray(rng.standard_normal((T, N, I))), jnp.asarray(rng.standard_normal((N, H)))
    assert xs.dtype == jnp.float64

    def loss(f, p, xs, h0):
        h_T, ys = f(p, xs, h0)
        return jnp.sum(jnp.sin(ys) * ys) + jnp.sum(h_T**3)

    ours = JIT(jax.grad(lambda *a: loss(sol.rnn_scan_vjp, *a), argnums=(0, 1, 2)))(p, xs, h0)
    auto = JIT(jax.grad(lambda *a: loss(sol.rnn_scan, *a), argnums=(0, 1, 2)))(p, xs, h0)
    worst = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(auto), strict=True)
    )
    assert worst < 1e-12
    assert min(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(auto)) > 0.1


# --------------------------------------------------------------------------- as a student runs it


def test_solutions_run_as_scripts_at_jax_defaults() -> None:
    """``python exercises/check.py --solutions``: float32 by default, standard promotion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "exercises" / "check.py"), "--solutions", "6", "10"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout and proc.stdout.count("all OK") == 2, proc.stdout


def test_docs_page_shows_what_the_check_prints(capsys) -> None:
    """docs/exercises.md shows part 1's output: the same lines, numbers aside."""
    _, out = run(1, filled(1), capsys)
    page = (ROOT / "docs" / "exercises.md").read_text()
    shown = page.split("```text\n", 1)[1].split("```", 1)[0]

    def norm(s: str) -> list[str]:
        s = re.sub(r"\d\.\de[-+]\d\d|\d+\.\d+", "#", s)
        return [" ".join(line.split()) for line in s.strip().splitlines()]

    assert norm(shown) == norm(out)
