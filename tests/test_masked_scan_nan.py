"""``jaxseq.masked_scan`` with NaN or inf in the padding: finite values *and* gradients.

The "double where" trap: selecting only the cell's *output* with ``where`` keeps the
forward pass clean, but the backward pass multiplies the zero cotangent of the padded
branch by the cell's local derivatives at the NaN input, and ``0 * nan = nan`` reaches
every parameter gradient. ``masked_scan`` zeroes padded inputs before the cell too.

The reference for the gradients is independent of masking: every row run on its own
valid prefix by a plain ``jax.lax.scan`` (no mask, no padding), the losses summed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from tests._jit import JIT

T, N, I, H = 5, 4, 3, 2
LENGTHS = np.array([5, 3, 0, 1])


def _params(kind: str) -> dict[str, jax.Array]:
    init = {"rnn": jaxseq.init_rnn, "lstm": jaxseq.init_lstm}[kind]
    p = init(jax.random.key(0), I, H, dtype=jnp.float64)
    return {k.removesuffix("_l0"): v for k, v in p.items()}


def _cell_and_carry(kind: str):
    if kind == "rnn":
        return jaxseq.rnn_cell, jnp.full((N, H), 0.3, jnp.float64)
    return jaxseq.lstm_cell, (jnp.full((N, H), 0.3, jnp.float64), jnp.full((N, H), -0.2))


def _inputs(fill: float) -> tuple[jax.Array, jax.Array]:
    x = np.random.default_rng(1).standard_normal((T, N, I))
    padded = np.arange(T)[:, None] >= LENGTHS[None, :]
    x[padded] = fill
    return jnp.asarray(x), jnp.asarray(padded)


def _loss_masked(p, x, kind, reverse, use_mask):
    cell, c0 = _cell_and_carry(kind)
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    if use_mask:
        mask = jaxseq.scan.length_mask(lengths, T)
        c, ys = jaxseq.masked_scan(cell, p, c0, x, mask=mask, reverse=reverse)
    else:
        c, ys = jaxseq.masked_scan(cell, p, c0, x, lengths, reverse=reverse)
    h = c if kind == "rnn" else c[0]
    return jnp.sum(ys**2) + jnp.sum(jnp.sin(h))


def _loss_rows(p, x, kind, reverse):
    """Each row on its own valid prefix, no masking: the definition of the masked loss."""
    cell, c0 = _cell_and_carry(kind)
    total = jnp.zeros((), jnp.float64)
    for n, length in enumerate(LENGTHS):
        c = jax.tree.map(lambda a, n=n: a[n : n + 1], c0)
        xs = x[:length, n : n + 1]
        if length:
            c, ys = jax.lax.scan(lambda c, xt: cell(p, c, xt), c, xs, reverse=reverse)
            total = total + jnp.sum(ys**2)
        h = c if kind == "rnn" else c[0]
        total = total + jnp.sum(jnp.sin(h))
    return total


@pytest.mark.parametrize(
    ("fill", "kind", "reverse", "use_mask"),
    [
        (np.nan, "rnn", False, False),
        (np.inf, "rnn", True, True),
        (-np.inf, "lstm", False, True),
        (np.nan, "lstm", True, False),
    ],
)
def test_padding_nan_inf_gives_finite_exact_gradients(fill, kind, reverse, use_mask) -> None:
    p = _params(kind)
    x, padded = _inputs(fill)
    f = JIT(jax.value_and_grad(_loss_masked, argnums=(0, 1)), static_argnums=(2, 3, 4))
    loss, (g_p, g_x) = f(p, x, kind, reverse, use_mask)
    clean = jnp.where(padded[:, :, None], 0.0, x)  # the reference never sees the padding
    ref_loss, ref_p = jax.value_and_grad(_loss_rows)(p, clean, kind, reverse)
    assert np.isfinite(float(loss)) and abs(float(loss) - float(ref_loss)) < 1e-12
    for k in ref_p:
        assert bool(jnp.isfinite(g_p[k]).all()), f"{k}: non-finite gradient ({fill} in padding)"
        np.testing.assert_allclose(g_p[k], ref_p[k], rtol=1e-12, atol=1e-13, err_msg=k)
    g_x_pad = np.asarray(g_x)[np.asarray(padded)]
    assert g_x_pad.size and np.all(g_x_pad == 0.0)  # no gradient into padding, not even NaN
    assert np.abs(np.asarray(g_x)[~np.asarray(padded)]).max() > 1e-3  # valid steps do get one


def test_padding_nan_with_resets() -> None:
    """The reset path of masked_scan (episode boundaries) zeroes padded inputs too."""
    p = _params("rnn")
    x, padded = _inputs(np.nan)
    resets = jnp.zeros((T, N), bool).at[2, 0].set(True).at[4, 1].set(True)  # (4, 1) is padded
    h0 = jnp.full((N, H), 0.3, jnp.float64)

    def loss(p, x):
        c, ys = jaxseq.masked_scan(
            jaxseq.rnn_cell, p, h0, x, jnp.asarray(LENGTHS, jnp.int32), resets=resets
        )
        return jnp.sum(ys**2) + jnp.sum(c)

    def loss_ref(p, x):  # row 0 as two independent segments [0, 2) and [2, 5)
        total = jnp.zeros((), jnp.float64)
        for n, segments in enumerate([[(0, 2), (2, 5)], [(0, 3)], [], [(0, 1)]]):
            c = h0[n : n + 1]
            for a, b in segments:
                c, ys = jax.lax.scan(
                    lambda c, xt: jaxseq.rnn_cell(p, c, xt), h0[n : n + 1], x[a:b, n : n + 1]
                )
                total = total + jnp.sum(ys**2)
            total = total + jnp.sum(c)
        return total

    g = JIT(jax.grad(loss))(p, x)
    ref = jax.grad(loss_ref)(p, jnp.where(padded[:, :, None], 0.0, x))
    for k in ref:
        assert bool(jnp.isfinite(g[k]).all()), k
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-12, atol=1e-13, err_msg=k)


def test_output_only_where_is_the_trap() -> None:
    """The bug this file guards against, shown on a one-line scan: a where on the output
    alone lets NaN padding into the parameter gradient; a where on the input fixes it."""
    w = jnp.asarray(0.5, jnp.float64)
    x = jnp.asarray([1.0, np.nan])
    valid = jnp.asarray([True, False])

    def loss(w, double):
        xin = jnp.where(valid, x, 0.0) if double else x
        return jnp.sum(jnp.where(valid, jnp.tanh(w * xin), 0.0))

    assert np.isnan(float(jax.grad(loss)(w, False)))
    assert float(jax.grad(loss)(w, True)) == pytest.approx(1.0 - np.tanh(0.5) ** 2, rel=1e-14)
