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
``LambdaLR(opt, torchseq.train.cosine_decay(n))``  ``optax.cosine_decay_schedule(lr, n)``
===========================================  ============================================

The loop and its helpers have the same names and arguments as in ``torchseq.train``:
:func:`fit` (returns a :class:`History`), the losses :func:`classification_loss`,
:func:`regression_loss`, :func:`language_model_loss`, and :func:`predict`,
:func:`evaluate`, :func:`evaluate_regression`, :func:`evaluate_language_model`.

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
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

Array = jax.Array

__all__ = [
    "cross_entropy",
    "classification_loss",
    "regression_loss",
    "language_model_loss",
    "clip_by_global_norm_torch",
    "History",
    "TrainStep",
    "make_train_step",
    "fit",
    "predict",
    "evaluate",
    "evaluate_regression",
    "evaluate_language_model",
]

Batches = Iterable[tuple] | Callable[[int], Iterable[tuple]]


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean cross-entropy of logits (N, C) against int labels (N,), as ``F.cross_entropy``."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def classification_loss(model: nnx.Module, x: Array, lengths: Array, y: Array) -> Array:
    """The default loss: ``cross_entropy(model(x, lengths), y)``."""
    return cross_entropy(model(x, lengths), y)


def regression_loss(model: nnx.Module, *batch: Any) -> Array:
    """Mean squared error: ``batch = (*inputs, target)``, ``model(*inputs)`` reshaped to the
    target's shape (e.g. (N, 1, 1) -> (N,)): ``mean((model(*inputs) - target) ** 2)``.

    >>> import jax.numpy as jnp
    >>> float(regression_loss(lambda x: 2 * x, jnp.array([[1.0], [2.0]]), jnp.array([1.0, 1.0])))
    5.0
    """
    *inputs, target = batch
    pred = model(*inputs)
    return jnp.mean((pred.reshape(target.shape) - target) ** 2)


def language_model_loss(model: nnx.Module, x: Array, y: Array) -> Array:
    """Mean next-token cross-entropy of a language model ``model(x (N, T)) -> (logits
    (N, T, V), state)`` against targets y (N, T) int, over all N*T positions."""
    logits, _ = model(x)  # (N, T, V)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


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


class History(list[float]):
    """What a training loop measured: the loss of every step (it *is* that ``list`` of
    floats, what :func:`fit` has always returned), plus per-epoch records and timings.

    Attributes:
      epochs: one dict per epoch: ``"train_loss"`` (the mean of its step losses) and
        whatever ``eval_fn`` returned after it (e.g. ``"loss"``, ``"accuracy"``).
      step_seconds: wall time of every step, waiting for its loss (evaluation excluded).
      compiled: indices (0-based) of the steps that compiled (always empty in torch).

    >>> h = History([0.5, 0.25]); h.step_seconds = [2.0, 0.5]; h.compiled = [0]
    >>> h.train_seconds, h.compiles, h.steps_per_second
    (2.5, 1, 2.0)
    """

    def __init__(self, losses: Iterable[float] = ()):
        super().__init__(losses)
        self.epochs: list[dict[str, float]] = []
        self.step_seconds: list[float] = []
        self.compiled: list[int] = []

    def end_epoch(self, first_step: int, metrics: Mapping[str, float] | None = None) -> dict:
        """Close the epoch that began at step ``first_step``: append and return its record
        ``{"train_loss": mean step loss, **metrics}``."""
        losses = self[first_step:]
        record = {"train_loss": float(np.mean(losses)) if losses else math.nan}
        if metrics:
            if "train_loss" in metrics:
                raise ValueError("eval_fn must not return a 'train_loss' entry")
            record.update(metrics)
        self.epochs.append(record)
        return record

    @property
    def train_seconds(self) -> float:
        """Total wall time of the steps (compilation included, evaluation excluded)."""
        return float(sum(self.step_seconds))

    @property
    def compiles(self) -> int:
        """How many steps compiled (0 in torch)."""
        return len(self.compiled)

    @property
    def steps_per_second(self) -> float:
        """Steps per second over the steps that did not compile (NaN if there are none)."""
        skip = set(self.compiled)
        times = [t for i, t in enumerate(self.step_seconds) if i not in skip]
        total = sum(times)
        return len(times) / total if total > 0 else float("nan")


def _split_params(model: nnx.Module) -> tuple[Any, Any, Any]:
    """``(graphdef, params, rest)``: the ``nnx.Param`` values apart from the rest."""
    graphdef, params, rest = cast(tuple[Any, Any, Any], nnx.split(model, nnx.Param, ...))
    return graphdef, params, rest


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
        self.graphdef: Any
        self.params: Any  # the nnx.Param values
        self.rest: Any  # the rest of the state (RNG counters, ...)
        self.opt_state: Any
        self.reset()
        graphdef = self._compiled_graphdef = self.graphdef

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

    def reset(self, model: nnx.Module | None = None) -> None:
        """Re-read the model's state (e.g. after loading a checkpoint into it) and
        re-initialise the optimizer state. Compiled code is kept.

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

    def fit(
        self,
        batches: Batches,
        *,
        epochs: int = 1,
        callback: Callable[[int, int, float], Any] | None = None,
        eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
    ) -> History:
        """Run the step over ``batches`` for ``epochs`` epochs; see :func:`fit`.

        Continues from the current optimizer state (call :meth:`reset` first for a fresh
        start) and keeps the model's train/eval mode.
        """
        history = History()
        for epoch in range(epochs):
            start = len(history)
            for batch in batches(epoch) if callable(batches) else batches:
                compiles, t0 = self.compiles, time.perf_counter()
                loss = float(self(*batch))  # float() waits for the result
                history.step_seconds.append(time.perf_counter() - t0)
                if self.compiles != compiles:
                    history.compiled.append(len(history))
                history.append(loss)
                if callback is not None:
                    callback(epoch, len(history), loss)
            self.sync()
            record = history.end_epoch(start, eval_fn(self.model) if eval_fn else None)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        return history


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
    batches: Batches,
    tx: optax.GradientTransformation,
    *,
    epochs: int = 1,
    clip_norm: float | None = None,
    loss_fn: Callable[..., Array] = classification_loss,
    callback: Callable[[int, int, float], Any] | None = None,
    eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
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
    step = make_train_step(model, tx, loss_fn, sync_model=False)
    return step.fit(
        batches, epochs=epochs, callback=callback, eval_fn=eval_fn, on_epoch_end=on_epoch_end
    )


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
