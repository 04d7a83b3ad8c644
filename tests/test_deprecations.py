"""Old names keep working for one release, warn, and compute exactly what the new ones do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxseq

RENAMED = {
    "fast": "fused",
    "fast_loop": "fused_loop",
    "fast_hoisted": "fused_hoisted",
    "hoisted": "unfused",
}


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_old_impl_names_warn_and_match(old, new):
    params = jaxseq.init_lstm(jax.random.key(0), 3, 4, bidirectional=True, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 3)))
    lengths = jnp.array([5, 2])
    with pytest.warns(DeprecationWarning, match=f"impl='{old}' is deprecated.*use impl='{new}'"):
        out_old, (h_old, _) = jaxseq.lstm(params, x, lengths=lengths, impl=old)
    out_new, (h_new, _) = jaxseq.lstm(params, x, lengths=lengths, impl=new)
    np.testing.assert_array_equal(out_old, out_new)
    np.testing.assert_array_equal(h_old, h_new)


def test_old_impl_name_on_a_module_warns():
    gru = jaxseq.nn.GRU(3, 4, impl="fast", rngs=nnx.Rngs(0))
    with pytest.warns(DeprecationWarning, match="impl='fast' is deprecated"):
        gru(jnp.ones((5, 2, 3), jnp.float32))


def test_unknown_impl_lists_the_new_names():
    params = jaxseq.init_gru(jax.random.key(0), 3, 4)
    with pytest.raises(
        ValueError, match=r"Unknown impl 'cudnn'; expected one of \['fused', 'fused_hoisted'"
    ):
        jaxseq.gru(params, jnp.ones((5, 2, 3), jnp.float32), impl="cudnn")
