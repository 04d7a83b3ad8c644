"""Opt-in input checks that also work under ``jax.jit``, via ``jax.experimental.checkify``.

The stack (:func:`jaxseq.lstm` etc.) checks everything it can in Python before tracing:
shapes, dtypes, and the range of *concrete* lengths. Under ``jit`` the lengths are
traced values, so their range cannot be read in Python; out-of-range traced lengths act
as if clipped to [0, T] (negative as 0, above T as T). Non-finite inputs are not checked
by default: a NaN or inf at a valid step propagates into the outputs, states and
gradients, as in PyTorch; a NaN or inf in the padding (``t >= lengths[n]``) is ignored
and changes neither outputs nor gradients.

These functions add the missing checks where they are wanted. Called on concrete arrays
they raise ``ValueError`` at once; called on traced arrays they emit a
``checkify.check``, so the jitted function must be wrapped in
``checkify.checkify(...)`` and its error thrown::

    from jax.experimental import checkify

    def loss(params, x, lengths):
        lengths = checked_lengths(lengths, x.shape[0])
        x = check_finite(x)
        out, _ = jaxseq.lstm(params, x, lengths=lengths)
        return out.sum()

    err, value = jax.jit(checkify.checkify(loss))(params, x, lengths)
    err.throw()   # raises JaxRuntimeError naming the bad lengths

>>> import jax, jax.numpy as jnp
>>> from jax.experimental import checkify
>>> f = jax.jit(checkify.checkify(lambda n: checked_lengths(n, 4)))
>>> err, _ = f(jnp.array([4, 0, 2], jnp.int32))
>>> err.get() is None
True
>>> err, _ = f(jnp.array([5, 0, 2], jnp.int32))
>>> print(err.get().split(" (`check` failed")[0])
lengths must lie in [0, T] = [0, 4], got min 0 and max 5
>>> checked_lengths(jnp.array([-1, 2], jnp.int32), 4)
Traceback (most recent call last):
    ...
ValueError: lengths must lie in [0, T] = [0, 4], got min -1 and max 2
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxseq.validation import LENGTHS_RANGE

Array = jax.Array

__all__ = ["checked_lengths", "check_finite"]


def _traced(a: Any) -> bool:
    return isinstance(a, jax.core.Tracer)


def checked_lengths(lengths: Any, T: int) -> Array:
    """Return ``lengths`` (N,) after checking that it holds integers in [0, T].

    Concrete lengths raise ``ValueError`` at once; traced lengths add a
    ``checkify.check`` (wrap the caller in ``checkify.checkify``).

    Args:
      lengths: (N,) integer array (a list of ints is accepted).
      T: the number of time steps.

    Returns:
      ``lengths`` as a JAX integer array, unchanged.
    """
    if isinstance(lengths, (list, tuple)):
        lengths = np.asarray(lengths)
    if (
        not hasattr(lengths, "dtype")
        or lengths.dtype == np.bool_
        or not jnp.issubdtype(lengths.dtype, jnp.integer)
    ):
        raise TypeError(
            f"lengths must be an integer array, got {getattr(lengths, 'dtype', type(lengths).__name__)}"
        )
    if not _traced(lengths):
        arr = np.asarray(lengths)
        if arr.size and (arr.min() < 0 or arr.max() > T):
            raise ValueError(LENGTHS_RANGE.format(T=T, lo=arr.min(), hi=arr.max()))
        return jnp.asarray(lengths)
    ok = jnp.all((lengths >= 0) & (lengths <= T))
    checkify.check(
        ok,
        LENGTHS_RANGE.format(T=T, lo="{lo}", hi="{hi}"),
        lo=jnp.min(lengths, initial=T),
        hi=jnp.max(lengths, initial=0),
    )
    return lengths


def check_finite(x: Any, name: str = "input") -> Array:
    """Return ``x`` after checking that every element is finite (no NaN, no inf).

    Concrete arrays raise ``ValueError`` naming how many elements are not finite; traced
    arrays add a ``checkify.check`` (wrap the caller in ``checkify.checkify``).

    >>> import jax.numpy as jnp
    >>> check_finite(jnp.array([1.0, jnp.nan, jnp.inf]), "x")
    Traceback (most recent call last):
        ...
    ValueError: x contains 2 non-finite values (NaN or inf) out of 3
    """
    if not _traced(x):
        arr = np.asarray(x)
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        if bad:
            raise ValueError(
                f"{name} contains {bad} non-finite values (NaN or inf) out of {arr.size}"
            )
        return jnp.asarray(x)
    checkify.check(jnp.all(jnp.isfinite(x)), f"{name} contains non-finite values (NaN or inf)")
    return x
