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
from typing import Literal

import torch
from torch import Tensor, nn

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


class MinRNNBase(nn.Module):
    """Shared constructor and forward of :class:`MinGRU` and :class:`MinLSTM`."""

    num_gates = 0

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        mode: Mode = "sequential",
    ):
        super().__init__()
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"Unknown mode {mode!r}; expected 'sequential' or 'parallel'")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.mode = mode
        D = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * D
            for sfx in [f"_l{layer}"] + ([f"_l{layer}_reverse"] if bidirectional else []):
                w = torch.empty(self.num_gates * hidden_size, in_size, **factory)
                self.register_parameter("weight_ih" + sfx, nn.Parameter(w))
                if bias:
                    b = torch.empty(self.num_gates * hidden_size, **factory)
                    self.register_parameter("bias_ih" + sfx, nn.Parameter(b))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) on every parameter, as ``torch.nn.GRU``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def coefficients(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """g (..., G*H) = x W_ih^T + b_ih -> (a, b), each (..., H)."""
        raise NotImplementedError

    def _direction(self, g: Tensor, h: Tensor, mask: Tensor | None, reverse: bool):
        """g (T, N, G*H), h (N, H), mask (T, N, 1) bool or None -> (ys (T, N, H), h_n (N, H))."""
        a, b = self.coefficients(g)
        if self.mode == "parallel":
            if mask is not None:
                a = torch.where(mask, a, torch.ones_like(a))
                b = torch.where(mask, b, torch.zeros_like(b))
            if reverse:
                a, b = a.flip(0), b.flip(0)
            hs = doubling_scan(a, b, h)
            h_n = hs[-1]
            if reverse:
                hs = hs.flip(0)
            if mask is not None:
                hs = torch.where(mask, hs, torch.zeros_like(hs))
            return hs, h_n
        ys = [torch.zeros_like(h)] * g.shape[0]
        steps = range(g.shape[0] - 1, -1, -1) if reverse else range(g.shape[0])
        for t in steps:
            new = a[t] * h + b[t]
            if mask is None:
                h = ys[t] = new
            else:  # as a packed sequence: frozen state and zero output on padding
                h = torch.where(mask[t], new, h)
                ys[t] = torch.where(mask[t], new, torch.zeros_like(new))
        return torch.stack(ys), h

    def forward(
        self, x: Tensor, hx: Tensor | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (T, N, I) / (N, T, I) with batch_first / unbatched (T, I); hx (L*D, N, H);
        lengths (N,) in [0, T] -> out (T, N, D*H), h_n (L*D, N, H)."""
        if x.dim() not in (2, 3):
            raise ValueError(
                f"{type(self).__name__}: Expected input to be 2D or 3D, got {x.dim()}D"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]}"
            )
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
            hx = None if hx is None else hx.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        T, N = x.shape[0], x.shape[1]
        if T == 0:  # as torch.nn.GRU (jaxseq returns empty outputs and h_n = h0)
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        D, H = (2 if self.bidirectional else 1), self.hidden_size
        if hx is None:
            hx = x.new_zeros(self.num_layers * D, N, H)
        elif tuple(hx.shape) != (self.num_layers * D, N, H):
            raise ValueError(
                f"Expected hidden size {(self.num_layers * D, N, H)}, got {list(hx.shape)}"
            )
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).reshape(N).to(x.device)
            if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
                raise ValueError(f"lengths must lie in [0, T] = [0, {T}]")
            mask = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[..., None]
            x = torch.where(mask, x, torch.zeros_like(x))
        h_n = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                g = nn.functional.linear(
                    x, getattr(self, "weight_ih" + sfx), getattr(self, "bias_ih" + sfx, None)
                )
                ys, h = self._direction(g, hx[layer * D + d], mask, reverse=d == 1)
                outs.append(ys)
                h_n.append(h)
            x = torch.cat(outs, dim=-1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        h_n_t = torch.stack(h_n)
        if unbatched:
            return x.squeeze(1), h_n_t.squeeze(1)
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, h_n_t

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", mode={self.mode!r}"


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
