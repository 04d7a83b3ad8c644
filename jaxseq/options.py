"""How to run a recurrent layer, as one value: :class:`LayerOptions`.

The NNX layers (:mod:`jaxseq.nn`) hold one; the model zoo (:mod:`jaxseq.models`) takes one
(``rnn_options=``) and hands it to its recurrent layer; :meth:`LayerOptions.stack_kwargs`
and :meth:`LayerOptions.rates` are what the functional stack
(:func:`jaxseq.stack.run_stack`) takes as keywords. Structure (sizes, layers, directions,
``proj_size``, the nonlinearity) is not an option: it is the model's (:class:`~jaxseq.params.RNNSpec`).

>>> import jax.numpy as jnp
>>> opts = LayerOptions(remat=16, zoneout=0.1, carry_dtype="float32")
>>> opts.stack_kwargs()["remat"], opts.rates()["zoneout"], opts.carry_dtype
(16, 0.1, dtype('float32'))
>>> LayerOptions(zoneout=1.5)
Traceback (most recent call last):
...
ValueError: zoneout must be in [0, 1), got 1.5
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxseq.impls import IMPLS
from jaxseq.layer import check
from jaxseq.params import RNNSpec
from jaxseq.regularizers import RATES, check_rates, rate_values
from jaxseq.validation import check_carry_dtype, check_chunk_lengths, check_unroll

__all__ = ["LayerOptions"]


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """How a recurrent layer runs: the same values, the same meanings as
    :func:`jaxseq.stack.run_stack`'s keywords of these names. Frozen and hashable, checked
    when made (each value on its own) and by :meth:`check` (against a kind).

    Attributes:
      impl: the layer implementation (:data:`jaxseq.impls.IMPLS`).
      unroll: ``jax.lax.scan`` unroll factor.
      remat: None or a chunk length K (checkpoint every K steps).
      chunk: the chunk length of ``impl="fused_chunked"``.
      carry_dtype: the mixed-precision carry dtype (None: the rule of
        :func:`jaxseq.validation.carry_dtype_for`).
      input_dropout, output_dropout, recurrent_dropout, weight_dropout, zoneout: the
        regularisers' rates, each in [0, 1) (:mod:`jaxseq.regularizers`).
    """

    impl: str = "fused"
    unroll: int = 1
    remat: int | None = None
    chunk: int | None = None
    carry_dtype: Any = None
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0
    zoneout: float = 0.0

    def __post_init__(self) -> None:
        check_unroll(self.unroll)
        check_chunk_lengths(remat=self.remat, chunk=self.chunk)
        if not isinstance(self.impl, str):
            raise TypeError(f"impl must be a string, got {type(self.impl).__name__}")
        if self.carry_dtype is not None:
            object.__setattr__(self, "carry_dtype", check_carry_dtype(self.carry_dtype))
        for name, rate in rate_values(self.rates()).items():
            object.__setattr__(self, name, rate)

    def rates(self) -> dict[str, float]:
        """The regularisers' rates by option name (:data:`jaxseq.regularizers.RATES`)."""
        return {name: getattr(self, name) for name in RATES}

    @property
    def regularized(self) -> bool:
        """Any regulariser rate above 0."""
        return any(p > 0 for p in self.rates().values())

    def kwargs(self) -> dict[str, Any]:
        """Every option by name: the keywords of the :mod:`jaxseq.nn` layer constructors."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def stack_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`jaxseq.stack.run_stack` that say how to run."""
        return {
            "impl": self.impl,
            "unroll": self.unroll,
            "remat": self.remat,
            "chunk": self.chunk,
            "carry_dtype": self.carry_dtype,
        }

    def check(self, spec: RNNSpec) -> LayerOptions:
        """``self``, if the kind of ``spec`` can run with these options (the capability
        table, :func:`jaxseq.layer.check`; the regularisers, :func:`check_rates`)."""
        used = [f for f, v in (("remat", self.remat), ("chunk", self.chunk)) if v is not None]
        check(IMPLS, spec.recurrence, self.impl, used)
        check_rates(spec, self.impl, self.rates())
        return self

    def replace(self, **changes: Any) -> LayerOptions:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)
