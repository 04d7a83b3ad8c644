"""A cuDNN-backed LSTM layer: :func:`cudnn_layer`, jaxseq's layer contract over
``jax.experimental.rnn.lstm``.

:func:`cudnn_layer` has the signature of :class:`jaxseq.impls.LayerImpl` (one layer, all
directions, weights stacked by direction) and keeps jaxseq's parity contract: it packs the
torch-named weights into cuDNN's flat weight array (:func:`pack_lstm_weights`, pure ``jnp``
ops, so gradients reach the torch-named parameters), recovers the lengths from the (T, N)
prefix mask, calls cuDNN, and imposes jaxseq's masking contract on what comes back.
It is registered in ``jaxseq.impls`` as ``impl="cudnn"``: ``jaxseq.lstm(..., impl="cudnn")``
runs a whole stack through it.

Shapes (D = 2 if bidirectional else 1, H the hidden size, I the input size)::

    x        (T, N, I) time-major        cuDNN: (N, T, I) batch-major
    states   h0, c0 each (D, N, H)       cuDNN: the same (num_layers = 1)
    mask     (T, N) bool prefix mask     cuDNN: seq_lengths (N,) int32
    out      (T, N, D*H)                 cuDNN: (N, T, D*H)
    weights  weight_ih (D, 4H, I), weight_hh (D, 4H, H), bias_ih / bias_hh (D, 4H)
             cuDNN: one flat float32 array, see :func:`pack_lstm_weights`

Where cuDNN (as ``jax.experimental.rnn`` drives it, jaxlib's ``rnn_kernels.cc``) differs
from jaxseq's contract, and what this module does about it:

* **Length 0.** jaxseq allows it (zero output, ``h_n = h0``, ``c_n = c0``); cuDNN's RNN
  data descriptor is not known to accept it across versions (older cuDNN rejects zero
  lengths; ONNX Runtime clamps them to 1 for that reason; torch's
  ``pack_padded_sequence`` rejects them), and ``lstm_ref`` gets it wrong (below). Here the
  lengths passed to cuDNN are ``max(length, 1)``, so the result does not depend on what
  the installed cuDNN does (``benchmarks/gpu.py`` probes and records that): a zero-length
  row's input is zero (padding is zeroed first), its output is masked to zero and its
  ``h_n`` / ``c_n`` are replaced by ``h0`` / ``c0`` with ``jnp.where``. The cotangents of
  what cuDNN computed for such a row are then zero, so ``h0`` / ``c0`` receive the
  gradient of ``h_n`` / ``c_n`` through the ``where`` alone, and the weights nothing.
* **Padding.** cuDNN writes ``paddingFill = 0`` at ``t >= length`` (``PADDED_IO_ENABLED``,
  batch-major unpacked layout) and returns ``h_n`` / ``c_n`` at each row's last valid step,
  the reverse direction starting at each row's own last valid element: the same as
  jaxseq. The output is still masked with the (T, N) mask (the clamped rows need it, and
  it makes the contract independent of the backend), and the input is zeroed on padding
  so that no padded value reaches cuDNN or receives a gradient.
* **Lengths come from the mask** (``mask.sum(0)``): the layer contract's mask is a prefix
  mask, which is all cuDNN can represent. jaxlib copies the lengths from the device to the
  host, with a stream synchronisation, on every forward and every backward call (once
  per layer), so the host waits for the GPU at each layer.
* **Precision.** cuDNN's math type follows JAX's matmul precision: with the default
  (``precision=None`` and no ``jax.default_matmul_precision``) jaxlib allows TF32 tensor
  cores, as XLA's own float32 dots may; ``precision="highest"`` (or the
  ``jax.default_matmul_precision("highest")`` context) asks for FMA float32 math. The
  parity checks of ``benchmarks/gpu.py`` run at ``"highest"`` on both sides.
* **Float32 only.** jaxlib builds the cuDNN descriptors with ``CUDNN_DATA_FLOAT``;
  bfloat16, float16 and float64 are refused with a ``ValueError`` (use ``impl="fused"``).
* **Not covered**: ``proj_size > 0`` (cuDNN has projections, ``jax.experimental.rnn`` does
  not expose them), kinds other than the LSTM, ``remat`` (cuDNN keeps its own reserve
  space), ROCm (MIOpen's gate order differs and is unverified here), dropout inside
  cuDNN (the stack applies jaxseq's own dropout between layers). ``unroll`` and
  ``nonlinearity`` are ignored. ``jax.experimental.rnn.lstm`` is a ``custom_vjp`` over a
  primitive without batching or JVP rules: ``jax.jvp`` / ``jacfwd`` and ``vmap`` do not
  go through it (``impl="fused"`` composes with both).
* **Weights**: both biases are kept separately (cuDNN's ``DOUBLE_BIAS`` mode, as torch),
  gate order i, f, g, o (as torch). A layer without biases is packed with zero biases.

Testing without a GPU: :func:`cudnn_layer` takes ``lstm_fn``, a
stand-in for ``jax.experimental.rnn.lstm`` with its signature. :func:`reference_lstm` is one:
``jax.experimental.rnn.lstm_ref`` (pure JAX) fed through ``unpack_lstm_weights``, so the
CPU tests run the packing, the length handling and the post-processing of this module
and leave only the cuDNN kernel itself untested. ``lstm_ref`` handles ragged lengths the
way cuDNN does for lengths in ``[1, T]`` (its "ragged" TODO is stale: it selects each
row's last valid carry and reverses each row within its length), but not length 0: there
it returns the carry after all T padded steps (index ``-1``). The clamp above makes that
case unreachable, so the CPU path and the cuDNN path see the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jrnn

from jaxseq.layer import LayerOut, Plan, Segments, States, StepMasks, Weights
from jaxseq.recurrences import LSTM, Recurrence

Array = jax.Array

#: ``jax.experimental.rnn.lstm``'s signature: ``(x, h_0, c_0, weights, seq_lengths, *,
#: input_size, hidden_size, num_layers, dropout, bidirectional, precision) -> (y, h_n, c_n)``.
LstmFn = Callable[..., tuple[Array, Array, Array]]

__all__ = [
    "LstmFn",
    "pack_lstm_weights",
    "pack_lstm_params",
    "unpack_lstm_weights",
    "reference_lstm",
    "check_cudnn",
    "cudnn_layer",
    "serves_cudnn",
    "CUDNN_REFUSALS",
    "CUDNN_KIND_REFUSAL",
]

#: The refusal of any kind but the LSTM (``{kind}``: its display name).
CUDNN_KIND_REFUSAL = "impl='cudnn' supports the LSTM only, not {kind}; use impl='fused'"

#: Why the cuDNN layer refuses a feature (:data:`jaxseq.impls.IMPLS`' row for it).
CUDNN_REFUSALS = {
    "resets": (
        "impl='cudnn' cannot take resets (cuDNN's kernel has no input to restart the "
        "carry inside a sequence); use impl='fused'"
    ),
    "reset_hx": "impl='cudnn' cannot take reset_hx (nor resets); use impl='fused'",
    "remat": (
        "impl='cudnn' does not take remat (cuDNN keeps its own reserve space); "
        "use impl='fused' with remat"
    ),
    "all_states": (
        "impl='cudnn' cannot return every step's states (cuDNN's kernel returns the final "
        "ones only); use impl='fused'"
    ),
}


def serves_cudnn(rec: Recurrence) -> bool:
    """The kinds the cuDNN layer runs: the LSTM (the definition, not a name)."""
    return rec == LSTM


_BIASES = ("bias_ih", "bias_hh")


# --------------------------------------------------------------------------- weights


def pack_lstm_weights(
    w: Mapping[str, Array], input_size: int, hidden_size: int, bidirectional: bool
) -> Array:
    """One layer's torch-named weights, stacked by direction, as cuDNN's flat weight array.

    Args:
      w: ``weight_ih`` (D, 4H, I), ``weight_hh`` (D, 4H, H), optional ``bias_ih`` /
        ``bias_hh`` (D, 4H) (zeros when absent).
      input_size, hidden_size: I and H.
      bidirectional: D = 2 if True else 1.

    Returns:
      (P,) with P = ``jax.experimental.rnn.get_num_params_in_lstm(I, H, 1, bidirectional)``:
      every direction's ``W_ih``, ``W_hh`` (row-major), then every direction's ``b_ih``,
      ``b_hh`` — jax's layout with ``num_layers=1`` (forward direction first).
    """
    return _pack([w], [input_size], hidden_size, bidirectional)


def pack_lstm_params(params: Mapping[str, Array], num_layers: int, bidirectional: bool) -> Array:
    """A whole stack's flat torch-named parameters (``weight_ih_l0``, ...,
    ``bias_hh_l{k}_reverse``) as the flat weight array of a ``num_layers``-layer
    ``jax.experimental.rnn.lstm`` (pseudo-layers l0-forward, l0-reverse, l1-forward, ...).
    """
    sfx = ["", "_reverse"] if bidirectional else [""]
    layers: list[Mapping[str, jax.Array]] = []
    sizes: list[int] = []
    for k in range(num_layers):
        w = {
            base: jnp.stack([params[f"{base}_l{k}{s}"] for s in sfx])
            for base in ("weight_ih", "weight_hh", *_BIASES)
            if f"{base}_l{k}" in params
        }
        layers.append(w)
        sizes.append(int(w["weight_ih"].shape[-1]))
    hidden = int(params["weight_hh_l0"].shape[-1])
    return _pack(layers, sizes, hidden, bidirectional)


def _pack(
    layers: list[Mapping[str, Array]], input_sizes: list[int], H: int, bidirectional: bool
) -> Array:
    D = 2 if bidirectional else 1
    mats: list[Array] = []
    biases: list[Array] = []
    for w, I in zip(layers, input_sizes, strict=True):
        w_ih, w_hh = w["weight_ih"], w["weight_hh"]
        for name, a, shape in (
            ("weight_ih", w_ih, (D, 4 * H, I)),
            ("weight_hh", w_hh, (D, 4 * H, H)),
        ):
            if tuple(a.shape) != shape:
                raise ValueError(
                    f"pack_lstm_weights: {name} has shape {tuple(a.shape)}, expected {shape} "
                    f"(D={D}, 4*hidden_size={4 * H}, input_size={I})"
                )
        for d in range(D):
            mats += [w_ih[d].reshape(-1), w_hh[d].reshape(-1)]
            for name in _BIASES:
                b = w.get(name)
                biases.append(jnp.zeros((4 * H,), w_ih.dtype) if b is None else b[d])
    return jnp.concatenate(mats + biases)


def unpack_lstm_weights(
    flat: Array, input_size: int, hidden_size: int, bidirectional: bool
) -> dict[str, Array]:
    """The inverse of :func:`pack_lstm_weights` (one layer), through jax's own
    ``jax.experimental.rnn.unpack_lstm_weights``: ``{weight_ih (D, 4H, I), weight_hh
    (D, 4H, H), bias_ih (D, 4H), bias_hh (D, 4H)}``."""
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        flat, input_size, hidden_size, 1, bidirectional
    )
    D = 2 if bidirectional else 1
    return {
        name: jnp.stack([part[d] for d in range(D)])
        for name, part in zip(
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), (W_ih, W_hh, b_ih, b_hh), strict=True
        )
    }


# --------------------------------------------------------------------------- backends


def reference_lstm(
    x: Array,
    h_0: Array,
    c_0: Array,
    weights: Array,
    seq_lengths: Array,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    bidirectional: bool,
    precision: Any = None,
) -> tuple[Array, Array, Array]:
    """``jax.experimental.rnn.lstm``'s signature over ``jax.experimental.rnn.lstm_ref``
    (pure JAX, any backend and float dtype): the flat weights are unpacked with jax's
    ``unpack_lstm_weights``, so the packing is exercised too. Lengths must be in [1, T]
    (see the module docstring); ``precision`` is ignored."""
    del precision
    W_ih, W_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    return jrnn.lstm_ref(
        x,
        h_0,
        c_0,
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        seq_lengths,
        input_size,
        hidden_size,
        num_layers,
        dropout,
        bidirectional,
    )


def _is_rocm() -> bool:
    try:
        version = jax.devices()[0].client.platform_version
    except Exception:  # noqa: BLE001 - best effort: an unknown client is not ROCm
        return False
    return "rocm" in str(version).lower()


def check_cudnn(
    w: Mapping[str, Any],
    x: Any,
    states: tuple[Any, ...] = (),
    *,
    real: bool = True,
) -> None:
    """Raise ``ValueError`` (naming ``impl="fused"``) unless the cuDNN layer serves this call.

    The kind, ``remat`` and resets are the capability table's to check
    (:func:`jaxseq.layer.check`). Checked always: no ``weight_hr`` (``proj_size > 0``).
    Checked when ``real`` (cuDNN itself, not a ``lstm_fn`` stand-in): JAX's default
    backend is a CUDA GPU, and ``x``, the weights and ``states`` are float32.
    """
    if "weight_hr" in w:
        raise ValueError(
            "impl='cudnn' does not support proj_size > 0 (jax.experimental.rnn exposes no "
            "LSTM projection); use impl='fused'"
        )
    if not real:
        return
    arrays = {"input": x, **{k: v for k, v in w.items()}}
    arrays.update({f"hx[{i}]": s for i, s in enumerate(states)})
    for name, a in arrays.items():
        dtype = jnp.dtype(a.dtype)
        if dtype != jnp.float32:
            raise ValueError(
                f"impl='cudnn' computes in float32 only (cuDNN's LSTM in "
                f"jax.experimental.rnn), got {name} of dtype {dtype.name}; use impl='fused' "
                "(or dtype=jnp.float32)"
            )
    backend = jax.default_backend()
    if backend != "gpu" or _is_rocm():
        where = "ROCm" if backend == "gpu" else repr(backend)
        raise ValueError(
            f"impl='cudnn' needs a CUDA GPU (JAX's default backend is {where}); use impl='fused'"
        )


# --------------------------------------------------------------------------- the layer


def cudnn_layer(
    plan: Plan,
    w: Weights,
    x: Array,
    states: States,
    seg: Segments,
    masks: StepMasks,
    *,
    precision: Any = None,
    lstm_fn: LstmFn | None = None,
) -> LayerOut:
    """One LSTM layer, all its directions, through cuDNN (a :class:`jaxseq.layer.LayerFn`).

    Args:
      plan: the LSTM (its ``unroll`` is ignored: cuDNN does not unroll; ``remat`` and
        resets are refused by the capability table, :data:`CUDNN_REFUSALS`).
      w: ``weight_ih`` (D, 4H, I), ``weight_hh`` (D, 4H, H), optional ``bias_ih`` /
        ``bias_hh`` (D, 4H); D = 1 or 2.
      x: (T, N, I) time-major input.
      states: ``(h0, c0)``, each (D, N, H).
      seg: the (T, N) prefix mask, True at valid steps, or None (every step valid); no
        resets.
      masks: unused (no regulariser acts inside cuDNN's recurrence).
      precision: passed to ``jax.experimental.rnn.lstm`` (None: JAX's matmul precision).
      lstm_fn: stand-in for ``jax.experimental.rnn.lstm`` (e.g. :func:`reference_lstm`);
        None calls cuDNN, which needs a CUDA GPU and float32.

    Returns:
      ``(out, (h_n, c_n))``: out (T, N, D*H), forward direction first, exactly 0 where the
      mask is False; h_n, c_n (D, N, H) at each row's last valid step (``h0`` / ``c0`` for
      a zero-length row).
    """
    # A direct call (not through the stack) is checked against the table here too.
    if seg.resets is not None:
        raise ValueError(CUDNN_REFUSALS["resets"])
    if plan.remat is not None:
        raise ValueError(CUDNN_REFUSALS["remat"])
    if not serves_cudnn(plan.rec):
        raise ValueError(CUDNN_KIND_REFUSAL.format(kind=plan.rec.display_name))
    mask = seg.mask
    check_cudnn(w, x, states, real=lstm_fn is None)
    fn = jrnn.lstm if lstm_fn is None else lstm_fn
    T, N, I = x.shape
    D = w["weight_ih"].shape[0]
    H = w["weight_hh"].shape[-1]
    h0, c0 = states
    if T == 0 or N == 0:
        return jnp.zeros((T, N, D * H), x.dtype), (h0, c0)
    if mask is None:
        lengths = jnp.full((N,), T, jnp.int32)
    else:
        lengths = jnp.sum(mask, axis=0, dtype=jnp.int32)  # (N,)
        x = jnp.where(mask[:, :, None], x, jnp.zeros_like(x))
    flat = pack_lstm_weights(w, I, H, D == 2)
    y, h_n, c_n = fn(
        jnp.swapaxes(x, 0, 1),  # (N, T, I)
        h0,
        c0,
        flat,
        jnp.maximum(lengths, 1),  # cuDNN takes lengths in [1, T]
        input_size=I,
        hidden_size=H,
        num_layers=1,
        dropout=0.0,
        bidirectional=D == 2,
        precision=precision,
    )
    out = jnp.swapaxes(y, 0, 1)  # (T, N, D*H)
    if mask is not None:
        out = jnp.where(mask[:, :, None], out, jnp.zeros_like(out))
        empty = (lengths == 0).reshape(1, N, 1)
        h_n = jnp.where(empty, h0, h_n)
        c_n = jnp.where(empty, c0, c_n)
    return out, (h_n, c_n)
