"""Smoke test of ``benchmarks.compare_revisions``: another revision imports beside this one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_compare_against_head_runs(tmp_path):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    code = (
        "import json, sys; from benchmarks import compare_revisions as c; "
        "r = c.main(['--rev', 'HEAD', '--configs', 'smoke', '--kinds', 'gru', "
        f"'--repeats', '3', '--calls', '1', '--out', {str(tmp_path)!r}]); "
        "import jaxseq_rev, jaxseq; assert jaxseq_rev.__file__ != jaxseq.__file__; "
        "assert 'jaxseq' not in open(jaxseq_rev.stack.__file__).read().replace('jaxseq_rev', ''); "
        "print(json.dumps(r['results'][0]['median_ms']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "compare.json").exists()
    assert '"revision"' in r.stdout and '"working tree"' in r.stdout
