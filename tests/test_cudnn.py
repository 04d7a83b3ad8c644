"""The cuDNN-backed LSTM layer (jaxseq.cudnn), verified on the CPU.

cuDNN itself needs a GPU (``benchmarks/gpu.py`` checks it there). Here every other step
runs for real: the packing into cuDNN's flat weight layout (against jax's own
``unpack_lstm_weights``), the lengths recovered from the mask and clamped to [1, T], the
batch-major transposes and the masking post-processing, with
``jax.experimental.rnn.lstm_ref`` standing in for the cuDNN call, against jaxseq's
reference implementation in float64, values and gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jrnn

import jaxseq
from benchmarks.gpu import stand_in_cudnn
from jaxseq.cudnn import (
    check_cudnn,
    cudnn_layer,
    pack_lstm_params,
    pack_lstm_weights,
    reference_lstm,
    unpack_lstm_weights,
)
from jaxseq.layer import Plan, Segments, StepMasks
from jaxseq.recurrences import get

F64 = jnp.float64
T, N, I, H = 6, 5, 3, 4
RAGGED = (6, 0, 3, 1, 5)  # T, 0, and in between; unsorted


def _params(layers: int, bidirectional: bool, dtype: Any = F64, **kw: Any) -> dict[str, Any]:
    key = jax.random.key(layers + 2 * bidirectional)
    p = jaxseq.init_lstm(key, I, H, layers, bidirectional=bidirectional, **kw)
    return {k: v.astype(dtype) for k, v in p.items()}


def _stacked(params: dict[str, Any], layer: int, bidirectional: bool) -> dict[str, Any]:
    """One layer's weights stacked by direction, as ``jaxseq.stack.run_stack`` builds them."""
    sfx = ["", "_reverse"] if bidirectional else [""]
    return {
        base: jnp.stack([params[f"{base}_l{layer}{s}"] for s in sfx])
        for base in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        if f"{base}_l{layer}" in params
    }


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape, F64)


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bidirectional", [False, True])
def test_pack_one_layer_matches_jax_unpack(bidirectional: bool) -> None:
    params = _params(1, bidirectional, jnp.float32)
    w = _stacked(params, 0, bidirectional)
    flat = pack_lstm_weights(w, I, H, bidirectional)
    assert flat.shape == (jrnn.get_num_params_in_lstm(I, H, 1, bidirectional),)
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(flat, I, H, 1, bidirectional)
    for d, s in enumerate(["", "_reverse"][: 1 + bidirectional]):
        np.testing.assert_array_equal(W_ih[d], params[f"weight_ih_l0{s}"])
        np.testing.assert_array_equal(W_hh[d], params[f"weight_hh_l0{s}"])
        np.testing.assert_array_equal(b_ih[d], params[f"bias_ih_l0{s}"])
        np.testing.assert_array_equal(b_hh[d], params[f"bias_hh_l0{s}"])
    back = unpack_lstm_weights(flat, I, H, bidirectional)
    assert set(back) == set(w)
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])


def test_pack_stack_matches_jax_unpack() -> None:
    """Two bidirectional layers: pseudo-layers l0, l0_reverse, l1, l1_reverse."""
    params = _params(2, True, jnp.float32)
    flat = pack_lstm_params(params, 2, True)
    assert flat.shape == (jrnn.get_num_params_in_lstm(I, H, 2, True),)
    unpacked = jrnn.unpack_lstm_weights(flat, I, H, 2, True)
    names = [f"_l{k}{s}" for k in range(2) for s in ("", "_reverse")]
    for base, part in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), unpacked, strict=True):
        for pseudo, sfx in enumerate(names):
            np.testing.assert_array_equal(part[pseudo], params[base + sfx])


def test_pack_without_bias_packs_zeros() -> None:
    params = _params(1, True, jnp.float32, bias=False)
    w = _stacked(params, 0, True)
    back = unpack_lstm_weights(pack_lstm_weights(w, I, H, True), I, H, True)
    assert not np.any(np.asarray(back["bias_ih"])) and not np.any(np.asarray(back["bias_hh"]))
    np.testing.assert_array_equal(back["weight_hh"], w["weight_hh"])


def test_pack_gradient_is_the_unpacking() -> None:
    w = _stacked(_params(1, True), 0, True)
    probe = _normal(7, (jrnn.get_num_params_in_lstm(I, H, 1, True),))
    grads = jax.grad(lambda w: jnp.vdot(pack_lstm_weights(w, I, H, True), probe))(w)
    expected = unpack_lstm_weights(probe, I, H, True)
    for k in w:
        np.testing.assert_array_equal(grads[k], expected[k])


def test_pack_rejects_wrong_shapes() -> None:
    w = _stacked(_params(1, False), 0, False)
    with pytest.raises(ValueError, match=r"weight_ih has shape \(1, 16, 3\), expected"):
        pack_lstm_weights(w, I + 1, H, False)


# --------------------------------------------------------------------------- the layer


def _run(path: str, p: Any, x: Any, hx: Any, lengths: Any) -> Any:
    if path == "reference":
        return jaxseq.lstm(p, x, hx, lengths, impl="reference")
    with stand_in_cudnn(reference_lstm):  # the stack's impl="cudnn", lstm_ref for cuDNN
        return jaxseq.lstm(p, x, hx, lengths, impl="cudnn")


@functools.partial(jax.jit, static_argnums=0)
def _values_and_grads(path: str, p: Any, x: Any, hx: Any, lengths: Any, cots: Any) -> Any:
    """Outputs, and the gradients of a random linear function of them w.r.t. params, x, hx."""

    def f(p: Any, x: Any, hx: Any) -> Any:
        out, (h_n, c_n) = _run(path, p, x, hx, lengths)
        loss = jnp.sum(out * cots[0]) + jnp.sum(h_n * cots[1]) + jnp.sum(c_n * cots[2])
        return loss, (out, h_n, c_n)

    (_, outs), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(p, x, hx)
    return outs, grads


@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2])
def test_layer_matches_reference(layers: int, bidirectional: bool, lengths: Any) -> None:
    D = 2 if bidirectional else 1
    p = _params(layers, bidirectional)
    x = _normal(1, (T, N, I))
    hx = (_normal(2, (layers * D, N, H)), _normal(3, (layers * D, N, H)))
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    cots = (
        _normal(4, (T, N, D * H)),
        _normal(5, (layers * D, N, H)),
        _normal(6, (layers * D, N, H)),
    )
    got, got_g = _values_and_grads("cudnn", p, x, hx, lens, cots)
    ref, ref_g = _values_and_grads("reference", p, x, hx, lens, cots)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), got, ref)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), got_g, ref_g
    )
    if lengths is not None:
        out, h_n, c_n = got
        valid = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
        assert not np.any(np.asarray(out)[~valid])  # exactly 0 on padding
        assert not np.any(np.asarray(got_g[1])[~valid])  # no gradient into padding
        empty = np.asarray(lengths) == 0
        np.testing.assert_array_equal(np.asarray(h_n)[:, empty], np.asarray(hx[0])[:, empty])
        np.testing.assert_array_equal(np.asarray(c_n)[:, empty], np.asarray(hx[1])[:, empty])


def test_backend_sees_lengths_in_1_T_and_its_padding_is_ignored() -> None:
    """The post-processing alone imposes the contract: the backend is only ever asked for
    lengths in [1, T] (cuDNN's domain), and whatever it leaves on padding is discarded."""
    seen: list[np.ndarray] = []

    def untidy_backend(x: Any, h_0: Any, c_0: Any, w: Any, seq_lengths: Any, *a: Any, **kw: Any):
        if not isinstance(seq_lengths, jax.core.Tracer):
            seen.append(np.asarray(seq_lengths))
        y, h_n, c_n = reference_lstm(x, h_0, c_0, w, seq_lengths, *a, **kw)
        steps = x.shape[1]
        pad = jnp.arange(steps, dtype=jnp.int32).reshape(1, steps, 1) >= seq_lengths.reshape(
            -1, 1, 1
        )
        return jnp.where(pad, jnp.full_like(y, 7.0), y), h_n + 0.5, c_n - 0.5

    rec = get("lstm")
    p = _params(1, True)
    w = _stacked(p, 0, True)
    x = _normal(1, (T, N, I))
    states = (_normal(2, (2, N, H)), _normal(3, (2, N, H)))
    mask = jnp.arange(T).reshape(T, 1) < jnp.asarray(RAGGED).reshape(1, N)
    out, (h_n, c_n) = cudnn_layer(
        Plan(rec), w, x, states, Segments(mask), StepMasks(), lstm_fn=untidy_backend
    )
    np.testing.assert_array_equal(seen[0], np.maximum(np.asarray(RAGGED), 1))
    valid = np.asarray(mask)
    assert not np.any(np.asarray(out)[~valid])
    ref_out, _ = jaxseq.lstm(p, x, states, RAGGED, impl="reference")
    np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(ref_out)[valid], rtol=1e-12)
    np.testing.assert_array_equal(h_n[:, 1], states[0][:, 1])  # length 0: h0, c0
    np.testing.assert_array_equal(c_n[:, 1], states[1][:, 1])


def test_registered_in_the_stack() -> None:
    """The ``"cudnn"`` row of ``jaxseq.impls.IMPLS`` is the whole registration: here with
    the ``lstm_ref`` stand-in in it for the duration of the test."""
    p = _params(2, True)
    x = _normal(1, (T, N, I))
    with stand_in_cudnn(reference_lstm):
        got = jaxseq.lstm(p, x, lengths=RAGGED, impl="cudnn")
        with pytest.raises(ValueError, match=r"LSTM only, not GRU; use impl='fused'"):
            jaxseq.gru(jaxseq.init_gru(jax.random.key(0), I, H), x, impl="cudnn")
    ref = jaxseq.lstm(p, x, lengths=RAGGED, impl="reference")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), got, ref)


# --------------------------------------------------------------------------- errors


def _call(rec_name: str, w: Any, x: Any, **kw: Any) -> Any:
    D = w["weight_ih"].shape[0]
    Hw = w["weight_hh"].shape[-1]
    states = (jnp.zeros((D, N, Hw), x.dtype), jnp.zeros((D, N, H), x.dtype))
    remat = kw.pop("remat", None)
    plan = Plan(get(rec_name), "cudnn", remat=remat)
    return cudnn_layer(plan, w, x, states, Segments(), StepMasks(), **kw)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float64])
def test_real_path_rejects_dtypes_other_than_float32(dtype: Any) -> None:
    w = _stacked(_params(1, False, dtype), 0, False)
    x = jnp.zeros((T, N, I), dtype)
    with pytest.raises(ValueError, match=r"float32 only .* use impl='fused'"):
        _call("lstm", w, x)


def test_rejects_proj_size() -> None:
    w = _stacked(_params(1, False, jnp.float32, proj_size=2), 0, False)
    with pytest.raises(ValueError, match=r"proj_size > 0 .* use impl='fused'"):
        _call("lstm", w, jnp.zeros((T, N, I), jnp.float32), lstm_fn=reference_lstm)


def test_rejects_other_kinds() -> None:
    p = jaxseq.init_gru(jax.random.key(0), I, H)
    w = {k[: -len("_l0")]: v[None] for k, v in p.items()}
    with pytest.raises(ValueError, match=r"LSTM only, not GRU; use impl='fused'"):
        _call("gru", w, jnp.zeros((T, N, I), jnp.float32), lstm_fn=reference_lstm)


def test_rejects_remat() -> None:
    w = _stacked(_params(1, False, jnp.float32), 0, False)
    msg = r"impl='cudnn' does not take remat .* use impl='fused' with remat"
    with pytest.raises(ValueError, match=msg):
        _call("lstm", w, jnp.zeros((T, N, I), jnp.float32), remat=4, lstm_fn=reference_lstm)
    with pytest.raises(ValueError, match=msg):  # the same message from the stack's check
        jaxseq.lstm(_params(1, False), _normal(1, (T, N, I)), impl="cudnn", remat=4)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the non-GPU message")
def test_real_path_needs_a_gpu() -> None:
    w = _stacked(_params(1, True, jnp.float32), 0, True)
    x = jnp.zeros((T, N, I), jnp.float32)
    with pytest.raises(ValueError, match=r"needs a CUDA GPU .*'cpu'.* use impl='fused'"):
        _call("lstm", w, x)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        jax.jit(lambda x: _call("lstm", w, x))(x)  # raised while tracing, not by XLA
    check_cudnn(w, x, real=False)  # the stand-in path has no backend requirement
