"""The conformance suite: every implementation of a kind against an independent float64 loop.

:func:`check_kind` takes a registered kind (shipped or defined in a test file) and, for
each implementation that serves it (:func:`jaxseq.impls.impls_for`, ``"cudnn"`` aside:
it needs a GPU, ``tests/test_cudnn.py`` covers its stand-in) and each nonlinearity of the
kind, runs ``jax.value_and_grad`` of a scalar loss of (outputs, final states) through
:func:`jaxseq.run_stack` and through :func:`reference`, and asserts the values and the
gradients of every parameter, x, ``hx`` and ``reset_hx`` equal (float64, 1e-10). The
cases combine the features the implementation's row of :data:`jaxseq.impls.IMPLS`
``supports``:

* ``stack``: 2 layers, bidirectional, ``proj_size`` where the kind has a projection,
  lengths containing 0 and T, ``hx``, resets (episodes from zeros), every step's states
  (``return_all_states``), and every mask of ``masks=`` the row takes (``input``, ``output_l{k}``, ``weight_hh_l{k}{sfx}``, and
  ``hidden_l{k}`` / ``zoneout_l{k}`` with ``hidden_mask`` / ``zoneout``); also exactly:
  zero output and zero x-gradient past each length, ``h_n = h0`` for length 0;
* ``stream``: 1 layer, unidirectional, no bias, no lengths, ``hx``, resets with
  ``reset_hx`` (a reset at t = 0 included), the masks, and ``remat=3`` / ``chunk=3``
  where the row supports them (T = 4: an uneven last chunk).

Forward mode (``jvp``), ``vmap`` and the mixed-precision ``carry_dtype`` add a compile
each, so each is run on one implementation per kind, drawn with a fixed seed: ``jvp``
(the stack case) against the reference gradient's directional derivative; ``vmap``
(the stream case, over x, ``hx`` and ``reset_hx``) against the per-example results;
``carry_dtype=float64`` with float32 parameters and inputs (the stack case) against the
float64 reference at a float32 tolerance.

The reference is a plain Python loop over layers x directions x rows x steps that calls
the kind's bound cell (``rec.bind(nl).cell()``) on one row at a time and implements the
stack's documented semantics itself (:func:`jaxseq.stack.run_stack`'s docstring); it is
compiled once per kind, nonlinearity and case and shared by every implementation.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _jit import JIT

import jaxseq
from jaxseq.impls import impls_for
from jaxseq.layer import FEATURES
from jaxseq.params import spec_from_params
from jaxseq.recurrences import Recurrence, get
from jaxseq.validation import expected_mask_shapes

Array = jax.Array

# JIT (XLA -O0 on the CPU), and without XLA:CPU's fusion emitters: these programs then
# compile 2-3 times faster (measured, CPU time: the GRU's reference 2.4 s -> 1.1 s, an
# LSTM stack 1.0 s -> 0.4 s) and give the same values (differences at 1e-16).
_OPTS = JIT.keywords.get("compiler_options")
CJIT = functools.partial(
    jax.jit,
    compiler_options=None if _OPTS is None else {**_OPTS, "xla_cpu_use_fusion_emitters": False},
)

T, I, H = 4, 2, 3
TOL = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=5e-5, atol=5e-6)  # float32 operands, float64 carry (errors seen: 1/4 of it)
SKIP = ("cudnn",)  # needs a GPU; tests/test_cudnn.py covers its stand-in


@dataclasses.dataclass(frozen=True)
class Case:
    """A static case shape (hashable: the reference is compiled once per kind and case).

    ``rows``: N. ``lengths`` None: every row has T steps (no mask). ``resets``: (T, N)
    nested tuples of bool, or None. ``reset_hx``: segments started by a reset begin from
    ``reset_hx``. ``every``: the remat / chunk length of the rows that support them.
    ``all_states``: the call returns every step's states too (``return_all_states``),
    and the loss weighs them.
    """

    name: str
    rows: int
    layers: int
    bidirectional: bool
    bias: bool
    project: bool
    lengths: tuple[int, ...] | None
    resets: tuple[tuple[bool, ...], ...] | None
    reset_hx: bool
    every: int | None = None
    all_states: bool = False

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    def length(self, n: int) -> int:
        return T if self.lengths is None else self.lengths[n]


def _resets(rows: int, *where: tuple[int, int]) -> tuple[tuple[bool, ...], ...]:
    r = np.zeros((T, rows), bool)
    for t, n in where:
        r[t, n] = True
    return tuple(tuple(bool(v) for v in row) for row in r)


STACK = Case(
    "stack",
    rows=3,
    layers=2,
    bidirectional=True,
    bias=True,
    project=True,
    lengths=(T, 0, 2),
    # row 0: a (no-op) reset at t = 0 and one at 2; row 1 (length 0): a padded reset,
    # ignored; row 2 (length 2): a reset at 1 and a padded one at 3, ignored.
    resets=_resets(3, (0, 0), (2, 0), (1, 1), (1, 2), (3, 2)),
    reset_hx=False,
    all_states=True,
)
STREAM = Case(
    "stream",
    rows=2,
    layers=1,
    bidirectional=False,
    bias=False,
    project=False,
    lengths=None,
    # row 0: restarts from reset_hx at t = 0 and at 2; row 1 continues from hx, then
    # restarts at 1 and 2.
    resets=_resets(2, (0, 0), (2, 0), (1, 1), (2, 1)),
    reset_hx=True,
    every=3,  # T = 4: an uneven last chunk
)
CASES = (STACK, STREAM)


# --------------------------------------------------------------------------- reference


def _segments(case: Case, n: int) -> list[tuple[int, int]]:
    """Row n's segments ``[(start, end), ...]`` over its valid steps (none for length 0):
    a new one at t = 0 and at every reset before the row's length."""
    length = case.length(n)
    starts = [t for t in range(length) if t == 0 or (case.resets and case.resets[t][n])]
    return list(zip(starts, starts[1:] + [length], strict=False))


def reference(
    rec: Recurrence,
    case: Case,
    p: Mapping[str, Array],
    x: Array,
    hx: tuple[Array, ...],
    rhx: tuple[Array, ...],
    masks: Mapping[str, Any],
) -> tuple[Array, tuple[Array, ...]]:
    """The stack's documented semantics as a Python loop over layers x directions x rows x
    steps, with ``rec``'s bound cell on one row (a (1, ...) batch) at a time.

    ``hx`` / ``rhx``: the states, each (L*D, N, size); ``masks``: every key the stack
    takes (:func:`jaxseq.validation.expected_mask_shapes`; neutral values where the call
    has none). Returns ``(out (T, N, D*H_out), states)``, states each (L*D, N, size);
    with ``case.all_states``, ``(out, states, seq)``, seq the states after every step, each
    (T, L*D, N, size): frozen on padding (a forward direction's final state, a reverse
    one's initial state).
    """
    cell = rec.cell()
    L, D = case.layers, case.D
    inp = x * masks["input"][None]  # variational: the same (N, I) multiplier every step
    finals: list[tuple[Array, ...]] = []
    seqs: list[tuple[Array, ...]] = []  # per layer and direction, each (T, N, size)
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            base = {b: p[b + sfx] for b in rec.base_names if b + sfx in p}
            if "weight_hh" + sfx in masks:  # DropConnect: the recurrent weight used
                base["weight_hh"] = base["weight_hh"] * masks["weight_hh" + sfx]
            hidden, zones = masks.get(f"hidden_l{k}"), masks.get(f"zoneout_l{k}")
            rows, row_finals, row_seqs = [], [], []
            for n in range(x.shape[1]):
                pn = dict(base)
                if hidden is not None:
                    # h * m enters W_hh only: (h * m) W^T = h (W diag(m))^T for this row.
                    pn["weight_hh"] = pn["weight_hh"] * hidden[d, n][None, :]
                start = tuple(s[k * D + d, n][None] for s in hx)
                restart = (
                    tuple(s[k * D + d, n][None] for s in rhx)
                    if case.reset_hx
                    else tuple(jnp.zeros_like(s[k * D + d, n][None]) for s in hx)
                )
                h_out = start[0].shape[-1]
                ys = [jnp.zeros((h_out,), x.dtype)] * x.shape[0]
                seq: list[Any] = [None] * x.shape[0]  # the states after each step
                final = start
                segments = list(_segments(case, n))
                for i, (s, e) in enumerate(segments):
                    # hx continues the row: forward, into its first segment unless a
                    # reset starts it; reverse, into its last. A reset starts an episode
                    # from reset_hx, zeros by default.
                    if d == 0:
                        from_hx = i == 0 and not (case.resets and case.resets[0][n])
                    else:
                        from_hx = i == len(segments) - 1
                    c = rec.carry(start if from_hx else restart)
                    for t in reversed(range(s, e)) if d else range(s, e):
                        new, y = cell(pn, c, inp[t, n][None])
                        if zones is not None:  # z * previous + (1 - z) * new, per state
                            prev = rec.states(c)
                            zoned = tuple(
                                z[t, d, n][None] * a + (1.0 - z[t, d, n][None]) * b
                                for z, a, b in zip(zones, prev, rec.states(new), strict=True)
                            )
                            new, y = rec.carry(zoned), zoned[0]
                        c = new
                        ys[t] = y[0]
                        seq[t] = rec.states(c)
                    # forward: the last segment's final state; reverse: the first's.
                    if d == 0 or i == 0:
                        final = rec.states(c)
                rows.append(jnp.stack(ys))
                row_finals.append(final)
                # padding: a forward direction holds its final state, a reverse one its start
                frozen = start if d else final
                seq = [frozen if st is None else st for st in seq]
                row_seqs.append(tuple(jnp.stack(s)[:, 0] for s in zip(*seq, strict=True)))
            outs.append(jnp.stack(rows, axis=1))  # (T, N, H_out)
            finals.append(tuple(jnp.concatenate(f, axis=0) for f in zip(*row_finals, strict=True)))
            seqs.append(tuple(jnp.stack(s, axis=1) for s in zip(*row_seqs, strict=True)))
        inp = jnp.concatenate(outs, axis=-1) * masks[f"output_l{k}"][None]
    states = tuple(jnp.stack(f) for f in zip(*finals, strict=True))
    if case.all_states:  # (T, L*D, N, size) per state
        return inp, states, tuple(jnp.stack(s, axis=1) for s in zip(*seqs, strict=True))
    return inp, states


def _loss(result: tuple[Any, ...], cots: tuple[Any, ...]) -> Array:
    """Linear in every output (``(out, states)`` or ``(out, states, seq)``), with random
    float64 cotangents of the same structure (so every gradient is a full vector-Jacobian
    product); float32 outputs are widened first."""
    pairs = zip(jax.tree.leaves(result), jax.tree.leaves(cots), strict=True)
    return sum(jnp.sum(a.astype(jnp.float64) * c) for a, c in pairs)


@functools.cache
def _reference_vg(rec: Recurrence, case: Case):
    """value_and_grad of the reference loss w.r.t. (params, x, hx, reset_hx), jitted once
    per bound kind and case (shared by every implementation)."""

    def loss(p, x, hx, rhx, masks, cots):
        result = reference(rec, case, p, x, hx, rhx, masks)
        return _loss(result, cots), result

    return CJIT(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


# --------------------------------------------------------------------------- implementation


def _stack_loss(kind: str, nl: str, impl: str, case: Case, options: tuple):
    rec = get(kind)
    opts = dict(options)

    def loss(p, x, hx, rhx, masks, lengths, resets, cots):
        result = jaxseq.run_stack(
            kind,
            p,
            x,
            rec.carry(hx),
            lengths,
            nonlinearity=nl,
            impl=impl,
            resets=resets,
            reset_hx=rec.carry(rhx) if case.reset_hx else None,
            masks=masks or None,
            return_all_states=case.all_states,
            **opts,
        )
        result = (result[0],) + tuple(rec.states(r) for r in result[1:])
        return _loss(result, cots), result

    return loss


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
    """A case's inputs as NumPy arrays (no eager JAX op: each would compile)."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    hx: tuple[np.ndarray, ...]
    rhx: tuple[np.ndarray, ...]
    masks: dict[str, Any]  # every key the stack takes (the reference's)
    cots: tuple[Any, ...]  # structured as the call's (out, states[, seq])
    lengths: np.ndarray | None
    resets: np.ndarray | None

    def cast(self, dtype: Any) -> Data:
        """The floating inputs (not the cotangents) in ``dtype``."""
        c = functools.partial(jax.tree.map, lambda a: a.astype(dtype))
        return dataclasses.replace(
            self, params=c(self.params), x=c(self.x), hx=c(self.hx), rhx=c(self.rhx),
            masks=c(self.masks),
        )  # fmt: skip


def _data(kind: str, case: Case, seed: int) -> Data:
    """The case's inputs in float64, every value exactly a float32 (so that the float32
    ``carry_dtype`` run and the float64 reference see the same numbers)."""
    rec = get(kind)
    proj = 2 if case.project and rec.projection else 0
    shapes = jaxseq.param_shapes(
        kind, I, H, case.layers, bias=case.bias, bidirectional=case.bidirectional,
        proj_size=proj,
    )  # fmt: skip
    rng = np.random.default_rng(seed)

    def f32(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.float32).astype(np.float64)

    def normal(*shape: int) -> np.ndarray:
        return f32(rng.standard_normal(shape))

    # torch's init, U(-1/sqrt(H), 1/sqrt(H)); a kind's extra parameters (layer-norm gains
    # and biases) around their constants, moved off them.
    extra = {} if rec.extra_params is None else dict(rec.extra_params(H))
    bound = 1.0 / np.sqrt(H)
    params = {}
    for name, shape in shapes.items():
        base = name.rsplit("_l", 1)[0]
        if base in extra:
            const = 1.0 if extra[base][1] == "ones" else 0.0
            params[name] = f32(const + 0.3 * rng.standard_normal(shape))
        else:
            params[name] = f32(rng.uniform(-bound, bound, shape))
    spec = spec_from_params(kind, params)
    sizes = rec.state_sizes(spec.hidden_size, spec.output_size)
    LD, N = case.layers * case.D, case.rows
    hx = tuple(normal(LD, N, s) for s in sizes)
    rhx = tuple(normal(LD, N, s) for s in sizes)
    masks: dict[str, Any] = {}
    for key, shape in expected_mask_shapes(rec, spec, T, N).items():
        if key.startswith("zoneout"):  # in [0, 1]
            masks[key] = tuple(f32(rng.uniform(0.0, 1.0, sh)) for sh in shape)
        else:  # any multiplier (dropout's are 0 or 1 / (1 - p))
            masks[key] = f32(rng.uniform(0.5, 1.5, shape))
    cots: tuple[Any, ...] = (
        normal(T, N, case.D * spec.output_size),
        tuple(normal(LD, N, s) for s in sizes),
    )
    if case.all_states:
        cots += (tuple(normal(T, LD, N, s) for s in sizes),)
    lengths = None if case.lengths is None else np.asarray(case.lengths, np.int32)
    resets = None if case.resets is None else np.asarray(case.resets, bool)
    return Data(params, normal(T, N, I), hx, rhx, masks, cots, lengths, resets)


def _masks_for(row_supports: frozenset[str], masks: Mapping[str, Any]) -> tuple[dict, dict]:
    """``(call masks, reference masks)``: the call gets every key the row takes; the
    reference gets the same values and neutral ones (hidden 1, zoneout 0) for the rest."""
    call, ref = {}, {}
    for key, m in masks.items():
        if key.startswith("hidden_l") and "hidden_mask" not in row_supports:
            ref[key] = np.ones_like(m)
        elif key.startswith("zoneout_l") and "zoneout" not in row_supports:
            ref[key] = tuple(np.zeros_like(z) for z in m)
        else:
            call[key] = ref[key] = m
    return call, ref


# --------------------------------------------------------------------------- checks


def _assert_close(got, want, tol, what: str) -> None:
    got_leaves, tree = jax.tree.flatten(got)
    want_leaves, tree_want = jax.tree.flatten(want)
    assert tree == tree_want, f"{what}: structure {tree} != {tree_want}"
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(got)[0]]
    for path, a, b in zip(paths, got_leaves, want_leaves, strict=True):
        a64 = np.asarray(a, np.float64)
        np.testing.assert_allclose(a64, np.asarray(b), **tol, err_msg=f"{what} {path}")


def _features_of(case: Case, masks: Mapping[str, Any], options: Mapping) -> set[str]:
    used = {"hx", "masks"}
    if case.lengths is not None:
        used.add("lengths")
    if case.layers > 1:
        used.add("layers")
    if case.bidirectional:
        used.add("directions")
    if case.resets is not None:
        used.add("resets")
    if case.reset_hx:
        used.add("reset_hx")
    if case.all_states:
        used.add("all_states")
    used |= {
        f
        for f, pre in (("hidden_mask", "hidden_l"), ("zoneout", "zoneout_l"))
        if any(k.startswith(pre) for k in masks)
    }
    used |= {f for f in ("remat", "chunk") if options.get(f) is not None}
    return used


def _options(case: Case, supports: frozenset[str]) -> dict[str, int]:
    """``remat=`` / ``chunk=`` for the rows that support them, in the cases that set them."""
    if case.every is None:
        return {}
    return {f: case.every for f in ("remat", "chunk") if f in supports}


def _draw_extras(
    rng: np.random.Generator, rows: Mapping[str, Any], nls: list[str]
) -> dict[str, tuple[str, str]]:
    """``{transformation: (nonlinearity, impl)}``: one each, on distinct impls where the
    rows allow, drawn with ``rng``."""
    order = [list(rows)[i] for i in rng.permutation(len(rows))]
    extras = {}
    for i, feature in enumerate(("jvp", "vmap", "carry_dtype")):
        able = [n for n in order if feature == "carry_dtype" or feature in rows[n].supports]
        if able:
            extras[feature] = (nls[int(rng.integers(len(nls)))], able[i % len(able)])
    return extras


def check_kind(kind: str, rng_seed: int = 0) -> dict[tuple[str, str], set[str]]:
    """Every implementation serving ``kind`` (but cudnn) against :func:`reference`.

    For each nonlinearity, case and implementation: values and the gradients of every
    parameter, x, ``hx`` and ``reset_hx`` at float64 1e-10. Implementations whose lowered
    programs are identical (``"fused"`` is one of its named variants on a given backend)
    are compiled once. ``jvp``, ``vmap`` and ``carry_dtype`` run on one (nonlinearity,
    implementation) each, drawn with ``rng_seed``. Returns the coverage
    ``{(nonlinearity, impl): features}`` and asserts that every feature a row supports is
    exercised for every implementation (the drawn transformations once per kind).
    """
    base = get(kind)
    rows = {name: row for name, row in impls_for(base).items() if name not in SKIP}
    nls = list(base.nonlinearities)
    extras = _draw_extras(np.random.default_rng([rng_seed, zlib.crc32(kind.encode())]), rows, nls)
    data = {case: _data(kind, case, seed=rng_seed + j) for j, case in enumerate(CASES)}
    coverage: dict[tuple[str, str], set[str]] = {(nl, n): set() for nl in nls for n in rows}
    for nl in nls:
        rec = base.bind(nl)
        for case in CASES:
            dt = data[case]
            programs: dict[str, Any] = {}  # lowered text -> results
            for name, row in rows.items():
                options = _options(case, row.supports)
                what = f"{kind} nonlinearity={nl} impl={name} case={case.name} {options}"
                call_masks, ref_masks = _masks_for(row.supports, dt.masks)
                ref_args = (dt.params, dt.x, dt.hx, dt.rhx, ref_masks, dt.cots)
                (v_ref, aux_ref), g_ref = _reference_vg(rec, case)(*ref_args)
                loss = _stack_loss(kind, nl, name, case, tuple(sorted(options.items())))
                vg = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
                args = (dt.params, dt.x, dt.hx, dt.rhx, call_masks, dt.lengths, dt.resets, dt.cots)
                lowered = CJIT(vg).lower(*args)
                text = lowered.as_text()
                if text not in programs:
                    programs[text] = lowered.compile()(*args)
                (v, aux), g = programs[text]
                _assert_close((v, aux), (v_ref, aux_ref), TOL, what + " value")
                _assert_close(g, g_ref, TOL, what + " gradient")
                if case.lengths is not None:  # exactly: zeros past each length, h_n = h0
                    out, gx = np.asarray(aux[0]), np.asarray(g[1])
                    for n, length in enumerate(case.lengths):
                        assert not out[length:, n].any(), what + f" output past row {n}'s length"
                        assert not gx[length:, n].any(), what + f" gradient into row {n}'s padding"
                        if length == 0:
                            for s, h0 in zip(aux[1], dt.hx, strict=True):
                                np.testing.assert_array_equal(s[:, n], h0[:, n], what + " h_n")
                covered = coverage[nl, name]
                covered |= _features_of(case, call_masks, options)

                if extras.get("jvp") == (nl, name) and case is STACK:
                    primals, rest = args[:4], args[4:]
                    tangents = jax.tree.map(lambda a: np.cos(3.0 * a + 1.0), primals)

                    def f(p, x, hx, rhx, rest=rest, loss=loss):
                        return loss(p, x, hx, rhx, *rest)[0]

                    pv, tv = CJIT(lambda pr, tg, f=f: jax.jvp(f, pr, tg))(primals, tangents)
                    want = sum(
                        np.vdot(np.asarray(a), b)
                        for a, b in zip(
                            jax.tree.leaves(g_ref), jax.tree.leaves(tangents), strict=True
                        )
                    )
                    _assert_close((pv, tv), (v_ref, want), TOL, what + " jvp")
                    covered.add("jvp")

                if extras.get("vmap") == (nl, name) and case is STREAM:
                    other = _data(kind, case, seed=rng_seed + 7)
                    args2 = (dt.params, other.x, other.hx, other.rhx) + args[4:]
                    want = jax.tree.map(
                        lambda a, b: np.stack([a, b]), ((v, aux), g), CJIT(vg)(*args2)
                    )
                    batched = jax.tree.map(lambda a, b: np.stack([a, b]), args[1:4], args2[1:4])
                    in_axes = (None, 0, 0, 0, None, None, None, None)
                    got = CJIT(jax.vmap(vg, in_axes=in_axes))(args[0], *batched, *args[4:])
                    _assert_close(got, want, TOL, what + " vmap")
                    covered.add("vmap")

                if extras.get("carry_dtype") == (nl, name) and case is STACK:
                    options64 = (("carry_dtype", jnp.float64), *sorted(options.items()))
                    loss64 = _stack_loss(kind, nl, name, case, options64)
                    vg64 = jax.value_and_grad(loss64, argnums=(0, 1, 2, 3), has_aux=True)
                    d32 = dt.cast(jnp.float32)
                    masks32, _ = _masks_for(row.supports, d32.masks)
                    args32 = (d32.params, d32.x, d32.hx, d32.rhx, masks32) + args[5:]
                    (v32, aux32), g32 = CJIT(vg64)(*args32)
                    assert aux32[0].dtype == jnp.float32, what + f" output dtype {aux32[0].dtype}"
                    _assert_close((v32, aux32), (v_ref, aux_ref), TOL32, what + " carry_dtype")
                    _assert_close(g32, g_ref, TOL32, what + " carry_dtype gradient")
                    covered.add("carry_dtype")

    for (nl, name), covered in coverage.items():
        missing = set(rows[name].supports) - {"jvp", "vmap"} - covered
        assert not missing, f"{kind} nonlinearity={nl} impl={name}: not covered: {missing}"
    supported = set().union(*(r.supports for r in rows.values()))
    assert supported <= set(FEATURES), supported - set(FEATURES)
    for f in ("jvp", "vmap"):
        if f in supported:
            assert any(f in c for c in coverage.values()), f"{kind}: {f} not covered"
    return coverage
