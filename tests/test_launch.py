"""``python -m jaxseq.launch``: environment of the children, failure propagation (one child
exits 3: the launcher exits 3, prints that child's stderr tail and stops the others), the
timeout, and no import of torch. Every run is bounded in time and killed on failure."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from _procs import run_in_group

from jaxseq import launch

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _launch(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    # Killing the launcher's group on timeout kills its children too (parent-death signal).
    return run_in_group([sys.executable, "-m", "jaxseq.launch", *args], timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_children_get_rank_count_and_coordinator(tmp_path):
    script = tmp_path / "env.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            e = os.environ
            assert "torch" not in sys.modules
            torch_env = [e[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                        "MASTER_ADDR", "MASTER_PORT")]
            fields = [e["JAXSEQ_PROCESS_ID"], e["JAXSEQ_NUM_PROCESSES"], e["JAXSEQ_COORDINATOR"],
                      *torch_env, "--", *sys.argv[1:]]
            # One file per child: lines printed to one shared pipe may interleave.
            out = os.path.join(os.path.dirname(__file__), "env" + e["JAXSEQ_PROCESS_ID"])
            with open(out, "w") as f:
                f.write(" ".join(fields))
            """
        )
    )
    r = _launch(["--nproc", "3", str(script), "a", "--flag"])
    assert r.returncode == 0, r.stderr
    lines = sorted((tmp_path / f"env{k}").read_text() for k in range(3))
    fields = [line.split(" -- ")[0].split() for line in lines]
    assert [f[:2] for f in fields] == [["0", "3"], ["1", "3"], ["2", "3"]]
    coordinators = {f[2] for f in fields}
    assert len(coordinators) == 1 and coordinators.pop().startswith("127.0.0.1:")
    assert all(line.split(" -- ")[1].split() == ["a", "--flag"] for line in lines)
    # torchrun's variables: RANK = LOCAL_RANK = the process id, WORLD_SIZE =
    # LOCAL_WORLD_SIZE = N, one master on 127.0.0.1 at a port other than JAX's.
    assert [f[3:7] for f in fields] == [[str(r), str(r), "3", "3"] for r in range(3)]
    masters = {(f[7], f[8]) for f in fields}
    assert len(masters) == 1
    addr, port = masters.pop()
    assert addr == "127.0.0.1" and 0 < int(port) < 65536
    assert port != fields[0][2].rsplit(":", 1)[1]


def test_one_failure_stops_the_others_and_gives_its_exit_code(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            rank = int(os.environ["JAXSEQ_PROCESS_ID"])
            pid0 = os.path.join({str(tmp_path)!r}, "pid0")
            if rank == 1:
                deadline = time.monotonic() + 20
                while not os.path.exists(pid0) and time.monotonic() < deadline:
                    time.sleep(0.02)  # fail once rank 0 runs, to see it stopped
                print("rank 1 gives up", file=sys.stderr)
                sys.exit(3)
            with open(pid0 + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pid0 + ".tmp", pid0)
            time.sleep(120)
            """
        )
    )
    t0 = time.monotonic()
    r = _launch(["--nproc", "2", str(script)])
    elapsed = time.monotonic() - t0
    assert r.returncode == 3, r.stderr
    assert "process 1 of 2 failed with exit code 3" in r.stderr
    assert r.stderr.rstrip().endswith("rank 1 gives up")
    assert elapsed < 30
    pid0 = int((tmp_path / "pid0").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid0), "the other child still runs"


def test_timeout_stops_everything(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(120)\n")
    t0 = time.monotonic()
    r = _launch(["--nproc", "2", "--timeout", "1", str(script)])
    assert r.returncode == 124, r.stderr
    assert "timed out" in r.stderr
    assert time.monotonic() - t0 < 30


def test_launch_module_imports_only_the_standard_library():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, importlib.util as u; "
            "spec = u.spec_from_file_location('L', 'jaxseq/launch.py'); "
            "m = u.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('jax', 'torch', 'numpy', 'flax')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_free_port_is_bindable():
    import socket

    port = launch.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_children_die_with_a_killed_launcher(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text(
        "import os, time\n"
        f"f = os.path.join({str(tmp_path)!r}, 'pid' + os.environ['JAXSEQ_PROCESS_ID'])\n"
        "open(f + '.tmp', 'w').write(str(os.getpid()))\n"
        "os.rename(f + '.tmp', f)\n"
        "time.sleep(120)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "jaxseq.launch", "--nproc", "2", str(script)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(pids) < 2:
            files = [tmp_path / f"pid{r}" for r in range(2)]
            if all(f.exists() for f in files):
                pids = [int(f.read_text()) for f in files]
            time.sleep(0.05)
        assert len(pids) == 2, "the children did not start"
        os.kill(p.pid, signal.SIGKILL)  # the launcher alone: no chance to clean up
        p.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids), "children outlived the launcher"
    finally:
        for pid in [p.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        p.wait(timeout=10)
