"""Killing a training subprocess at a chosen moment: SIGKILL to its whole process group
once it has printed some lines (shared by tests/test_resume.py and
parity_tests/test_resume_parity.py). Bounded in time; the group never outlives the call."""

from __future__ import annotations

import os
import pathlib
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_and_kill(
    argv: list[str],
    after_lines: int,
    delay: float,
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
) -> None:
    """Start ``argv`` in its own process group; SIGKILL the group ``delay`` seconds after
    it printed ``after_lines`` lines (or when ``timeout`` runs out waiting for a line).
    AssertionError if the process ended before it was killed."""
    p = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in p.stdout], daemon=True)
    reader.start()
    try:
        for _ in range(after_lines):
            lines.get(timeout=timeout)
        threading.Event().wait(delay)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        reader.join(timeout=30)
        if p.stdout is not None:
            p.stdout.close()
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
