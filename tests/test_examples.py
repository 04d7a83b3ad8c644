"""The example programs: each runs end to end in ``--tiny`` mode and writes its outputs.

Every example runs as a subprocess (as a user would run it), from an empty working
folder, with ``--out`` in a temporary folder; the test checks the printed table, the
JSON and the PNG, some numbers in the JSON against an independent computation, and that
nothing was written outside ``--out``. The error paths (missing data, unwritable output
folder) must end in one clear line and exit status 2, not a traceback. The task
generators of ``why_recurrence`` are checked against plain Python loops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# example -> (extra tiny-mode flags, the PNG it writes)
CASES = {
    "classify": ([], "curves.png"),
    "forecast": ([], "forecast.png"),
    "charlm": (["--framework", "both"], "loss.png"),
    "why_recurrence": (["--framework", "both"], "why_recurrence.png"),
    "recurrent_policy": ([], "recurrent_policy.png"),
}


def run_example(
    name: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def markdown_rows(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in ``text`` (header and body, no separator)."""
    lines: list[str] = []
    for ln in text.splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    return [
        [c.strip() for c in ln.strip("|").split("|")] for ln in lines if not set(ln) <= set("|-")
    ]


def run_tiny(name: str, tmp_path: Path) -> dict:
    """Run ``name`` in tiny mode; check its table, JSON and PNG; return the JSON.

    Each example runs in exactly one test, so pytest-xdist spreads them over workers.
    """
    flags, png = CASES[name]
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    proc = run_example(name, "--tiny", "--no-progress", "--out", str(out), *flags, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # The table is printed and written, and both agree with the JSON.
    results = json.loads((out / "results.json").read_text())
    table = results["table"]
    expected = [table["headers"]] + table["rows"]
    assert markdown_rows(proc.stdout) == expected
    assert markdown_rows((out / "table.md").read_text()) == expected
    assert len(table["rows"]) >= 2
    assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert (out / png).stat().st_size > 5000
    # Nothing was written outside --out (the working folder stays empty).
    assert list(cwd.iterdir()) == []
    results["_out"] = out
    return results


def test_classify_tiny_same_checkpoint_gives_same_logits(tmp_path):
    res = run_tiny("classify", tmp_path)
    runs = res["runs"]
    assert {(r["model"], r["framework"]) for r in runs} == {
        (m, f) for m in ("gru", "ff") for f in ("jax", "torch")
    }
    for r in runs:
        # One checkpoint loaded into both frameworks: float32 rounding only, at init and
        # after a single epoch on the same batches.
        assert r["init_logit_diff"] < 1e-5
        assert r["logit_diff"] < 1e-3
        assert r["prediction_agreement"] == 1.0
        assert 0.0 <= r["test_acc"] <= 1.0
        assert r["compiles"] <= 2 if r["framework"] == "jax" else r["compiles"] == 0
    by = {(r["model"], r["framework"]): r for r in runs}
    for m in ("gru", "ff"):
        jax_loss, torch_loss = by[m, "jax"]["curves"]["loss"], by[m, "torch"]["curves"]["loss"]
        assert jax_loss == pytest.approx(torch_loss, rel=1e-4)
    assert sorted(p.name for p in (res["_out"] / "checkpoints").iterdir()) == [
        "ff-seed0-init.safetensors",
        "gru-seed0-init.safetensors",
    ]


def test_classify_two_devices_matches_one(tmp_path):
    """``--devices 2`` (data parallel over two JAX CPU devices; the tiny batches of 17
    rows are padded with zero-weight rows) gives the per-epoch losses of ``--devices 1``
    up to float32 rounding. The models have no dropout, so no masks differ.

    Both runs also ``--export`` their trained models (``jaxseq.export``): the files load
    with ``jaxseq.export.load`` (sha256 verified) and serve any batch size, the two runs' models alike."""
    res = {}
    for d in (1, 2):
        out = tmp_path / f"out{d}"
        flags = ["--tiny", "--no-progress", "--framework", "jax", "--epochs", "2"]
        flags += ["--export", str(out / "model.jax")]
        proc = run_example(
            "classify", *flags, "--devices", str(d), "--out", str(out), cwd=tmp_path / "cwd"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        res[d] = json.loads((out / "results.json").read_text())
        assert res[d]["machine"]["devices"] == d and res[d]["machine"]["processes"] == 1
        assert f"JAX {d} device" in res[d]["table"]["caption"]
    one, two = ({r["model"]: r for r in res[d]["runs"]} for d in (1, 2))
    assert set(one) == set(two) == {"gru", "ff"}
    for m in one:
        assert len(one[m]["curves"]["loss"]) == 2
        assert two[m]["curves"]["loss"] == pytest.approx(one[m]["curves"]["loss"], rel=1e-5)
        assert two[m]["test_acc"] == pytest.approx(one[m]["test_acc"])
        assert two[m]["compiles"] <= 2
    check_exported(res[1]["export"], res[2]["export"], tmp_path)


def check_exported(one: dict, two: dict, tmp_path: Path) -> None:
    """The ``--export`` files of two runs: one per model, symbolic batch (and time for the
    GRU), finite logits (N, 9) for N = 1 and 3, equal between the runs up to rounding."""
    import jaxseq.export

    names = [Path(p).name for p in one["paths"]]
    assert names == ["model-gru-seed0.jax", "model-ff-seed0.jax"]
    assert len(one["mean"]) == len(one["std"]) == 12  # the standardization a server needs
    rng = np.random.default_rng(0)
    for p1, p2 in zip(one["paths"], two["paths"], strict=True):
        e1, e2 = (jaxseq.export.load(p) for p in (p1, p2))
        x_aval = e1.in_avals[0]
        assert str(x_aval.shape[0]) == "b" and x_aval.shape[2] == 12
        # The feedforward model reads a fixed T (max_len), the GRU any T.
        fixed = isinstance(x_aval.shape[1], int)
        assert fixed == ("-ff-" in p1)
        T = x_aval.shape[1] if fixed else 7
        for n in (1, 3):
            x = rng.standard_normal((n, T, 12)).astype(np.float32)
            lengths = np.full((n,), T, np.int32)
            a, b = np.asarray(e1.call(x, lengths)), np.asarray(e2.call(x, lengths))
            assert a.shape == (n, 9) and np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_forecast_tiny_baselines_match_numpy(tmp_path):
    from aeon.datasets import load_airline

    res = run_tiny("forecast", tmp_path)
    y = np.asarray(load_airline(), dtype=np.float64)
    test = np.arange(len(y) - 24, len(y))
    assert res["test_index"] == test.tolist()
    by = {r["model"]: r for r in res["results"]}
    naive = np.sqrt(np.mean((y[test - 1] - y[test]) ** 2))
    seasonal = np.sqrt(np.mean((y[test - 12] - y[test]) ** 2))
    assert by["naive last value"]["rmse"] == pytest.approx(naive, rel=1e-12)
    assert by["seasonal naive (t-12)"]["rmse"] == pytest.approx(seasonal, rel=1e-12)
    learned = [r for r in res["results"] if r["framework"] in ("jax", "torch")]
    assert len(learned) == 4
    for r in learned:  # forecasts are positive, finite, and the RMSE is theirs
        f = np.asarray(r["forecast"])
        assert np.all(np.isfinite(f)) and np.all(f > 0)
        assert r["rmse"] == pytest.approx(np.sqrt(np.mean((f - y[test]) ** 2)), rel=1e-12)
    # Same checkpoint, same full batch: the frameworks agree to float32 rounding.
    for model in {r["model"] for r in learned}:
        jax_r, torch_r = (r for r in learned if r["model"] == model)
        assert jax_r["losses"] == pytest.approx(torch_r["losses"], rel=1e-4)


def test_charlm_tiny_perplexity_and_sample(tmp_path):
    res = run_tiny("charlm", tmp_path)
    assert [r["framework"] for r in res["results"]] == ["jax", "torch"]
    jax_r, torch_r = res["results"]
    for r in res["results"]:
        assert r["test_perplexity"] == pytest.approx(np.exp(r["test_nll_per_char"]), rel=1e-12)
        # Three tiny steps barely move a fresh model: near-uniform, far from degenerate.
        assert 2.0 < r["test_perplexity"] < 3 * res["vocab_size"]
        assert r["sample"].startswith(res["config"]["prompt"])
        assert len(r["sample"]) == len(res["config"]["prompt"]) + res["config"]["sample_chars"]
    # Same checkpoint, same windows: the two frameworks' losses agree to float32 rounding.
    assert jax_r["losses"] == pytest.approx(torch_r["losses"], rel=1e-4)
    assert jax_r["test_perplexity"] == pytest.approx(torch_r["test_perplexity"], rel=1e-4)
    assert (res["_out"] / "samples.txt").read_text().count("---") == 4


def test_why_recurrence_tiny_both_frameworks(tmp_path):
    res = run_tiny("why_recurrence", tmp_path)
    keys = {(r["task"], r["T"], r["model"], r["framework"]) for r in res["results"]}
    assert keys == {
        (t, T, m, f)
        for t in ("adding", "parity")
        for T in (5, 10)
        for m in ("gru", "ff")
        for f in ("jax", "torch")
    }
    by = {(r["task"], r["T"], r["model"], r["framework"]): r for r in res["results"]}
    for (task, T, m, _), r in by.items():  # same init, same batches -> same losses
        assert r["losses"] == pytest.approx(by[task, T, m, "torch"]["losses"], rel=1e-4, abs=1e-6)
    grads = res["input_gradient_by_distance_from_end"]
    assert set(grads) == {"gru/jax/init", "gru/jax/trained", "gru/torch/init", "gru/torch/trained"}
    np.testing.assert_allclose(grads["gru/jax/init"], grads["gru/torch/init"], rtol=1e-4, atol=1e-7)


def cartpole_episode_length(state, actions, max_steps: int) -> int:
    """Replay CartPole-v1 (gym's equations, Euler, float64) from ``state`` with
    ``actions``: the step at which the episode ends (termination or the cap)."""
    x, x_dot, theta, theta_dot = (float(v) for v in state)
    for t, a in enumerate(actions, start=1):
        force = 10.0 if a == 1 else -10.0
        cos, sin = np.cos(theta), np.sin(theta)
        temp = (force + 0.05 * theta_dot**2 * sin) / 1.1
        theta_acc = (9.8 * sin - cos * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos**2 / 1.1))
        x_acc = temp - 0.05 * theta_acc * cos / 1.1
        x, x_dot = x + 0.02 * x_dot, x_dot + 0.02 * x_acc
        theta, theta_dot = theta + 0.02 * theta_dot, theta_dot + 0.02 * theta_acc
        if abs(x) > 2.4 or abs(theta) > 12 * 2 * np.pi / 360 or t >= max_steps:
            return t
    return len(actions) + 1  # still running after the given actions


def test_recurrent_policy_tiny_returns_replay_and_resets(tmp_path):
    res = run_tiny("recurrent_policy", tmp_path)
    cfg = res["config"]
    max_steps = cfg["max_steps"]
    recs = {r["policy"]: r for r in res["results"]}
    assert set(recs) == {"lstm", "lstm_noreset", "lstm_mismatch", "mlp"}
    for r in recs.values():
        # Every step earns 1, so a return is an episode length in [1, max_steps].
        assert len(r["curve"]) == len(r["episodes"]) == cfg["updates"]
        assert all(1 <= v <= max_steps for v in r["curve"] if v is not None)
        assert r["env_steps"] == cfg["updates"] * cfg["envs"] * cfg["steps"]
        assert len(r["eval_returns"]) == cfg["eval_envs"]
        assert all(1 <= v <= max_steps and v == int(v) for v in r["eval_returns"])
        # The greedy episode of env 0, replayed with NumPy: same length as reported.
        rep = r["replay"]
        assert rep["return"] == r["eval_returns"][0] == len(rep["actions"])
        assert max(np.abs(rep["initial_state"])) <= 0.05
        assert cartpole_episode_length(rep["initial_state"], rep["actions"], max_steps) == len(
            rep["actions"]
        )
    # The training forward pass (one call over the rollout) reproduces the acting
    # logits (one step at a time) to float32 rounding, unless only acting resets.
    for kind in ("lstm", "lstm_noreset", "mlp"):
        assert recs[kind]["max_logit_diff_acting_vs_training"] < 1e-5
    assert recs["lstm_mismatch"]["max_logit_diff_acting_vs_training"] > 1e-4
    # Training the resetting LSTM's rollout without resets= gives other logits.
    assert recs["lstm"]["max_logit_diff_without_resets"] > 1e-4
    assert recs["mlp"]["max_logit_diff_without_resets"] is None


def test_recurrent_policy_resets_match_segments_and_steps():
    """The example's policy on a (T, N) sequence with ``resets`` (segments restart from
    zeros) equals the policy run on every segment on its own (the first from ``hx``,
    the others from zeros) and acting one step at a time."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(EXAMPLES))
    try:
        import recurrent_policy as rp
    finally:
        sys.path.remove(str(EXAMPLES))
    T, N, H = 12, 3, 8
    policy = rp.make_policy("lstm", H, seed=0)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.standard_normal((T, N, 2)), jnp.float32)
    hx = tuple(jnp.asarray(rng.standard_normal((1, N, H)), jnp.float32) for _ in range(2))
    resets = np.zeros((T, N), bool)
    resets[[0, 4, 5, 9], 0] = True  # a reset at t = 0 restarts from zeros too
    resets[7, 1] = True  # row 2: no reset
    logits, values, (h_n, c_n) = policy(obs, hx, jnp.asarray(resets))
    for n in range(N):
        starts = [0] + [t for t in range(1, T) if resets[t, n]] + [T]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            h0 = tuple(
                jnp.zeros((1, 1, H), jnp.float32) if resets[a, n] else s[:, n : n + 1] for s in hx
            )
            seg_logits, seg_values, (h, c) = policy(obs[a:b, n : n + 1], h0)
            np.testing.assert_allclose(logits[a:b, n], seg_logits[:, 0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(values[a:b, n], seg_values[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_n[:, n], h[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c_n[:, n], c[:, 0], rtol=1e-5, atol=1e-6)
    state, steps = hx, []
    for t in range(T):  # acting: one step at a time, the reset flags of that step
        step_logits, _, state = policy(obs[t : t + 1], state, jnp.asarray(resets[t : t + 1]))
        steps.append(step_logits[0])
    np.testing.assert_allclose(jnp.stack(steps), logits, rtol=1e-5, atol=1e-6)
    assert jax.tree.map(lambda a: a.shape, state) == ((1, N, H), (1, N, H))


# --------------------------------------------------------------------------- task generators


@pytest.fixture(scope="module")
def why():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import why_recurrence
    finally:
        sys.path.remove(str(EXAMPLES))
    return why_recurrence


@pytest.mark.parametrize("T", [2, 3, 7, 20])
def test_adding_problem_targets(why, T):
    x, lengths, y = why.make_task("adding", 50, T, 25, np.random.default_rng(T))
    assert x.shape == (50, 25, 2) and x.dtype == np.float32 and y.dtype == np.float32
    for n in range(50):
        marked = [t for t in range(25) if x[n, t, 1] == 1.0]
        assert lengths[n] == T and len(marked) == 2
        assert marked[0] < max(T // 2, 1) <= marked[1] < T  # one marker in each half
        assert y[n] == pytest.approx(
            float(x[n, marked[0], 0]) + float(x[n, marked[1], 0]), abs=1e-6
        )
        assert np.all(x[n, T:] == 0)


@pytest.mark.parametrize("T", [1, 4, 13])
def test_parity_targets(why, T):
    x, lengths, y = why.make_task("parity", 64, T, 16, np.random.default_rng(T))
    assert x.shape == (64, 16, 1) and y.dtype == np.int32
    for n in range(64):
        assert 1 <= lengths[n] <= T
        bits = [int(b) for b in x[n, : lengths[n], 0]]
        parity = 0
        for b in bits:
            parity ^= b
        assert y[n] == parity
        assert np.all(x[n, lengths[n] :] == 0)


# --------------------------------------------------------------------------- CLI and errors


@pytest.mark.parametrize("name", list(CASES))
def test_help(name, tmp_path):
    proc = run_example(name, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--epochs", "--hidden-size", "--framework", "--seed", "--out", "--tiny"):
        assert flag in proc.stdout


@pytest.mark.parametrize("name", list(CASES))
def test_unwritable_output_folder(name, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_example(name, "--tiny", "--out", str(blocker / "sub"), cwd=tmp_path / "cwd")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{name}.py: error: cannot write to output folder" in proc.stderr


@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("classify", ["--dataset", "NoSuchDataset"], "dataset 'NoSuchDataset' not found"),
        ("classify", ["--data-dir", "{tmp}/empty"], "dataset 'JapaneseVowels' not found"),
        (
            "classify",
            ["--framework", "torch", "--export", "{tmp}/m.jax"],
            "--export writes the JAX model",
        ),
        ("forecast", ["--csv", "{tmp}/missing.csv"], "cannot read series"),
        ("charlm", ["--source-dir", "{tmp}/nowhere"], "does not exist"),
        ("charlm", ["--heldout", "no_such_file.py"], "held-out file"),
    ],
)
def test_missing_data_is_a_clear_error(name, flags, message, tmp_path):
    flags = [f.format(tmp=tmp_path) for f in flags]
    proc = run_example(
        name,
        "--tiny",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
        *flags,
        cwd=tmp_path / "cwd",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0  # one line


def test_bad_flag_values_are_clear_errors(tmp_path):
    proc = run_example(
        "why_recurrence", "--models", "lstm,cnn", "--out", str(tmp_path / "o"), cwd=tmp_path / "cwd"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "--models must be a comma-separated subset of rnn,lstm,gru,min_gru,min_lstm,ff"
        in proc.stderr
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--framework", "torch"], "this example is JAX only"),
        (["--envs", "10", "--minibatches", "4"], "must be a multiple of --minibatches"),
        (["--policies", "lstm,gru"], "--policies must be a comma-separated subset of"),
        (["--updates", "0"], "--updates must be >= 1"),
    ],
)
def test_recurrent_policy_bad_flags(flags, message, tmp_path):
    out = tmp_path / "out"
    proc = run_example(
        "recurrent_policy", "--tiny", "--out", str(out), *flags, cwd=tmp_path / "cwd"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not out.exists()  # refused before anything was written
