"""A new recurrence kind is one definition and one registration.

A leaky Elman RNN, ``h' = (1 - a) h + a tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` with a
fixed ``a``, is defined entirely in this file: its reference step and the three pieces
of the fused path. Registered once, it runs through the whole stack and every layer
implementation, held by the conformance suite (``tests/_conformance.py``) against a
float64 loop of its reference step, values and every gradient; and through an NNX
module, held against a plain Python loop of its equations written here.
"""

from __future__ import annotations

import _conformance
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq
from jaxseq.fused_ops import one_invalid, zero_invalid
from jaxseq.recurrences import Fused, Recurrence, linear, register, unregister

A = 0.3  # the leak


def leaky_step(params, h, gx):
    """Reference step: h' = (1 - a) h + a tanh(gx + h W_hh^T + b_hh)."""
    h_new = (1.0 - A) * h + A * jnp.tanh(gx + linear(h, params["weight_hh"], params.get("bias_hh")))
    return h_new, h_new


def leaky_forward(w, h, gx, gh, valid):
    """Fused step. The backward is linear in dh: dpre = (dh + dy) * a (1 - t^2) and
    dh_prev = dpre W_hh + (1 - a) (dh + dy); on invalid steps P = 0 and the carry
    coefficient is 1, so dh passes through."""
    t = jnp.tanh(gx if gh is None else gx + gh)
    h_new = (1.0 - A) * h + A * t
    P = zero_invalid(valid, A * (1.0 - t * t))
    K = one_invalid(valid, jnp.full_like(h, 1.0 - A))
    return jnp.where(valid, h_new, h), zero_invalid(valid, h_new), ((P, K), ())


def leaky_backward(w, dh, dy, scan_res, hmat):
    p, k = scan_res
    dh_new = dh + dy
    dpre = dh_new * p
    return hmat(dpre) + k * dh_new, dpre


def leaky_gate_grads(dpre, scan_res, post_res, w):
    return dpre, dpre, {}


LEAKY = Recurrence(
    name="leaky",
    display_name="LeakyRNN",
    num_gates=1,
    step=leaky_step,
    fast=Fused(leaky_forward, leaky_backward, leaky_gate_grads),
)


@pytest.fixture(scope="module", autouse=True)
def registered_leaky():
    register(LEAKY)
    yield
    unregister("leaky")


# --------------------------------------------------------------------------- reference


def loop_reference(params, x, h0, lengths, num_layers, bidirectional):
    """A plain Python loop over layers, directions, rows and steps (jnp, float64).

    x (T, N, I), h0 (L*D, N, H), lengths (N,) -> out (T, N, D*H), h_n (L*D, N, H).
    """
    T, N = x.shape[:2]
    D = 2 if bidirectional else 1
    inp, h_n = x, []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            b = params["bias_ih" + sfx] + params["bias_hh" + sfx]
            rows_out, rows_h = [], []
            for n in range(N):
                h = h0[layer * D + d, n]
                ys = [jnp.zeros_like(h)] * T
                steps = range(int(lengths[n]))
                for t in reversed(steps) if d else steps:
                    h = (1 - A) * h + A * jnp.tanh(w_ih @ inp[t, n] + w_hh @ h + b)
                    ys[t] = h
                rows_out.append(jnp.stack(ys))
                rows_h.append(h)
            outs.append(jnp.stack(rows_out, axis=1))  # (T, N, H)
            h_n.append(jnp.stack(rows_h))
        inp = jnp.concatenate(outs, axis=-1)
    return inp, jnp.stack(h_n)


T, N, I, H = 5, 4, 3, 4
LENGTHS = np.array([5, 0, 2, 4])


def test_leaky_rnn_conforms():
    """Every implementation serving the kind, every feature it supports (layers x
    directions, lengths including 0 and T, ``hx``, resets, ``reset_hx``, ``remat``, the
    regulariser masks, forward mode, ``vmap``, ``carry_dtype``): values and every gradient
    against the conformance suite's float64 loop (``tests/_conformance.py``)."""
    coverage = _conformance.check_kind("leaky")
    assert {"fused", "fused_loop", "fused_hoisted", "unfused", "reference"} <= {
        impl for _, impl in coverage
    }


class LeakyRNN(jaxseq.nn.RNNBase):
    """The NNX module of the new kind: the generic layer module with its kind set."""

    kind = "leaky"


def test_leaky_rnn_module_and_interop():
    m = LeakyRNN(
        I,
        H,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )
    x = jnp.asarray(np.random.default_rng(1).standard_normal((N, T, I)))
    out, h_n = m(x, lengths=jnp.asarray(LENGTHS))
    params = jaxseq.interop.to_torch_state_dict(m)
    assert sorted(params) == sorted(jaxseq.param_shapes("leaky", I, H, 2, bidirectional=True))
    h0 = jnp.zeros((4, N, H))
    out_ref, h_ref = loop_reference(
        {k: jnp.asarray(v) for k, v in params.items()}, jnp.swapaxes(x, 0, 1), h0, LENGTHS, 2, True
    )
    np.testing.assert_allclose(out, jnp.swapaxes(out_ref, 0, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-12, atol=1e-12)


def test_registry_errors():
    with pytest.raises(ValueError, match="already registered"):
        register(Recurrence(**{**LEAKY.__dict__, "num_gates": 2}))
    with pytest.raises(ValueError, match="Unknown RNN kind 'nope'"):
        jaxseq.init_params(jax.random.key(0), "nope", 2, 2)
    with pytest.raises(TypeError, match="register expects a Recurrence"):
        register("leaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proj_size argument is only supported"):
        jaxseq.param_shapes("leaky", 2, 4, proj_size=2)


def test_definitions_hold_every_kind_branch():
    """Outside the definitions and the registry, nothing in jaxseq/ compares a kind string.

    The one exception is ``interop/flax.py``: it maps Flax's fixed set of cell classes, each
    of which is one torch kind (a new jaxseq kind needs no edit there)."""
    import pathlib
    import re

    root = pathlib.Path(jaxseq.__file__).parent
    pattern = re.compile(r"""(kind|cell)\s*(==|!=)\s*["']|["'](rnn|lstm|gru)["']\s*(==|!=)""")
    hits = [
        f"{path.relative_to(root)}:{i}"
        for path in sorted(root.rglob("*.py"))
        if "recurrences" not in path.parts and path.name != "flax.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == [], hits
    # Every built-in kind is registered, with torch's gate counts.
    gates = {name: jaxseq.recurrences.get(name).num_gates for name in ("rnn", "lstm", "gru")}
    assert gates == {"rnn": 1, "lstm": 4, "gru": 3}
