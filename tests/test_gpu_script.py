"""``python -m benchmarks.gpu`` on a machine without a GPU: status 2, one line on stderr, no work.

The GPU is hidden from the child process (``CUDA_VISIBLE_DEVICES=""``, ``JAX_PLATFORMS=cpu``),
so the test means the same on a machine that has one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_exits_2_without_a_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    assert lines[-1].startswith("benchmarks.gpu needs a CUDA GPU seen by JAX and torch"), lines
    assert "JAX's default backend: 'cpu'" in lines[-1]
    assert "torch.cuda.is_available(): False" in lines[-1]
    assert lines[-1].endswith("nothing was run")
    assert proc.stdout == ""
    assert not out.exists()  # no work done, nothing written
