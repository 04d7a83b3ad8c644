"""jaxseq.testing.check_parity: passes on equal models, fails loudly (naming the culprit)
on unequal ones, reports the right numbers, and rejects bad arguments in Python."""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxseq
import jaxseq.testing as jt
from jaxseq import models as jm
from torchseq import models as tm

RNG = np.random.default_rng(0)
N, T, I, H = 3, 6, 4, 5
X = RNG.normal(size=(N, T, I))  # float64
LENGTHS = np.array([6, 2, 4])  # int64: stays int on both sides
TOKENS = RNG.integers(0, 9, size=(N, T))


def classifier_pair(dtype=np.float64, **kw):
    torch.manual_seed(0)
    t = tm.SequenceClassifier(I, 3, hidden_size=H, **kw).to(getattr(torch, np.dtype(dtype).name))
    j = jm.SequenceClassifier(I, 3, hidden_size=H, **kw, param_dtype=dtype, rngs=nnx.Rngs(0))
    return t, jt.copy_weights(t, j)


def lstm_pair():
    torch.manual_seed(1)
    t = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True).double()
    j = jaxseq.nn.LSTM(
        I,
        H,
        num_layers=2,
        batch_first=True,
        bidirectional=True,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )
    return t, jt.copy_weights(t, j)


def rows_of(report, what):
    return [r for r in report.rows if r.what == what]


# --------------------------------------------------------------------------- passing


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_zoo_classifier_with_lengths_passes(optimizer):
    t, j = classifier_pair(cell="gru", bidirectional=True)
    report = jt.check_parity(t, j, X, LENGTHS, steps=2, optimizer=optimizer)
    n = len(list(t.parameters()))
    assert report.passed and not report.failures
    assert [r.what for r in report.rows] == (
        ["param@0"] * n + ["output"] + ["grad"] * n + ["loss@1", "loss@2"] + ["param@2"] * n
    )
    assert [r.name for r in rows_of(report, "grad")] == [k for k, _ in t.named_parameters()]
    assert all(r.dtype == "float64" and r.rtol == 1e-9 and r.atol == 1e-10 for r in report.rows)
    # the parameters did move, and the report says so through the steps' losses
    assert report.optimizer == optimizer and report.steps == 2


def test_zoo_classifier_with_tokens_passes():
    t, j = classifier_pair(cell="lstm", vocab_size=9, num_layers=2)
    report = jt.check_parity(t, j, TOKENS, LENGTHS, steps=1)
    assert report.passed
    assert rows_of(report, "grad")[0].name == "embedding.weight"


def test_plain_lstm_with_hx_passes():
    t, j = lstm_pair()
    h0 = RNG.normal(size=(4, N, H))
    c0 = RNG.normal(size=(4, N, H))
    report = jt.check_parity(t, j, X, (h0, c0), steps=1, optimizer="sgd")
    outs = rows_of(report, "output")
    assert [(r.name, r.shape) for r in outs] == [
        ("out[0]", (N, T, 2 * H)),
        ("out[1][0]", (4, N, H)),
        ("out[1][1]", (4, N, H)),
    ]
    assert report.passed


def test_adapters_and_lengths_through_jax_fn():
    # jaxseq masks by lengths where torch packs: the adapters make the two calls equal.
    t, j = lstm_pair()
    lengths = np.array([6, 1, 3])

    def torch_fn(m, x, n):
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, n, batch_first=True, enforce_sorted=False
        )
        out, (h, c) = m(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        return {"out": out, "h": h}

    def jax_fn(m, x, n):
        out, (h, c) = m(x, lengths=n)
        return {"out": out, "h": h}

    report = jt.check_parity(t, j, X, lengths, torch_fn=torch_fn, jax_fn=jax_fn, steps=1)
    assert [r.name for r in rows_of(report, "output")] == ["out['h']", "out['out']"]
    assert report.passed


def test_float32_defaults_pass_on_outputs_and_grads():
    t, j = classifier_pair(np.float32, cell="lstm", proj_size=2)
    report = jt.check_parity(t, j, X.astype(np.float32), LENGTHS)
    assert report.passed
    assert {(r.dtype, r.rtol, r.atol) for r in report.rows} == {("float32", 1e-5, 1e-6)}
    assert "float32: rtol=1e-05, atol=1e-06" in str(report).splitlines()[0]


def test_eager_mode_and_integer_outputs():
    t, j = classifier_pair(cell="rnn")

    def both(m, x, n):
        logits = m(x, n)
        return logits, logits.argmax(-1)

    report = jt.check_parity(t, j, X, LENGTHS, torch_fn=both, jax_fn=both, jit=False, steps=1)
    out = rows_of(report, "output")
    assert [(r.name, r.dtype, r.rtol) for r in out] == [
        ("out[0]", "float64", 1e-9),
        ("out[1]", "int64", 0.0),
    ]
    assert report.passed


def test_modules_are_left_untouched():
    t, j = classifier_pair(cell="lstm")
    before_t = {k: v.clone() for k, v in t.state_dict().items()}
    before_j = jaxseq.interop.to_torch_state_dict(j)
    jt.check_parity(t, j, X, LENGTHS, steps=3)
    assert t.training and not j.rnn.deterministic  # both still in training mode
    assert all(p.grad is None for p in t.parameters())
    for k, v in t.state_dict().items():
        assert torch.equal(v, before_t[k])
    for k, v in jaxseq.interop.to_torch_state_dict(j).items():
        np.testing.assert_array_equal(v, before_j[k])


# --------------------------------------------------------------------------- failing


def test_perturbed_weight_is_named():
    t, j = classifier_pair(cell="lstm")
    j.rnn.weight_hh_l0[...] = j.rnn.weight_hh_l0[...].at[2, 3].add(1e-3)
    with pytest.raises(AssertionError) as info:
        jt.check_parity(t, j, X, LENGTHS)
    msg = str(info.value)
    assert "the weights differ before anything runs: rnn.weight_hh_l0 " in msg
    assert re.search(r"param@0\s+rnn\.weight_hh_l0\s+\(20, 5\)\s+1\.00e-03 .* FAIL", msg)
    assert re.search(r"^output\s+out\s+\(3, 3\) .* FAIL$", msg, re.M)
    assert "float64: rtol=1e-09, atol=1e-10" in msg
    # only the failing rows, at most ten, worst first
    table = msg.split("failing tensors:\n")[1].splitlines()[2:]
    assert 1 < len(table) <= 10 and all(line.endswith("FAIL") for line in table)
    report = jt.check_parity(t, j, X, LENGTHS, raise_on_fail=False)
    assert report.failure_message() == msg
    worst = [r for r in report.worst(10) if not r.passed]
    assert [line.split()[1] for line in table] == [r.name for r in worst]
    ratios = [r.err_over_tol for r in worst]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 1


class FlaxStyleGRU(nnx.Module):
    """A one-layer batch-first GRU with torch's parameter names that applies the reset gate
    after adding b_hn, as Flax's GRUCell does: a plausible porting bug."""

    def __init__(self, input_size, hidden_size, *, rngs):
        k = 1 / np.sqrt(hidden_size)
        u = lambda *shape: nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float64, -k, k))  # noqa: E731
        self.weight_ih_l0 = u(3 * hidden_size, input_size)
        self.weight_hh_l0 = u(3 * hidden_size, hidden_size)
        self.bias_ih_l0 = u(3 * hidden_size)
        self.bias_hh_l0 = u(3 * hidden_size)

    def __call__(self, x):  # (N, T, I) -> (N, T, H)
        H = self.weight_hh_l0.shape[1]
        h = jnp.zeros((x.shape[0], H), x.dtype)
        outs = []
        for t in range(x.shape[1]):
            gi = x[:, t] @ self.weight_ih_l0[...].T + self.bias_ih_l0[...][None, :]
            gh_w = h @ self.weight_hh_l0[...].T
            b = self.bias_hh_l0[...][None, :]
            r = jax.nn.sigmoid(gi[:, :H] + gh_w[:, :H] + b[:, :H])
            z = jax.nn.sigmoid(gi[:, H : 2 * H] + gh_w[:, H : 2 * H] + b[:, H : 2 * H])
            n = jnp.tanh(
                gi[:, 2 * H :] + b[:, 2 * H :] + r * gh_w[:, 2 * H :]
            )  # torch: r * (W h + b)
            h = (1 - z) * n + z * h
            outs.append(h)
        return jnp.stack(outs, axis=1)


def test_different_computation_fails_on_outputs_and_grads():
    torch.manual_seed(2)
    t = torch.nn.GRU(I, H, batch_first=True).double()
    j = jt.copy_weights(t, FlaxStyleGRU(I, H, rngs=nnx.Rngs(0)))
    report = jt.check_parity(t, j, X, torch_fn=lambda m, x: m(x)[0], raise_on_fail=False)
    failed = {(r.what, r.name) for r in report.failures}
    assert ("output", "out") in failed and ("grad", "bias_hh_l0") in failed
    assert not any(r.what == "param@0" for r in report.failures)
    with pytest.raises(AssertionError, match=r"grad\s+bias_hh_l0\s+\(15,\)"):
        report.raise_if_failed()


def test_gru_with_one_bias_changed_fails():
    torch.manual_seed(3)
    t = torch.nn.GRU(I, H, batch_first=True).double()
    j = jt.copy_weights(
        t, jaxseq.nn.GRU(I, H, batch_first=True, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    )

    def jax_fn(m, x):  # the same weights, but one bias is changed in the computation
        params = {**m.params_dict(), "bias_ih_l0": m.bias_ih_l0[...].at[7].add(0.01)}
        return jaxseq.gru(params, x, batch_first=True)

    with pytest.raises(AssertionError) as info:
        jt.check_parity(t, j, X, jax_fn=jax_fn)
    msg = str(info.value)
    assert "weights differ" not in msg  # the weights are equal: the computation is not
    assert re.search(r"^output\s+out\[0\]\s+\(3, 6, 5\) .* FAIL$", msg, re.M)
    assert re.search(r"^grad\s+weight_hh_l0\s+\(15, 5\) .* FAIL$", msg, re.M)


def test_different_optimizer_fails_after_steps():
    # torch's AdamW decays by 1e-2 by default, optax's by 1e-4: a classic porting slip.
    t, j = classifier_pair(cell="gru")
    pair = (lambda p: torch.optim.AdamW(p, lr=1e-2), optax.adamw(1e-2))
    report = jt.check_parity(t, j, X, LENGTHS, steps=3, optimizer=pair, raise_on_fail=False)
    failed = {r.what for r in report.failures}
    assert "param@3" in failed and "loss@3" in failed
    assert not failed & {"param@0", "output", "grad", "loss@1"}
    assert report.optimizer == "custom"
    # with the weight decay stated on both sides, the same pair passes
    same = (lambda p: torch.optim.AdamW(p, lr=1e-2), optax.adamw(1e-2, weight_decay=1e-2))
    assert jt.check_parity(t, j, X, LENGTHS, steps=3, optimizer=same).passed


def test_output_structure_mismatch_is_reported():
    t, j = lstm_pair()
    report = jt.check_parity(t, j, X, jax_fn=lambda m, x: m(x)[0], raise_on_fail=False)
    notes = {r.name: r.note for r in report.failures}
    assert notes["out"] == "missing in torch's outputs"
    assert notes["out[0]"] == "missing in jax's outputs"
    assert not rows_of(report, "grad")  # no gradient without matching outputs
    report = jt.check_parity(
        t,
        j,
        X,
        torch_fn=lambda m, x: m(x)[0],
        jax_fn=lambda m, x: m(x)[0][:, :-1],
        raise_on_fail=False,
    )
    (row,) = report.failures
    assert row.note == "shape (3, 5, 10) (jax) != (3, 6, 10) (torch)"
    assert "FAIL  (shape (3, 5, 10) (jax) != (3, 6, 10) (torch))" in str(report)


# --------------------------------------------------------------------------- numbers


class Scaled(nnx.Module):
    """y = scale * x @ weight.T, with torch.nn.Linear's parameter name and layout."""

    def __init__(self, weight, scale):
        self.weight = nnx.Param(jnp.asarray(weight))
        self.scale = scale

    def __call__(self, x):
        return self.scale * (x @ self.weight[...].T)


def test_report_numbers_on_a_hand_made_case():
    w = np.array([[0.5, -1.0, 2.0]])
    t = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(w))
    j = Scaled(w, 2.0)  # twice torch's output, so twice its gradient
    x = RNG.normal(size=(4, 3))
    report = jt.check_parity(t, j, x, steps=1, optimizer="sgd", lr=0.1, raise_on_fail=False)
    y = x @ w.T  # (4, 1): torch's output
    cot = np.random.default_rng(0).standard_normal((4, 1))  # the documented cotangent
    g = cot.T @ x  # (1, 3): torch's gradient of sum(y * cot)
    p0, out, grad, loss, p1 = report.rows
    assert (p0.what, p0.max_abs_err, p0.passed) == ("param@0", 0.0, True)
    assert (out.name, out.shape) == ("out", (4, 1))
    np.testing.assert_allclose(out.max_abs_err, np.abs(y).max(), rtol=1e-12)
    np.testing.assert_allclose(out.max_rel_err, 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.err_over_tol, np.max(np.abs(y) / (1e-10 + 1e-9 * np.abs(y))))
    np.testing.assert_allclose(grad.max_abs_err, np.abs(g).max(), rtol=1e-12)
    np.testing.assert_allclose(grad.max_rel_err, 1.0, rtol=1e-12)
    np.testing.assert_allclose(loss.max_abs_err, abs(np.sum(y * cot)), rtol=1e-12)
    # one SGD step: w - 0.1 g (torch) against w - 0.1 * 2 g (jax)
    np.testing.assert_allclose(p1.max_abs_err, 0.1 * np.abs(g).max(), rtol=1e-12)
    assert not any(r.passed for r in (out, grad, loss, p1))


def test_compare_numbers():
    row = jt.compare(
        np.array([1.0, 2.0, 0.0, 1e-3]),
        np.array([1.0, 2.5, 0.0, 0.0]),
        what="grad",
        name="w",
        rtol=0.1,
        atol=0.01,
    )
    assert (row.max_abs_err, row.max_rel_err) == (0.5, np.inf)
    assert row.err_over_tol == pytest.approx(0.5 / (0.01 + 0.1 * 2.5))
    assert not row.passed and (row.rtol, row.atol) == (0.1, 0.01)
    nan = jt.compare(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert nan.passed and nan.max_abs_err == 0.0  # NaN matches NaN
    one_nan = jt.compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert not one_nan.passed and one_nan.max_abs_err == np.inf
    assert jt.compare(np.array([1, 2]), np.array([1, 2])).passed
    assert not jt.compare(np.array([1, 2]), np.array([1, 3])).passed  # integers: exact
    mixed = jt.compare(np.ones(2, np.float32), np.ones(2, np.float64))
    assert (mixed.dtype, mixed.rtol) == ("float32", 1e-5)  # the looser dtype decides
    assert jt.compare(np.zeros((0, 3)), np.zeros((0, 3))).passed
    assert jt.default_tolerance(np.float16) == (1e-3, 1e-5)


def test_str_is_an_aligned_table():
    t, j = classifier_pair(cell="lstm", bidirectional=True)
    text = str(jt.check_parity(t, j, X, LENGTHS, steps=1))
    lines = text.splitlines()
    assert lines[0] == f"PASSED: {len(lines) - 3} tensors agree (float64: rtol=1e-09, atol=1e-10)"
    header, rule = lines[1], lines[2]
    assert header.split("  ")[0] == "what" and header.endswith("ok")
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    assert len(starts) == 7
    for line in lines[3:]:
        for s in starts[1:3]:  # name and shape columns start where the rule says
            assert line[s - 2 : s] == "  " and line[s] != " "
        assert line.endswith("  ok")
    widths = {len(line) for line in lines[1:]}
    assert len(widths) == 1  # every row as wide as the header


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of 'sgd', 'adam', 'adamw'"),
        (dict(optimizer=(1, 2)), TypeError, "optimizer must be 'sgd', 'adam', 'adamw' or a pair"),
        (dict(steps=-1), ValueError, r"steps must be >= 0, got -1"),
        (dict(steps=1.5), TypeError, "steps must be an int, got float"),
        (dict(steps=True), TypeError, "steps must be an int, got bool"),
        (dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
        (dict(lr="1e-3"), TypeError, "lr must be a number, got str"),
        (dict(rtol=-1.0), ValueError, "rtol must be >= 0, got -1.0"),
        (dict(atol="x"), TypeError, "atol must be a non-negative number or None, got str"),
        (dict(seed=0.5), TypeError, "seed must be an int, got float"),
        (dict(torch_fn=3), TypeError, "torch_fn must be callable or None, got int"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    t, j = classifier_pair(cell="rnn")
    with pytest.raises(exc, match=match):
        jt.check_parity(t, j, X, LENGTHS, **kwargs)


def test_not_modules():
    t, j = classifier_pair(cell="rnn")
    with pytest.raises(TypeError, match="torch_module must be a torch.nn.Module, got str"):
        jt.check_parity("model", j, X)
    with pytest.raises(TypeError, match="jax_module must be a flax.nnx.Module, got Sequential"):
        jt.check_parity(t, torch.nn.Sequential(), X)
    with pytest.raises(TypeError, match="the torch module comes first"):
        jt.check_parity(j, t, X)
    with pytest.raises(TypeError, match="jax_module must be a flax.nnx.Module, got dict"):
        jt.copy_weights(t, {})
    with pytest.raises(TypeError, match="torch_module must be a torch.nn.Module, got int"):
        jt.copy_weights(3, j)


def test_parameters_on_one_side_only_are_listed():
    t = torch.nn.Linear(3, 1).double()  # weight and bias
    j = Scaled(t.weight.detach().numpy(), 1.0)  # weight only
    with pytest.raises(ValueError) as info:
        jt.check_parity(t, j, RNG.normal(size=(2, 3)))
    assert "only in the torch module: ['bias']" in str(info.value)
    assert "only in the jax module: []" in str(info.value)


def test_no_floating_output_to_differentiate():
    t, j = classifier_pair(cell="rnn")
    argmax = lambda m, x, n: m(x, n).argmax(-1)  # noqa: E731
    with pytest.raises(ValueError, match="needs a floating point output to differentiate"):
        jt.check_parity(t, j, X, LENGTHS, torch_fn=argmax, jax_fn=argmax)
    report = jt.check_parity(t, j, X, LENGTHS, torch_fn=argmax, jax_fn=argmax, grads=False)
    assert report.passed and [r.what for r in report.rows][-1] == "output"


def test_missing_torch_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(
        ImportError, match=r"jaxseq.testing needs PyTorch: pip install 'jaxseq\[torch\]'"
    ):
        jt.check_parity(object(), object())
