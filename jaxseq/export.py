"""A trained model as a serialized :class:`jax.export.Exported`: serving without model code.

:func:`export` traces a :mod:`jaxseq.nn` layer or a :mod:`jaxseq.models` model in eval
mode (no dropout) with its parameters captured as constants, and lowers it to StableHLO
with a *symbolic* batch size and, if asked, a symbolic time length: one artifact serves
every ``N`` (and ``T``). :func:`save` writes ``exported.serialize()`` atomically;
:func:`load` reads it back with :func:`jax.export.deserialize`. The process that loads
and calls it needs ``jax`` and ``numpy`` only, not jaxseq, flax or the model's class::

    exp = jax.export.deserialize(bytearray(open(path, "rb").read()))
    logits = exp.call(x, lengths)   # x (N, T, I) of the exported dtype, lengths (N,) int32

Serialization needs the ``flatbuffers`` package (``pip install 'jaxseq[export]'``);
exporting and calling an ``Exported`` in the same process do not.

Shapes (N = batch, T = time, I = input features; the exported function is
``f(x, lengths)``, or ``f(x)`` with ``lengths=False``)::

    x        x_shape with symbols for N (and T), e.g. "b, t, 12" (batch-first models),
             "t, b, 12" (a jaxseq.nn layer with batch_first=False), or ("b", 29, 12)
    lengths  (N,) int32, valid lengths in [0, T]
    returns  whatever the model returns: SequenceClassifier (N, C), a jaxseq.nn.GRU
             (out (T, N, D*H), h_n (L*D, N, H)), ...

>>> import os, tempfile
>>> import numpy as np
>>> from flax import nnx
>>> import jaxseq, jaxseq.export
>>> model = jaxseq.models.SequenceClassifier(3, 4, hidden_size=8, cell="gru", rngs=nnx.Rngs(0))
>>> exp = jaxseq.export.export(model, "b, t, 3")
>>> exp.in_avals
(ShapedArray(float32[b,t,3]), ShapedArray(int32[b]))
>>> with tempfile.TemporaryDirectory() as folder:
...     jaxseq.export.save(exp, os.path.join(folder, "model.jax"))
...     served = jaxseq.export.load(os.path.join(folder, "model.jax"))
>>> x, lengths = np.ones((2, 5, 3), np.float32), np.array([5, 2], np.int32)
>>> model.eval()  # the live model, for comparison (export itself leaves it as it is)
>>> bool(np.allclose(served.call(x, lengths), model(x, lengths), rtol=1e-6, atol=1e-6))
True
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqfile import write_atomic

__all__ = ["export", "save", "load"]

Shape = str | tuple[int | str, ...]


def _symbolic(x_shape: Shape) -> tuple[Any, ...]:
    """``"b, t, 3"`` or ``("b", "t", 3)`` -> a shape of ints and symbolic dimensions
    (one scope, so the symbols of one export can be compared)."""
    if isinstance(x_shape, str):
        spec = x_shape
    elif isinstance(x_shape, tuple) and all(isinstance(d, int | str) for d in x_shape):
        spec = ", ".join(str(d) for d in x_shape)
    else:
        raise TypeError(f"x_shape must be a string or a tuple of ints and strings, got {x_shape!r}")
    return tuple(jax.export.symbolic_shape(spec))


def export(
    model: nnx.Module,
    x_shape: Shape,
    x_dtype: Any = jnp.float32,
    *,
    lengths: bool = True,
    platforms: tuple[str, ...] | None = None,
) -> jax.export.Exported:
    """Export ``model`` in eval mode as a :class:`jax.export.Exported`.

    Args:
      model: a :mod:`jaxseq.nn` layer or a :mod:`jaxseq.models` model (any NNX module
        whose call takes ``x`` and a ``lengths=`` keyword). It is not modified: a copy is
        put in eval mode (dropout off) and its parameters become constants of the program.
      x_shape: the input's shape, symbols for the dimensions that vary, e.g.
        ``"b, t, 12"`` (x (N, T, I) for batch-first models), ``"t, b, 12"`` for a
        :mod:`jaxseq.nn` layer with ``batch_first=False``, or ``("b", 29, 12)``.
      x_dtype: the input's dtype (``jnp.int32`` for token models).
      lengths: export ``f(x, lengths)`` with lengths (N,) int32, N the batch dimension
        of ``x_shape`` (axis 1 for a layer with ``batch_first=False``, else axis 0);
        ``False``: ``f(x)`` (full-length sequences, or models without ``lengths``).
      platforms: the platforms to lower for, e.g. ``("cpu", "cuda")``; default: the
        platform of the default backend.

    Returns:
      The ``Exported``: ``exp.call(x, lengths)`` runs it, ``exp.in_avals`` /
      ``exp.out_avals`` show the (symbolic) shapes, :func:`save` writes it.

    >>> from flax import nnx
    >>> import jaxseq
    >>> gru = jaxseq.nn.GRU(3, 5, num_layers=2, rngs=nnx.Rngs(0))  # time-major
    >>> export(gru, "t, b, 3").out_avals
    (ShapedArray(float32[t,b,5]), ShapedArray(float32[2,b,5]))
    """
    shape = _symbolic(x_shape)
    graphdef, state = nnx.split(model)
    args = [jax.ShapeDtypeStruct(shape, x_dtype)]
    if lengths:
        if len(shape) < 2:
            raise ValueError(f"lengths=True needs a batched input (N, T, ...), got {x_shape!r}")
        batch = shape[1] if getattr(model, "batch_first", True) is False else shape[0]
        args.append(jax.ShapeDtypeStruct((batch,), jnp.int32))

    def serve(x: jax.Array, *rest: jax.Array) -> Any:
        live = nnx.merge(graphdef, state)  # a copy: the caller's model keeps its mode
        live.eval()
        return live(x, lengths=rest[0]) if rest else live(x)

    return jax.export.export(jax.jit(serve), platforms=platforms)(*args)


def _needs_flatbuffers(what: str) -> None:
    try:
        import flatbuffers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"jaxseq.export.{what} needs the flatbuffers package (jax.export's "
            "serialization format): pip install 'jaxseq[export]'"
        ) from e


def save(exported: jax.export.Exported, path: str | os.PathLike[str]) -> None:
    """Write ``exported.serialize()`` to ``path`` atomically (a temporary file, fsync,
    rename: ``path`` is the old file or the new one, never a truncated one).

    >>> import os, tempfile, jax, jax.numpy as jnp
    >>> exp = jax.export.export(jax.jit(jnp.sin))(jax.ShapeDtypeStruct((2,), jnp.float32))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save(exp, os.path.join(folder, "sin.jax"))
    ...     load(os.path.join(folder, "sin.jax")).in_avals
    (ShapedArray(float32[2]),)
    """
    _needs_flatbuffers("save")
    write_atomic(bytes(exported.serialize()), path)


def load(path: str | os.PathLike[str]) -> jax.export.Exported:
    """Read an ``Exported`` written by :func:`save` (or any ``Exported.serialize()``
    bytes); ``load(path).call(x, lengths)`` runs it. Needs no jaxseq: in a process
    without it, ``jax.export.deserialize(bytearray(open(path, "rb").read()))`` is the same.

    >>> import os, tempfile, numpy as np, jax, jax.numpy as jnp
    >>> exp = jax.export.export(jax.jit(jnp.cos))(jax.ShapeDtypeStruct((1,), jnp.float32))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save(exp, os.path.join(folder, "cos.jax"))
    ...     load(os.path.join(folder, "cos.jax")).call(np.zeros(1, np.float32))
    Array([1.], dtype=float32)
    """
    _needs_flatbuffers("load")
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))
