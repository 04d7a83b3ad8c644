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

from torch import Tensor, nn
from torch.nn import functional as F

from torchseq._loop import Kind, MaskedRNNBase, State, gru_cell, lstm_cell

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


class LayerNormRNNBase(MaskedRNNBase):
    """Shared parameters and step of :class:`LayerNormLSTM` and :class:`LayerNormGRU`: the
    LSTM's and GRU's cells (:mod:`torchseq._loop`) on ``LN_ih`` and ``LN_hh``."""

    def _shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        G, H = self.num_gates, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (G * H, in_size),
            "weight_hh": (G * H, H),
        }
        if self.bias:
            shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
        shapes |= {n: (G * H,) for n in ("ln_ih_weight", "ln_ih_bias")}
        shapes |= {n: (G * H,) for n in ("ln_hh_weight", "ln_hh_bias")}
        if self.cell_state:
            shapes |= {"ln_c_weight": (H,), "ln_c_bias": (H,)}
        return shapes

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

    @classmethod
    def _input(cls, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """``LN_ih(x W_ih^T + b_ih)``."""
        gx = F.linear(x, p["weight_ih"], p.get("bias_ih"))
        return block_layer_norm(gx, p["ln_ih_weight"], p["ln_ih_bias"], cls.num_gates)

    @classmethod
    def _recurrent(cls, p: dict[str, Tensor], h: Tensor) -> Tensor:
        """``LN_hh(h W_hh^T + b_hh)``."""
        gh = F.linear(h, p["weight_hh"], p.get("bias_hh"))
        return block_layer_norm(gh, p["ln_hh_weight"], p["ln_hh_bias"], cls.num_gates)

    @staticmethod
    def _cell(p: dict[str, Tensor], state: State, gx: Tensor, gh: Tensor) -> State:
        raise NotImplementedError

    @classmethod
    def step_kind(cls) -> Kind:
        return Kind(2 if cls.cell_state else 1, cls._input, cls._recurrent, cls._cell)


class LayerNormLSTM(LayerNormRNNBase):
    """LN-LSTM: ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``, ``h' = sigmoid(o)
    tanh(LN_c(c'))`` with the gates ``LN_ih(x W_ih^T + b_ih) + LN_hh(h W_hh^T + b_hh)``.

    ``LayerNormLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None)``; ``forward(x, hx=None,
    lengths=None) -> (out, (h_n, c_n))``.
    """

    num_gates = 4
    cell_state = True

    @staticmethod
    def _cell(p: dict[str, Tensor], state: State, gx: Tensor, gh: Tensor) -> State:
        def ln_c(c: Tensor) -> Tensor:
            return block_layer_norm(c, p["ln_c_weight"], p["ln_c_bias"], 1)

        return lstm_cell(p, state, gx, gh, norm_c=ln_c)


class LayerNormGRU(LayerNormRNNBase):
    """LN-GRU: ``r, z = sigmoid(LN_ih[r,z] + LN_hh[r,z])``, ``n = tanh(LN_ih[n] + r *
    LN_hh[n])``, ``h' = (1 - z) n + z h``.

    Arguments as :class:`LayerNormLSTM`; ``forward(x, hx=None, lengths=None) -> (out,
    h_n)``.
    """

    num_gates = 3
    _cell = staticmethod(gru_cell)


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
        kind = self.layer.step_kind()
        state = tuple(hx) if cell_state else (hx,)
        new = kind.cell(p, state, kind.input(p, x), kind.recurrent(p, state[0]))
        if unbatched:
            new = tuple(h.squeeze(0) for h in new)
        return new if cell_state else new[0]


class LayerNormLSTMCell(_LayerNormCellBase):
    """One step of :class:`LayerNormLSTM`, as ``torch.nn.LSTMCell``: ``(h', c') =
    cell(x, (h, c))``; twin of ``jaxseq.nn.LayerNormLSTMCell``.

    >>> import torch
    >>> LayerNormLSTMCell(3, 4)(torch.ones(2, 3))[1].shape
    torch.Size([2, 4])
    """

    layer = LayerNormLSTM


class LayerNormGRUCell(_LayerNormCellBase):
    """One step of :class:`LayerNormGRU`, as ``torch.nn.GRUCell``: ``h' = cell(x, h)``;
    twin of ``jaxseq.nn.LayerNormGRUCell``.

    >>> import torch
    >>> LayerNormGRUCell(3, 4)(torch.ones(3)).shape
    torch.Size([4])
    """

    layer = LayerNormGRU
