"""The one masked loop of torchseq: layers × directions × time steps, and its kinds.

A layer of a recurrent kind runs as ``gx = kind.input(p, x)`` on the whole sequence,
then at every step ``state' = kind.cell(p, state, gx[t], kind.recurrent(p, h))``
(:func:`recurrent_step`), where ``p`` holds the layer and direction's parameters by
their base names (``weight_ih``, ``bias_hh``, ``ln_c_weight``, ...; absent ones are
missing). The equations of ``torch.nn.RNN`` (tanh, relu), ``LSTM`` (with ``proj_size``)
and ``GRU`` are written here once (:data:`TORCH_KINDS`, keyed by ``module.mode``);
torchseq's own modules (:class:`MaskedRNNBase`) carry their kind (``step_kind``), and the
layer-normalised ones call these cells on their normalised terms.

:func:`time_loop` runs one direction of one layer as a packed sequence does (padded steps
leave the state unchanged and output zero), with the hooks that
:func:`torchseq.regularized.run_regularized` needs (restarts, zoneout); :func:`layer_loop`
runs the layers and directions; :class:`MaskedRNNBase` is the constructor, forward and
repr that ``MinGRU``, ``MinLSTM``, ``LayerNormLSTM`` and ``LayerNormGRU`` share.
:func:`structure` finds every supported module's kind and sizes in one place.

torchseq never imports jax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: A carry: ``(h,)`` or ``(h, c)``, each (N, size).
State = tuple[Tensor, ...]
#: One step: (t, state) -> the state after step t.
Step = Callable[[int, State], State]
#: One direction of one layer: (layer k, direction d, x (T, N, F), state0) -> (ys, final).
Layer = Callable[[int, int, Tensor, State], tuple[Tensor, State]]

#: The per-layer parameter base names a kind may read.
_NAMES: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_NAMES += ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")


class Kind(NamedTuple):
    """A recurrence whose step reads the state through one recurrent matmul."""

    #: 2 for a carry (h, c), 1 for h.
    num_states: int
    #: (p, x (..., I)) -> gx (..., G*H), applied to all steps at once.
    input: Callable[[dict[str, Tensor], Tensor], Tensor]
    #: (p, h (N, H_out)) -> gh (N, G*H).
    recurrent: Callable[[dict[str, Tensor], Tensor], Tensor]
    #: (p, state, gx_t, gh_t) -> the new state.
    cell: Callable[[dict[str, Tensor], State, Tensor, Tensor], State]


def linear_input(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """``x W_ih^T + b_ih``."""
    return F.linear(x, p["weight_ih"], p.get("bias_ih"))


def linear_recurrent(p: dict[str, Tensor], h: Tensor) -> Tensor:
    """``h W_hh^T + b_hh``."""
    return F.linear(h, p["weight_hh"], p.get("bias_hh"))


def tanh_cell(p: dict[str, Tensor], state: State, gx: Tensor, gh: Tensor) -> State:
    """Elman RNN: ``h' = tanh(gx + gh)``."""
    return (torch.tanh(gx + gh),)


def relu_cell(p: dict[str, Tensor], state: State, gx: Tensor, gh: Tensor) -> State:
    """Elman RNN: ``h' = relu(gx + gh)``."""
    return (torch.relu(gx + gh),)


def lstm_cell(
    p: dict[str, Tensor],
    state: State,
    gx: Tensor,
    gh: Tensor,
    norm_c: Callable[[Tensor], Tensor] | None = None,
) -> State:
    """LSTM: gates i, f, g, o of ``gx + gh``; ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``,
    ``h' = sigmoid(o) tanh(norm_c(c'))`` (``norm_c`` the identity when None), then
    ``h' W_hr^T`` where ``p`` has ``weight_hr`` (``proj_size``)."""
    i, f, g, o = (gx + gh).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new if norm_c is None else norm_c(c_new))
    if p.get("weight_hr") is not None:
        h_new = F.linear(h_new, p["weight_hr"])
    return h_new, c_new


def gru_cell(p: dict[str, Tensor], state: State, gx: Tensor, gh: Tensor) -> State:
    """GRU: ``r, z = sigmoid(gx[r,z] + gh[r,z])``, ``n = tanh(gx[n] + r gh[n])`` (gh's n
    part includes b_hn), ``h' = (1 - z) n + z h``."""
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return ((1.0 - z) * n + z * state[0],)


#: The ``torch.nn.RNNBase`` modes and their kinds.
TORCH_KINDS: dict[str, Kind] = {
    "RNN_TANH": Kind(1, linear_input, linear_recurrent, tanh_cell),
    "RNN_RELU": Kind(1, linear_input, linear_recurrent, relu_cell),
    "LSTM": Kind(2, linear_input, linear_recurrent, lstm_cell),
    "GRU": Kind(1, linear_input, linear_recurrent, gru_cell),
}


class Structure(NamedTuple):
    """What the loops need to know of a module."""

    #: The step, or None for a kind without a recurrent matmul (minGRU, minLSTM).
    kind: Kind | None
    num_layers: int
    num_directions: int
    #: The size of h (``proj_size`` or H).
    H_out: int
    #: The size of c (and of h without a projection).
    H: int
    #: Whether the carry is (h, c).
    cell: bool

    @property
    def sizes(self) -> list[int]:
        """The size of each state: [H_out, H] with a cell state, else [H_out]."""
        return [self.H_out, self.H] if self.cell else [self.H_out]


def structure(module: nn.Module) -> Structure | None:
    """The :class:`Structure` of a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` or of torchseq's
    ``MinGRU`` / ``MinLSTM`` / ``LayerNormLSTM`` / ``LayerNormGRU``; None for any other."""
    if isinstance(module, nn.RNNBase):
        kind = TORCH_KINDS.get(module.mode)
        if kind is None:
            return None
        H = int(module.hidden_size)
        H_out = int(module.proj_size) or H  # proj_size: LSTM only, 0 otherwise
        cell = kind.num_states == 2
    elif isinstance(module, MaskedRNNBase):
        kind = module.step_kind()
        H = H_out = int(module.hidden_size)
        cell = bool(module.cell_state)
    else:
        return None
    D = 2 if module.bidirectional else 1
    return Structure(kind, int(module.num_layers), D, H_out, H, cell)


def layer_params(module: nn.Module, k: int, d: int) -> dict[str, Tensor]:
    """Layer k, direction d's parameters by base name (``weight_ih_l{k}{_reverse}`` ->
    ``weight_ih``); absent ones are missing."""
    sfx = f"_l{k}" + ("_reverse" if d else "")
    found = {name: getattr(module, name + sfx, None) for name in _NAMES}
    return {name: v for name, v in found.items() if v is not None}


def initial_states(
    hx: Any,
    cell: bool,
    shapes: Sequence[tuple[int, ...]],
    x: Tensor,
    caller: str,
    *,
    unbatched: bool = False,
    strict: bool = False,
) -> list[Tensor]:
    """hx (None, a tensor, or for a cell state a pair) -> a list of (L*D, N, size)
    tensors, zeros where hx is None; ``unbatched``: hx has no N axis. ``strict`` raises
    TypeError for entries that are not tensors (else the shape's ValueError)."""
    if hx is None:
        return [x.new_zeros(s) for s in shapes]
    if cell:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError(f"{caller}: hx must be a pair (h0, c0) for an LSTM")
        states = list(hx)
    else:
        if strict and not isinstance(hx, Tensor):
            raise TypeError(f"{caller}: hx must be a tensor, got {type(hx).__name__}")
        states = [hx]
    out = []
    for s, shape in zip(states, shapes, strict=True):
        if strict and not isinstance(s, Tensor):
            raise TypeError(f"{caller}: hx must hold tensors, got {type(s).__name__}")
        want = (shape[0], shape[2]) if unbatched else shape
        if not isinstance(s, Tensor) or tuple(s.shape) != want:
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"{caller}: expected hidden size {want}, got {got}")
        out.append(s.unsqueeze(1) if unbatched else s)
    return out


def recurrent_step(
    kind: Kind, p: dict[str, Tensor], gx: Tensor, hidden_mask: Tensor | None = None
) -> Step:
    """The step of a recurrent kind on ``gx`` (T, N, G*H). ``hidden_mask`` (N, H_out)
    multiplies the h that enters the recurrent matmul only (the cell reads the state
    itself)."""

    def step(t: int, state: State) -> State:
        h = state[0] if hidden_mask is None else state[0] * hidden_mask
        return kind.cell(p, state, gx[t], kind.recurrent(p, h))

    return step


def time_loop(
    step: Step,
    state: State,
    T: int,
    mask: Tensor | None,
    reverse: bool,
    *,
    restart: Tensor | None = None,
    reset_state: State | None = None,
    zoneout: State | None = None,
) -> tuple[Tensor, State]:
    """One direction of one layer, as a packed sequence: ``mask`` (T, N, 1) bool or None.

    At a valid step the state becomes ``step(t, state)``, the output its h; at a padded
    one the state is unchanged and the output zero. ``restart`` (T, N, 1) bool: a new
    segment starts at step t, so the state goes to ``reset_state`` (default: the initial
    one) before step t (reverse: before step t - 1); ``zoneout``, one (T, N, size) tensor per state, keeps
    ``z[t] * old + (1 - z[t]) * new``. Returns (ys (T, N, H_out), final state).
    """
    state0 = state if reset_state is None else reset_state
    ys: list[Tensor] = [state[0]] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        r = t + 1 if reverse else t  # reverse: step t begins anew where a segment began at t + 1
        if restart is not None and r < T:
            at = restart[r]
            state = tuple(torch.where(at, a, b) for a, b in zip(state0, state, strict=True))
        new = step(t, state)
        if zoneout is not None:
            new = tuple(
                z[t] * s + (1 - z[t]) * n for z, s, n in zip(zoneout, state, new, strict=True)
            )
        if mask is None:
            state, ys[t] = new, new[0]
        else:
            m = mask[t]
            state = tuple(torch.where(m, a, b) for a, b in zip(new, state, strict=True))
            ys[t] = torch.where(m, new[0], torch.zeros_like(new[0]))
    return torch.stack(ys), state


def layer_loop(
    x: Tensor,
    states: Sequence[Tensor],
    num_layers: int,
    num_directions: int,
    layer: Layer,
    between: Callable[[int, Tensor], Tensor],
) -> tuple[Tensor, list[Tensor]]:
    """x (T, N, I), states each (L*D, N, size) -> (out (T, N, D*H_out), final states each
    (L*D, N, size)). Each layer's directions are concatenated and passed through
    ``between(k, ·)`` (dropout, a mask) before the next layer."""
    finals: list[State] = []
    for k in range(num_layers):
        outs = []
        for d in range(num_directions):
            i = k * num_directions + d
            ys, fin = layer(k, d, x, tuple(s[i] for s in states))
            outs.append(ys)
            finals.append(fin)
        x = between(k, torch.cat(outs, dim=-1))
    return x, [torch.stack(s) for s in zip(*finals, strict=True)]


class MaskedRNNBase(nn.Module):
    """The constructor, forward and repr shared by torchseq's own layer modules
    (:class:`torchseq.minimal.MinRNNBase`, :class:`torchseq.layernorm.LayerNormRNNBase`).

    The arguments and shapes of ``torch.nn.GRU`` / ``LSTM``; ``forward(x, hx=None,
    lengths=None)`` gives, where ``lengths`` are given, the semantics of a packed
    sequence. A subclass gives its parameters' shapes (``_shapes``), their
    initialisation (``reset_parameters``) and its step: a :class:`Kind`
    (``step_kind``), or its own ``_layer``.
    """

    #: G: the gate blocks of H units in ``weight_ih``'s rows.
    num_gates = 0
    #: Whether the carry is (h, c).
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
        D = 2 if bidirectional else 1
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * D
            for sfx in [f"_l{layer}"] + ([f"_l{layer}_reverse"] if bidirectional else []):
                shapes = self._shapes(in_size)
                self._bases = tuple(shapes)
                for name, shape in shapes.items():
                    w = torch.empty(shape, device=device, dtype=dtype)
                    self.register_parameter(name + sfx, nn.Parameter(w))
        self.reset_parameters()

    def _shapes(self, in_size: int) -> dict[str, tuple[int, ...]]:
        """One layer and direction's parameters (base name -> shape), in order."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        raise NotImplementedError

    @classmethod
    def step_kind(cls) -> Kind | None:
        """The step of a kind with a recurrent matmul; None for the others."""
        return None

    def _layer(
        self, p: dict[str, Tensor], x: Tensor, state: State, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, State]:
        """One direction of one layer: x (T, N, in), state each (N, H), mask (T, N, 1)
        bool or None -> (ys (T, N, H), final state)."""
        kind = self.step_kind()
        assert kind is not None, f"{type(self).__name__} gives no step"
        step = recurrent_step(kind, p, kind.input(p, x))
        return time_loop(step, state, x.shape[0], mask, reverse)

    def forward(
        self, x: Tensor, hx: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """x (T, N, I) / (N, T, I) with batch_first / unbatched (T, I); hx (L*D, N, H)
        (with a cell state: a pair ``(h0, c0)``); lengths (N,) in [0, T] -> ``(out, h_n)``
        or ``(out, (h_n, c_n))``: out (T, N, D*H), h_n and c_n (L*D, N, H)."""
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
        if T == 0:  # as torch.nn.GRU / LSTM (jaxseq returns empty outputs and h_n = h0)
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

        def layer(k: int, d: int, inp: Tensor, state: State) -> tuple[Tensor, State]:
            return self._layer(layer_params(self, k, d), inp, state, mask, reverse=d == 1)

        def between(k: int, out: Tensor) -> Tensor:
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                return F.dropout(out, self.dropout, training=True)
            return out

        x, out_states = layer_loop(x, states, self.num_layers, D, layer, between)
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
