"""``JIT``: ``jax.jit`` with XLA's LLVM backend at -O0 on the CPU.

The suite's programs are tiny and compiled once each, so compile time dominates; -O0
compiles several times faster and computes the same values (the tests compare against
independent references at their usual tolerances).
"""

from __future__ import annotations

import functools

import jax

JIT = functools.partial(
    jax.jit,
    compiler_options=(
        {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    ),
)
