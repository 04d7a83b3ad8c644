"""Smoke test of the benchmark harness on one tiny config, 2 repeats.

It runs ``python -m benchmarks.run`` in a fresh process (the harness configures its own
JAX and torch, outside this suite's x64 / strict-promotion settings) and checks the JSON:
the fields, the compile count when only lengths change, and that the jaxseq loss equals
torch's padded loss on the same weights and input without lengths.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_bench_harness_smoke(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--configs",
        "smoke",
        "--kinds",
        "gru",
        "--frameworks",
        "jaxseq",
        "torch_padded",
        "torch_packed",
        "--repeats",
        "2",
        "--no-streaming",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# jaxseq benchmarks")
    assert report["matmul_peak"]["peak"] > 0
    (r,) = report["results"]
    assert r["kind"] == "gru" and r["shape"] == {
        "B": 3,
        "T": 6,
        "I": 4,
        "H": 5,
        "layers": 1,
        "bidirectional": False,
    }
    for mode in ("train", "fwd", "infer"):
        stats = r["modes"][mode]
        assert set(stats) == {"jaxseq", "torch_padded", "torch_packed"}
        for s in stats.values():
            assert s["n"] == 2 and s["median_ms"] > 0 and s["gflops"] > 0
        ratio = stats["jaxseq"]["ratio_vs_torch_padded"]
        np.testing.assert_allclose(
            ratio, stats["jaxseq"]["median_ms"] / stats["torch_padded"]["median_ms"]
        )
    info = r["info"]["jaxseq"]
    assert info["compile_count_lengths_change"] == 1
    assert info["compile"]["compile_s"] > 0
    # Same weights, same input, no lengths: the losses agree (float32).
    check = r["loss_check"]
    assert check["torch_padded_loss"] > 0
    np.testing.assert_allclose(
        check["jaxseq_loss_no_lengths"], check["torch_padded_loss"], rtol=1e-5
    )


def test_bench_data_parallel_smoke(tmp_path):
    """``--host-devices 2``: jaxseq_dp splits the batch over two CPU devices and gives the
    loss of the single-device step (the same program, sharded); run with the host
    allocator's freed memory retained (``--host-memory retain``), which the report states."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--configs", "smoke_even", "--kinds", "lstm"]
    cmd += ["--frameworks", "jaxseq", "jaxseq_dp", "--repeats", "2", "--host-devices", "2"]
    cmd += ["--no-streaming", "--host-memory", "retain"]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["machine"]["jax_devices"] == 2
    assert report["machine"]["devices"] == 2 and report["machine"]["processes"] == 1
    assert report["machine"]["host_memory"] == "retain"
    assert "jaxseq.retain_host_memory()" in (tmp_path / "results.md").read_text()
    (r,) = report["results"]
    assert r["info"]["jaxseq_dp"]["devices"] == 2
    assert r["info"]["jaxseq_dp"]["compile_count_lengths_change"] == 1
    check = r["loss_check"]
    assert check["jaxseq_loss"] > 0
    np.testing.assert_allclose(check["jaxseq_dp_loss"], check["jaxseq_loss"], rtol=1e-6)


def test_bench_peers_and_streaming_smoke(tmp_path):
    """The JAX peers (Flax linen and NNX, Equinox, Keras 3 on JAX) run next to jaxseq, the
    best-peer ratio is the ratio to the fastest of them, and the B=1 streaming run ends on
    the same state as torch's cell (the harness checks it and fails otherwise)."""
    peers = ["flax_linen", "flax_nnx", "equinox", "keras"]
    cmd = [sys.executable, "-m", "benchmarks.run", "--configs", "smoke", "--kinds", "gru"]
    cmd += ["--frameworks", "jaxseq", *peers, "--repeats", "2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (r,) = report["results"]
    assert r["skipped"] == {} and r["shaped_matmul_gflops"] > 0
    for mode in ("train", "fwd", "infer"):
        stats = r["modes"][mode]
        assert set(stats) == {"jaxseq", *peers}
        best = min(peers, key=lambda p: stats[p]["median_ms"])
        assert stats["jaxseq"]["best_jax_peer"] == best
        np.testing.assert_allclose(
            stats["jaxseq"]["ratio_vs_best_jax_peer"],
            stats["jaxseq"]["median_ms"] / stats[best]["median_ms"],
        )
    (st,) = report["streaming"]
    assert st["kind"] == "gru" and set(st["median_us"]) == {
        "jaxseq_module",
        "jaxseq_nnx_jit",
        "torch",
    }
    assert "## Streaming" in (tmp_path / "results.md").read_text()


def test_bench_acting_smoke(tmp_path):
    """``python -m benchmarks.acting`` on tiny sizes: both measurements, every library,
    the ratio of the medians, and the table."""
    cmd = [sys.executable, "-m", "benchmarks.acting", "--N", "2", "--H", "8", "--I", "4"]
    cmd += ["--repeats", "2", "--inner", "2", "--steps", "3", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "acting.json").read_text())
    assert [(r["kind"], r["N"], r["H"]) for r in report["results"]] == [
        ("gru", 2, 8),
        ("lstm", 2, 8),
    ]
    for r in report["results"]:
        for what in ("call", "loop"):
            s = r[what]
            assert s["n"] == 2 and set(s["median_us"]) == {"jaxseq", "module", "flax"}
            us = s["median_us"]
            np.testing.assert_allclose(s["ratio"], us["jaxseq"] / us["flax"], rtol=1e-9)
            np.testing.assert_allclose(s["ratio_module"], us["module"] / us["flax"], rtol=1e-9)
    assert "| gru | 2 | 8 |" in (tmp_path / "acting.md").read_text()
