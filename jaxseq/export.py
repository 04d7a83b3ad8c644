"""A trained model as a checked file: a serialized :class:`jax.export.Exported`, served
without model code.

:func:`export` traces a :mod:`jaxseq.nn` layer or a :mod:`jaxseq.models` model in eval
mode (no dropout) with its parameters captured as constants, and lowers it to StableHLO
with a *symbolic* batch size and, if asked, a symbolic time length: one artifact serves
every ``N`` (and ``T``), on every platform it was lowered for (``platforms=("cpu",
"cuda", "tpu")`` from any machine, a CPU-only one included). :func:`save` writes it with
a sha256 of its contents, atomically; :func:`load` verifies the hash and reads it back.
Every malformed, truncated, corrupted or foreign file (a checkpoint, random bytes, an
empty file) raises :class:`ExportFileError`, a ``ValueError`` naming the file and what is
wrong with it.

Shapes (N = batch, T = time, I = input features; the exported function is
``f(x, lengths)``, or ``f(x)`` with ``lengths=False``)::

    x        x_shape in the model's layout, symbols for N (and T):
             "b, t, 12"  x (N, T, I): jaxseq.models, jaxseq.nn layers with batch_first=True
             "t, b, 12"  x (T, N, I): jaxseq.nn layers with batch_first=False (the default)
             ("b", 29, 12), "b, t" (token ids (N, T)), ...
    lengths  (N,) int32, valid lengths in [0, T]; its shape is the batch dimension of x
             (``int32[b]``)
    returns  whatever the model returns: SequenceClassifier (N, C), a jaxseq.nn.GRU
             (out (T, N, D*H), h_n (L*D, N, H)), ...

File format, version 2 (the ``version`` field of the header)::

    b"\\x89jaxseq\\n"                       magic, 8 bytes
    sha256 hex digest + b"\\n"             of everything after this line, 65 bytes
    header + b"\\n"                        one line of JSON (ASCII, sorted keys): "format":
                                          "jaxseq.export", "version": 2, "payload_bytes",
                                          "platforms", "inputs", "outputs", "jax"
    payload                               exported.serialize(), payload_bytes bytes

Version 1 (jaxseq before the header) was the bare ``exported.serialize()`` bytes, without
a hash; :func:`load` refuses it, with a message saying how to re-export it or read it
unchecked. A process that serves the file needs ``jax`` and the standard library only,
not jaxseq, flax or the model's class::

    import hashlib, json, jax
    with open(path, "rb") as f:
        magic, digest, rest = f.read().split(b"\\n", 2)
    if magic != b"\\x89jaxseq" or hashlib.sha256(rest).hexdigest() != digest.decode():
        raise ValueError(f"{path} is corrupted or not a jaxseq export file")
    header, payload = rest.split(b"\\n", 1)   # json.loads(header)["inputs"]: the signature
    exported = jax.export.deserialize(bytearray(payload))
    logits = exported.call(x, lengths)  # x (N, T, I) of the exported dtype, lengths (N,) int32

Serialization needs the ``flatbuffers`` package (``pip install 'jaxseq[export]'``);
exporting and calling an ``Exported`` in the same process do not.

>>> import os, tempfile
>>> import numpy as np
>>> from flax import nnx
>>> import jaxseq, jaxseq.export
>>> model = jaxseq.models.SequenceClassifier(3, 4, hidden_size=8, cell="gru", rngs=nnx.Rngs(0))
>>> exp = jaxseq.export.export(model, "b, t, 3", platforms=("cpu", "cuda", "tpu"))
>>> exp.in_avals, exp.platforms
((ShapedArray(float32[b,t,3]), ShapedArray(int32[b])), ('cpu', 'cuda', 'tpu'))
>>> with tempfile.TemporaryDirectory() as folder:
...     jaxseq.export.save(exp, os.path.join(folder, "model.jax"))
...     served = jaxseq.export.load(os.path.join(folder, "model.jax"))
>>> x, lengths = np.ones((2, 5, 3), np.float32), np.array([5, 2], np.int32)
>>> model.eval()  # the live model, for comparison (export itself leaves it as it is)
>>> bool(np.allclose(served.call(x, lengths), model(x, lengths), rtol=1e-6, atol=1e-6))
True
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxseq.recurrences import get
from jaxseq.stepping import prepare_step, step
from jaxseq.validation import compute_dtype
from seqfile import write_atomic

__all__ = [
    "export",
    "export_step",
    "save",
    "load",
    "ExportFileError",
    "PLATFORMS",
    "FORMAT_VERSION",
]

Shape = str | tuple[int | str, ...]

#: The platforms :func:`export` lowers for (JAX's built-in ones); any subset, in any
#: order, from any machine: a CPU-only process lowers for ``"cuda"`` and ``"tpu"`` too.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

#: The version :func:`save` writes and :func:`load` reads (1: the bare serialization).
FORMAT_VERSION = 2

MAGIC = b"\x89jaxseq\n"
_FORMAT = "jaxseq.export"
_HEX = re.compile(rb"[0-9a-f]{64}")

# Symbol names that say which axis they are (lower-cased); others are not interpreted.
_BATCH_NAMES = frozenset({"b", "n", "batch", "batch_size", "bs", "nb"})
_TIME_NAMES = frozenset({"t", "time", "seq", "seq_len", "seqlen", "len", "length", "steps"})


class ExportFileError(ValueError):
    """A file :func:`load` cannot serve: empty, truncated, corrupted (its sha256 does not
    match), of another format (a checkpoint, random bytes) or of an unknown version. The
    message starts with the file's path."""


# --------------------------------------------------------------------------- export


def _symbolic(x_shape: Shape) -> tuple[Any, ...]:
    """``"b, t, 3"`` or ``("b", "t", 3)`` -> a shape of ints and symbolic dimensions
    (one scope, so the symbols of one export can be compared)."""
    if isinstance(x_shape, str):
        spec = x_shape
    elif isinstance(x_shape, tuple) and all(
        isinstance(d, int | str) and not isinstance(d, bool) for d in x_shape
    ):
        spec = ", ".join(str(d) for d in x_shape)
    else:
        raise TypeError(f"x_shape must be a string or a tuple of ints and strings, got {x_shape!r}")
    try:
        shape = tuple(jax.export.symbolic_shape(spec))
    except ValueError as e:
        raise ValueError(f"x_shape {x_shape!r} is not a shape specification: {e}") from e
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ValueError(f"x_shape {x_shape!r} has a negative dimension")
    return shape


def _checked_x_dtype(x_dtype: Any) -> np.dtype:
    """``x_dtype`` as a NumPy dtype that JAX computes in under the current configuration."""
    try:
        dtype = np.dtype(x_dtype)
    except TypeError as e:
        raise TypeError(f"x_dtype {x_dtype!r} is not a dtype") from e
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"x_dtype {dtype.name} needs jax_enable_x64 (jax.config.update("
            "'jax_enable_x64', True)); without it JAX computes in 32 bits"
        )
    return dtype


def _checked_platforms(platforms: Sequence[str] | None) -> tuple[str, ...]:
    """``platforms`` as a tuple of distinct names of :data:`PLATFORMS`; None: the default
    backend's platform."""
    if platforms is None:
        return (jax.export.default_export_platform(),)
    if isinstance(platforms, str) or not all(isinstance(p, str) for p in platforms):
        raise TypeError(
            f"platforms must be a tuple of platform names such as ('cpu', 'cuda', 'tpu'), "
            f"got {platforms!r}"
        )
    names = tuple(platforms)
    unknown = [p for p in names if p not in PLATFORMS]
    if not names or unknown or len(set(names)) != len(names):
        what = f"unknown {unknown}" if unknown else "empty" if not names else "repeated names"
        hint = " ('gpu' is 'cuda' or 'rocm')" if "gpu" in unknown else ""
        raise ValueError(
            f"platforms {platforms!r}: {what}; give distinct names among {PLATFORMS}{hint}"
        )
    return names


def _impl(node: Any) -> str | None:
    """A recurrent layer's ``impl`` name (held by the layer or by its ``options``)."""
    impl = getattr(node, "impl", None)
    if impl is None:
        impl = getattr(getattr(node, "options", None), "impl", None)
    return impl if isinstance(impl, str) else None


def _layers(model: nnx.Module) -> list[tuple[Any, str]]:
    """The recurrent layers in ``model`` (itself included) with their ``impl``: the nodes
    with a ``kind`` and an ``impl``."""
    found = []
    for _, node in nnx.iter_graph(model):
        impl = _impl(node)
        if isinstance(getattr(node, "kind", None), str) and impl is not None:
            found.append((node, impl))
    return found


def _is_linear(kind: str) -> bool:
    try:
        return get(kind).is_linear
    except (KeyError, ValueError):
        return False


def _input_size(model: nnx.Module) -> int | None:
    """The feature size ``I`` of ``x`` (N, T, I), or None where not known (token ids)."""
    if getattr(model, "embedding", None) is not None:
        return None
    for m in (model, getattr(model, "rnn", None)):
        size = getattr(m, "input_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
    return None


def _takes_lengths(model: nnx.Module) -> bool:
    try:
        params = inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return True
    return "lengths" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_layout(
    model: nnx.Module, x_shape: Shape, shape: tuple[Any, ...], lengths: bool
) -> tuple[int | None, int]:
    """Check ``shape`` against ``model``'s layout; return its batch axis (None: unbatched)
    and its time axis."""
    name = type(model).__name__
    batch_first = getattr(model, "batch_first", None)
    size = _input_size(model)
    feat = "I" if size is None else str(size)
    if isinstance(batch_first, bool):  # a jaxseq.nn layer: (N, T, I) / (T, N, I) / (T, I)
        where = f"{name}(batch_first={batch_first})"
        layout = "(N, T, I)" if batch_first else "(T, N, I)"
        example = f"b, t, {feat}" if batch_first else f"t, b, {feat}"
        if len(shape) not in (2, 3):
            raise ValueError(
                f"x_shape {x_shape!r} has {len(shape)} axes; {where} takes x as {layout}, "
                f"e.g. {example!r}, or unbatched (T, I)"
            )
        batched, features = len(shape) == 3, True
        batch, time = ((0, 1) if batch_first else (1, 0)) if batched else (None, 0)
    else:  # a jaxseq.models model: batch-first, (N, T, I) or token ids (N, T)
        where, layout, example = name, "(N, T, ...)", f"b, t, {feat}"
        if len(shape) < 2:
            raise ValueError(
                f"x_shape {x_shape!r} has {len(shape)} axes; {name} takes x as (N, T, I), "
                f"e.g. {example!r}, or token ids (N, T)"
            )
        batch, time, features = 0, 1, len(shape) == 3
    if size is not None and features and not (isinstance(shape[-1], int) and shape[-1] == size):
        raise ValueError(
            f"x_shape {x_shape!r} has {shape[-1]} input features; {where} takes {size}, "
            f"e.g. {example!r}"
        )
    if batch is None:
        if lengths:
            raise ValueError(
                f"lengths=True needs a batched input; x_shape {x_shape!r} is unbatched "
                f"(T, I) for {where}: give {layout}, e.g. {example!r}, or lengths=False"
            )
        return None, time
    b, t = shape[batch], shape[time]
    why = None
    if not isinstance(b, int) and str(b) == str(t):
        why = f"uses {str(b)!r} for both the batch and the time axis"
    elif str(b).lower() in _TIME_NAMES:
        why = f"names the batch axis {str(b)!r}, a time dimension"
    elif str(t).lower() in _BATCH_NAMES:
        why = f"names the time axis {str(t)!r}, a batch dimension"
    if why:
        raise ValueError(
            f"x_shape {x_shape!r} {why}; {where} takes x as {layout}, e.g. {example!r}"
        )
    return batch, time


def _check_impls(
    model: nnx.Module, x_shape: Shape, time_dim: Any, platforms: tuple[str, ...]
) -> None:
    """Refuse, before tracing, layer implementations that cannot lower as asked."""
    symbolic_time = not isinstance(time_dim, int)
    max_len = getattr(model, "max_len", None)
    if symbolic_time and isinstance(max_len, int):
        raise ValueError(
            f"x_shape {x_shape!r} has a symbolic time length {str(time_dim)!r}, but "
            f"{type(model).__name__} compares T with its max_len={max_len} in Python: "
            f"export it with a fixed T, e.g. ('b', {max_len}, ...)"
        )
    on_cpu = jax.default_backend() == "cpu"
    for layer, impl in _layers(model):
        kind = type(layer).__name__
        if impl == "cudnn":
            if platforms != ("cuda",):
                raise ValueError(
                    f"platforms {platforms!r}: {kind}(impl='cudnn') lowers for 'cuda' only "
                    "(a cuDNN kernel); export it with platforms=('cuda',), or build the "
                    "model with impl='fused' to serve on every platform"
                )
            if jax.default_backend() != "gpu":
                raise ValueError(
                    f"{kind}(impl='cudnn') exports only in a process whose default backend "
                    f"is a CUDA GPU (this one's is {jax.default_backend()!r}); build the "
                    "model with impl='fused' to export it here"
                )
        parallel = impl in ("fused_parallel", "fused_chunked") or (
            impl == "fused" and not on_cpu and _is_linear(layer.kind)
        )
        if symbolic_time and parallel:
            raise ValueError(
                f"x_shape {x_shape!r} has a symbolic time length {str(time_dim)!r}, but "
                f"{kind}(impl={impl!r}) splits the time axis by its length (a parallel "
                "scan); export it with a fixed T, or build the model with "
                "impl='fused_scan'"
            )


def export(
    model: nnx.Module,
    x_shape: Shape,
    x_dtype: Any = jnp.float32,
    *,
    lengths: bool = True,
    platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """Export ``model`` in eval mode as a :class:`jax.export.Exported`.

    Every argument is checked before tracing; a ``ValueError`` / ``TypeError`` names the
    argument at fault.

    Args:
      model: a :mod:`jaxseq.nn` layer or a :mod:`jaxseq.models` model (any NNX module
        whose call takes ``x`` and a ``lengths=`` keyword). It is not modified: a copy is
        put in eval mode (dropout off) and its parameters become constants of the program.
      x_shape: the input's shape in the model's layout, symbols for the dimensions that
        vary: ``"b, t, 12"`` (x (N, T, I)) for :mod:`jaxseq.models` and layers with
        ``batch_first=True``, ``"t, b, 12"`` (x (T, N, I)) for a :mod:`jaxseq.nn` layer
        with ``batch_first=False``, ``("b", 29, 12)`` for a fixed T, ``"b, t"`` for
        token ids. Checked against the layout: the feature axis must be the model's
        input size, and a symbol named like the other axis (``t``/``time``/``seq`` on the
        batch axis, ``b``/``n``/``batch`` on the time axis) is refused, as is one symbol
        for both.
      x_dtype: the input's dtype (``jnp.int32`` for token models; float64 needs
        ``jax_enable_x64``).
      lengths: export ``f(x, lengths)`` with lengths (N,) int32 (its shape is the batch
        dimension of ``x_shape``, wherever the layout puts it); ``False``: ``f(x)``
        (full-length sequences, or models without ``lengths``).
      platforms: the platforms to lower for, a tuple of distinct names among
        :data:`PLATFORMS`, e.g. ``("cpu", "cuda", "tpu")``: lowering needs no device of
        that kind, so a CPU-only process exports for accelerators. Default: the platform
        of the default backend. ``impl="cudnn"`` lowers for ``("cuda",)`` only, from a
        process on a CUDA GPU. The implementation choices that ``impl="fused"`` makes
        per backend are made for the exporting process's backend, on every platform.

    Returns:
      The ``Exported``: ``exp.call(x, lengths)`` runs it, ``exp.in_avals`` /
      ``exp.out_avals`` show the (symbolic) shapes, ``exp.platforms`` the platforms,
      :func:`save` writes it.

    >>> from flax import nnx
    >>> import jaxseq
    >>> gru = jaxseq.nn.GRU(3, 5, num_layers=2, rngs=nnx.Rngs(0))  # time-major
    >>> exp = export(gru, "t, b, 3")
    >>> exp.in_avals, exp.out_avals
    ((ShapedArray(float32[t,b,3]), ShapedArray(int32[b])), (ShapedArray(float32[t,b,5]), ShapedArray(float32[2,b,5])))
    >>> export(gru, "b, t, 3")
    Traceback (most recent call last):
    ValueError: x_shape 'b, t, 3' names the batch axis 't', a time dimension; GRU(batch_first=False) takes x as (T, N, I), e.g. 't, b, 3'
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(lengths, bool):
        raise TypeError(f"lengths must be True or False, got {lengths!r}")
    dtype = _checked_x_dtype(x_dtype)
    shape = _symbolic(x_shape)
    names = _checked_platforms(platforms)
    if lengths and not _takes_lengths(model):
        raise ValueError(
            f"lengths=True: {type(model).__name__}'s call takes no lengths; export it "
            "with lengths=False"
        )
    batch, time = _check_layout(model, x_shape, shape, lengths)
    _check_impls(model, x_shape, shape[time], names)

    graphdef, state = nnx.split(model)
    args = [jax.ShapeDtypeStruct(shape, dtype)]
    if lengths:
        assert batch is not None  # _check_layout refuses lengths=True without a batch axis
        args.append(jax.ShapeDtypeStruct((shape[batch],), jnp.int32))

    def serve_with_lengths(x: jax.Array, lengths: jax.Array) -> Any:
        live = nnx.merge(graphdef, state)  # a copy: the caller's model keeps its mode
        live.eval()
        return live(x, lengths=lengths)

    def serve_full_length(x: jax.Array) -> Any:
        live = nnx.merge(graphdef, state)
        live.eval()
        return live(x)

    # The arguments are named x and lengths in the module; it is named after the model.
    serve = serve_with_lengths if lengths else serve_full_length
    serve.__name__ = serve.__qualname__ = type(model).__name__
    return jax.export.export(jax.jit(serve), platforms=names)(*args)


def export_step(
    layer: nnx.Module,
    batch: str | int = "b",
    x_dtype: Any = jnp.float32,
    *,
    platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """Export one time step of a uni-directional :mod:`jaxseq.nn` layer, the state as
    input and output: ``f(x_t, state) -> (y_t, new_state)`` (:meth:`jaxseq.nn.RNNBase.step`),
    so a served policy or a streaming model keeps its state between calls.

    Args:
      layer: a uni-directional :mod:`jaxseq.nn` layer (``jaxseq.nn.GRU``, ...), exported
        in eval mode, its weights laid out for the step (:func:`jaxseq.prepare_step`) as
        constants of the program.
      batch: the batch size N: a symbol (``"b"``: one artifact serves every N) or an int.
      x_dtype: x_t's dtype (float64 needs ``jax_enable_x64``).
      platforms: as :func:`export`.

    Returns:
      The ``Exported``, of ``x_t`` (N, I) and ``state`` (L, N, H_out), or ``(h, c)`` with
      c (L, N, H) for kinds with a cell state, the state in the carry dtype (the
      compute dtype unless mixed precision); it returns ``(y_t, new_state)``. Start a
      stream from zeros.

    >>> from flax import nnx
    >>> import numpy as np, jaxseq
    >>> lstm = jaxseq.nn.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
    >>> exp = export_step(lstm)
    >>> exp.in_avals
    (ShapedArray(float32[b,3]), ShapedArray(float32[2,b,5]), ShapedArray(float32[2,b,5]))
    >>> state = (np.zeros((2, 4, 5), np.float32),) * 2
    >>> y, state = exp.call(np.ones((4, 3), np.float32), state)
    >>> y.shape, state[1].shape
    ((4, 5), (2, 4, 5))
    """
    if not isinstance(layer, nnx.Module) or not callable(getattr(layer, "step", None)):
        raise TypeError(
            f"layer must be a jaxseq.nn layer (with a step method), got {type(layer).__name__}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int | str):
        raise TypeError(f"batch must be a symbol such as 'b' or an int, got {batch!r}")
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    dtype = _checked_x_dtype(x_dtype)
    names = _checked_platforms(platforms)
    (n,) = _symbolic((batch,))
    live: Any = layer  # a jaxseq.nn layer (checked above)
    options = getattr(live, "options", None)
    if getattr(options, "zoneout", 0) > 0:
        raise ValueError(f"{type(layer).__name__}: zoneout acts in the full call only, not in step")
    cdt = compute_dtype(dtype, live.param_dtype, live.dtype)
    weights = prepare_step(
        live.kind,
        live.params_dict(),
        nonlinearity=live.nonlinearity,
        dtype=cdt,
        carry_dtype=getattr(options, "carry_dtype", None),
    )
    rec = weights.rec
    sizes = rec.state_sizes(weights.hidden_size, weights.output_size)
    state = rec.carry(
        tuple(jax.ShapeDtypeStruct((weights.num_layers, n, s), weights.carry_dtype) for s in sizes)
    )

    def serve_step(x_t: jax.Array, state: Any) -> Any:
        return step(weights, x_t, state)

    serve_step.__name__ = serve_step.__qualname__ = f"{type(layer).__name__}_step"
    x_spec = jax.ShapeDtypeStruct((n, weights.input_size), dtype)
    return jax.export.export(jax.jit(serve_step), platforms=names)(x_spec, state)


# --------------------------------------------------------------------------- the file


def _needs_flatbuffers(what: str) -> None:
    try:
        import flatbuffers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"jaxseq.export.{what} needs the flatbuffers package (jax.export's "
            "serialization format): pip install 'jaxseq[export]'"
        ) from e


def _encode(exported: jax.export.Exported) -> bytes:
    """The file's bytes (see the module docstring)."""
    payload = bytes(exported.serialize())
    header = {
        "format": _FORMAT,
        "version": FORMAT_VERSION,
        "payload_bytes": len(payload),
        "platforms": list(exported.platforms),
        "inputs": [str(a) for a in exported.in_avals],
        "outputs": [str(a) for a in exported.out_avals],
        "jax": jax.__version__,
    }
    rest = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    rest += b"\n" + payload
    return MAGIC + hashlib.sha256(rest).hexdigest().encode("ascii") + b"\n" + rest


def save(exported: jax.export.Exported, path: str | os.PathLike[str]) -> None:
    """Write ``exported`` to ``path`` with a sha256 of its contents (format version 2,
    see the module docstring), atomically: a temporary file, fsync, rename, so ``path``
    is the old file or the new one, never a truncated one.

    >>> import os, tempfile, jax, jax.numpy as jnp
    >>> exp = jax.export.export(jax.jit(jnp.sin))(jax.ShapeDtypeStruct((2,), jnp.float32))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save(exp, os.path.join(folder, "sin.jax"))
    ...     load(os.path.join(folder, "sin.jax")).in_avals
    (ShapedArray(float32[2]),)
    """
    if not isinstance(exported, jax.export.Exported):
        raise TypeError(
            f"exported must be a jax.export.Exported (from jaxseq.export.export), "
            f"got {type(exported).__name__}"
        )
    _needs_flatbuffers("save")
    write_atomic(_encode(exported), path)


def _foreign(blob: bytes) -> str:
    """What a file without the magic looks like, for the message."""
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else 0
    if len(blob) >= 10 and blob[8:9] == b"{" and 8 + n <= len(blob):
        try:
            json.loads(blob[8 : 8 + n].decode("utf-8"))
            return "it is a safetensors file (a checkpoint?), not an exported model"
        except (UnicodeDecodeError, ValueError):
            pass
    return (
        f"it does not start with the export file's magic {MAGIC!r}. Files saved by "
        f"jaxseq before export format version {FORMAT_VERSION} are the bare "
        "jax.export serialization, without a hash, and are refused: export and save "
        "the model again (or, trusting the file, read it unchecked with "
        "jax.export.deserialize)"
    )


def _parse(name: str, blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Check ``blob`` (the contents of file ``name``); return its header and payload."""
    if not blob:
        raise ExportFileError(f"{name} is empty, not a jaxseq export file")
    if not blob.startswith(MAGIC):
        if MAGIC.startswith(blob):
            raise ExportFileError(f"{name} is truncated: it ends inside its magic bytes")
        raise ExportFileError(f"{name} is not a jaxseq export file: {_foreign(blob)}")
    parts = blob[len(MAGIC) :].split(b"\n", 2)
    if len(parts) < 3:
        raise ExportFileError(f"{name} is truncated: it ends inside its header ({len(blob)} bytes)")
    digest, rest = parts[0], parts[1] + b"\n" + parts[2]
    header: Any = None
    try:
        header = json.loads(parts[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        pass
    size = header.get("payload_bytes") if isinstance(header, dict) else None
    if isinstance(size, int) and size != len(parts[2]):
        how = "truncated" if size > len(parts[2]) else "too long"
        raise ExportFileError(
            f"{name} is {how}: its header records {size} payload bytes, the file holds "
            f"{len(parts[2])}"
        )
    actual = hashlib.sha256(rest).hexdigest()
    if not _HEX.fullmatch(digest) or digest.decode("ascii") != actual:
        recorded = digest.decode("ascii", "replace") if _HEX.fullmatch(digest) else "no sha256"
        raise ExportFileError(
            f"{name} is corrupted: its header records {recorded}, its contents hash to {actual}"
        )
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ExportFileError(f"{name} has a header that is not a jaxseq.export header")
    version = header.get("version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ExportFileError(
            f"{name} has export format version {version!r}; this jaxseq reads version "
            f"{FORMAT_VERSION}" + (" (the file was written by a newer jaxseq)" if newer else "")
        )
    return header, parts[2]


def load(path: str | os.PathLike[str]) -> jax.export.Exported:
    """Read and verify a file written by :func:`save`; ``load(path).call(x, lengths)``
    runs it (``load(path).platforms``: where it runs).

    Raises:
      ExportFileError: (a ``ValueError``) ``path`` is empty, truncated, corrupted (its
        contents do not match its sha256), not an export file (a checkpoint, random
        bytes, a version-1 file: the bare serialization, unchecked), of an unknown format
        version, or a payload this jax cannot deserialize. The message names the file.
      OSError: ``path`` cannot be read (missing, a directory, no permission).

    >>> import os, tempfile, numpy as np, jax, jax.numpy as jnp
    >>> exp = jax.export.export(jax.jit(jnp.cos))(jax.ShapeDtypeStruct((1,), jnp.float32))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save(exp, os.path.join(folder, "cos.jax"))
    ...     load(os.path.join(folder, "cos.jax")).call(np.zeros(1, np.float32))
    Array([1.], dtype=float32)
    """
    _needs_flatbuffers("load")
    name = os.fspath(path)
    with open(path, "rb") as f:
        blob = f.read()
    header, payload = _parse(name, blob)
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as e:  # flatbuffers and jax raise many kinds; the hash matched
        raise ExportFileError(
            f"{name}: jax {jax.__version__} cannot deserialize its payload (written by "
            f"jax {header.get('jax')}): {type(e).__name__}: {e}"
        ) from e
    if list(exported.platforms) != header.get("platforms"):
        raise ExportFileError(
            f"{name}: its header records platforms {header.get('platforms')}, its payload "
            f"{list(exported.platforms)}"
        )
    return exported
