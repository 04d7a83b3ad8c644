"""Running a child process in a test: its own process group, killed with it on timeout.

Shared by the multi-process tests (launcher, data-parallel JAX, torch DDP): whatever the
child starts dies with it when the test times out or fails, so no process outlives a test.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
from collections.abc import Mapping

ROOT = pathlib.Path(__file__).resolve().parent.parent


def env_choosing_devices() -> dict[str, str]:
    """``os.environ`` without conftest's forced host device count (the child scripts choose
    their devices), keeping the suite's other XLA flags (its fast-compile options)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "XLA_FLAGS": " ".join(kept)} if kept else env


def run_in_group(
    argv: list[str],
    timeout: float,
    *,
    cwd: pathlib.Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new session (process group) and capture its output; on timeout
    or any error, SIGKILL the whole group before re-raising."""
    p = subprocess.Popen(
        argv,
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)
