"""A jitted optax train step and loop for jaxseq models, matching ``torchseq.train``.

The step splits the model once into a static graph and its state (``nnx.Param`` values
and the rest: dropout RNG counters, ...); the jitted function merges them, computes the
loss and its gradient with respect to the parameters, and applies the optax update. Only
the *shapes* of a batch enter the compiled program: changing ``lengths`` (a traced
(N,) array) never recompiles, and length bucketing (:mod:`jaxseq.data`) bounds the
number of distinct shapes.

PyTorch equivalence (what ``parity_tests/test_training_parity.py`` checks, step by step):

===========================================  ============================================
``torch.optim``                              optax
===========================================  ============================================
``SGD(lr, momentum=m)`` (dampening 0)        ``optax.sgd(lr, momentum=m)``
``Adam(lr, betas, eps)``                     ``optax.adam(lr, b1, b2, eps)``
``AdamW(lr, betas, eps, weight_decay=w)``    ``optax.adamw(lr, b1, b2, eps, weight_decay=w)``
``clip_grad_norm_(params, c)`` before step   :func:`clip_by_global_norm_torch` ``(c)`` first
``F.cross_entropy`` (mean)                   :func:`cross_entropy`
===========================================  ============================================

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

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

Array = jax.Array

__all__ = [
    "cross_entropy",
    "classification_loss",
    "clip_by_global_norm_torch",
    "TrainStep",
    "make_train_step",
    "fit",
    "evaluate",
]


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean cross-entropy of logits (N, C) against int labels (N,), as ``F.cross_entropy``."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def classification_loss(model: nnx.Module, x: Array, lengths: Array, y: Array) -> Array:
    """The default loss: ``cross_entropy(model(x, lengths), y)``."""
    return cross_entropy(model(x, lengths), y)


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
    """

    def __init__(
        self,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        loss_fn: Callable[..., Array] = classification_loss,
        *,
        sync_model: bool = True,
    ):
        self.model = model
        self.tx = tx
        self.loss_fn = loss_fn
        self.sync_model = sync_model
        self.compiles = 0
        self.reset()
        graphdef = self.graphdef

        def step_fn(params, rest, opt_state, *batch):
            self.compiles += 1  # runs at trace time only

            def loss_of(p, r):
                # Fresh Variables at this trace level, so that dropout may advance its RNG
                # counters here (nnx refuses to mutate Variables of an outer trace).
                r = jax.tree.map(lambda a: a, r)
                m = nnx.merge(graphdef, p, r)
                loss = loss_fn(m, *batch)
                return loss, nnx.split(m, nnx.Param, ...)[2]

            (loss, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(params, rest)
            # optax's Adam computes ``b1 ** count`` with an int32 count, which strict dtype
            # promotion rejects; the optimizer update alone runs under standard promotion.
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, rest, opt_state, loss

        self.step_fn = jax.jit(step_fn)

    def reset(self) -> None:
        """Re-read the model's state (e.g. after loading a checkpoint into it) and
        re-initialise the optimizer state. Compiled code is kept."""
        self.graphdef, self.params, self.rest = nnx.split(self.model, nnx.Param, ...)
        self.opt_state = self.tx.init(self.params)

    def sync(self) -> None:
        """Write the current parameters (and RNG state) back into the model."""
        nnx.update(self.model, self.params, self.rest)

    def __call__(self, *batch: Any) -> Array:
        self.params, self.rest, self.opt_state, loss = self.step_fn(
            self.params, self.rest, self.opt_state, *batch
        )
        if self.sync_model:
            self.sync()
        return loss


def make_train_step(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    loss_fn: Callable[..., Array] = classification_loss,
    *,
    sync_model: bool = True,
) -> TrainStep:
    """A :class:`TrainStep`: ``loss = step(*batch)`` with ``loss_fn(model, *batch)``.

    The default loss is :func:`classification_loss` (batch = ``(x, lengths, y)``). Put the
    model in the mode you want (``model.train()`` / ``model.eval()``) before creating it.
    See :class:`TrainStep` for ``sync_model``.
    """
    return TrainStep(model, tx, loss_fn, sync_model=sync_model)


def fit(
    model: nnx.Module,
    batches: Iterable[tuple] | Callable[[int], Iterable[tuple]],
    tx: optax.GradientTransformation,
    *,
    epochs: int = 1,
    clip_norm: float | None = None,
    loss_fn: Callable[..., Array] = classification_loss,
    callback: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place; return the loss of every step (Python floats).

    ``batches`` is a re-iterable of batch tuples (e.g. a list) or a function
    ``epoch -> iterable`` (e.g. ``lambda e: jaxseq.data.batches(..., seed=e)``).
    ``clip_norm`` prepends :func:`clip_by_global_norm_torch`, as ``torchseq.train.fit``
    clips with ``clip_grad_norm_``. ``callback(epoch, step, loss)`` runs after every step.
    The model is put in training mode; its parameters are written back at the end of
    every epoch (not every step: see :class:`TrainStep`).
    """
    if clip_norm is not None:
        tx = optax.chain(clip_by_global_norm_torch(clip_norm), tx)
    model.train()
    step = make_train_step(model, tx, loss_fn, sync_model=False)
    losses: list[float] = []
    for epoch in range(epochs):
        for batch in batches(epoch) if callable(batches) else batches:
            loss = float(step(*batch))
            losses.append(loss)
            if callback is not None:
                callback(epoch, len(losses), loss)
        step.sync()
    return losses


def evaluate(model: nnx.Module, batches: Iterable[tuple]) -> dict[str, float]:
    """Mean cross-entropy and accuracy of a classifier over ``(x, lengths, y)`` batches.

    Runs in eval mode (dropout off) and restores training mode afterwards if it was on.
    """
    was_training = not getattr(getattr(model, "dropout", None), "deterministic", True)
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def sums(state, x, lengths, y):
        logits = nnx.merge(graphdef, state)(x, lengths)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(losses), jnp.sum(jnp.argmax(logits, axis=-1) == y)

    total, correct, n = 0.0, 0, 0
    for x, lengths, y in batches:
        s, c = sums(state, x, lengths, y)
        total += float(s)
        correct += int(c)
        n += int(np.shape(y)[0])
    if was_training:
        model.train()
    return {"loss": total / max(n, 1), "accuracy": correct / max(n, 1)}
