"""PyTorch reference for the parity tests: build, run packed, differentiate.

The reference is built from torch alone: parameter names and shapes come from the torch
module's own ``state_dict``, variable lengths go through
``pack_padded_sequence(..., enforce_sorted=False)``, and gradients come from
``torch.autograd`` with the same cotangents that the JAX side uses.

Torch refuses length-0 sequences, so rows of length 0 are dropped before packing and the
full-batch result is assembled around the packed run: their output is 0, their ``h_n``
(and ``c_n``) is their ``h0`` (identity, so the gradient into ``h0`` is the cotangent)
and nothing flows into their inputs.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

KINDS = {
    # case kind -> (torch class name, jaxseq kind, nonlinearity, uses proj_size)
    "rnn_tanh": ("RNN", "rnn", "tanh", False),
    "rnn_relu": ("RNN", "rnn", "relu", False),
    "lstm": ("LSTM", "lstm", "tanh", False),
    "lstm_proj": ("LSTM", "lstm", "tanh", True),
    "gru": ("GRU", "gru", "tanh", False),
}

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


@dataclasses.dataclass(frozen=True)
class Structure:
    """Constructor arguments of one recurrent stack."""

    kind: str  # a key of KINDS
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    proj_size: int

    @property
    def jax_kind(self) -> str:
        return KINDS[self.kind][1]

    @property
    def nonlinearity(self) -> str:
        return KINDS[self.kind][2]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size


def build_torch(s: Structure, dtype: np.dtype) -> torch.nn.Module:
    """The torch module with these constructor arguments (weights still torch's init)."""
    cls_name = KINDS[s.kind][0]
    kw: dict[str, Any] = dict(
        num_layers=s.num_layers,
        bias=s.bias,
        batch_first=s.batch_first,
        bidirectional=s.bidirectional,
        dtype=TORCH_DTYPE[np.dtype(dtype)],
    )
    if cls_name == "RNN":
        kw["nonlinearity"] = s.nonlinearity
    if s.proj_size:
        kw["proj_size"] = s.proj_size
    return getattr(torch.nn, cls_name)(s.input_size, s.hidden_size, **kw)


def random_params(s: Structure, rng: np.random.Generator, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Random weights for every name in the torch module's ``state_dict``, torch's layout.

    Drawn from U(-1/sqrt(H), 1/sqrt(H)) as torch's init, from ``rng`` (not torch's RNG),
    so the names and shapes come from torch and the values from the test's seed.
    """
    bound = 1.0 / np.sqrt(s.hidden_size)
    shapes = {k: tuple(v.shape) for k, v in build_torch(s, dtype).state_dict().items()}
    return {k: rng.uniform(-bound, bound, shape).astype(dtype) for k, shape in shapes.items()}


@dataclasses.dataclass
class Result:
    """Values and gradients of one run; gradients are of ``sum(out * cot_out) + sum(h_n *
    cot_h) [+ sum(c_n * cot_c)]``."""

    out: np.ndarray
    h_n: np.ndarray
    c_n: np.ndarray | None
    grad_x: np.ndarray
    grad_h0: np.ndarray | None
    grad_c0: np.ndarray | None
    grad_params: dict[str, np.ndarray]


def _t(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def run_torch(*args: Any, **kw: Any) -> Result:
    """:func:`_run_torch` with torch's "projections not supported with oneDNN" notice muted
    (it only says torch falls back to its default kernel)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        return _run_torch(*args, **kw)


def _run_torch(
    s: Structure,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    hx: Any,
    lengths: np.ndarray | None,
    cot: dict[str, np.ndarray],
) -> Result:
    """Run the torch reference forward and backward.

    Args:
      s: the structure.
      params: torch-named weights (NumPy).
      x: (T, N, I) or (N, T, I) with ``batch_first``, or unbatched (T, I).
      hx: None, h0 (L*D, [N,] H_out), or for LSTM a pair (h0, c0).
      lengths: None, an (N,) integer array for batched x, or a 0-d array for unbatched x
        (run as a batch of one).
      cot: cotangents ``out``, ``h`` and for LSTM ``c``, shaped as the outputs.
    """
    dtype = x.dtype
    mod = build_torch(s, dtype)
    mod.load_state_dict({k: _t(v) for k, v in params.items()}, strict=True)
    mod.train()  # no dropout configured; train mode as torch's default
    is_lstm = s.jax_kind == "lstm"
    L, D, H, Hout = s.num_layers, s.num_directions, s.hidden_size, s.output_size

    xt = _t(x, True)
    h0t = c0t = None
    if hx is not None:
        if is_lstm:
            h0t, c0t = _t(hx[0], True), _t(hx[1], True)
        else:
            h0t = _t(hx, True)

    unbatched = x.ndim == 2
    if lengths is None:
        # torch's own handling of every layout, unbatched included.
        state = None if hx is None else ((h0t, c0t) if is_lstm else h0t)
        out, st = mod(xt, state)
        h_n, c_n = st if is_lstm else (st, None)
    else:
        out, h_n, c_n = _run_packed(
            s, mod, xt, h0t, c0t, np.asarray(lengths), unbatched, L * D, H, Hout
        )

    loss = (out * _t(cot["out"])).sum() + (h_n * _t(cot["h"])).sum()
    if is_lstm:
        loss = loss + (c_n * _t(cot["c"])).sum()
    if loss.requires_grad:  # False when every row has length 0 and hx is not given
        loss.backward()

    def np_grad(t: torch.Tensor | None, like: np.ndarray) -> np.ndarray:
        return np.zeros_like(like) if t is None else t.detach().numpy().copy()

    return Result(
        out=out.detach().numpy(),
        h_n=h_n.detach().numpy(),
        c_n=None if c_n is None else c_n.detach().numpy(),
        grad_x=np_grad(xt.grad, x),
        grad_h0=None if h0t is None else np_grad(h0t.grad, hx[0] if is_lstm else hx),
        grad_c0=None if c0t is None else np_grad(c0t.grad, hx[1]),
        grad_params={k: np_grad(p.grad, params[k]) for k, p in mod.named_parameters()},
    )


def _run_packed(s, mod, xt, h0t, c0t, lengths, unbatched, LD, H, Hout):
    """Packed run of the rows with length > 0; rows of length 0 keep h0 and output 0."""
    is_lstm = c0t is not None or s.jax_kind == "lstm"
    if unbatched:  # a batch of one, time-major
        xb = xt.unsqueeze(1)
        h0b = None if h0t is None else h0t.unsqueeze(1)
        c0b = None if c0t is None else c0t.unsqueeze(1)
        lengths = lengths.reshape(1)
        batch_first = False
    else:
        xb, h0b, c0b, batch_first = xt, h0t, c0t, s.batch_first
    if batch_first:
        xb = xb.transpose(0, 1)  # work time-major below; transposes are differentiable
    T, N = xb.shape[0], xb.shape[1]
    dtype = xb.dtype
    if h0b is None:
        h0b = torch.zeros(LD, N, Hout, dtype=dtype)
    if is_lstm and c0b is None:
        c0b = torch.zeros(LD, N, H, dtype=dtype)

    keep = torch.tensor(np.nonzero(lengths > 0)[0], dtype=torch.long)
    out = torch.zeros(T, N, s.num_directions * Hout, dtype=dtype)
    h_n, c_n = h0b, c0b
    if len(keep):
        x_k = xb.index_select(1, keep)
        len_k = torch.tensor(lengths[lengths > 0].astype(np.int64))
        packed = pack_padded_sequence(x_k, len_k, batch_first=False, enforce_sorted=False)
        h_k = h0b.index_select(1, keep)
        state = (h_k, c0b.index_select(1, keep)) if is_lstm else h_k
        # The module may be batch_first: feed it the layout it expects. A PackedSequence
        # carries no layout, so only the padded output's layout matters.
        out_p, st = mod(packed, state)
        out_k, _ = pad_packed_sequence(out_p, batch_first=False, total_length=T)
        out = out.index_copy(1, keep, out_k)
        if is_lstm:
            h_n = h0b.index_copy(1, keep, st[0])
            c_n = c0b.index_copy(1, keep, st[1])
        else:
            h_n = h0b.index_copy(1, keep, st)
    if batch_first:
        out = out.transpose(0, 1)
    if unbatched:
        out, h_n = out.squeeze(1), h_n.squeeze(1)
        c_n = None if c_n is None else c_n.squeeze(1)
    return out, h_n, (c_n if is_lstm else None)
