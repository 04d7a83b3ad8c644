"""The functional stack: layers x directions over a flat dict of torch-named parameters.

``jaxseq.rnn``, ``jaxseq.lstm``, ``jaxseq.gru``, ``jaxseq.min_gru`` and ``jaxseq.min_lstm``
take the same flat dict that a ``torch.nn.RNN/LSTM/GRU`` ``state_dict()`` holds (as JAX
arrays; names and shapes in :mod:`jaxseq.params`) and infer the number of layers, the
directions, the hidden size, ``proj_size`` and ``bias`` from its keys and shapes.
:func:`run_stack` does the work for every registered kind: it validates the call
(:mod:`jaxseq.validation`), builds the (T, N) mask once, stacks each layer's weights by
direction once, and calls the layer implementation (:mod:`jaxseq.impls`) layer after
layer, with dropout in between. The named wrappers only bind the kind; their options
(:class:`StackOptions`) are documented once, on :func:`run_stack`.

Shapes of the call (L = num_layers, D = 2 if bidirectional else 1, H_out = proj_size or H)::

    x        (T, N, I), or (N, T, I) with batch_first, or unbatched (T, I)
    hx       (L*D, N, H_out) — for LSTM a pair (h0, c0), c0 (L*D, N, H); unbatched: no N
    lengths  (N,) integers in [0, T]; None means all T
    output   (T, N, D*H_out) (batch_first: (N, T, D*H_out)); zero at t >= lengths[n]
    h_n      (L*D, N, H_out) ordered l0-forward, l0-reverse, l1-forward, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import jax
import jax.numpy as jnp
from typing_extensions import Unpack

from jaxseq.impls import IMPLS, Impl
from jaxseq.layer import STEP_FEATURES, STEP_MASKS, Plan, Segments, StepMasks
from jaxseq.layer import check as check_impl
from jaxseq.params import spec_from_params, suffixes
from jaxseq.recurrences import get
from jaxseq.regularizers import check_rates, draw_masks
from jaxseq.scan import length_mask
from jaxseq.validation import (
    carry_dtype_for,
    check_chunk_lengths,
    check_dropout,
    check_flags,
    check_hx,
    check_input,
    check_lengths,
    check_masks,
    check_nonlinearity,
    check_resets,
    check_unroll,
    compute_dtype,
)

Array = jax.Array

__all__ = [
    "StackOptions",
    "run_stack",
    "rnn",
    "lstm",
    "gru",
    "min_gru",
    "min_lstm",
    "layernorm_lstm",
    "layernorm_gru",
]


def _dropout(key: Array, x: Array, rate: float) -> Array:
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


def _varying_axes(a: Any) -> frozenset[str]:
    """The manual mesh axes over which ``a`` varies (empty outside ``shard_map``)."""
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    return frozenset(mat.varying) if mat is not None else frozenset(getattr(aval, "vma", ()))


def _vary_like(a: Any, axes: tuple[str, ...]) -> Any:
    """``a`` marked as varying over the manual mesh axes ``axes`` (inside ``shard_map``).

    Under ``jax.shard_map`` (with its default ``check_vma=True``) a batch-sharded input
    varies over the mesh axis, while zeros made here and replicated weights do not; a
    scan whose carry starts invariant and becomes varying is a type error. Casting the
    initial states and the weights to varying first fixes both, and the cast's transpose
    sums the per-device weight gradients (a ``psum``), so gradients are those of the
    whole batch. Outside ``shard_map`` ``axes`` is empty and this is the identity.
    """
    missing = tuple(ax for ax in axes if ax not in _varying_axes(a))
    return jax.lax.pcast(a, missing, to="varying") if missing else a


def time_major(x: Any, param_dtype: Any, dtype: Any, batch_first: bool) -> tuple[Array, Any, bool]:
    """The stacks' input layout: ``(x as (T, N, I), compute dtype, unbatched)``.

    ``dtype`` None: :func:`jaxseq.validation.compute_dtype`. An unbatched (T, I) input gets a unit batch axis; ``batch_first`` input is transposed.
    """
    dtype = compute_dtype(x.dtype, param_dtype, dtype)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    return jnp.asarray(x), dtype, unbatched


def align_inputs(
    x: Array, mask: Array | None, states: tuple[Array, ...], dtype: Any
) -> tuple[Array, Array | None, tuple[Array, ...], tuple[str, ...]]:
    """``x`` cast to ``dtype``; inside ``shard_map``, ``x``, ``mask`` and ``states`` all
    varying like the input (see :func:`_vary_like`); padding of ``x`` zeroed. Returns
    ``(x, mask, states, vma)``, ``vma`` the mesh axes the layers' weights must vary over."""
    x = x.astype(dtype)
    varying = _varying_axes(x) | (_varying_axes(mask) if mask is not None else frozenset())
    vma = tuple(sorted(varying))
    if vma:
        x = _vary_like(x, vma)
        mask = None if mask is None else _vary_like(mask, vma)
        states = tuple(_vary_like(st, vma) for st in states)
    if mask is not None:
        # Padding never reaches a layer: a NaN or inf there would otherwise poison the
        # weight gradients (0 * nan = nan), though outputs and states stay right.
        x = jnp.where(mask[:, :, None], x, jnp.zeros_like(x))
    return x, mask, states, vma


def output_layout(
    x: Array, states: tuple[Array, ...], unbatched: bool, batch_first: bool
) -> tuple[Array, tuple[Array, ...]]:
    """Undo :func:`time_major` on the output and drop the unit batch axis of the states."""
    if unbatched:
        return x[:, 0], tuple(s[:, 0] for s in states)
    return (jnp.swapaxes(x, 0, 1) if batch_first else x), states


class StackOptions(TypedDict, total=False):
    """The keyword options of :func:`run_stack` and the named wrappers (meanings there)."""

    nonlinearity: str
    batch_first: bool
    dropout: float
    train: bool
    key: Array | None
    unroll: int
    impl: Impl | str
    dtype: Any
    remat: int | None
    chunk: int | None
    carry_dtype: Any
    resets: Any
    reset_hx: Any
    masks: Any
    input_dropout: float
    output_dropout: float
    recurrent_dropout: float
    weight_dropout: float
    zoneout: float
    return_all_states: bool


def run_stack(
    kind: str,
    params: Mapping[str, Any],
    x: Any,
    hx: Any = None,
    lengths: Any = None,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = False,
    dropout: float = 0.0,
    train: bool = False,
    key: Array | None = None,
    unroll: int = 1,
    impl: Impl | str = "fused",
    dtype: Any = None,
    remat: int | None = None,
    chunk: int | None = None,
    carry_dtype: Any = None,
    resets: Any = None,
    reset_hx: Any = None,
    masks: Mapping[str, Any] | None = None,
    input_dropout: float = 0.0,
    output_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
    zoneout: float = 0.0,
    return_all_states: bool = False,
) -> tuple[Any, ...]:
    """The stack of any registered kind: layers x directions, masked by lengths.

    Args:
      kind: a registered kind (``"rnn"``, ``"lstm"``, ``"gru"``, ``"min_gru"``,
        ``"min_lstm"``, or one added with :func:`jaxseq.recurrences.register`).
      params: flat dict of torch-named parameters (see :mod:`jaxseq.params`); the number
        of layers, directions, sizes, ``bias`` and ``proj_size`` are read from it.
      x: (T, N, I), or (N, T, I) with ``batch_first=True``, or unbatched (T, I).
      hx: optional initial state, zeros when None: h0 (L*D, N, H_out), or for kinds with
        a cell state (LSTM) a pair ``(h0, c0)`` with c0 (L*D, N, H); unbatched: no N.
      lengths: optional (N,) integer array (or list) of valid lengths in [0, T], unsorted
        and repeated values allowed. Output at ``t >= lengths[n]`` is 0, the final state
        is the state at each row's last valid step, the reverse direction starts at each
        row's last valid element; length 0 gives zero output and ``h_n = h0``. Traced
        lengths (under ``jit``) are not range-checked; values above T act as T and
        negative values as 0.
      nonlinearity: ``"tanh"`` or ``"relu"`` for the Elman RNN; ignored by kinds with a
        fixed nonlinearity.
      batch_first: input and output are (N, T, ...).
      dropout: dropout probability on the outputs of every layer but the last.
      train: apply dropout (needs ``key`` when ``dropout > 0`` and there are 2+ layers).
      key: PRNG key for dropout.
      unroll: ``jax.lax.scan`` unroll factor.
      impl: the layer implementation (:mod:`jaxseq.impls`), same values and gradients up
        to rounding. Every kind: ``"fused"`` (default: the fast path), ``"unfused"``
        (projection hoisted, one plain masked scan per direction), ``"reference"`` (the
        cell inside a plain masked scan: slow and obviously correct). Gated kinds also
        ``"fused_loop"`` / ``"fused_hoisted"`` (the input projection forced into the
        per-step matmul / before the scan, :mod:`jaxseq.fused`), and the LSTM on a GPU
        ``"cudnn"`` (float32, no ``proj_size``: :mod:`jaxseq.cudnn`); linear kinds
        ``"fused_scan"``, ``"fused_parallel"``, ``"fused_chunked"``.
      dtype: computation dtype; default: the promotion of the input and parameter dtypes.
      remat: None, or a chunk length K (gated kinds' fused implementations): checkpoint
        every K steps and recompute inside each chunk on the backward pass, so training
        memory grows like T/K + K instead of T (try K about sqrt(T)).
      chunk: the chunk length of ``impl="fused_chunked"`` (default about sqrt(T)).
      carry_dtype: the mixed-precision policy's carry dtype. The matmuls take their
        operands in the compute dtype ``dtype`` and accumulate in ``carry_dtype``
        (``preferred_element_type``); the gate nonlinearities and the carried state
        (``h``, and the LSTM's ``c``) are in ``carry_dtype``; the output and the final
        states are returned in the compute dtype. Default
        (:func:`jaxseq.validation.carry_dtype_for`): float32 when the compute dtype is
        bfloat16 or float16, else the compute dtype (no mixing).
      resets: episode boundaries (``dones``): an optional bool array with the time and
        batch axes of ``x``, (T, N) ((N, T) with ``batch_first``, (T,) unbatched). A True
        at (t, n) starts a new, independent episode of row n at step t, from the kind's
        initial state, zeros (or ``reset_hx``), as Haiku's ``ResetCore``, purejaxrl and
        torchrl do; ``hx`` only continues each row's first segment from the previous
        batch (a reset at t = 0 starts the row afresh too). The result equals running
        every segment of every row as its own sequence through the whole stack (every
        layer and direction): outputs in place, padding 0; ``h_n`` is the final state of
        the row's last segment for forward directions and the reverse final state of its
        first segment for reverse ones (a reverse direction starts the row's last segment
        from ``hx``, the others from zeros). Resets at padded steps are ignored, and
        traced resets never recompile. Every implementation but ``"cudnn"`` takes them.
      reset_hx: with ``resets``, the state episodes started by a reset begin from,
        structured as ``hx`` (default zeros). Unidirectional stacks only.
      masks: recurrent regularisers as explicit multipliers (values already scaled,
        e.g. 0 or 1/(1-p); the NNX layers draw them from their options), any of
        (k = layer, D directions, H_out = proj_size or H; unbatched input: N = 1):
        ``"input"`` (N, I) on the stack's input at every step (variational, "locked"
        dropout, Gal & Ghahramani 2016); ``"output_l{k}"`` (N, D*H_out) on layer k's
        output at every step; ``"weight_hh_l{k}{sfx}"`` (G*H, H_out): the recurrent
        weight used is ``weight_hh * mask`` (DropConnect, the AWD-LSTM's WeightDrop);
        ``"hidden_l{k}"`` (D, N, H_out) on the h that enters the ``W_hh`` matmul, and
        only there (recurrent dropout); ``"zoneout_l{k}"`` a tuple with one (T, D, N,
        size) array per state, values in [0, 1]: after a valid step each state is
        ``z * previous + (1 - z) * new`` and the output the zoned h (Krueger et al.
        2016). ``hidden_l*`` and ``zoneout_l*`` need a fused implementation of a gated
        kind (``"fused"``, ``"fused_loop"``, ``"fused_hoisted"``, with or without
        ``remat``); the other keys work with every implementation.
      input_dropout, output_dropout, recurrent_dropout, weight_dropout, zoneout: the
        recurrent regularisers as rates in [0, 1), as the layers take them
        (:mod:`jaxseq.regularizers`): with ``train=True`` their masks are drawn from
        ``key`` (:func:`jaxseq.regularizers.draw_masks`), in evaluation only zoneout acts
        (at its expectation). An alternative to ``masks``, not an addition.
      return_all_states: also return the states after every step, structured as
        ``h_n`` / ``(h_n, c_n)`` with a leading time axis: each (T, L*D, N, size)
        (unbatched (T, L*D, size); time first whatever ``batch_first``). Entry t holds
        every layer's and direction's state once it has read step t: a forward direction
        after ``x[t]`` from t = 0 up, a reverse one after ``x[t]`` from the row's end
        down. Where a row is padded (t >= its length) the state is frozen: forward
        directions hold ``h_n``, reverse ones their initial state. With ``resets``,
        every segment's final state is in it (at its last step for forward directions,
        at its first for reverse ones): :func:`jaxseq.data.episode_states` picks them
        for :func:`jaxseq.data.pack_episodes`' episodes. Values and gradients as the
        states themselves (all implementations but ``"cudnn"``).

    Returns:
      ``(output, h_n)``, or ``(output, (h_n, c_n))`` for kinds with a cell state:
      output (T, N, D*H_out), h_n (L*D, N, H_out), c_n (L*D, N, H). With
      ``return_all_states``, ``(output, h_n, states)`` / ``(output, (h_n, c_n), (hs, cs))``.

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> p = jaxseq.init_params(jax.random.key(0), "min_lstm", 3, 4)
    >>> out, h_n = jaxseq.run_stack("min_lstm", p, jnp.ones((5, 2, 3)), lengths=[5, 2])
    >>> out.shape, h_n.shape, float(abs(out[2:, 1]).max())
    ((5, 2, 4), (1, 2, 4), 0.0)
    """
    rec = get(kind)
    name = rec.display_name
    spec = spec_from_params(rec.name, params)
    check_nonlinearity(rec, nonlinearity)
    check_dropout(dropout)
    check_flags(batch_first=batch_first, train=train, return_all_states=return_all_states)
    check_chunk_lengths(remat=remat, chunk=chunk)
    check_unroll(unroll)
    check_input(name, x, spec.input_size)

    x, dtype, unbatched = time_major(x, params["weight_ih_l0"].dtype, dtype, batch_first)
    cdt = carry_dtype_for(dtype, carry_dtype)
    T, N = x.shape[0], x.shape[1]
    L, D = spec.num_layers, spec.num_directions
    sizes = rec.state_sizes(spec.hidden_size, spec.output_size)

    # Initial states, each (L*D, N, size) ---------------------------------------------
    shapes = [(L * D, s) if unbatched else (L * D, N, s) for s in sizes]
    if hx is None:
        states = tuple(jnp.zeros((L * D, N, s), cdt) for s in sizes)
    else:
        states = check_hx(rec, name, hx, shapes, x.dtype)
        states = tuple((s[:, None] if unbatched else s).astype(cdt) for s in states)
    reset_states = None
    if reset_hx is not None:
        if resets is None:
            raise ValueError(f"{name}: reset_hx is the state after a reset; pass resets too")
        if D == 2:
            raise ValueError(
                f"{name}: reset_hx needs a unidirectional stack (the reverse direction of a "
                "row's last segment has no state to continue from)"
            )
        reset_states = check_hx(rec, name, reset_hx, shapes, x.dtype, label="reset_hx")
        reset_states = tuple((s[:, None] if unbatched else s).astype(cdt) for s in reset_states)
    elif resets is not None:  # a new episode starts from the kind's initial state: zeros
        reset_states = tuple(jnp.zeros_like(s) for s in states)

    mask = None
    if lengths is not None:
        lengths = check_lengths(name, lengths, N, T, unbatched)
        mask = length_mask(lengths, T)  # (T, N), built once for every layer
    if resets is not None:
        resets = check_resets(name, resets, T, N, batch_first, unbatched)
    rates = check_rates(
        spec,
        str(impl),
        dict(
            input_dropout=input_dropout,
            output_dropout=output_dropout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
            zoneout=zoneout,
        ),
    )
    if any(p > 0 for p in rates.values()):
        if masks is not None:
            raise ValueError(f"{name}: pass the regularisers as rates or as masks=, not both")
        if train and key is None:
            raise ValueError(f"{name}: regularisers in training mode need a PRNG key (key=...)")
        mask_key = None
        if train:
            assert key is not None
            key, mask_key = jax.random.split(key)
        masks = draw_masks(mask_key, spec, T, N, train=train, dtype=dtype, **rates)
    masks = {} if masks is None else check_masks(name, masks, rec, spec, T, N)
    in_loop = {
        STEP_FEATURES[field]: f"masks {sorted(k for k in masks if k.startswith(prefix))}"
        for field, prefix in STEP_MASKS.items()
        if any(k.startswith(prefix) for k in masks)
    }
    asked = _features(remat, chunk, resets, reset_hx, return_all_states)
    used = {f: None for f, on in asked if on} | in_loop
    row = check_impl(IMPLS, rec.bind(nonlinearity), impl, used)
    plan = Plan(
        rec.bind(nonlinearity),
        str(impl),
        unroll,
        remat,
        chunk=chunk,
        carry_dtype=cdt,
        all_states=return_all_states,
    )
    plan = plan.with_(**row.plan)
    if train and dropout > 0 and L > 1 and key is None:
        raise ValueError(f"{name}: dropout={dropout} in training mode needs a PRNG key (key=...)")

    if reset_states is not None:
        states = states + reset_states  # aligned together, split below
    x, mask, states, vma = align_inputs(x, mask, states, dtype)
    if reset_states is not None:
        states, reset_states = states[: len(sizes)], states[len(sizes) :]
    if "input" in masks:
        x = x * masks["input"][None].astype(x.dtype)
    resets = None if resets is None else _vary_like(resets, vma)
    seg = Segments.build(mask, resets, D, reset_states)  # once for every layer
    finals: list[tuple[Array, ...]] = []
    seqs: list[tuple[Array, ...]] = []  # return_all_states: each layer's, (T, D, N, size)
    with jax.named_scope(f"jaxseq.{name}"):
        for layer in range(L):
            sfxs = suffixes(layer, spec.bidirectional)
            w = {
                base: _vary_like(
                    jnp.stack([jnp.asarray(params[base + s]).astype(dtype) for s in sfxs]), vma
                )
                for base in rec.base_names
                if base + sfxs[0] in params
            }
            if any(f"weight_hh{s}" in masks for s in sfxs):
                ones = jnp.ones(w["weight_hh"].shape[1:], dtype)
                drop = jnp.stack([masks.get(f"weight_hh{s}", ones).astype(dtype) for s in sfxs])
                w["weight_hh"] = w["weight_hh"] * drop
            layer_states = tuple(s[layer * D : (layer + 1) * D] for s in states)
            step_masks = StepMasks.of(masks, layer)
            with jax.named_scope(f"layer{layer}"):
                result = row.fn(plan, w, x, layer_states, seg.layer(layer, D), step_masks)
            x, fin = result[0], result[1]
            finals.append(fin)
            if return_all_states:
                assert len(result) == 3  # plan.all_states: (out, finals, seq)
                seqs.append(result[2])
            if f"output_l{layer}" in masks:
                x = x * masks[f"output_l{layer}"][None].astype(x.dtype)
            if train and dropout > 0 and layer < L - 1:
                assert key is not None  # checked above
                key, sub = jax.random.split(key)
                x = _dropout(sub, x, float(dropout))

    # (L*D, N, size) per state, ordered l0-forward, l0-reverse, l1-forward, ...
    out_states = tuple(
        jnp.concatenate(per_state, axis=0).astype(dtype) for per_state in zip(*finals, strict=True)
    )
    x, out_states = output_layout(x, out_states, unbatched, batch_first)
    if not return_all_states:
        return x, rec.carry(out_states)
    # (T, L*D, N, size) per state, the layers' directions in h_n's order
    all_states = tuple(
        jnp.concatenate(per_state, axis=1).astype(dtype) for per_state in zip(*seqs, strict=True)
    )
    if unbatched:
        all_states = tuple(s[:, :, 0] for s in all_states)
    return x, rec.carry(out_states), rec.carry(all_states)


def _features(
    remat: Any, chunk: Any, resets: Any, reset_hx: Any, all_states: bool
) -> tuple[tuple[str, bool], ...]:
    """The features a call asks for through its arguments."""
    return (
        ("remat", remat is not None),
        ("chunk", chunk is not None),
        ("resets", resets is not None),
        ("reset_hx", reset_hx is not None),
        ("all_states", all_states),
    )


def _named_stack(kind: str, doc: str) -> Callable[..., tuple[Any, ...]]:
    """The stack of ``kind`` as a function of its own: ``f(params, x, hx=None,
    lengths=None, **options)`` is ``run_stack(kind, params, x, hx, lengths, **options)``."""

    def stack(
        params: Mapping[str, Any],
        x: Any,
        hx: Any = None,
        lengths: Any = None,
        **options: Unpack[StackOptions],
    ) -> tuple[Any, ...]:
        return run_stack(kind, params, x, hx, lengths, **options)

    stack.__name__ = stack.__qualname__ = kind
    stack.__doc__ = doc
    return stack


rnn = _named_stack(
    "rnn",
    """Multi-layer Elman RNN, as ``torch.nn.RNN``; equations in :mod:`jaxseq.recurrences.elman`.

    ``hx`` is h0 (L*D, N, H); ``options`` as :func:`run_stack`, with ``nonlinearity``
    ``'tanh'`` (default) or ``'relu'``. Returns ``(output, h_n)``: output (T, N, D*H),
    h_n (L*D, N, H).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_rnn(jax.random.key(0), input_size=3, hidden_size=5, num_layers=2)
    >>> out, h_n = jaxseq.rnn(params, jnp.ones((7, 4, 3)), lengths=jnp.array([7, 3, 0, 5]))
    >>> out.shape, h_n.shape, float(abs(out[3:, 1]).max())
    ((7, 4, 5), (2, 4, 5), 0.0)
    """,
)
lstm = _named_stack(
    "lstm",
    """Multi-layer LSTM, as ``torch.nn.LSTM`` (optional ``proj_size``); equations in
    :mod:`jaxseq.recurrences.lstm`.

    ``hx`` is ``(h0, c0)``, h0 (L*D, N, H_out), c0 (L*D, N, H); ``options`` as
    :func:`run_stack`. Returns ``(output, (h_n, c_n))``: output (T, N, D*H_out), h_n
    (L*D, N, H_out), c_n (L*D, N, H).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_lstm(jax.random.key(0), 3, 5, bidirectional=True, proj_size=2)
    >>> out, (h_n, c_n) = jaxseq.lstm(params, jnp.ones((7, 4, 3)), lengths=[7, 3, 0, 5])
    >>> out.shape, h_n.shape, c_n.shape
    ((7, 4, 4), (2, 4, 2), (2, 4, 5))
    """,
)
gru = _named_stack(
    "gru",
    """Multi-layer GRU, as ``torch.nn.GRU``; equations in :mod:`jaxseq.recurrences.gru`.

    ``hx`` is h0 (L*D, N, H); ``options`` as :func:`run_stack`. Returns
    ``(output, h_n)``: output (T, N, D*H), h_n (L*D, N, H).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_gru(jax.random.key(0), 3, 5, num_layers=2)
    >>> out, h_n = jaxseq.gru(params, jnp.ones((4, 7, 3)), batch_first=True)
    >>> out.shape, h_n.shape
    ((4, 7, 5), (2, 4, 5))
    """,
)
min_gru = _named_stack(
    "min_gru",
    """Multi-layer minGRU (Feng et al. 2024), a GRU whose gates read the input only;
    equations in :mod:`jaxseq.recurrences.minimal`.

    ``params``: ``weight_ih_l{k}{_reverse}`` (2H, in), ``bias_ih_l{k}{_reverse}`` (2H,)
    (see :func:`jaxseq.init_min_gru`); ``hx`` is h0 (L*D, N, H); ``options`` as
    :func:`run_stack`, with the linear kinds' implementations. Returns ``(output, h_n)``.

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_min_gru(jax.random.key(0), 3, 5, bidirectional=True)
    >>> x = jax.random.normal(jax.random.key(1), (7, 4, 3))
    >>> out, h_n = jaxseq.min_gru(params, x, lengths=[7, 3, 0, 5], impl="fused_parallel")
    >>> ref, h_ref = jaxseq.min_gru(params, x, lengths=[7, 3, 0, 5], impl="reference")
    >>> out.shape, h_n.shape, bool(jnp.allclose(out, ref, atol=1e-6)), float(abs(out[3:, 1]).max())
    ((7, 4, 10), (2, 4, 5), True, 0.0)
    """,
)
min_lstm = _named_stack(
    "min_lstm",
    """Multi-layer minLSTM (Feng et al. 2024): normalised forget and input gates of x only;
    equations in :mod:`jaxseq.recurrences.minimal`.

    There is no cell state: the carry is h alone. Arguments and returns as
    :func:`min_gru`, with ``weight_ih`` (3H, in) and ``bias_ih`` (3H,).

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_min_lstm(jax.random.key(0), 3, 5, num_layers=2)
    >>> out, h_n = jaxseq.min_lstm(params, jnp.ones((4, 7, 3)), batch_first=True)
    >>> out.shape, h_n.shape
    ((4, 7, 5), (2, 4, 5))
    """,
)
layernorm_lstm = _named_stack(
    "layernorm_lstm",
    """Multi-layer layer-normalised LSTM (Ba et al. 2016); equations in
    :mod:`jaxseq.recurrences.layernorm`.

    ``params``: the LSTM's (no ``proj_size``) plus ``ln_ih_weight``, ``ln_ih_bias``,
    ``ln_hh_weight``, ``ln_hh_bias`` (4H,) and ``ln_c_weight``, ``ln_c_bias`` (H,) per
    layer and direction (see :func:`jaxseq.init_layernorm_lstm`); ``hx`` is ``(h0, c0)``;
    ``options`` as :func:`run_stack`. Returns ``(output, (h_n, c_n))``.

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_layernorm_lstm(jax.random.key(0), 3, 5)
    >>> out, (h_n, c_n) = jaxseq.layernorm_lstm(params, jnp.ones((7, 4, 3)), lengths=[7, 3, 0, 5])
    >>> out.shape, h_n.shape, float(abs(out[3:, 1]).max())
    ((7, 4, 5), (1, 4, 5), 0.0)
    """,
)
layernorm_gru = _named_stack(
    "layernorm_gru",
    """Multi-layer layer-normalised GRU (Ba et al. 2016); equations in
    :mod:`jaxseq.recurrences.layernorm`.

    ``params``: the GRU's plus ``ln_ih_weight``, ``ln_ih_bias``, ``ln_hh_weight``,
    ``ln_hh_bias`` (3H,) per layer and direction (see :func:`jaxseq.init_layernorm_gru`);
    ``hx`` is h0; ``options`` as :func:`run_stack`. Returns ``(output, h_n)``.

    >>> import jax, jax.numpy as jnp, jaxseq
    >>> params = jaxseq.init_layernorm_gru(jax.random.key(0), 3, 5, bidirectional=True)
    >>> out, h_n = jaxseq.layernorm_gru(params, jnp.ones((4, 7, 3)), batch_first=True)
    >>> out.shape, h_n.shape
    ((4, 7, 10), (2, 4, 5))
    """,
)
