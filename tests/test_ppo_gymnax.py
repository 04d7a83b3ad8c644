"""``benchmarks/ppo_gymnax.py``: its two policies compute the same function, and a tiny run
of the whole benchmark gives both agents the same first updates.

The benchmark's claim rests on the ``jaxseq`` policy being the ``flax`` one with its core
swapped: from the converted weights, logits, values and the final state of a rollout with
resets must agree (float32 rounding), here against the Flax cell scan; and with the same
random numbers the two agents' first updates see the same episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax", reason="needs the rl extra: pip install -e '.[rl]'")
from benchmarks import ppo_gymnax  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_jaxseq_policy_equals_the_flax_policy_from_converted_weights():
    N, T, H = 6, 12, 16
    flax_policy = ppo_gymnax.Policy(2, H, "flax")
    jaxseq_policy = ppo_gymnax.Policy(2, H, "jaxseq")
    obs = jax.random.normal(jax.random.key(1), (T, N, 3), jnp.float32)
    resets = jax.random.bernoulli(jax.random.key(2), 0.25, (T, N))
    h0 = jax.random.normal(jax.random.key(3), (N, H), jnp.float32)
    params = flax_policy.init(jax.random.key(0), h0, obs, resets)
    h_f, logits_f, value_f = flax_policy.apply(params, h0, obs, resets)
    converted = ppo_gymnax.flax_to_jaxseq(params)
    h_j, logits_j, value_j = jaxseq_policy.apply(converted, h0[None], obs, resets)
    np.testing.assert_allclose(logits_j, logits_f, rtol=0, atol=2e-6)
    np.testing.assert_allclose(value_j, value_f, rtol=0, atol=2e-6)
    np.testing.assert_allclose(h_j[0], h_f, rtol=0, atol=2e-6)
    assert float(jnp.abs(logits_f).max()) > 1e-3  # not trivially zero
    # the resets act: without them the outputs differ
    _, no_reset, _ = flax_policy.apply(params, h0, obs, jnp.zeros_like(resets))
    assert not np.allclose(no_reset, logits_f, atol=1e-4)


def test_benchmark_smoke(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.ppo_gymnax", "--updates", "4", "--envs", "4"]
    cmd += ["--steps", "16", "--minibatches", "2", "--hidden", "16", "--repeats", "2"]
    cmd += ["--memory-length", "3"]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "ppo_gymnax.json").read_text())
    for key in ("sps", "update_ms", "act_us"):
        assert set(r[key]) == {"flax", "jaxseq"} and all(v > 0 for v in r[key].values())
    flax_curve, jaxseq_curve = (np.asarray(r["curves"][c], float) for c in ("flax", "jaxseq"))
    assert flax_curve.shape == (4,) and np.all(np.abs(flax_curve) <= 1)  # MemoryChain: +-1
    assert flax_curve[0] == jaxseq_curve[0]  # the same weights and random numbers
    assert (tmp_path / "ppo_gymnax.png").stat().st_size > 0
    report = (tmp_path / "ppo_gymnax.md").read_text()
    assert "env-steps/s" in report and "memory length 3" in report


def test_rejects_envs_not_divisible_by_minibatches(capsys):
    with pytest.raises(SystemExit):
        ppo_gymnax.main(["--envs", "6", "--minibatches", "4"])
    assert "multiple of --minibatches" in capsys.readouterr().err
