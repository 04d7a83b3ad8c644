"""Test configuration shared by tests/, parity_tests/ and the docs collector.

The suite runs JAX in float64-capable mode with strict dtype promotion and rank
promotion set to raise, so silent broadcasting and dtype drift fail loudly. Tests state
their dtypes explicitly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
