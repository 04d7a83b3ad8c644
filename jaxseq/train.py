"""A jitted optax train step and loop for jaxseq models, matching ``torchseq.train``.

The step splits the model once into a static graph and its state (``nnx.Param`` values
and the rest: dropout RNG counters, ...); the jitted function merges them, computes the
loss and its gradient with respect to the parameters, and applies the optax update. Only
the *shapes* of a batch enter the compiled program: changing ``lengths`` (a traced
(N,) array) never recompiles, and length bucketing (:mod:`jaxseq.data`) bounds the
number of distinct shapes.

PyTorch equivalence (what ``parity_tests/test_training_parity.py`` checks, step by step):

=================================================  ================================================
``torch.optim``                                    optax
=================================================  ================================================
``SGD(lr, momentum=m)`` (dampening 0)              ``optax.sgd(lr, momentum=m)``
``Adam(lr, betas, eps)``                           ``optax.adam(lr, b1, b2, eps)``
``AdamW(lr, betas, eps, weight_decay=w)``          ``optax.adamw(lr, b1, b2, eps, weight_decay=w)``
``clip_grad_norm_(params, c)`` before step         :func:`clip_by_global_norm_torch` ``(c)`` first
``F.cross_entropy`` (mean)                         :func:`cross_entropy`
``LambdaLR(opt, torchseq.train.cosine_decay(n))``  ``optax.cosine_decay_schedule(lr, n)``
=================================================  ================================================

The loop and its helpers have the same names and arguments as in ``torchseq.train``:
:func:`fit` (returns a :class:`History`), the losses :func:`classification_loss`,
:func:`regression_loss`, :func:`language_model_loss`, and :func:`predict`,
:func:`evaluate`, :func:`evaluate_regression`, :func:`evaluate_language_model`.
``fit(..., checkpoint_dir=DIR)`` saves the training state as it goes and resumes from it
bit for bit, also from a checkpoint ``torchseq.train.fit`` wrote (:mod:`jaxseq.train_state`).

>>> import jax.numpy as jnp, optax
>>> from flax import nnx
>>> from jaxseq.models import SequenceClassifier
>>> model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
>>> step = make_train_step(model, optax.chain(clip_by_global_norm_torch(1.0), optax.adam(1e-2)))
>>> x, lengths, y = jnp.ones((4, 5, 2)), jnp.array([5, 1, 3, 2]), jnp.array([0, 1, 2, 0])
>>> losses = [float(step(x, lengths, y)) for _ in range(3)]
>>> losses[2] < losses[0], step.compiles
(True, 1)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from jaxseq import train_state
from seqfile.history import History  # shared with torchseq.train
from seqfile.training_state import restore_history

Array = jax.Array

__all__ = [
    "cross_entropy",
    "classification_loss",
    "regression_loss",
    "language_model_loss",
    "language_model_stream_loss",
    "clip_by_global_norm_torch",
    "History",
    "TrainStep",
    "make_train_step",
    "fit",
    "predict",
    "evaluate",
    "evaluate_regression",
    "evaluate_language_model",
    "initialize_distributed",
]

Batches = Iterable[tuple] | Callable[[int], Iterable[tuple]]


def _weighted_mean(values: Array, weights: Array | None) -> Array:
    """``mean(values)``, or with per-row ``weights`` (N,) over ``values`` (N, ...) the
    weighted mean ``sum(w * values) / (sum(w) * size of a row)``."""
    if weights is None:
        return jnp.mean(values)
    w = jnp.asarray(weights).astype(values.dtype)
    if w.shape != values.shape[:1]:
        raise ValueError(f"weights must have shape {values.shape[:1]} (one per row), got {w.shape}")
    w = w.reshape(w.shape + (1,) * (values.ndim - 1))
    total = jnp.sum(w) * math.prod(values.shape[1:])
    # All-zero weights (a device that holds only padding rows) give 0, not 0/0, and a
    # zero gradient: the sum is 0 and so is every weight.
    return jnp.sum(w * values) / jnp.where(total > 0, total, jnp.ones_like(total))


def cross_entropy(logits: Array, labels: Array, weights: Array | None = None) -> Array:
    """Mean cross-entropy of logits (N, C) against int labels (N,), as ``F.cross_entropy``.

    With ``weights`` (N,) it is the weighted mean ``sum(w_i * l_i) / sum(w_i)``: rows of
    weight 0 (the padding a data-parallel step adds, see :class:`TrainStep`) drop out
    exactly.

    >>> import jax.numpy as jnp
    >>> logits, labels = jnp.array([[0.0, 0.0], [5.0, -5.0]]), jnp.array([0, 1])
    >>> float(cross_entropy(logits[:1], labels[:1])) == float(
    ...     cross_entropy(logits, labels, weights=jnp.array([1.0, 0.0])))
    True
    """
    return _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weights)


def classification_loss(
    model: nnx.Module, x: Array, lengths: Array, y: Array, *, weights: Array | None = None
) -> Array:
    """The default loss: ``cross_entropy(model(x, lengths), y, weights)`` for ``x`` (N, T,
    I), ``lengths`` (N,), ``y`` (N,) int; ``weights`` (N,) optional per-row weights."""
    return cross_entropy(model(x, lengths), y, weights)


def regression_loss(model: nnx.Module, *batch: Any, weights: Array | None = None) -> Array:
    """Mean squared error: ``batch = (*inputs, target)``, ``model(*inputs)`` reshaped to the
    target's shape (e.g. (N, 1, 1) -> (N,)): ``mean((model(*inputs) - target) ** 2)``.

    With ``weights`` (N,) (one per row of the target (N, ...)), the weighted mean over rows.

    >>> import jax.numpy as jnp
    >>> float(regression_loss(lambda x: 2 * x, jnp.array([[1.0], [2.0]]), jnp.array([1.0, 1.0])))
    5.0
    >>> float(regression_loss(lambda x: 2 * x, jnp.array([[1.0], [2.0]]), jnp.array([1.0, 1.0]),
    ...                       weights=jnp.array([1.0, 0.0])))
    1.0
    """
    *inputs, target = batch
    pred = model(*inputs)
    return _weighted_mean((pred.reshape(target.shape) - target) ** 2, weights)


def language_model_loss(
    model: nnx.Module, x: Array, y: Array, *, weights: Array | None = None
) -> Array:
    """Mean next-token cross-entropy of a language model ``model(x (N, T)) -> (logits
    (N, T, V), state)`` against targets y (N, T) int, over all N*T positions (with
    ``weights`` (N,), rows weighted)."""
    logits, _ = model(x)  # (N, T, V)
    return _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), weights)


def language_model_stream_loss(
    model: nnx.Module, x: Array, y: Array, *, state: Any = None, weights: Array | None = None
):
    """:func:`language_model_loss` for a text read as a stream (truncated backpropagation
    through time): ``model(x, state)`` continues from the previous chunk's final state
    (None: from zeros), and the new state is returned for the next chunk. Returns
    ``(loss, state)``; for a :class:`TrainStep` made with ``carry_state=True``, which
    carries the state from call to call (no gradient flows into it). With ``weights``
    (N,), the rows' weighted mean (the padding rows of a data-parallel step weigh 0)."""
    logits, state = model(x, state)  # (N, T, V)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return _weighted_mean(losses, weights), state


class ClipByGlobalNormTorchState(NamedTuple):
    """No state: clipping is stateless."""


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """Clip gradients by their global norm exactly as ``torch.nn.utils.clip_grad_norm_``.

    torch computes ``total = ||(||g_1||, ..., ||g_k||)||_2`` and multiplies every gradient
    by ``min(max_norm / (total + 1e-6), 1)``. ``optax.clip_by_global_norm`` instead
    rescales by ``max_norm / total`` only when ``total > max_norm``, without the 1e-6, so
    the two differ slightly whenever clipping is active; this transform reproduces
    torch's rule to the last bit that the arithmetic order allows.

    >>> import jax.numpy as jnp
    >>> g = {"a": jnp.array([3.0, 4.0])}
    >>> u, _ = clip_by_global_norm_torch(1.0).update(g, None)
    >>> [round(float(v), 6) for v in u["a"]]
    [0.6, 0.8]
    """

    def init_fn(params: Any) -> ClipByGlobalNormTorchState:
        del params
        return ClipByGlobalNormTorchState()

    def update_fn(updates: Any, state: ClipByGlobalNormTorchState, params: Any = None):
        del params
        leaves = jax.tree.leaves(updates)
        if not leaves:
            return updates, state
        norms = jnp.stack([jnp.linalg.norm(g.ravel()) for g in leaves])
        total = jnp.linalg.norm(norms)
        coef = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _split_params(model: nnx.Module) -> tuple[Any, Any, Any]:
    """``(graphdef, params, rest)``: the ``nnx.Param`` values apart from the rest."""
    graphdef, params, rest = cast(tuple[Any, Any, Any], nnx.split(model, nnx.Param, ...))
    return graphdef, params, rest


def _pad_rows(a: np.ndarray, pad: int) -> np.ndarray:
    """``pad`` rows to append to ``a``: copies of its first row (finite, valid values such
    as a real length), zeros if it has none."""
    first = a[:1] if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
    return np.repeat(first, pad, axis=0)


def _accepts_keyword(fn: Callable[..., Any], name: str) -> bool | None:
    """Whether ``fn`` takes a keyword ``name`` (or ``**kwargs``); None when its signature
    cannot be read."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - builtins, C callables
        return None
    return any(
        (p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in sig.parameters.values()
    )


def _accepts_weights(loss_fn: Callable[..., Any]) -> bool:
    """Whether ``loss_fn`` takes a ``weights`` keyword (or ``**kwargs``)."""
    return bool(_accepts_keyword(loss_fn, "weights"))


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _describe(value: Any) -> str:
    """What a loss function returned, in words."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)}"
    return f"a {type(value).__name__}"


# ------------------------------------------------------------- the pieces of a TrainStep
#
# A train step composes three independent pieces: a loss in one form,
# ``loss(model, batch, weights, state) -> (loss, new_state)`` (:func:`_plain_loss` for
# ``loss_fn(model, *batch)``, :func:`_carried_loss` for the carried state), the pure step
# built on it (:func:`_make_step_fn`), and, for data parallelism, a :class:`_DataParallel`
# that shards the batch and the carried state, reduces the loss and wraps the gradient in
# ``shard_map``. Neither piece knows of the others' options.

_Loss = Callable[[nnx.Module, tuple, Any, Any], tuple[Array, Any]]


def _plain_loss(loss_fn: Callable[..., Array]) -> _Loss:
    """``loss_fn(model, *batch[, weights=w]) -> loss`` in the step's form (no state)."""

    def loss(model: nnx.Module, batch: tuple, weights: Any, state: Any) -> tuple[Array, Any]:
        del state
        value = loss_fn(model, *batch, **({} if weights is None else {"weights": weights}))
        if isinstance(value, (tuple, list)):
            raise TypeError(
                f"the loss function {_name(loss_fn)!r} returned {_describe(value)}; a train "
                "step needs the scalar loss. A loss that returns `(loss, new_state)`, to "
                "carry a state from batch to batch, needs `carry_state=True`"
            )
        return value, None

    return loss


def _carried_loss(loss_fn: Callable[..., Any]) -> _Loss:
    """The carried state (truncated backpropagation through time) as a loss:
    ``loss_fn(model, *batch, state=s[, weights=w]) -> (loss, new_state)``, the gradient
    stopped at ``new_state`` (it is carried to the next call as a value)."""
    form = (
        f"`def {_name(loss_fn)}(model, *batch, state=None): ...; return loss, new_state` "
        "(state is None on the first call and after `step.reset_state()`)"
    )
    if _accepts_keyword(loss_fn, "state") is False:
        raise TypeError(
            f"carry_state=True calls the loss function with `state=`, and "
            f"{_name(loss_fn)!r} takes no 'state' keyword; expected {form}"
        )

    def loss(model: nnx.Module, batch: tuple, weights: Any, state: Any) -> tuple[Array, Any]:
        kw = {} if weights is None else {"weights": weights}
        out = loss_fn(model, *batch, state=state, **kw)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(
                f"carry_state=True: the loss function {_name(loss_fn)!r} must return the "
                f"pair `(loss, new_state)`, got {_describe(out)}; expected {form}"
            )
        value, new_state = out
        return value, jax.tree.map(jax.lax.stop_gradient, new_state)

    return loss


def _model_loss(graphdef: Any, loss: _Loss, reduce: Callable[[Array, Any], Array] | None = None):
    """``f(params, rest, batch, weights, state) -> (loss, (rest, new_state))``: the loss of
    the model merged from its state; ``reduce(loss, weights)`` (inside ``shard_map``) makes
    it the whole batch's."""

    def f(params: Any, rest: Any, batch: tuple, weights: Any, state: Any):
        # Fresh Variables at this trace level, so that dropout may advance its RNG counters
        # here (nnx refuses to mutate Variables of an outer trace).
        rest = jax.tree.map(lambda a: a, rest)
        model = nnx.merge(graphdef, params, rest)
        value, new_state = loss(model, batch, weights, state)
        if reduce is not None:
            value = reduce(value, weights)
        return value, (_split_params(model)[2], new_state)

    return f


def _make_step_fn(
    graphdef: Any,
    tx: optax.GradientTransformation,
    loss: _Loss,
    *,
    parallel: _DataParallel | None = None,
    on_trace: Callable[[], Any] | None = None,
):
    """The pure train step ``step(params, rest, opt_state, batch, weights=None,
    state=None, state_specs=None) -> (params, rest, opt_state, loss, new_state)``: the
    loss's gradient with respect to the parameters, then the optax update. With
    ``parallel``, the gradient runs under its ``shard_map`` (``state_specs``: the carried
    state's sharding, see :meth:`_DataParallel.state_specs`). ``on_trace()`` runs when it
    is traced."""
    reduce = None if parallel is None else parallel.reduce
    grad_fn = jax.value_and_grad(_model_loss(graphdef, loss, reduce), has_aux=True)

    def step(params, rest, opt_state, batch, weights=None, state=None, state_specs=None):
        if on_trace is not None:
            on_trace()
        fn = grad_fn if parallel is None else parallel.shard(grad_fn, state, state_specs)
        (value, (rest, state)), grads = fn(params, rest, batch, weights, state)
        # optax's Adam computes ``b1 ** count`` with an int32 count, which strict dtype
        # promotion rejects; the optimizer update alone runs under standard promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if parallel is not None:  # the state stays sharded along the batch
            params, rest, opt_state, value = jax.lax.with_sharding_constraint(
                (params, rest, opt_state, value), parallel.replicated
            )
        return params, rest, opt_state, value, state

    return step


def _abstract(a: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a batch array, as ``jax.jit`` sees it."""
    dtype = a.dtype if isinstance(a, jax.Array) else np.result_type(a)
    return jax.ShapeDtypeStruct(np.shape(a), jax.dtypes.canonicalize_dtype(dtype))


def _state_shapes(model_loss: Callable[..., Any], params, rest, batch, weights, rows: int):
    """The shapes of the new state ``loss`` makes from ``state=None`` for ``batch`` with
    ``rows`` rows (the other axes as they are)."""
    b = tuple(jax.ShapeDtypeStruct((rows,) + tuple(a.shape[1:]), a.dtype) for a in batch)
    w = None if weights is None else jax.ShapeDtypeStruct((rows,), weights.dtype)
    return jax.eval_shape(lambda p, r, b, w: model_loss(p, r, b, w, None)[1][1], params, rest, b, w)


class _DataParallel:
    """Data parallelism over the axis ``"batch"`` of a mesh (see :class:`TrainStep`): every
    batch array and the carried state sharded along their rows, everything else
    replicated, the loss (and so its gradient) reduced over the devices."""

    def __init__(self, mesh: jax.sharding.Mesh):
        if "batch" not in mesh.axis_names:
            raise ValueError(f"mesh needs an axis named 'batch', got {mesh.axis_names}")
        P = jax.sharding.PartitionSpec
        self.mesh = mesh
        self.replicated = jax.sharding.NamedSharding(mesh, P())
        self.rows = jax.sharding.NamedSharding(mesh, P("batch"))
        self.shards = int(mesh.shape["batch"])
        # The distinct batch shards this process holds: its rows must split over them.
        axis = mesh.axis_names.index("batch")
        me = jax.process_index()
        self.local_shards = len(
            {idx[axis] for idx, d in np.ndenumerate(mesh.devices) if d.process_index == me}
        )

    def replicate(self, tree: Any) -> Any:
        """``tree`` placed replicated over the mesh (every process passes the same values)."""
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        # device_put cannot target other processes' devices: each process supplies its
        # (identical) copy as the replicated global array.
        return multihost_utils.host_local_array_to_global_array(
            tree, self.mesh, jax.sharding.PartitionSpec()
        )

    def local(self, tree: Any) -> Any:
        """This process's copy of a replicated ``tree`` (on its first local device)."""
        return jax.tree.map(lambda a: a.addressable_data(0), tree)

    def make_global(self, local: np.ndarray) -> Array:
        """This process's rows as its part of a global array sharded along the rows."""
        return jax.make_array_from_process_local_data(self.rows, local)

    def shard_batch(self, batch: tuple, loss_fn: Callable[..., Any]):
        """``(global_batch, weights)``: see :meth:`TrainStep.shard_batch`."""
        arrays = [np.asarray(a) for a in batch]
        if not arrays or any(a.ndim == 0 for a in arrays):
            raise ValueError("every batch array needs its rows on axis 0 (no scalars)")
        n = arrays[0].shape[0]
        if any(a.shape[0] != n for a in arrays):
            raise ValueError(
                f"batch arrays disagree on their number of rows: {[a.shape[0] for a in arrays]}"
            )
        counts = [n]
        if jax.process_count() > 1:  # agree on one padded size: every process's row count
            counts = [int(c) for c in multihost_utils.process_allgather(np.array(n, np.int64))]
        k = self.local_shards
        rows = -(-max(counts) // k) * k  # rows per process after padding
        needs_weights = rows != min(counts)  # some process pads: all pass weights
        if rows != n:
            arrays = [np.concatenate([a, _pad_rows(a, rows - n)]) for a in arrays]
        weights = None
        if needs_weights:
            if not _accepts_weights(loss_fn):
                raise TypeError(
                    f"this batch of {n} rows is padded to {rows} to split over "
                    f"{k} device(s) per process, and the loss function "
                    f"{_name(loss_fn)!r} takes no "
                    "'weights' keyword to ignore the padding rows: add "
                    "`*, weights=None` (per-row weights (N,), a weighted mean) or pass "
                    "batches whose rows split evenly"
                )
            w = np.zeros(rows, np.float32)
            w[:n] = 1.0
            weights = self.make_global(w)
        return tuple(self.make_global(a) for a in arrays), weights

    @staticmethod
    def reduce(loss: Array, weights: Any) -> Array:
        """Inside ``shard_map``: the whole batch's loss from each device's."""
        if weights is None:  # equal slices: the mean of the means
            return jax.lax.pmean(loss, "batch")
        wsum = jnp.sum(weights).astype(loss.dtype)  # the weighted mean over every row
        return jax.lax.psum(loss * wsum, "batch") / jax.lax.psum(wsum, "batch")

    def shard(self, grad_fn: Callable[..., Any], state: Any, state_specs: Any):
        """``grad_fn(params, rest, batch, weights, state)`` under ``shard_map``: each
        device runs the single-device program on its rows (and its rows' carried state);
        only the loss is reduced across devices, and its gradient is the whole batch's."""
        P = jax.sharding.PartitionSpec
        specs = P() if state_specs is None else jax.tree.unflatten(*state_specs)
        return jax.shard_map(
            grad_fn,
            mesh=self.mesh,
            in_specs=(P(), P(), P("batch"), P("batch"), P() if state is None else specs),
            out_specs=((P(), (P(), specs)), P()),
        )

    def state_specs(self, model_loss: Callable[..., Any], params, rest, batch, weights):
        """``(treedef, partition specs)`` of the carried state: each array sharded along
        its batch axis, the axis whose size follows the number of rows (found from the
        state's shapes for two row counts)."""
        n = int(batch[0].shape[0])
        one = _state_shapes(model_loss, params, rest, batch, weights, n)
        two = _state_shapes(model_loss, params, rest, batch, weights, n + 1)
        specs = []
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(one)[0], jax.tree.leaves(two), strict=True
        ):
            axes = [i for i, (p, q) in enumerate(zip(a.shape, b.shape, strict=False)) if p != q]
            if len(a.shape) != len(b.shape) or len(axes) != 1:
                raise ValueError(
                    "with mesh=, every array of the carried state needs one batch axis to "
                    f"be sharded along: state{jax.tree_util.keystr(path)} has shape "
                    f"{a.shape} for {n} rows and {b.shape} for {n + 1}"
                )
            specs.append(jax.sharding.PartitionSpec(*([None] * axes[0]), "batch"))
        return jax.tree.structure(one), tuple(specs)

    def place(self, state: Any, state_specs: Any) -> Any:
        """The carried state as global arrays sharded by ``state_specs``; arrays already
        placed so are kept, others (e.g. read from a checkpoint: the whole state on every
        process) are cut into the shards."""
        specs = jax.tree.unflatten(*state_specs)

        def one(a: Any, spec: Any) -> Array:
            sharding = jax.sharding.NamedSharding(self.mesh, spec)
            if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
                return a
            whole = np.asarray(a)
            return jax.make_array_from_callback(whole.shape, sharding, lambda idx: whole[idx])

        return jax.tree.map(one, state, specs)

    def gather(self, tree: Any) -> Any:
        """The whole arrays of a sharded ``tree`` as NumPy arrays, on every process (each
        process must call it)."""
        if jax.process_count() == 1:
            return jax.tree.map(np.asarray, tree)
        return multihost_utils.process_allgather(tree, tiled=True)


class TrainStep:
    """A jitted train step bound to a model: ``loss = step(*batch)``.

    Holds the optimizer state and the model's state (``params``: the ``nnx.Param``
    values; ``rest``: everything else, e.g. dropout RNG counters). Each call runs one
    compiled update; with ``sync_model=True`` (the default) it also writes the new state
    back into the model, so the model can be evaluated or saved at any time. With
    ``sync_model=False`` call :meth:`sync` when needed (writing back costs a few ms per
    call on a small model, more than the step itself). ``step.compiles`` counts
    compilations (one per distinct batch shape and dtype).

    The pure function is ``step.step_fn(params, rest, opt_state, *batch) -> (params, rest,
    opt_state, loss)`` (jitted), for your own loops or ``lax.scan``.

    **Carried state** (``carry_state=True``, a bool: truncated backpropagation through
    time, RL rollouts): the loss is ``loss_fn(model, *batch, state=s) -> (loss,
    new_state)`` and the step keeps ``new_state`` in ``step.state`` for the next call, as a
    value (the gradient stops at the batch boundary). The first call, and the first after
    :meth:`reset_state`, passes ``state=None``; :meth:`fit` resets it at every epoch. The
    pure function then takes ``state=`` and also returns the new state. Episode ends
    inside a batch are the model's ``resets=`` (with ``reset_hx`` for a fresh start).
    One compile for ``state=None`` and one for the carried state. The first call checks
    the loss's ``(loss, new_state)`` form (TypeError showing it otherwise); the state
    holds one row per batch row, so a batch of another size than the carried state's
    raises ValueError until :meth:`reset_state` is called. Checkpoints
    (:mod:`jaxseq.train_state`) hold the carried state, so a resumed epoch continues the
    stream; with ``mesh`` the state is sharded along the batch, as the batch is (with
    padding it holds the padding rows too).

    >>> from jaxseq.models import CharLM
    >>> lm = CharLM(vocab_size=5, embed_dim=3, hidden_size=4, cell="gru", rngs=nnx.Rngs(0))
    >>> step = TrainStep(lm, optax.adam(1e-2), language_model_stream_loss, carry_state=True)
    >>> from jaxseq.data import stream_batches
    >>> chunks = stream_batches(np.arange(41) % 5, batch_size=2, seq_len=5)
    >>> losses = [float(step(x, y)) for x, y in chunks]
    >>> len(chunks), step.state.shape, step.compiles
    (4, (1, 2, 4), 2)

    **Data parallel** (``mesh``: a :class:`jax.sharding.Mesh` with an axis ``"batch"``):
    every array of a batch has its rows on axis 0 (``x`` (N, T, I), ``lengths`` (N,), ``y``
    (N,) for the default loss) and is sharded over ``"batch"``; parameters, the rest of
    the state and the optimizer state are replicated. The loss and its gradient run under
    :func:`jax.shard_map`: each device runs the ordinary single-device program on its rows,
    and only the loss is reduced across devices (a ``pmean`` of equal slices, or with
    padding the weighted mean ``psum(loss_d * w_d) / psum(w_d)`` of the devices' weighted
    means), so its gradient is the whole batch's gradient; the optimizer update runs on
    the replicated gradients. The loss therefore has to be a mean over rows (with padding:
    a row-weighted mean), as every loss in this module is. (The alternative, ``jax.jit`` of
    the global step with batch-sharded ``NamedSharding`` inputs, is also exact, but XLA's
    partitioner gathered activations in the recurrent backward pass, which made that step
    slower than one device's; ``benchmarks/data_parallel.py`` measures both.) Dropout
    draws the same mask pattern on every device's rows. A carried state is sharded along
    its batch axis (the axis whose size follows the number of rows, found from its
    shapes), so each device carries its own rows' state.

    Each process passes *its own rows* of every global batch (with one process: the
    whole batch); they are assembled with :func:`jax.make_array_from_process_local_data`.
    When the rows do not split evenly over the devices (or processes pass different
    numbers of rows), every process pads its rows (copies of its first row) up to a common
    multiple of its devices, and the step calls ``loss_fn(model, *batch, weights=w)`` with
    ``w`` (rows,) 1.0 for real rows and 0.0 for padding: :func:`classification_loss`,
    :func:`regression_loss`, :func:`language_model_loss` and
    :func:`language_model_stream_loss` take the weighted mean, so the loss and the
    gradients equal the unpadded ones. A ``loss_fn`` without a ``weights``
    keyword raises TypeError, only when padding is needed. (With dropout, masks are drawn
    for the padded shape, so a padded batch's dropout differs from the unpadded one.)
    With more than one process, agreeing on the padded size costs one small all-gather
    per step. :meth:`sync` writes this process's copy of the replicated state back into
    the model (on its first local device), so evaluating or saving stays local.

    >>> import numpy as np, optax, jax
    >>> from jax.sharding import Mesh
    >>> from jaxseq.models import SequenceClassifier
    >>> mesh = Mesh(np.array(jax.devices()), ("batch",))
    >>> model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
    >>> step = TrainStep(model, optax.adam(1e-2), mesh=mesh)
    >>> x, lengths, y = np.ones((3, 5, 2), np.float32), np.array([5, 1, 3]), np.array([0, 1, 2])
    >>> float(step(x, lengths, y)) > 0
    True
    """

    def __init__(
        self,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        loss_fn: Callable[..., Array] = classification_loss,
        *,
        sync_model: bool = True,
        mesh: jax.sharding.Mesh | None = None,
        carry_state: bool = False,
    ):
        if not isinstance(carry_state, (bool, np.bool_)):
            raise TypeError(
                f"carry_state must be a bool (True or False), got {carry_state!r} of type "
                f"{type(carry_state).__name__}"
            )
        carry_state = bool(carry_state)
        self.model = model
        self.tx = tx
        self.loss_fn = loss_fn
        self.carry_state = carry_state
        self.state: Any = None
        self.sync_model = sync_model
        self.mesh = mesh
        self.compiles = 0
        self.graphdef: Any
        self.params: Any  # the nnx.Param values
        self.rest: Any  # the rest of the state (RNG counters, ...)
        self.opt_state: Any
        self._parallel = None if mesh is None else _DataParallel(mesh)
        self._loss = (_carried_loss if carry_state else _plain_loss)(loss_fn)
        self._state_info: dict[Any, tuple[Any, Any]] = {}  # batch shapes -> state shapes, specs
        self.reset()
        self._compiled_graphdef = self.graphdef
        self._unreduced_loss = _model_loss(self.graphdef, self._loss)
        pure = _make_step_fn(
            self.graphdef, tx, self._loss, parallel=self._parallel, on_trace=self._traced
        )

        def step_fn(params, rest, opt_state, *batch, weights=None, state=None, state_specs=None):
            out = pure(params, rest, opt_state, batch, weights, state, state_specs)
            return out if carry_state else out[:4]

        self.step_fn = jax.jit(step_fn, static_argnames="state_specs")

    def _traced(self) -> None:
        self.compiles += 1  # runs at trace time only

    def reset(self, model: nnx.Module | None = None) -> None:
        """Re-read the model's state (e.g. after loading a checkpoint into it) and
        re-initialise the optimizer state and the carried state. Compiled code is kept.

        With ``model``, bind the step to that model instead: another instance of the same
        architecture (same graph: class, sizes and train/eval mode), e.g. a fresh
        initialisation, trains with the code already compiled. ValueError otherwise.
        """
        if model is not None:
            if nnx.graphdef(model) != self._compiled_graphdef:
                raise ValueError(
                    f"reset: {type(model).__name__} has another graph (class, sizes or "
                    "train/eval mode) than the model this step was compiled for"
                )
            self.model = model
        self.graphdef, self.params, self.rest = _split_params(self.model)
        self.opt_state = self.tx.init(self.params)
        if self._parallel is not None:
            self.params, self.rest, self.opt_state = self.replicate(
                (self.params, self.rest, self.opt_state)
            )
        self.reset_state()

    def reset_state(self) -> None:
        """Forget the carried state (``carry_state=True``): the next call passes None."""
        self.state = None

    def host_state(self) -> Any:
        """The carried state (None, or a tree of arrays) with its arrays whole: with a
        mesh, gathered from every device as NumPy arrays (every process must call it)."""
        if self.state is None or self._parallel is None:
            return self.state
        return self._parallel.gather(self.state)

    def replicate(self, tree: Any) -> Any:
        """``tree`` placed replicated over the mesh (every process passes the same values)."""
        return self._require_mesh("replicate").replicate(tree)

    def sync(self) -> None:
        """Write the current parameters (and RNG state) back into the model.

        With a mesh, this process's copy (on its first local device) is written back."""
        if self._parallel is None:
            nnx.update(self.model, self.params, self.rest)
        else:
            nnx.update(self.model, *self._parallel.local((self.params, self.rest)))

    def shard_batch(self, *batch: Any) -> tuple[tuple[Array, ...], Array | None]:
        """``(global_batch, weights)``: this process's rows of every batch array, padded if
        needed and assembled into global arrays sharded over the mesh axis ``"batch"``;
        ``weights`` is None without padding, else the global (rows,) 1.0/0.0 row weights.
        Requires a mesh."""
        return self._require_mesh("shard_batch").shard_batch(batch, self.loss_fn)

    def _require_mesh(self, what: str) -> _DataParallel:
        if self._parallel is None:
            raise ValueError(f"{what} needs a TrainStep made with mesh=...")
        return self._parallel

    def _state_for(self, batch: tuple, weights: Any) -> Any:
        """The carried state to pass with ``batch`` (global arrays): checked against the
        state this batch makes, and with a mesh placed along the batch; also the state's
        partition specs (None without a mesh)."""
        key = (tuple((a.shape, a.dtype) for a in batch), weights is None)
        if key not in self._state_info:
            args = (self._unreduced_loss, self.params, self.rest, batch, weights)
            shapes = _state_shapes(*args, int(batch[0].shape[0]))
            specs = None if self._parallel is None else self._parallel.state_specs(*args)
            self._state_info[key] = (shapes, specs)
        shapes, specs = self._state_info[key]
        if self.state is None:
            return None, specs
        got = jax.tree.map(np.shape, self.state)
        want = jax.tree.map(lambda s: tuple(s.shape), shapes)
        if got != want:
            raise ValueError(
                f"the carried state has shapes {got}, and this batch of {batch[0].shape[0]} "
                f"rows needs {want}: the state is per row, so a batch of another size (a new "
                "stream) starts from a fresh state: call `step.reset_state()` first"
            )
        state = self.state if self._parallel is None else self._parallel.place(self.state, specs)
        return state, specs

    def __call__(self, *batch: Any) -> Array:
        weights = None
        if self._parallel is not None:
            batch, weights = self.shard_batch(*batch)
        kw: dict[str, Any] = {} if weights is None else {"weights": weights}
        if self.carry_state:
            state, specs = self._state_for(tuple(map(_abstract, batch)), weights)
            kw.update(state=state, state_specs=specs)
        out = self.step_fn(self.params, self.rest, self.opt_state, *batch, **kw)
        self.params, self.rest, self.opt_state, loss = out[:4]
        if self.carry_state:
            self.state = out[4]
        if self.sync_model:
            self.sync()
        return loss

    def fit(
        self,
        batches: Batches,
        *,
        epochs: int = 1,
        callback: Callable[[int, int, float], Any] | None = None,
        eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        save_every: int | None = None,
        keep: int = 3,
        config: Mapping[str, Any] | None = None,
    ) -> History:
        """Run the step over ``batches`` for ``epochs`` epochs; see :func:`fit`.

        Continues from the current optimizer state (call :meth:`reset` first for a fresh
        start) and keeps the model's train/eval mode. With ``checkpoint_dir``, first
        resumes from the newest valid checkpoint there, if any (see :func:`fit`).
        """
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        history, first_epoch, done = History(), 0, 0
        if checkpoint_dir is not None:
            state = train_state.restore(self, checkpoint_dir)
            if state is not None:
                history = restore_history(state)
                history.resumed_step = state.step
                history.resumed_epoch = state.epoch
                first_epoch, done = state.epoch, state.batch
        saved = (len(history), first_epoch, done)

        def save(epoch: int, batch: int) -> None:
            nonlocal saved
            if checkpoint_dir is not None and saved != (len(history), epoch, batch):
                train_state.save(
                    self, checkpoint_dir, step_count=len(history), epoch=epoch, batch=batch,
                    history=history, config=config, keep=keep,
                )  # fmt: skip
                saved = (len(history), epoch, batch)

        for epoch in range(first_epoch, epochs):
            skip = done if epoch == first_epoch else 0  # batches done before a resume
            start = len(history) - skip
            epoch_batches = batches(epoch) if callable(batches) else batches
            if skip == 0:  # a carried state starts afresh with every epoch (a resumed
                self.reset_state()  # epoch continues from the checkpoint's)
            for i, batch in enumerate(itertools.islice(epoch_batches, skip, None), skip):
                compiles, t0 = self.compiles, time.perf_counter()
                loss = float(self(*batch))  # float() waits for the result
                history.step_seconds.append(time.perf_counter() - t0)
                if self.compiles != compiles:
                    history.compiled.append(len(history))
                history.append(loss)
                if save_every is not None and len(history) % save_every == 0:
                    save(epoch, i + 1)
                if callback is not None:
                    callback(epoch, len(history), loss)
            self.sync()
            record = history.end_epoch(start, eval_fn(self.model) if eval_fn else None)
            if save_every is None:
                save(epoch + 1, 0)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        save(max(epochs, first_epoch), 0)
        return history


def make_train_step(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss_fn: Callable[..., Array] = classification_loss,
    *,
    sync_model: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    carry_state: bool = False,
) -> TrainStep:
    """A :class:`TrainStep`: ``loss = step(*batch)`` with ``loss_fn(model, *batch)``.

    The default loss is :func:`classification_loss` (batch = ``(x, lengths, y)``). Put the
    model in the mode you want (``model.train()`` / ``model.eval()``) before creating it.
    See :class:`TrainStep` for ``sync_model`` and for ``mesh`` (data-parallel training:
    batches sharded over the mesh axis ``"batch"``, state replicated, padding of uneven
    batches with zero-weight rows) and ``carry_state`` (truncated backpropagation through
    time: ``loss_fn(model, *batch, state=s) -> (loss, new_state)``).
    """
    return TrainStep(model, tx, loss_fn, sync_model=sync_model, mesh=mesh, carry_state=carry_state)


def fit(
    model: nnx.Module,
    batches: Batches,
    tx: optax.GradientTransformation,
    *,
    epochs: int = 1,
    clip_norm: float | None = None,
    loss_fn: Callable[..., Array] = classification_loss,
    callback: Callable[[int, int, float], Any] | None = None,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every: int | None = None,
    keep: int = 3,
    config: Mapping[str, Any] | None = None,
    carry_state: bool = False,
) -> History:
    """Train ``model`` in place; return the loss of every step as a :class:`History`.

    Args:
      model: a Flax NNX module; put in training mode, trained in place.
      batches: a re-iterable of batch tuples (e.g. a list) or a function ``epoch ->
        iterable`` (e.g. ``lambda e: jaxseq.data.batches(..., seed=e)``); each batch is
        passed as ``loss_fn(model, *batch)``.
      tx: the optax optimizer; a learning-rate schedule goes into it, e.g.
        ``optax.adam(optax.cosine_decay_schedule(lr, total_steps))``.
      epochs: passes over ``batches``.
      clip_norm: prepends :func:`clip_by_global_norm_torch`, as ``torchseq.train.fit``
        clips with ``clip_grad_norm_``.
      loss_fn: :func:`classification_loss` (the default), :func:`regression_loss`,
        :func:`language_model_loss` or your own ``loss_fn(model, *batch) -> scalar``.
      callback: ``callback(epoch, step, loss)`` after every step (``step`` counts from 1).
      eval_fn: ``eval_fn(model) -> {name: value}`` after every epoch, e.g.
        ``lambda m: evaluate(m, test_batches)``; recorded in ``history.epochs``.
      on_epoch_end: ``on_epoch_end(epoch, record)`` after every epoch (and ``eval_fn``),
        with ``record = {"train_loss": mean step loss, **eval_fn(model)}``.
      mesh: data-parallel training over a :class:`jax.sharding.Mesh` with an axis
        ``"batch"`` (see :class:`TrainStep`): each process's ``batches`` yield its own rows
        of every global batch (with one process, the whole batch); ``None``: one device.
      checkpoint_dir: a folder of training checkpoints (:mod:`jaxseq.train_state`,
        format :mod:`seqfile.training_state`): the run first resumes from the newest valid
        one there (parameters, optimizer state, dropout RNG, step, epoch and position in
        it, the history so far; a corrupted newest file is skipped with a warning; one of
        another model or optimizer raises ``ValueError``), then saves as it trains. The
        resumed run equals an uninterrupted one bit for bit, provided ``batches`` gives
        the same batches for the same epoch (a list, or a function seeded by the epoch).
        ``history.resumed_step`` tells where it resumed. With a mesh over several
        processes, process 0 writes and every process reads.
      save_every: save every that many steps (and at the end); None: at the end of every
        epoch.
      keep: how many checkpoints to keep (the newest).
      config: JSON-serialisable settings stored in every checkpoint (``meta["config"]``).
      carry_state: truncated backpropagation through time (see :class:`TrainStep`): the
        ``loss_fn(model, *batch, state=s)`` returns ``(loss, new_state)``, the state is
        carried from batch to batch (e.g. :func:`language_model_stream_loss` over
        :func:`jaxseq.data.stream_batches`), afresh every epoch, and checkpointed.

    The parameters are written back into the model at the end of every epoch (not every
    step: see :class:`TrainStep`), before ``eval_fn`` runs. One compiled step serves the
    whole run; to reuse it for another model of the same architecture, see
    :meth:`TrainStep.reset` and :meth:`TrainStep.fit`.

    >>> import numpy as np
    >>> from jaxseq.models import SequenceClassifier
    >>> model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
    >>> x, y = np.ones((4, 5, 2), np.float32), np.array([0, 1, 2, 0], np.int32)
    >>> batch = (x, np.array([5, 1, 3, 2], np.int32), y)
    >>> h = fit(model, [batch], optax.adam(optax.cosine_decay_schedule(1e-2, 3)), epochs=3,
    ...         eval_fn=lambda m: evaluate(m, [batch]))
    >>> len(h), h[2] < h[0], sorted(h.epochs[-1]), h.compiles
    (3, True, ['accuracy', 'loss', 'train_loss'], 1)
    """
    if clip_norm is not None:
        tx = optax.chain(clip_by_global_norm_torch(clip_norm), tx)
    model.train()
    step = make_train_step(model, tx, loss_fn, sync_model=False, mesh=mesh, carry_state=carry_state)
    return step.fit(
        batches,
        epochs=epochs,
        callback=callback,
        eval_fn=eval_fn,
        on_epoch_end=on_epoch_end,
        checkpoint_dir=checkpoint_dir,
        save_every=save_every,
        keep=keep,
        config=config,
    )


# --------------------------------------------------------------------------- processes

COORDINATOR_ENV = "JAXSEQ_COORDINATOR"
NUM_PROCESSES_ENV = "JAXSEQ_NUM_PROCESSES"
PROCESS_ID_ENV = "JAXSEQ_PROCESS_ID"


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """Join JAX's multi-process runtime (:func:`jax.distributed.initialize`); return
    ``(jax.process_index(), jax.process_count())``.

    Each argument left as None is read from the environment that ``python -m
    jaxseq.launch`` sets (``JAXSEQ_COORDINATOR`` = ``"host:port"``,
    ``JAXSEQ_NUM_PROCESSES``, ``JAXSEQ_PROCESS_ID``); what is still None is left to JAX,
    whose cluster auto-detection (SLURM, Open MPI, ...) fills it in. Call it first thing,
    before any other JAX use. Already initialized: returns at once. On CPU the collectives
    are gloo's (``jax_cpu_collectives_implementation``). Then build a mesh over
    ``jax.devices()`` (all processes' devices) and train with ``mesh=`` (see
    :class:`TrainStep`), each process feeding its own rows of every batch.

    >>> import os
    >>> os.environ.get("JAXSEQ_NUM_PROCESSES") is None  # not launched: nothing to join
    True
    """
    env = os.environ
    if coordinator is None:
        coordinator = env.get(COORDINATOR_ENV) or None
    if num_processes is None and env.get(NUM_PROCESSES_ENV):
        num_processes = int(env[NUM_PROCESSES_ENV])
    if process_id is None and env.get(PROCESS_ID_ENV):
        process_id = int(env[PROCESS_ID_ENV])
    if not jax.distributed.is_initialized():
        if getattr(jax.config, "jax_cpu_collectives_implementation", None) in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    return jax.process_index(), jax.process_count()


# --------------------------------------------------------------------------- evaluation


def _is_training(model: nnx.Module) -> bool:
    """Whether any submodule is in training mode (``deterministic`` False)."""
    return any(
        getattr(node, "deterministic", None) is False
        for _, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module)
    )


@contextlib.contextmanager
def _eval_mode(model: nnx.Module) -> Iterator[None]:
    """Eval mode inside the block; training mode restored afterwards if it was on."""
    was_training = _is_training(model)
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


# Compiled once per graph (architecture and mode), whatever the model instance: the graph
# is a static argument, the state a traced one.
@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef: Any, state: Any, *inputs: Any) -> Any:
    return nnx.merge(graphdef, state)(*inputs)


@functools.partial(jax.jit, static_argnums=0)
def _classification_sums(graphdef: Any, state: Any, x: Array, lengths: Array, y: Array):
    logits = nnx.merge(graphdef, state)(x, lengths)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses), jnp.sum(jnp.argmax(logits, axis=-1).astype(y.dtype) == y)


@functools.partial(jax.jit, static_argnums=0)
def _squared_error_sum(graphdef: Any, state: Any, *batch: Any) -> Array:
    *inputs, target = batch
    pred = nnx.merge(graphdef, state)(*inputs)
    return jnp.sum((pred.reshape(target.shape) - target) ** 2)


@functools.partial(jax.jit, static_argnums=0)
def _chunk_nll(graphdef: Any, state: Any, x: Array, y: Array, hx: Any):
    logits, hx = nnx.merge(graphdef, state)(x, hx)  # (1, T, V)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)), hx


def predict(model: nnx.Module, *inputs: Any) -> Any:
    """``model(*inputs)`` in eval mode (dropout off), jitted, as NumPy arrays.

    Tuple outputs (e.g. a language model's ``(logits, state)``) come back as tuples of
    arrays. The compiled function is shared by every model of the same architecture; the
    model's training mode is restored afterwards.

    >>> import numpy as np
    >>> from jaxseq.models import SequenceClassifier
    >>> model = SequenceClassifier(2, 3, hidden_size=4, rngs=nnx.Rngs(0))
    >>> predict(model, np.ones((4, 5, 2), np.float32), np.array([5, 1, 3, 2])).shape
    (4, 3)
    """
    with _eval_mode(model):
        graphdef, state = nnx.split(model)
        out = _apply(graphdef, state, *inputs)
    return jax.tree.map(np.asarray, out)


def evaluate(model: nnx.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``(x, lengths, y)`` batches.

    Runs in eval mode (dropout off) and restores training mode afterwards if it was on.
    """
    total, correct, n = 0.0, 0, 0
    with _eval_mode(model):
        graphdef, state = nnx.split(model)
        for x, lengths, y in batches:
            s, c = _classification_sums(graphdef, state, x, lengths, y)
            total += float(s)
            correct += int(c)
            n += int(np.shape(y)[0])
    return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1)}


def evaluate_regression(model: nnx.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean squared error (``"mse"``) and its root (``"rmse"``) over ``(*inputs, target)``
    batches, as :func:`regression_loss` computes it, in eval mode.

    >>> import numpy as np
    >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    >>> x, y = np.array([[1.0], [2.0]], np.float32), np.array([1.0, 3.0], np.float32)
    >>> r = evaluate_regression(model, [(x[:1], y[:1]), (x[1:], y[1:])])
    >>> bool(np.isclose(r["mse"], np.mean((np.asarray(model(x))[:, 0] - y) ** 2)))
    True
    """
    total, n = 0.0, 0
    with _eval_mode(model):
        graphdef, state = nnx.split(model)
        for batch in batches:
            total += float(_squared_error_sum(graphdef, state, *batch))
            n += int(np.size(batch[-1]))
    mse = total / max(n, 1)
    return {"mse": mse, "rmse": math.sqrt(mse)}


def evaluate_language_model(model: nnx.Module, ids: Any, chunk: int = 256) -> dict[str, float]:
    """Next-token negative log-likelihood of one long token sequence ``ids`` (L,) int.

    The sequence is read in consecutive chunks of ``chunk`` tokens (the last partial chunk
    is dropped), the model's state carried from chunk to chunk, so every prediction sees
    all the text before it: ``model(x (1, T), hx) -> (logits (1, T, V), hx)``. Eval mode.

    Returns ``{"nll": summed NLL (nats), "tokens": predictions scored, "loss": nll per
    token, "perplexity": exp(loss)}``.
    """
    ids = np.asarray(ids)
    if chunk < 1 or len(ids) < chunk + 1:
        raise ValueError(f"need chunk >= 1 and more than chunk={chunk} tokens, got {len(ids)}")
    total, tokens, hx = 0.0, 0, None
    with _eval_mode(model):
        graphdef, state = nnx.split(model)
        for s in range(0, len(ids) - chunk, chunk):
            x, y = ids[s : s + chunk].reshape(1, -1), ids[s + 1 : s + chunk + 1].reshape(1, -1)
            nll, hx = _chunk_nll(graphdef, state, x, y, hx)
            total += float(nll)
            tokens += chunk
    return {
        "nll": total,
        "tokens": tokens,
        "loss": total / tokens,
        "perplexity": math.exp(total / tokens),
    }
