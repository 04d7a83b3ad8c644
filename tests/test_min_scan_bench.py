"""Smoke test of ``python -m benchmarks.min_scan`` on its quickest config, in a subprocess
(the benchmark configures JAX itself, outside this suite's x64 / strict settings)."""

from __future__ import annotations

import json
import sys

from _procs import run_in_group


def test_min_scan_benchmark_quick_smoke(tmp_path):
    models = ["min_gru/scan", "min_gru/parallel", "min_lstm/chunked", "gru/fused", "torch_gru"]
    argv = [sys.executable, "-m", "benchmarks.min_scan", "--quick", "--T", "32", "--repeats", "1"]
    proc = run_in_group([*argv, "--models", *models, "--out", str(tmp_path)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "min_scan.json").read_text())
    (r,) = report["results"]
    assert r["T"] == 32 and set(r["models"]) == set(models)
    for name, s in r["models"].items():
        assert s["median_ms"] > 0 and len(s["times_s"]) == 1, name
        assert (s["xla_temp_mib"] is None) == name.startswith("torch")
    assert (
        set(r["speedups"]) == {"min_gru vs gru/fused"} and r["speedups"]["min_gru vs gru/fused"] > 0
    )
    assert "| 32 |" in (tmp_path / "min_scan.md").read_text()
