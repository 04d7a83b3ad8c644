"""Episode resets in PyTorch: run every segment of every row as its own sequence.

The twin of ``jaxseq.run_stack(..., resets=...)``. ``resets`` is a bool tensor with the
time and batch axes of the input, (T, N) ((N, T) with ``batch_first``, (T,) for an
unbatched (T, I) input); a True at (t, n) starts a new, independent segment of row n at
step t. :func:`run_segments` splits each row into its segments (one starting at t = 0,
and one at every t < lengths[n] where ``resets`` is True), runs all segments of all rows
as one padded batch through the whole stack (every layer and direction), and puts the
outputs back in place. A row's first segment starts from ``hx`` (zeros when None), one
started by a reset from ``reset_hx`` (zeros when None): ``hx`` continues a row from the
previous batch, a reset starts a new episode (the reverse directions: the row's last
segment starts from ``hx``, the others from ``reset_hx``):

* output: the segments' outputs in place, zero on padding (t >= lengths[n]);
* ``h_n`` (and ``c_n``): for forward directions the final state of the row's last
  segment, for reverse directions the reverse final state of its first segment;
* resets at padded steps are ignored, a reset at t = 0 starts the row from ``reset_hx``,
  a row of length 0 gives zero output and ``h_n = h0``.

The module runs once: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` on a
``PackedSequence`` (``enforce_sorted=False``), torchseq's ``MinGRU``, ``MinLSTM``,
``LayerNormLSTM`` and ``LayerNormGRU`` with ``lengths=``. Everything else is indexing,
so gradients reach the input, ``hx`` and every parameter through torch autograd.

torchseq never imports jax.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> m = torch.nn.GRU(3, 4, bidirectional=True)
>>> x = torch.randn(5, 2, 3)
>>> resets = torch.zeros(5, 2, dtype=torch.bool)
>>> resets[2, 0] = True  # row 0: segments [0, 2) and [2, 5)
>>> out, h_n = run_segments(m, x, lengths=torch.tensor([5, 3]), resets=resets)
>>> out.shape, h_n.shape, float(out[3:, 1].detach().abs().max())
(torch.Size([5, 2, 8]), torch.Size([2, 2, 4]), 0.0)
>>> seg_out, seg_h = m(x[2:, :1])  # row 0's second segment on its own
>>> torch.allclose(out[2:, :1], seg_out), torch.allclose(h_n[0, 0], seg_h[0, 0])
(True, True)
>>> first_out, first_h = m(x[:2, :1])  # the reverse direction's h_n: the first segment
>>> torch.allclose(out[:2, :1], first_out), torch.allclose(h_n[1, 0], first_h[1, 0])
(True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchseq._loop import Structure, initial_states, structure

__all__ = ["run_segments"]


def _structure(module: nn.Module) -> Structure:
    """The :class:`torchseq._loop.Structure` of a supported module."""
    found = structure(module)
    if found is None:
        raise TypeError(
            "run_segments: module must be a torch.nn.RNN, LSTM or GRU, or torchseq's MinGRU, "
            f"MinLSTM, LayerNormLSTM or LayerNormGRU; got {type(module).__name__}"
        )
    return found


def _as_bool_tensor(resets: Any) -> Tensor:
    if isinstance(resets, (list, tuple)):
        resets = torch.tensor(resets)
    elif isinstance(resets, np.ndarray):
        resets = torch.from_numpy(resets)
    if not isinstance(resets, Tensor):
        raise TypeError(f"run_segments: resets must be a bool tensor, got {type(resets).__name__}")
    if resets.dtype != torch.bool:
        raise TypeError(
            "run_segments: resets must be a bool tensor (True where a new segment starts), "
            f"got dtype {resets.dtype}; convert episode-end flags with .bool() first"
        )
    return resets


def run_segments(
    module: nn.Module,
    x: Tensor,
    hx: Any = None,
    lengths: Any = None,
    resets: Any = None,
    reset_hx: Any = None,
) -> tuple[Tensor, Any]:
    """Run ``module`` over every segment of every row of ``x`` as its own sequence.

    Args:
      module: a ``torch.nn.RNN`` / ``LSTM`` (``proj_size`` allowed) / ``GRU``, or
        torchseq's ``MinGRU`` / ``MinLSTM`` / ``LayerNormLSTM`` / ``LayerNormGRU``; its
        ``batch_first`` sets the layout of ``x``, the output and ``resets``.
      x: (T, N, I), (N, T, I) with ``batch_first``, or unbatched (T, I).
      hx: optional initial state, zeros when None: h0 (L*D, N, H_out), or for an LSTM a
        pair ``(h0, c0)`` with c0 (L*D, N, H); unbatched: no N. Row n's first segment
        starts from row n's state (the reverse directions: its last segment).
      lengths: optional (N,) integers in [0, T] (unbatched: one integer); T when None.
      resets: optional bool tensor (T, N) ((N, T) with ``batch_first``, (T,) unbatched):
        a True at (t, n) starts a new segment of row n at step t, from ``reset_hx``.
        Resets at padded steps change nothing; None means no resets.
      reset_hx: the state segments started by a reset begin from, structured as ``hx``;
        zeros when None (a new episode).

    Returns:
      ``(output, h_n)`` or, for an LSTM, ``(output, (h_n, c_n))``: output (T, N, D*H_out)
      (batch_first: (N, T, D*H_out); unbatched: (T, D*H_out)), zero on padding; h_n
      (L*D, N, H_out), c_n (L*D, N, H), forward directions from each row's last segment,
      reverse directions from its first, ``h0`` for rows of length 0.
    """
    st = _structure(module)
    L, D, H_out, cell = st.num_layers, st.num_directions, st.H_out, st.cell
    batch_first = bool(module.batch_first)
    if not isinstance(x, Tensor):
        raise TypeError(f"run_segments: x must be a tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"run_segments: expected input to be 2D or 3D, got {x.dim()}D")
    unbatched = x.dim() == 2
    if unbatched:
        xt = x.unsqueeze(1)
    else:
        xt = x.transpose(0, 1) if batch_first else x
    T, N = int(xt.shape[0]), int(xt.shape[1])
    if T == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    device = x.device

    shapes = [(L * D, N, s) for s in st.sizes]
    states = initial_states(hx, cell, shapes, xt, "run_segments", unbatched=unbatched, strict=True)
    fresh = initial_states(
        reset_hx, cell, shapes, xt, "run_segments (reset_hx)", unbatched=unbatched, strict=True
    )

    if lengths is None:
        lens = torch.full((N,), T, dtype=torch.long, device=device)
    else:
        lens_t = torch.as_tensor(lengths)
        if lens_t.dtype.is_floating_point or lens_t.dtype.is_complex or lens_t.dtype == torch.bool:
            raise TypeError(f"run_segments: lengths must be integers, got dtype {lens_t.dtype}")
        if lens_t.numel() != N or (not unbatched and lens_t.dim() != 1):
            raise ValueError(
                f"run_segments: lengths must have shape ({N},), got {tuple(lens_t.shape)}"
            )
        lens = lens_t.reshape(N).to(device=device, dtype=torch.long)
        if N and (int(lens.min()) < 0 or int(lens.max()) > T):
            raise ValueError(f"run_segments: lengths must lie in [0, T] = [0, {T}]")

    if resets is None:
        r = torch.zeros(T, N, dtype=torch.bool, device=device)
    else:
        r = _as_bool_tensor(resets)
        if unbatched:
            want: tuple[int, ...] = (T,)
        else:
            want = (N, T) if batch_first else (T, N)
        if tuple(r.shape) != want:
            axes = "(T,)" if unbatched else ("(N, T)" if batch_first else "(T, N)")
            raise ValueError(
                f"run_segments: resets must have the time and batch axes of the input, "
                f"{axes} = {want}, got {tuple(r.shape)}"
            )
        r = r.to(device)
        r = r[:, None] if unbatched else (r.T if batch_first else r)

    # Segments, numbered row by row (n-major, then by start time) -----------------------
    t_idx = torch.arange(T, device=device)
    valid = t_idx[:, None] < lens[None, :]  # (T, N)
    starts = valid & (r | (t_idx == 0)[:, None])  # (T, N)
    seg_of = (starts.T.reshape(-1).cumsum(0) - 1).reshape(N, T).T  # (T, N) segment id
    seg_row, seg_start = starts.T.nonzero(as_tuple=True)  # (S,) each, n-major order
    S = int(seg_row.numel())
    seg_len = torch.bincount(seg_of[valid], minlength=S)  # (S,)

    F_out = D * H_out
    if S == 0:  # every row has length 0: zero output, h_n = h0
        out = xt.new_zeros(T, N, F_out)
        finals = states
    else:
        T_seg = int(seg_len.max())
        tau = torch.arange(T_seg, device=device)
        seg_valid = tau[:, None] < seg_len[None, :]  # (T_seg, S)
        src_t = (seg_start[None, :] + tau[:, None]).clamp(max=T - 1)
        xs = xt[src_t, seg_row[None, :].expand(T_seg, S)]  # (T_seg, S, I)
        xs = torch.where(seg_valid[..., None], xs, torch.zeros_like(xs))
        # Each segment's initial states, per layer and direction: the row's hx where it
        # continues the row (forward: the first segment unless a reset starts it;
        # reverse: the row's last segment), else reset_hx.
        fwd_hx = ~r[seg_start, seg_row]  # (S,)
        last_of_row = torch.ones(S, dtype=torch.bool, device=device)
        last_of_row[:-1] = seg_row[1:] != seg_row[:-1]
        is_rev = (torch.arange(L * D, device=device) % D) == 1  # (L*D,)
        use_hx = torch.where(is_rev[:, None], last_of_row[None, :], fwd_hx[None, :])
        s0 = [
            torch.where(use_hx[..., None], s.index_select(1, seg_row), f.index_select(1, seg_row))
            for s, f in zip(states, fresh, strict=True)
        ]  # (L*D, S, size) each
        state0: Any = tuple(s0) if cell else s0[0]
        if isinstance(module, nn.RNNBase):
            packed = pack_padded_sequence(
                xs, seg_len.cpu(), batch_first=False, enforce_sorted=False
            )
            out_p, fin = module(packed, state0)
            out_s, _ = pad_packed_sequence(out_p, batch_first=False, total_length=T_seg)
        else:
            inp = xs.transpose(0, 1) if batch_first else xs
            out_s, fin = module(inp, state0, seg_len)
            if batch_first:
                out_s = out_s.transpose(0, 1)
        seg_finals = list(fin) if cell else [fin]  # (L*D, S, size) each

        # Outputs back in place: gather from the segments' outputs plus one zero row.
        flat = torch.cat([out_s.reshape(T_seg * S, F_out), out_s.new_zeros(1, F_out)])
        tau_of = t_idx[:, None] - seg_start[seg_of.clamp(min=0)]  # (T, N)
        src = torch.where(valid, tau_of * S + seg_of, torch.full_like(seg_of, T_seg * S))
        out = flat[src]  # (T, N, F_out)

        # h_n: forward directions from each row's last segment, reverse from its first;
        # rows of length 0 keep h0 (index S + n in the concatenation below).
        rows = torch.arange(N, device=device)
        has = lens > 0
        first = torch.where(has, seg_of[0], S + rows)
        last = torch.where(has, seg_of[(lens - 1).clamp(min=0), rows], S + rows)
        pick = torch.where(is_rev[:, None], first[None, :], last[None, :])  # (L*D, N)
        finals = []
        for seg_fin, s in zip(seg_finals, states, strict=True):
            both = torch.cat([seg_fin, s], dim=1)  # (L*D, S + N, size)
            idx = pick[..., None].expand(L * D, N, both.shape[-1])
            finals.append(torch.gather(both, 1, idx))

    if unbatched:
        out = out.squeeze(1)
        finals = [f.squeeze(1) for f in finals]
    elif batch_first:
        out = out.transpose(0, 1)
    return out, (tuple(finals) if cell else finals[0])
