"""The training loops and evaluation helpers of jaxseq.train and torchseq.train, each
against an independent reference: a hand-written optax loop (eager ``jax.grad``, no
TrainStep), a hand-written torch loop, NumPy, and one uncut forward pass.

Checked: learning-rate schedules (optax's cosine decay in JAX, ``LambdaLR`` with
``torchseq.train.cosine_decay`` in torch, and the two against each other), the per-step
``callback``, ``eval_fn`` and ``on_epoch_end`` with their values, the ``History``
(epoch records, compiled steps, timings), re-binding a compiled step to a fresh model
without recompiling, ``predict`` (eval mode, mode restored), the regression and language
model losses and evaluations, and NumPy batches in torch.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxseq.data
import jaxseq.interop
import torchseq.train as tt
from jaxseq import models as jm
from jaxseq import train as jt
from torchseq import models as tm

N, T, I, C = 12, 6, 2, 3
BATCH = 4
EPOCHS = 3


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=N).astype(np.int32)
    X = rng.normal(size=(N, T, I)) * jaxseq.data.lengths_to_mask(lengths, T)[:, :, None]
    y = np.digitize(X[:, :, 0].sum(1), [-0.5, 0.5]).astype(np.int64)
    return X, lengths, y


def epoch_batches(epoch: int):
    """Epoch ``epoch``'s batches: a new order every epoch (a function of the epoch)."""
    X, lengths, y = make_data()
    return list(jaxseq.data.batches(X, lengths, y, BATCH, seed=epoch))


def torch_classifier(cell: str = "gru") -> torch.nn.Module:
    torch.manual_seed(0)
    return tm.SequenceClassifier(I, C, hidden_size=3, cell=cell).double()


def twin(tmodel: torch.nn.Module) -> nnx.Module:
    """The JAX twin of ``tmodel``, built from a copy: ``from_torch`` may share memory with
    the torch parameters, which torch's optimizers then change in place."""
    return jaxseq.interop.from_torch(copy.deepcopy(tmodel))


def np_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


# --------------------------------------------------------------------------- JAX


def test_jax_fit_with_schedule_equals_hand_written_optax_loop():
    """fit(tx with a schedule) against an eager optax loop, value for value: step losses,
    callbacks, eval_fn after every epoch on the synced model, final parameters."""
    model, ref = twin(torch_classifier()), twin(torch_classifier())
    total = EPOCHS * len(epoch_batches(0))
    make_tx = lambda: optax.adam(optax.cosine_decay_schedule(3e-2, total))  # noqa: E731
    X, lengths, y = make_data()
    steps, records = [], []

    history = jt.fit(
        model,
        epoch_batches,
        make_tx(),
        epochs=EPOCHS,
        callback=lambda e, s, loss: steps.append((e, s, loss)),
        eval_fn=lambda m: {"all": np_cross_entropy(np.asarray(m(X, lengths)), y)},
        on_epoch_end=lambda e, record: records.append((e, dict(record))),
    )

    # Reference: plain optax and eager jax.grad over the split state, no TrainStep.
    graphdef, params, rest = nnx.split(ref, nnx.Param, ...)
    tx = make_tx()
    opt_state = tx.init(params)

    def loss_of(p, x, lb, yb):
        return jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p, rest)(x, lb), yb)
        )

    ref_losses, ref_evals = [], []
    for epoch in range(EPOCHS):
        for xb, lb, yb in epoch_batches(epoch):
            loss, grads = jax.value_and_grad(loss_of)(params, xb, lb, yb)
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ref_losses.append(float(loss))
        logits = np.asarray(nnx.merge(graphdef, params, rest)(X, lengths))
        ref_evals.append(np_cross_entropy(logits, y))

    np.testing.assert_allclose(history, ref_losses, rtol=1e-12)
    per_epoch = len(epoch_batches(0))
    assert [(e, s) for e, s, _ in steps] == [
        (k // per_epoch, k + 1) for k in range(EPOCHS * per_epoch)
    ]
    assert [loss for *_, loss in steps] == list(history)
    assert [e for e, _ in records] == list(range(EPOCHS))
    assert [r for _, r in records] == history.epochs
    for epoch, record in enumerate(history.epochs):
        assert record["train_loss"] == pytest.approx(
            np.mean(history[epoch * per_epoch : (epoch + 1) * per_epoch]), rel=1e-15
        )
        assert record["all"] == pytest.approx(ref_evals[epoch], rel=1e-12)
    got = jaxseq.interop.to_torch_state_dict(model)
    want = jaxseq.interop.to_torch_state_dict(nnx.merge(graphdef, params, rest))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-11, atol=1e-13)
    # The schedule ran to its end: the last updates were (nearly) zero.
    assert float(optax.cosine_decay_schedule(3e-2, total)(total)) == 0.0
    # Timings: one per step; the first step compiled, the others did not.
    assert len(history.step_seconds) == len(history) and history.compiled == [0]
    assert history.compiles == 1 and history.train_seconds == pytest.approx(
        sum(history.step_seconds)
    )
    assert history.steps_per_second == pytest.approx(
        (len(history) - 1) / sum(history.step_seconds[1:])
    )


def test_jax_train_step_rebinds_to_a_fresh_model_without_recompiling():
    """TrainStep.reset(model) + TrainStep.fit: a fresh model of the same architecture
    trains exactly as with its own new step, and nothing compiles again."""
    batches = epoch_batches(0)
    first = twin(torch_classifier())
    step = jt.make_train_step(first, optax.sgd(0.1), sync_model=False)
    step.fit(batches)
    compiles = step.compiles
    fresh = twin(torch_classifier())
    step.reset(fresh)
    history = step.fit(batches, epochs=2)
    assert step.compiles == compiles and history.compiled == []
    assert step.model is fresh
    alone = twin(torch_classifier())
    expected = jt.fit(alone, batches, optax.sgd(0.1), epochs=2)
    np.testing.assert_allclose(history, expected, rtol=1e-14)
    got, want = (jaxseq.interop.to_torch_state_dict(m) for m in (fresh, alone))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-13)
    # Another architecture (or mode) cannot reuse the compiled code.
    other = jm.SequenceClassifier(I, C, hidden_size=4, cell="gru", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="another graph"):
        step.reset(other)
    fresh.eval()
    with pytest.raises(ValueError, match="another graph"):
        step.reset(fresh)


def test_jax_history_records_each_compiling_step():
    """Two batch shapes (length buckets): exactly the first step of each shape compiles."""
    X, lengths, y = make_data()
    short = np.minimum(lengths[:BATCH], 3)
    batches = [(X[:BATCH, :3], short, y[:BATCH])] + [
        (X[k : k + BATCH], lengths[k : k + BATCH], y[k : k + BATCH]) for k in (BATCH, 2 * BATCH)
    ]
    assert [b[0].shape[1] for b in batches] == [3, T, T]
    model = twin(torch_classifier())
    history = jt.fit(model, batches, optax.sgd(0.1), epochs=2)
    assert history.compiled == [0, 1] and history.compiles == 2


# --------------------------------------------------------------------------- torch


def test_torch_fit_with_scheduler_equals_hand_written_loop():
    """fit(..., scheduler=LambdaLR(cosine_decay)) against the tutorial loop with the
    cosine written out, on NumPy batches: the same floats, step for step."""
    model = torch_classifier("lstm")
    ref = copy.deepcopy(model)
    total = EPOCHS * len(epoch_batches(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, tt.cosine_decay(total))
    X, lengths, y = make_data()
    steps, records = [], []
    history = tt.fit(
        model,
        epoch_batches,
        opt,
        epochs=EPOCHS,
        clip_norm=0.5,
        scheduler=sched,
        callback=lambda e, s, loss: steps.append((e, s, loss)),
        eval_fn=lambda m: tt.evaluate(m, [(X, lengths, y)]),
        on_epoch_end=lambda e, record: records.append((e, dict(record))),
    )

    ref_opt = torch.optim.Adam(ref.parameters(), lr=3e-2)
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, cosine)
    ref_losses, ref_evals = [], []
    for epoch in range(EPOCHS):
        ref.train()
        for xb, lb, yb in epoch_batches(epoch):
            ref_opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                ref(torch.from_numpy(xb), torch.from_numpy(lb).long()), torch.from_numpy(yb)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            ref_opt.step()
            ref_sched.step()
            ref_losses.append(float(loss.detach()))
        ref.eval()
        with torch.no_grad():
            logits = ref(torch.from_numpy(X), torch.from_numpy(lengths).long()).numpy()
        ref_evals.append(
            {"loss": np_cross_entropy(logits, y), "accuracy": np.mean(logits.argmax(1) == y)}
        )

    assert list(history) == ref_losses
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] == 0.0
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    per_epoch = len(epoch_batches(0))
    assert [(e, s) for e, s, _ in steps] == [
        (k // per_epoch, k + 1) for k in range(EPOCHS * per_epoch)
    ]
    assert [r for _, r in records] == history.epochs and [e for e, _ in records] == [0, 1, 2]
    for epoch, record in enumerate(history.epochs):
        assert record["train_loss"] == pytest.approx(
            np.mean(ref_losses[epoch * per_epoch : (epoch + 1) * per_epoch]), rel=1e-15
        )
        assert record["loss"] == pytest.approx(ref_evals[epoch]["loss"], rel=1e-12)
        assert record["accuracy"] == ref_evals[epoch]["accuracy"]
    assert model.training  # evaluate() restored the mode
    assert history.compiled == [] and len(history.step_seconds) == len(history)


@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_cosine_decay_is_optax_cosine_decay_schedule(alpha):
    schedule = optax.cosine_decay_schedule(1.0, 7, alpha=alpha)
    factor = tt.cosine_decay(7, alpha=alpha)
    steps = range(10)
    np.testing.assert_allclose(
        [factor(s) for s in steps], [float(schedule(s)) for s in steps], rtol=1e-14, atol=1e-15
    )
    with pytest.raises(ValueError, match="total_steps"):
        tt.cosine_decay(0)


def test_scheduled_training_agrees_across_frameworks():
    """Same checkpoint, same batches, Adam with cosine decay and clipping: torch's
    LambdaLR(cosine_decay) run and optax's cosine_decay_schedule run agree (float64)."""
    tmodel = torch_classifier("rnn")
    jmodel = twin(tmodel)
    total = EPOCHS * len(epoch_batches(0))
    opt = torch.optim.Adam(tmodel.parameters(), lr=3e-2)
    t_hist = tt.fit(
        tmodel,
        epoch_batches,
        opt,
        epochs=EPOCHS,
        clip_norm=0.5,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, tt.cosine_decay(total)),
    )
    j_hist = jt.fit(
        jmodel,
        epoch_batches,
        optax.adam(optax.cosine_decay_schedule(3e-2, total)),
        epochs=EPOCHS,
        clip_norm=0.5,
    )
    np.testing.assert_allclose(j_hist, t_hist, rtol=1e-9)
    j_sd = jaxseq.interop.to_torch_state_dict(jmodel)
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(j_sd[k], v.numpy(), rtol=1e-8, atol=1e-12)
    # The helpers say the same about the trained models.
    X, lengths, y = make_data()
    j_eval, t_eval = jt.evaluate(jmodel, [(X, lengths, y)]), tt.evaluate(tmodel, [(X, lengths, y)])
    assert j_eval["loss"] == pytest.approx(t_eval["loss"], rel=1e-9)
    assert j_eval["accuracy"] == t_eval["accuracy"]


def test_as_tensors():
    ints, floats, tensor = np.arange(3, dtype=np.int32), np.ones((2, 2), np.float32), torch.ones(2)
    a, b, c, d = tt.as_tensors((ints, floats[:, ::-1], tensor, 7))
    assert a.dtype == torch.int64 and a.tolist() == [0, 1, 2]
    assert b.dtype == torch.float32 and b.shape == (2, 2)
    assert c is tensor and d == 7


def test_torchseq_train_does_not_import_jax():
    code = (
        "import sys, torchseq.train; print(sorted(m for m in sys.modules if m.startswith('jax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- helpers, both


def test_predict_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    tmodel = tm.SequenceClassifier(I, C, hidden_size=3, dropout=0.5).double()
    jmodel = twin(tmodel)
    X, lengths, _ = make_data()
    t_out, j_out = tt.predict(tmodel, X, lengths), jt.predict(jmodel, X, lengths)
    assert isinstance(t_out, np.ndarray) and isinstance(j_out, np.ndarray)
    assert tmodel.training and jt._is_training(jmodel)  # restored
    tmodel.eval()
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(X), torch.from_numpy(lengths).long()).numpy()
    np.testing.assert_array_equal(t_out, expected)
    np.testing.assert_allclose(j_out, expected, rtol=1e-12)
    assert not tmodel.training
    tt.predict(tmodel, X, lengths)
    assert not tmodel.training  # eval stays eval


def test_regression_loss_and_evaluation_against_numpy():
    torch.manual_seed(0)
    tmodel = tm.Forecaster(I, hidden_size=3, cell="gru", output_size=1).double()
    jmodel = twin(tmodel)
    X, lengths, _ = make_data()
    target = np.random.default_rng(1).normal(size=N)
    with torch.no_grad():
        pred = tmodel(torch.from_numpy(X), torch.from_numpy(lengths).long()).numpy()  # (N, 1, 1)
    mse = float(np.mean((pred[:, 0, 0] - target) ** 2))
    batches = [(X[:5], lengths[:5], target[:5]), (X[5:], lengths[5:], target[5:])]
    for lib, model in ((jt, jmodel), (tt, tmodel)):
        result = lib.evaluate_regression(model, batches)
        assert result["mse"] == pytest.approx(mse, rel=1e-12)
        assert result["rmse"] == pytest.approx(math.sqrt(mse), rel=1e-12)
    t_loss = tt.regression_loss(tmodel, *tt.as_tensors((X, lengths, target)))
    j_loss = jt.regression_loss(jmodel, X, lengths, target)
    assert float(t_loss.detach()) == pytest.approx(mse, rel=1e-12)
    assert float(j_loss) == pytest.approx(mse, rel=1e-12)


def test_language_model_loss_and_chunked_evaluation_against_one_pass():
    """Reading the text in chunks with the state carried equals one uncut pass."""
    V, L, chunk = 7, 23, 5
    torch.manual_seed(0)
    tmodel = tm.CharLM(V, embed_dim=3, hidden_size=4, cell="lstm").double()
    jmodel = twin(tmodel)
    ids = np.random.default_rng(2).integers(0, V, size=L).astype(np.int32)
    scored = (L - 1) // chunk * chunk  # 20 predictions in 4 chunks
    with torch.no_grad():
        logits, _ = tmodel(torch.from_numpy(ids[None, :scored]).long())
    nll = np_cross_entropy(logits[0].numpy(), ids[1 : scored + 1]) * scored
    for lib, model in ((jt, jmodel), (tt, tmodel)):
        result = lib.evaluate_language_model(model, ids, chunk)
        assert result["tokens"] == scored
        assert result["nll"] == pytest.approx(nll, rel=1e-12)
        assert result["loss"] == pytest.approx(nll / scored, rel=1e-12)
        assert result["perplexity"] == pytest.approx(math.exp(nll / scored), rel=1e-12)
        with pytest.raises(ValueError, match="chunk"):
            lib.evaluate_language_model(model, ids[:chunk], chunk)
    x, y = ids[None, :-1].repeat(2, 0), ids[None, 1:].repeat(2, 0)
    expected = np_cross_entropy(
        tt.predict(tmodel, x)[0].reshape(-1, V), y.reshape(-1).astype(np.int64)
    )
    assert float(jt.language_model_loss(jmodel, x, y)) == pytest.approx(expected, rel=1e-12)
    t_loss = tt.language_model_loss(tmodel, *tt.as_tensors((x, y)))
    assert float(t_loss.detach()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("lib", [jt, tt], ids=["jax", "torch"])
def test_history_epoch_records(lib):
    history = lib.History([1.0, 2.0, 4.0])
    assert history == [1.0, 2.0, 4.0]  # still the list of step losses
    record = history.end_epoch(1, {"accuracy": 0.5})
    assert record == {"train_loss": 3.0, "accuracy": 0.5} and history.epochs == [record]
    assert math.isnan(history.end_epoch(3)["train_loss"])  # an empty epoch
    with pytest.raises(ValueError, match="train_loss"):
        history.end_epoch(0, {"train_loss": 1.0})
    history.step_seconds, history.compiled = [3.0, 1.0, 1.0], [0]
    assert history.steps_per_second == 1.0 and history.train_seconds == 5.0
