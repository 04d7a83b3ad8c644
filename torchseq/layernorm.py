"""Layer-normalised LSTM and GRU in PyTorch (Ba et al. 2016), twins of
``jaxseq.nn.LayerNormLSTM`` / ``LayerNormGRU``.

The formulation (the LN-LSTM of "Layer Normalization", section 3.1: the input and the
recurrent terms normalised separately, each gate block of H units on its own)::

    LN_ih = LN(x W_ih^T + b_ih; ln_ih_weight, ln_ih_bias)
    LN_hh = LN(h W_hh^T + b_hh; ln_hh_weight, ln_hh_bias)

    LayerNormLSTM  i, f, g, o = split(LN_ih + LN_hh, 4)
                   c' = sigmoid(f) c + sigmoid(i) tanh(g)
                   h' = sigmoid(o) tanh(LN(c'; ln_c_weight, ln_c_bias))
    LayerNormGRU   r = sigmoid(LN_ih[r] + LN_hh[r]),  z = sigmoid(LN_ih[z] + LN_hh[z])
                   n = tanh(LN_ih[n] + r LN_hh[n]),   h' = (1 - z) n + z h

where ``LN`` is ``torch.nn.functional.layer_norm`` over each block of H units (eps 1e-5,
biased variance) followed by a per-unit gain and bias ((G*H,), or (H,) for ``LN_c``).

Parameters per layer k and direction (suffix ``_l{k}{_reverse}``): ``weight_ih`` (G*H,
in), ``weight_hh`` (G*H, H), with ``bias`` ``bias_ih`` / ``bias_hh`` (G*H,), all
U(-1/sqrt(H), 1/sqrt(H)) as ``torch.nn.LSTM``; ``ln_ih_weight``, ``ln_ih_bias``,
``ln_hh_weight``, ``ln_hh_bias`` (G*H,) and (LSTM) ``ln_c_weight``, ``ln_c_bias`` (H,),
gains 1 and biases 0. ``forward(x, hx=None, lengths=None)`` has the shapes of
``torch.nn.LSTM`` / ``GRU`` and, where ``lengths`` are given, the semantics of a packed
sequence: outputs zero from each row's length on, the state frozen after each row's last
valid step (``h_n`` is that state), the reverse direction starting at each row's own last
valid element, length 0 giving ``h_n = h0``. A Python loop over time, the reference.

torchseq never imports jax.

>>> import torch
>>> m = LayerNormLSTM(3, 4, bidirectional=True)
>>> out, (h_n, c_n) = m(torch.ones(6, 2, 3), lengths=torch.tensor([6, 2]))
>>> out.shape, c_n.shape, float(out[2:, 1].detach().abs().max())
(torch.Size([6, 2, 8]), torch.Size([2, 2, 4]), 0.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "LayerNormRNNBase",
    "LayerNormLSTM",
    "LayerNormGRU",
    "LayerNormLSTMCell",
    "LayerNormGRUCell",
    "EPS",
    "block_layer_norm",
]

#: The layer norm's epsilon (``torch.nn.LayerNorm``'s default).
EPS = 1e-5


def block_layer_norm(v: Tensor, weight: Tensor, bias: Tensor, groups: int) -> Tensor:
    """``F.layer_norm`` over each of ``groups`` blocks of v's last dim, then gain and bias."""
    blocks = v.unflatten(-1, (groups, v.shape[-1] // groups))
    return F.layer_norm(blocks, blocks.shape[-1:], eps=EPS).flatten(-2) * weight + bias


class LayerNormRNNBase(nn.Module):
    """Shared constructor and forward of :class:`LayerNormLSTM` and :class:`LayerNormGRU`."""

    num_gates = 0
    cell_state = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        D, G, H = (2 if bidirectional else 1), self.num_gates, hidden_size
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else H * D
            for sfx in [f"_l{layer}"] + ([f"_l{layer}_reverse"] if bidirectional else []):
                shapes: dict[str, tuple[int, ...]] = {
                    "weight_ih": (G * H, in_size),
                    "weight_hh": (G * H, H),
                }
                if bias:
                    shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
                shapes |= {n: (G * H,) for n in ("ln_ih_weight", "ln_ih_bias")}
                shapes |= {n: (G * H,) for n in ("ln_hh_weight", "ln_hh_bias")}
                if self.cell_state:
                    shapes |= {"ln_c_weight": (H,), "ln_c_bias": (H,)}
                self._bases = tuple(shapes)
                for name, shape in shapes.items():
                    self.register_parameter(name + sfx, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) on the weights and biases, as ``torch.nn.LSTM``; the
        layer norms' gains 1 and biases 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("ln_") and "_weight_l" in name:
                nn.init.ones_(p)
            elif name.startswith("ln_"):
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -bound, bound)

    def _step(self, p: dict[str, Tensor], state: Any, gx: Tensor) -> tuple[Any, Tensor]:
        """One step on ``gx = LN_ih(x W_ih^T + b_ih)`` -> (state', h')."""
        raise NotImplementedError

    def _direction(
        self, p: dict[str, Tensor], gx: Tensor, state: Any, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, Any]:
        """gx (T, N, G*H) (LN_ih applied), state h or (h, c) each (N, H), mask (T, N, 1)
        -> (ys (T, N, H), final state)."""
        T = gx.shape[0]
        h0 = state[0] if self.cell_state else state
        ys = [torch.zeros_like(h0)] * T
        for t in range(T - 1, -1, -1) if reverse else range(T):
            new, y = self._step(p, state, gx[t])
            if mask is None:
                state, ys[t] = new, y
            else:  # as a packed sequence: frozen state and zero output on padding
                m = mask[t]
                if self.cell_state:
                    state = tuple(torch.where(m, a, b) for a, b in zip(new, state, strict=True))
                else:
                    state = torch.where(m, new, state)
                ys[t] = torch.where(m, y, torch.zeros_like(y))
        return torch.stack(ys), state

    def forward(
        self, x: Tensor, hx: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """x (T, N, I) / (N, T, I) with batch_first / unbatched (T, I); hx (L*D, N, H)
        (LSTM: a pair ``(h0, c0)``); lengths (N,) in [0, T] -> ``(out, h_n)`` or ``(out,
        (h_n, c_n))``: out (T, N, D*H), h_n and c_n (L*D, N, H)."""
        name = type(self).__name__
        if x.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.dim()}D")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]}"
            )
        n_states = 2 if self.cell_state else 1
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        T, N = x.shape[0], x.shape[1]
        if T == 0:  # as torch.nn.LSTM (jaxseq returns empty outputs and h_n = h0)
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        D, H = (2 if self.bidirectional else 1), self.hidden_size
        if hx is None:
            states = [x.new_zeros(self.num_layers * D, N, H) for _ in range(n_states)]
        else:
            states = list(hx) if self.cell_state else [hx]
            if len(states) != n_states:
                raise ValueError(f"{name}: hx must be a pair (h0, c0)")
            if unbatched:
                states = [s.unsqueeze(1) for s in states]
            for s in states:
                if tuple(s.shape) != (self.num_layers * D, N, H):
                    raise ValueError(
                        f"Expected hidden size {(self.num_layers * D, N, H)}, got {list(s.shape)}"
                    )
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).reshape(N).to(x.device)
            if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
                raise ValueError(f"lengths must lie in [0, T] = [0, {T}]")
            mask = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[..., None]
            x = torch.where(mask, x, torch.zeros_like(x))
        finals: list[Any] = []
        G = self.num_gates
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                p = {base: getattr(self, base + sfx) for base in self._bases}
                gx = F.linear(x, p["weight_ih"], p.get("bias_ih"))
                gx = block_layer_norm(gx, p["ln_ih_weight"], p["ln_ih_bias"], G)
                k = layer * D + d
                s0 = tuple(s[k] for s in states) if self.cell_state else states[0][k]
                ys, fin = self._direction(p, gx, s0, mask, reverse=d == 1)
                outs.append(ys)
                finals.append(fin if self.cell_state else (fin,))
            x = torch.cat(outs, dim=-1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out_states = [torch.stack(s) for s in zip(*finals, strict=True)]
        if unbatched:
            x, out_states = x.squeeze(1), [s.squeeze(1) for s in out_states]
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (tuple(out_states) if self.cell_state else out_states[0])

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
        return s


class LayerNormLSTM(LayerNormRNNBase):
    """LN-LSTM: ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``, ``h' = sigmoid(o)
    tanh(LN_c(c'))`` with the gates ``LN_ih(x W_ih^T + b_ih) + LN_hh(h W_hh^T + b_hh)``.

    ``LayerNormLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None)``; ``forward(x, hx=None,
    lengths=None) -> (out, (h_n, c_n))``.
    """

    num_gates = 4
    cell_state = True

    def _step(self, p, state, gx):
        h, c = state
        gh = F.linear(h, p["weight_hh"], p.get("bias_hh"))
        gates = gx + block_layer_norm(gh, p["ln_hh_weight"], p["ln_hh_bias"], 4)
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_norm = block_layer_norm(c_new, p["ln_c_weight"], p["ln_c_bias"], 1)
        h_new = torch.sigmoid(o) * torch.tanh(c_norm)
        return (h_new, c_new), h_new


class LayerNormGRU(LayerNormRNNBase):
    """LN-GRU: ``r, z = sigmoid(LN_ih[r,z] + LN_hh[r,z])``, ``n = tanh(LN_ih[n] + r *
    LN_hh[n])``, ``h' = (1 - z) n + z h``.

    Arguments as :class:`LayerNormLSTM`; ``forward(x, hx=None, lengths=None) -> (out,
    h_n)``.
    """

    num_gates = 3

    def _step(self, p, h, gx):
        gh = F.linear(h, p["weight_hh"], p.get("bias_hh"))
        gh = block_layer_norm(gh, p["ln_hh_weight"], p["ln_hh_bias"], 3)
        x_r, x_z, x_n = gx.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h_new = (1.0 - z) * n + z * h
        return h_new, h_new


class _LayerNormCellBase(nn.Module):
    """One step of a layer-normalised layer: its parameters without the ``_l0`` suffix."""

    layer: type[LayerNormRNNBase]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        one = self.layer(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self._bases = one._bases
        for base in self._bases:
            self.register_parameter(base, nn.Parameter(getattr(one, base + "_l0").detach().clone()))

    def forward(self, x: Tensor, hx: Any = None) -> Any:
        """x (N, I) or (I,); hx as ``torch.nn.LSTMCell`` / ``GRUCell`` (zeros when None)."""
        unbatched = x.dim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        cell_state = self.layer.cell_state
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (zeros, zeros) if cell_state else zeros
        elif unbatched:
            hx = tuple(h.unsqueeze(0) for h in hx) if cell_state else hx.unsqueeze(0)
        p = {base: getattr(self, base) for base in self._bases}
        gx = F.linear(x, p["weight_ih"], p.get("bias_ih"))
        gx = block_layer_norm(gx, p["ln_ih_weight"], p["ln_ih_bias"], self.layer.num_gates)
        new, _ = self.layer._step(self, p, hx, gx)  # type: ignore[arg-type]
        if unbatched:
            new = tuple(h.squeeze(0) for h in new) if cell_state else new.squeeze(0)
        return new


class LayerNormLSTMCell(_LayerNormCellBase):
    """One step of :class:`LayerNormLSTM`, as ``torch.nn.LSTMCell``: ``(h', c') =
    cell(x, (h, c))``; twin of ``jaxseq.nn.LayerNormLSTMCell``.

    >>> LayerNormLSTMCell(3, 4)(torch.ones(2, 3))[1].shape
    torch.Size([2, 4])
    """

    layer = LayerNormLSTM


class LayerNormGRUCell(_LayerNormCellBase):
    """One step of :class:`LayerNormGRU`, as ``torch.nn.GRUCell``: ``h' = cell(x, h)``;
    twin of ``jaxseq.nn.LayerNormGRUCell``.

    >>> LayerNormGRUCell(3, 4)(torch.ones(3)).shape
    torch.Size([4])
    """

    layer = LayerNormGRU
