"""minGRU and minLSTM in PyTorch (Feng et al. 2024), twins of ``jaxseq.nn.MinGRU`` / ``MinLSTM``.

Per layer and direction the gates read the input only, so the layer is the elementwise
linear recurrence ``h_t = a_t * h_{t-1} + b_t``::

    minGRU  (weight_ih rows [z; h~])      z = sigmoid(W_z x + b_z), h~ = W_h x + b_h
                                          a = 1 - z,  b = z * h~
    minLSTM (weight_ih rows [f; i; h~])   f = sigmoid(W_f x + b_f), i = sigmoid(W_i x + b_i)
                                          a = f / (f + i),  b = i / (f + i) * h~

Parameters ``weight_ih_l{k}{_reverse}`` (G*H, in) and ``bias_ih_l{k}{_reverse}`` (G*H,),
initialised U(-1/sqrt(H), 1/sqrt(H)) as ``torch.nn.GRU``; layer k > 0 reads
concat(forward, reverse). ``forward(x, hx=None, lengths=None) -> (out, h_n)`` with the
shapes of ``torch.nn.GRU`` and, where ``lengths`` are given, the semantics of a packed
sequence: the state is frozen after each row's last valid step, outputs are zero on
padding, the reverse direction starts at each row's last valid element, length 0 gives
``h_n = h0``.

Two ways to run a layer (``mode``):

* ``"sequential"`` (default): a Python loop over time, the reference;
* ``"parallel"``: a Hillis-Steele doubling scan, log2(T) rounds of
  ``(A, B)[t] <- (A[t] A[t-d], A[t] B[t-d] + B[t])`` on whole tensors (padding folded in
  as the identity ``a = 1, b = 0``). Stable (no division by cumulative products, no
  logarithms), exact up to rounding, O(T log T) work.

torchseq never imports jax.

>>> import torch
>>> m = MinGRU(3, 4, bidirectional=True)
>>> out, h_n = m(torch.ones(6, 2, 3), lengths=torch.tensor([6, 2]))
>>> out.shape, h_n.shape, float(out[2:, 1].detach().abs().max())
(torch.Size([6, 2, 8]), torch.Size([2, 2, 4]), 0.0)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from torchseq._loop import MaskedRNNBase, State, time_loop

__all__ = ["MinRNNBase", "MinGRU", "MinLSTM", "doubling_scan"]

Mode = Literal["sequential", "parallel"]


def doubling_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` over dim 0 by Hillis-Steele doubling.

    a, b (T, ...), h0 (...) -> (T, ...). After the round with offset d, ``(A[t], B[t])``
    composes steps ``t-2d+1 .. t``; after ceil(log2 T) rounds every prefix is done and
    ``h_t = A[t] h0 + B[t]``.
    """
    A, B = a, b
    d = 1
    while d < A.shape[0]:
        A_prev, B_prev = A[:-d], B[:-d]
        B = torch.cat([B[:d], A[d:] * B_prev + B[d:]])
        A = torch.cat([A[:d], A[d:] * A_prev])
        d *= 2
    return A * h0 + B


class MinRNNBase(MaskedRNNBase):
    """Shared parameters and layer of :class:`MinGRU` and :class:`MinLSTM`: the step
    ``h = a_t h + b_t`` of their ``coefficients``, or the doubling scan."""

    def __init__(self, *args: Any, mode: Mode = "sequential", **kwargs: Any):
        """The arguments of :class:`torchseq._loop.MaskedRNNBase`, then ``mode``."""
        super().__init__(*args, **kwargs)
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"Unknown mode {mode!r}; expected 'sequential' or 'parallel'")
        self.mode = mode

    def _shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        G, H = self.num_gates, self.hidden_size
        return {"weight_ih": (G * H, in_size)} | ({"bias_ih": (G * H,)} if self.bias else {})

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) on every parameter, as ``torch.nn.GRU``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def coefficients(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """g (..., G*H) = x W_ih^T + b_ih -> (a, b), each (..., H)."""
        raise NotImplementedError

    def _layer(
        self, p: dict[str, Tensor], x: Tensor, state: State, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, State]:
        """x (T, N, in), state (h,) with h (N, H), mask (T, N, 1) bool or None -> (ys (T, N,
        H), (h_n,))."""
        a, b = self.coefficients(F.linear(x, p["weight_ih"], p.get("bias_ih")))
        if self.mode == "sequential":
            return time_loop(lambda t, s: (a[t] * s[0] + b[t],), state, x.shape[0], mask, reverse)
        if mask is not None:
            a = torch.where(mask, a, torch.ones_like(a))
            b = torch.where(mask, b, torch.zeros_like(b))
        if reverse:
            a, b = a.flip(0), b.flip(0)
        hs = doubling_scan(a, b, state[0])
        h_n = hs[-1]
        if reverse:
            hs = hs.flip(0)
        if mask is not None:
            hs = torch.where(mask, hs, torch.zeros_like(hs))
        return hs, (h_n,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode!r}"


class MinGRU(MinRNNBase):
    """minGRU: ``h_t = (1 - z) h_{t-1} + z h~``, z = sigmoid(W_z x + b_z), h~ = W_h x + b_h.

    ``MinGRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None, *, mode='sequential')``.
    """

    num_gates = 2

    def coefficients(self, g: Tensor) -> tuple[Tensor, Tensor]:
        gz, h_tilde = g.chunk(2, dim=-1)
        z = torch.sigmoid(gz)
        return 1.0 - z, z * h_tilde


class MinLSTM(MinRNNBase):
    """minLSTM: ``h_t = f' h_{t-1} + i' h~`` with f' = f / (f + i), i' = i / (f + i).

    Arguments as :class:`MinGRU`; rows of ``weight_ih`` [f; i; h~].
    """

    num_gates = 3

    def coefficients(self, g: Tensor) -> tuple[Tensor, Tensor]:
        gf, gi, h_tilde = g.chunk(3, dim=-1)
        f, i = torch.sigmoid(gf), torch.sigmoid(gi)
        s = f + i
        return f / s, (i / s) * h_tilde
