"""Start N processes of a script on this machine for JAX (or PyTorch) multi-process
training, like ``torchrun --standalone --nproc-per-node N``.

Usage::

    python -m jaxseq.launch --nproc 2 train.py --epochs 3
    python -m jaxseq.launch --nproc 2 -m mypackage.train
    python -m jaxseq.launch --nproc 4 --timeout 600 train.py

The launcher picks a free TCP port on 127.0.0.1 for JAX's coordinator and starts
``python SCRIPT ARGS...`` N times with the environment variables

* ``JAXSEQ_COORDINATOR`` = ``"127.0.0.1:PORT"``,
* ``JAXSEQ_NUM_PROCESSES`` = ``N``,
* ``JAXSEQ_PROCESS_ID`` = ``0 .. N-1``,

which :func:`jaxseq.train.initialize_distributed` reads. The script calls it first, then
trains with a mesh over all processes' devices::

    from jaxseq.train import initialize_distributed, fit
    rank, world = initialize_distributed()
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    fit(model, my_rows_of_each_batch, tx, mesh=mesh)

It also sets the variables ``torchrun`` sets, so the same launcher runs PyTorch scripts
(``torch.distributed.init_process_group`` with its default ``env://``):

* ``MASTER_ADDR`` = ``127.0.0.1``, ``MASTER_PORT`` = a second free port,
* ``WORLD_SIZE`` = ``LOCAL_WORLD_SIZE`` = ``N``,
* ``RANK`` = ``LOCAL_RANK`` = ``0 .. N-1``,

which :func:`torchseq.train.initialize_distributed` reads::

    from torchseq.train import finalize_distributed, fit, initialize_distributed
    rank, world = initialize_distributed()  # gloo on CPU
    fit(model, my_rows_of_each_batch, optimizer, ddp=True)
    finalize_distributed()  # barrier, then destroy the process group

The children's stdout and stderr pass through. If one process fails (non-zero exit, or
killed by a signal: code 128 + signal), the others are stopped (SIGTERM, then SIGKILL
after a grace period), the last lines of the failed process's stderr are printed, and the
launcher exits with that process's exit code. ``--timeout S`` stops everything after S
seconds (exit 124). Children die with the launcher (Linux: parent-death signal), and each
runs in its own process group, which is stopped as a whole.

This module imports only the standard library (no JAX, no torch).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["free_port", "launch", "main"]

TAIL_LINES = 40  # the lines of a failed process's stderr that are repeated at the end
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; bind and release).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# Runs first in every child on Linux (a small exec shim: a preexec_fn would make
# subprocess fork a possibly multithreaded parent, which JAX warns about): ask the kernel
# to SIGKILL the child when the launcher dies, then exec the real command.
_SHIM = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):  # the launcher died before prctl
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death(command: Sequence[str]) -> list[str]:
    """``command`` wrapped so that it dies with this process (Linux; else unchanged)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-c", _SHIM, str(os.getpid()), *command]


def _pump(stream, out, tail: collections.deque) -> None:
    """Copy ``stream``'s lines to ``out``, keeping the last ones in ``tail``."""
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace")
        tail.append(text)
        try:
            out.write(text)
            out.flush()
        except (ValueError, OSError):  # pragma: no cover - our stderr closed
            pass
    stream.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM the process groups still running, SIGKILL them after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(0.02)
        if all(p.poll() is not None for p in procs):
            return


def _code(returncode: int) -> int:
    """An exit status: a signal's negative return code becomes 128 + signal."""
    return 128 - returncode if returncode < 0 else returncode


def launch(
    command: Sequence[str],
    nproc: int,
    *,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``command`` (argv, e.g. ``[sys.executable, "train.py"]``) as ``nproc``
    processes with the ``JAXSEQ_*`` and torch's (``MASTER_ADDR``, ``MASTER_PORT``,
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) variables set; return the exit status (0: all
    succeeded; else the first failure's code, 124 on timeout). See the module docstring.

    >>> import sys
    >>> launch([sys.executable, "-c", "import os; assert os.environ['JAXSEQ_PROCESS_ID']"], 2)
    0
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    base = dict(os.environ if env is None else env)
    jax_port = free_port()
    torch_port = free_port()
    while torch_port == jax_port:  # both released: the OS may hand out the same one
        torch_port = free_port()
    base["JAXSEQ_COORDINATOR"] = f"127.0.0.1:{jax_port}"
    base["JAXSEQ_NUM_PROCESSES"] = str(nproc)
    base.update(  # torchrun's names (torch.distributed's env:// initialization)
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(torch_port),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    procs: list[subprocess.Popen] = []
    tails: list[collections.deque] = []
    pumps: list[threading.Thread] = []
    status = 0
    try:
        for rank in range(nproc):
            child_env = dict(
                base, JAXSEQ_PROCESS_ID=str(rank), RANK=str(rank), LOCAL_RANK=str(rank)
            )
            p = subprocess.Popen(
                _with_parent_death(command),
                env=child_env,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            procs.append(p)
            tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
            tails.append(tail)
            t = threading.Thread(target=_pump, args=(p.stderr, sys.stderr, tail), daemon=True)
            t.start()
            pumps.append(t)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            failed = [(r, p) for r, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                rank, p = failed[0]
                _stop(procs)
                pumps[rank].join(timeout=2.0)
                status = _code(p.returncode)
                sys.stderr.write(
                    f"jaxseq.launch: process {rank} of {nproc} failed with exit code "
                    f"{status}; the others were stopped. Its stderr ended with:\n"
                    + "".join(tails[rank])
                )
                break
            if all(p.poll() == 0 for p in procs):
                break
            if deadline is not None and time.monotonic() > deadline:
                _stop(procs)
                sys.stderr.write(f"jaxseq.launch: timed out after {timeout} s; stopped all\n")
                status = 124
                break
            time.sleep(0.02)
    finally:  # KeyboardInterrupt, SIGTERM turned into SystemExit, errors: no orphans
        _stop(procs)
        for t in pumps:
            t.join(timeout=2.0)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m jaxseq.launch --nproc N [--timeout S] SCRIPT [ARGS...]``
    (or ``-m MODULE [ARGS...]``); returns the exit status. SIGTERM to the launcher stops
    the children too."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxseq.launch",
        description="Run N local processes of a JAX script (jaxseq.train.initialize_distributed "
        "joins them) or a PyTorch one (torch's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, "
        "LOCAL_RANK, LOCAL_WORLD_SIZE are set too), like torchrun --standalone "
        "--nproc-per-node N.",
    )
    parser.add_argument("--nproc", type=int, required=True, help="number of processes")
    parser.add_argument("--timeout", type=float, default=None, help="stop all after S seconds")
    parser.add_argument("-m", dest="module", action="store_true", help="SCRIPT is a module")
    parser.add_argument("script", help="the script (or module with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    ns = parser.parse_args(argv)
    command = [sys.executable, *(["-m"] if ns.module else []), ns.script, *ns.args]

    def on_term(signum, frame):  # the finally in launch() stops the children
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return launch(command, ns.nproc, timeout=ns.timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
