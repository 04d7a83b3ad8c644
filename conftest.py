"""Test configuration shared by tests/, parity_tests/ and the docs collector.

The suite runs JAX in float64-capable mode with strict dtype promotion and rank
promotion set to raise, so silent broadcasting and dtype drift fail loudly. Tests state
their dtypes explicitly.
"""

import gc
import os
import shutil
import tempfile

# One host device unless a test asks for more; and compile options for the suite's
# programs, which are small and compiled once or a few times each, so that compile time
# dominates: LLVM at -O0 and XLA:CPU's loop emitters instead of its fusion emitters compile
# about twice as fast (measured: parity_tests/test_testing_parity.py with
# tests/test_models.py, 50.7 s -> 26.4 s) and compute the same values to the tests'
# tolerances. Child processes inherit them; the docs' fresh runs drop them, as a reader
# has none (tests/test_docs_fresh.py).
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0 "
    "--xla_cpu_use_fusion_emitters=false",
)

# One compilation cache on disk for the whole run, for the child processes the tests start
# (the docs' and the tutorial's fresh runs, examples, multi-process tests): many of them
# compile the same programs (each tutorial section runs with and without torch: that test
# file alone, 86 s -> 58 s), and a program found in the cache is loaded instead of compiled
# again; values do not change. The test processes themselves do not use it (below): their
# thousands of programs are compiled once each, and writing them all out costs more than
# it saves. Made by the first process (the controller, or a run without xdist), which
# removes it at the end; every process started from it inherits the variables.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxseq-tests-xla-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # cache every program
    _OWN_CACHE: str | None = os.environ["JAX_COMPILATION_CACHE_DIR"]
else:
    _OWN_CACHE = None

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_compilation_cache", False)  # for the children only (above)


# Every compiled XLA:CPU program keeps its machine code in a few memory mappings (3 to 6
# per program) for as long as JAX's caches hold it. One xdist worker compiles thousands
# of programs in a full run, and a process may hold at most vm.max_map_count mappings
# (65530 by default): past that, mmap fails inside XLA's JIT and the worker dies of a
# segfault in the middle of a compile, in whichever test happens to be compiling. So
# between two tests, a process holding more than half that many mappings drops JAX's
# caches (the programs compile again when next used). Checked per test: reading the
# count costs about a millisecond.
def _max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):  # not Linux: no such limit to guard
        return 0


_MAPS_LIMIT = _max_map_count() // 2


def _mappings() -> int:
    with open("/proc/self/maps", "rb") as f:
        return f.read().count(b"\n")


def pytest_runtest_teardown(item, nextitem) -> None:
    if _MAPS_LIMIT and _mappings() > _MAPS_LIMIT:
        jax.clear_caches()
        gc.collect()  # the programs' last references may sit in reference cycles


def pytest_unconfigure(config) -> None:
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
