"""Array helpers of the fused path, shared by :mod:`jaxseq.fused` and the definitions.

Shapes carry a direction axis D (1 or 2) after time: (T, D, N, ...) or (D, N, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxseq.scan import reset_flags

Array = jax.Array

#: Per-step matmuls of at most this many multiply-adds (per direction) with at least
#: ``_SPLIT_MIN_ROWS`` rows run as two row blocks in the backward scan (see bmm_rows).
_SPLIT_MAX_MACS = 2**22
_SPLIT_MIN_ROWS = 64


def to_steps(a: Array) -> Array:
    """(T, D, ...) time order <-> step order: flip the reverse direction's slice in time.

    Its own inverse.
    """
    if a.shape[1] == 1:
        return a
    return jnp.concatenate([a[:, :1], a[::-1, 1:]], axis=1)


def bmm(a: Array, w: Array, out_dtype: Any = None) -> Array:
    """Per-direction matmul: (D, N, K) x (D, K, M) -> (D, N, M).

    With ``out_dtype`` (the carry dtype of the mixed-precision policy): a is cast to w's
    dtype and the product accumulated and returned in ``out_dtype``.
    """
    if out_dtype is not None and jnp.dtype(out_dtype) != w.dtype:
        a = a.astype(w.dtype)
        if a.shape[0] == 1:
            return jnp.matmul(a[0], w[0], preferred_element_type=out_dtype)[None]
        return jnp.einsum("dnk,dkm->dnm", a, w, preferred_element_type=out_dtype)
    if a.shape[0] == 1:
        return (a[0] @ w[0])[None]
    return jnp.einsum("dnk,dkm->dnm", a, w)


def bmm_rows(a: Array, w: Array) -> Array:
    """:func:`bmm` for the backward scan's per-step ``dG W_hh`` product.

    XLA's CPU backend runs a small matmul with a long contraction, such as
    (64, 512) x (512, 128) (the LSTM at H=128), on both cores, and the synchronisation
    costs more than it gains; the same product as two (32, 512) row blocks runs on one
    core each without it. Small matmuls with at least 64 rows are therefore split in two
    row blocks; larger ones, whose threading pays, are left whole. Same values: each
    output row is the same dot product.
    """
    n, k, m = a.shape[1], a.shape[2], w.shape[2]
    if n < _SPLIT_MIN_ROWS or n % 2 or n * k * m > _SPLIT_MAX_MACS:
        return bmm(a, w)
    half = n // 2
    return jnp.concatenate([bmm(a[:, :half], w), bmm(a[:, half:], w)], axis=1)


def bias(b: Array | None) -> Array | None:
    """(D, M) -> (D, 1, M) so it adds to (D, N, M) without rank promotion."""
    return None if b is None else b.reshape(b.shape[0], 1, b.shape[1])


def zero_invalid(valid: Array, a: Array) -> Array:
    """``a`` where valid, else 0 (the output and the backward coefficients on padding)."""
    return jnp.where(valid, a, jnp.zeros_like(a))


def one_invalid(valid: Array, a: Array) -> Array:
    """``a`` where valid, else 1 (a pass-through coefficient of the carried gradient)."""
    return jnp.where(valid, a, jnp.ones_like(a))


def sigmoid_consts(hidden: int, num_gates: int, tanh_gates: tuple[int, ...], dtype: Any, ndim: int):
    """Per-column scale a and shift b so that ``a * tanh(a * v) + b`` is sigmoid on the
    gate blocks and tanh on ``tanh_gates``: sigmoid(v) = 0.5 tanh(v / 2) + 0.5, so a
    whole (N, G*H) gate block costs one transcendental."""
    gate = np.arange(num_gates * hidden) // hidden
    is_tanh = np.isin(gate, tanh_gates)
    scale = np.where(is_tanh, 1.0, 0.5).reshape((1,) * (ndim - 1) + (-1,))
    shift = np.where(is_tanh, 0.0, 0.5).reshape((1,) * (ndim - 1) + (-1,))
    return jnp.asarray(scale, dtype), jnp.asarray(shift, dtype)


def contract_tn(a: Array, b: Array) -> Array:
    """sum over t, n of a[t, d, n, :]^T b[t, d, n, :]: (T, D, N, P), (T, D, N, Q) -> (D, P, Q).

    One (P, T*N) x (T*N, Q) matmul per direction: a weight gradient for all steps at once.
    Written as a dot contracting t and n rather than a reshape to (T*N, .) rows: the two
    are the same matmul on one device, but with the batch sharded over devices (``jit``
    with a ``NamedSharding``) merging t and n forces XLA to all-gather both operands.
    """
    if a.shape[1] == 1:
        return jax.lax.dot_general(a[:, 0], b[:, 0], (((0, 1), (0, 1)), ((), ())))[None]
    return jnp.einsum("tdnp,tdnq->dpq", a, b)


def grad_inputs(dg: Array, w_ih_t: Array) -> Array:
    """dx of the projection: (T, D, N, G*H) x (D, I, G*H)^T -> (T, D, N, I).

    Written as one (T, N, G*H) x (G*H, I) dot per direction (contracting G*H of both, so
    neither is transposed first): as an einsum over d, XLA's CPU backend transposed the
    whole (T*N, G*H) gradient first, which measured slower. t and n stay separate dims,
    so that a batch sharded over devices stays sharded (see :func:`contract_tn`).
    """
    D = dg.shape[1]
    per_dir = [
        jax.lax.dot_general(dg[:, d], w_ih_t[d], (((2,), (1,)), ((), ())))[:, None]
        for d in range(D)
    ]
    return per_dir[0] if D == 1 else jnp.concatenate(per_dir, axis=1)


def direction_resets(resets: Array, mask: Array | None, D: int) -> Array:
    """(T, N) resets -> (T, D, N, 1) restart flags per direction, time order
    (:func:`jaxseq.scan.reset_flags`: the forward direction restarts where a segment
    starts, the reverse direction where the next one does)."""
    flags = [reset_flags(resets, mask, reverse=d == 1) for d in range(D)]
    return jnp.stack(flags, axis=1)[..., None]


def prev_h(ys: Array, valid: Array, h0: Array) -> Array:
    """The hidden state entering each step, rebuilt from the outputs (step order).

    A direction's valid steps are contiguous and its carry is frozen elsewhere, so the
    state entering a valid step is the previous step's output when that step was valid,
    else the initial state. (Entries at invalid steps are never used: their gate
    gradients are 0.)
    """
    prev_y = jnp.concatenate([jnp.zeros_like(ys[:1]), ys[:-1]], axis=0)
    prev_v = jnp.concatenate([jnp.zeros_like(valid[:1]), valid[:-1]], axis=0)
    return jnp.where(prev_v, prev_y, h0[None])


# --------------------------------------------------------------------------- forward mode
# A custom_vjp function refuses forward mode, and a custom_jvp function gets its reverse
# mode by JAX transposing its tangent map, which loses what a hand-written backward scan
# does that a transposed program does not (the gate gradients written in place over a
# saved array, the weight gradients as single matmuls on the stacked arrays): the
# training step measured slower that way. So the tangent map is one primitive
# whose evaluation is the transpose of the backward pass (``jax.linear_transpose``) and
# whose transpose rule is the backward pass itself: forward mode runs the former,
# reverse mode the latter, unchanged. Its JVP and batching rules evaluate the same map
# as plain JAX, so higher orders and ``vmap`` compose.


def _tangent_map(flat: tuple[Array, ...], params: dict[str, Any]) -> list[Array]:
    """The tangent map: the transpose of ``bwd`` at the saved values, on flat arrays."""
    n = params["n_saved"]
    saved = jax.tree.unflatten(params["saved_tree"], flat[:n])
    tangents = jax.tree.unflatten(params["t_tree"], flat[n:])
    outs = jax.tree.unflatten(
        params["out_tree"], [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in params["out_avals"]]
    )
    lin = jax.linear_transpose(lambda ct: params["bwd"](*params["nondiff"], saved, ct), outs)
    (t_out,) = lin(tangents)
    return jax.tree.leaves(t_out)


def _tangent_transpose(cts: Any, *args: Any, **params: Any) -> list[Any]:
    """Reverse mode: the hand-written backward pass on the output cotangents."""
    n = params["n_saved"]
    saved = jax.tree.unflatten(params["saved_tree"], args[:n])
    cts = [ad.instantiate_zeros(ct) for ct in cts]
    grads = params["fast_bwd"](
        *params["nondiff"], saved, jax.tree.unflatten(params["out_tree"], cts)
    )
    leaves = jax.tree.leaves(grads)
    return [None] * n + [
        g if ad.is_undefined_primal(a) else None for a, g in zip(args[n:], leaves, strict=True)
    ]


def _tangent_jvp(primals: Any, tangents: Any, **params: Any) -> tuple[Any, Any]:
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return jax.jvp(lambda *f: _tangent_map(f, params), tuple(primals), tuple(tangents))


def _tangent_batch(args: Any, dims: Any, **params: Any) -> tuple[Any, Any]:
    out = jax.vmap(lambda *f: _tangent_map(f, params), in_axes=tuple(dims))(*args)
    return out, [0] * len(out)


_tangent_p = Primitive("jaxseq_tangent_map")
_tangent_p.multiple_results = True
_tangent_p.def_impl(lambda *args, **params: _tangent_map(args, params))
_tangent_p.def_abstract_eval(lambda *avals, **params: list(params["out_avals"]))
mlir.register_lowering(
    _tangent_p,
    mlir.lower_fun(lambda *args, **params: _tangent_map(args, params), multiple_results=True),
)
ad.primitive_transposes[_tangent_p] = _tangent_transpose
ad.primitive_jvps[_tangent_p] = _tangent_jvp
batching.primitive_batchers[_tangent_p] = _tangent_batch


def with_transposed_jvp(
    fun: Callable[..., Any],
    fwd: Callable[..., tuple[Any, Any]],
    bwd: Callable[..., Any],
    nondiff_argnums: tuple[int, ...] = (),
    linear_bwd: Callable[..., Any] | None = None,
    nograd_argnums: tuple[int, ...] = (),
) -> Callable[..., Any]:
    """``fun`` with both derivative rules built from its reverse-mode pieces.

    ``fwd`` and ``bwd`` follow ``jax.custom_vjp``'s conventions: ``fwd(*args) -> (out,
    saved)``, ``bwd(*nondiff, saved, ct) -> cotangents of the differentiable args`` (None
    for a non-float one). The backward pass is linear in ``ct``, so its transpose is the
    tangent map: forward mode evaluates that transpose (of ``linear_bwd``, a form of
    ``bwd`` that is linear as a program, default ``bwd``) and reverse mode runs ``bwd``
    itself. One pair of hand-written scans thus serves ``jax.grad``, ``jax.jvp``,
    ``jax.linearize``, ``jax.jacfwd``, ``jax.hessian`` and ``grad`` of ``jvp``, where a
    ``jax.custom_vjp`` refuses forward mode.

    ``nograd_argnums``: traced array arguments (e.g. dropout masks) that ``fun`` is not
    differentiated with respect to: their tangents are dropped and ``bwd`` returns None
    for them.

    >>> import jax, jax.numpy as jnp
    >>> cube = with_transposed_jvp(
    ...     lambda x: x**3, lambda x: (x**3, 3 * x**2), lambda saved, ct: (saved * ct,)
    ... )
    >>> [float(v) for v in (jax.jvp(cube, (2.0,), (1.0,))[1], jax.grad(cube)(2.0))]
    [12.0, 12.0]
    >>> float(jax.hessian(cube)(2.0))          # 6 x: forward over reverse
    12.0
    """
    f = jax.custom_jvp(fun, nondiff_argnums=nondiff_argnums)

    def jvp(*args: Any) -> tuple[Any, Any]:
        *nondiff, primals, tangents = args
        full, it_nd, it_p = [], iter(nondiff), iter(primals)
        for i in range(len(nondiff) + len(primals)):
            full.append(next(it_nd) if i in nondiff_argnums else next(it_p))
        out, saved = fwd(*full)
        diff_pos = [i for i in range(len(full)) if i not in nondiff_argnums]
        cts = tuple(
            None if i in nograd_argnums or getattr(t, "dtype", None) == jax.dtypes.float0 else t
            for i, t in zip(diff_pos, tangents, strict=True)
        )
        saved_flat, saved_tree = jax.tree.flatten(saved)
        t_flat, t_tree = jax.tree.flatten(cts)
        out_flat, out_tree = jax.tree.flatten(out)
        t_out = _tangent_p.bind(
            *saved_flat,
            *t_flat,
            n_saved=len(saved_flat),
            saved_tree=saved_tree,
            t_tree=t_tree,
            out_tree=out_tree,
            out_avals=tuple(jax.typeof(o) for o in out_flat),
            nondiff=tuple(nondiff),
            bwd=bwd if linear_bwd is None else linear_bwd,
            fast_bwd=bwd,
        )
        return out, jax.tree.unflatten(out_tree, t_out)

    f.defjvp(jvp)
    return f


def tile(a: Array, k: int) -> Array:
    """``a`` repeated k times along the last axis (one copy per gate block)."""
    return jnp.concatenate([a] * k, axis=-1)
