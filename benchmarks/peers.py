"""The JAX libraries a user would pick instead of jaxseq, each used as its docs teach.

Builders for :mod:`benchmarks.run` (same contract as its ``build_*``: ``{mode: callable}``
and an info dict), for the same float32 task (input ``(T, B, I)`` time-major, lengths in
[T/2, T], loss ``mean(out**2)`` with the outputs on padding zeroed):

* ``flax_nnx``: ``nnx.RNN`` over ``nnx.OptimizedLSTMCell`` / ``nnx.GRUCell`` /
  ``nnx.SimpleCell`` with ``seq_lengths``; split once into graph and state, and the step
  is ``jax.jit`` of a function that merges them (NNX's documented fast pattern);
* ``equinox``: ``eqx.nn.LSTMCell`` / ``eqx.nn.GRUCell`` in a masked ``lax.scan`` per
  sequence, ``vmap``-ed over the batch (Equinox has no Elman cell: no RNN row);
* ``keras``: Keras 3 on the JAX backend, ``LSTM`` / ``GRU`` / ``SimpleRNN`` with
  ``return_sequences=True`` and a mask, through ``stateless_call`` under ``jax.jit``.

``streaming`` times one step at a time at B=1 (a decoder or an online filter): jaxseq's
cell modules against ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``.

Keras picks its backend at import: this module sets ``KERAS_BACKEND=jax`` before it
imports keras (an explicit other choice in the environment is an error).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

PEERS = ("flax_nnx", "equinox", "keras")


class Unsupported(ValueError):
    """A peer that cannot run a config (e.g. no Elman cell in Equinox)."""


def masked_loss(out, mask):
    import jax.numpy as jnp

    out = jnp.where(mask, out, jnp.zeros_like(out))
    return jnp.mean(out * out)


def programs(loss_fn, infer_fn, params, x, lengths, compile_info) -> tuple[dict, dict]:
    """The three timed programs (``train``: loss, gradients and an SGD update; ``fwd``;
    ``infer``) from a ``loss_fn(params, x, lengths)`` and ``infer_fn``, jitted, with the
    train step's compile info (``compile_info`` is :func:`benchmarks.run._compile_info`).
    Shared by the Flax linen builder of :mod:`benchmarks.run` and the peers here."""
    import jax

    @jax.jit
    def train_step(p, x, lengths):
        loss, g = jax.value_and_grad(loss_fn)(p, x, lengths)
        return loss, jax.tree.map(lambda a, b: a - 1e-3 * b, p, g)

    fwd_j = jax.jit(loss_fn)
    infer_j = jax.jit(infer_fn)
    info = {"compile": compile_info(train_step, (params, x, lengths))}
    info["memory_bytes"] = {
        "train": info["compile"]["temp_plus_output_bytes"],
        "kind": "XLA temp + output",
    }

    def train():
        return float(train_step(params, x, lengths)[0])

    def fwd():
        return float(fwd_j(params, x, lengths))

    def infer():
        return float(jax.block_until_ready(infer_j(params, x, lengths)).ravel()[0])

    return {"train": train, "fwd": fwd, "infer": infer}, info


def batch_major(cfg, x_np, lengths_np):
    import jax.numpy as jnp

    x = jnp.asarray(np.swapaxes(x_np, 0, 1))  # (B, T, I): the peers' native layout
    lengths = jnp.asarray(lengths_np, jnp.int32)
    mask = jnp.arange(cfg.T).reshape(1, cfg.T, 1) < lengths.reshape(cfg.B, 1, 1)
    return x, lengths, mask


def _single_layer(name: str, cfg) -> None:
    if cfg.layers != 1 or cfg.bidirectional:
        raise Unsupported(f"{name}: only one unidirectional layer is benchmarked")


def build_nnx(kind: str, cfg, x_np, lengths_np, compile_info) -> tuple[dict, dict]:
    """Flax NNX ``nnx.RNN`` with ``seq_lengths``."""
    from flax import nnx

    _single_layer("flax_nnx", cfg)
    cls = {"rnn": nnx.SimpleCell, "lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}[kind]
    model = nnx.RNN(cls(cfg.I, cfg.H, rngs=nnx.Rngs(0)), rngs=False)  # no dropout: no RNG
    x, lengths, mask = batch_major(cfg, x_np, lengths_np)
    # Without RNGs in the layer, the zero initial carry is made once and passed in.
    carry = model.cell.initialize_carry((cfg.B, cfg.I), nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def infer_fn(p, x, lengths):
        layer = nnx.merge(graphdef, p, rest)
        return layer(x, initial_carry=carry, seq_lengths=lengths)

    def loss_fn(p, x, lengths):
        return masked_loss(infer_fn(p, x, lengths), mask)

    return programs(loss_fn, infer_fn, params, x, lengths, compile_info)


def build_equinox(kind: str, cfg, x_np, lengths_np, compile_info) -> tuple[dict, dict]:
    """Equinox cells in a masked ``lax.scan``, ``vmap``-ed over the batch."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    _single_layer("equinox", cfg)
    if kind == "rnn":
        raise Unsupported("equinox has no Elman RNN cell")
    cls = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[kind]
    params, static = eqx.partition(cls(cfg.I, cfg.H, key=jax.random.key(0)), eqx.is_array)
    x, lengths, mask = batch_major(cfg, x_np, lengths_np)
    steps = jnp.arange(cfg.T)

    def one_sequence(p, xs, length):
        cell = eqx.combine(p, static)
        h0 = jnp.zeros((cfg.H,), xs.dtype)
        init = (h0, h0) if kind == "lstm" else h0

        def step(carry, inp):
            xt, t = inp
            new = cell(xt, carry)
            carry = jax.tree.map(lambda n, o: jnp.where(t < length, n, o), new, carry)
            h = carry[0] if kind == "lstm" else carry
            return carry, jnp.where(t < length, h, jnp.zeros_like(h))

        return jax.lax.scan(step, init, (xs, steps))[1]

    def infer_fn(p, x, lengths):
        return jax.vmap(one_sequence, in_axes=(None, 0, 0))(p, x, lengths)

    def loss_fn(p, x, lengths):
        return masked_loss(infer_fn(p, x, lengths), mask)

    return programs(loss_fn, infer_fn, params, x, lengths, compile_info)


def _keras():
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise RuntimeError(f"KERAS_BACKEND={backend!r}: the keras peer needs 'jax'")
    import keras

    return keras


def build_keras(kind: str, cfg, x_np, lengths_np, compile_info) -> tuple[dict, dict]:
    """Keras 3 ``LSTM`` / ``GRU`` / ``SimpleRNN`` (JAX backend) via ``stateless_call``."""
    keras = _keras()
    _single_layer("keras", cfg)
    keras.utils.set_random_seed(0)
    cls = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    layer = cls[kind](cfg.H, return_sequences=True)
    layer.build((cfg.B, cfg.T, cfg.I))
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]
    x, lengths, mask = batch_major(cfg, x_np, lengths_np)

    def infer_fn(p, x, lengths):
        import jax.numpy as jnp

        step_mask = jnp.arange(cfg.T)[None, :] < lengths[:, None]  # (B, T), Keras's mask
        out, _ = layer.stateless_call(p, fixed, x, mask=step_mask)
        return out

    def loss_fn(p, x, lengths):
        return masked_loss(infer_fn(p, x, lengths), mask)

    return programs(loss_fn, infer_fn, trainable, x, lengths, compile_info)


BUILDERS = {"flax_nnx": build_nnx, "equinox": build_equinox, "keras": build_keras}


# --------------------------------------------------------------------------- streaming


def streaming(kind: str, I: int, H: int, steps: int = 200, repeats: int = 15) -> dict[str, Any]:
    """Per-step latency (microseconds, median over ``repeats`` runs of ``steps`` steps) of
    feeding one input at a time at B=1, the state carried from step to step:

    * ``jaxseq_module``: ``jaxseq.nn.{kind}Cell`` split once with ``nnx.split``; the step is
      ``jax.jit`` of a function that merges graph and state and calls the module;
    * ``jaxseq_nnx_jit``: the module called through ``nnx.jit`` (the simplest code, which
      pays NNX's graph traversal on every call);
    * ``torch``: ``torch.nn.{kind}Cell`` under ``torch.inference_mode``.

    Every framework's last state is checked against the others (same weights).
    """
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import jaxseq
    import jaxseq.interop

    name = {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}[kind]
    torch.manual_seed(0)
    tcell = getattr(torch.nn, name)(I, H)
    jcell = getattr(jaxseq.nn, name)(I, H, rngs=nnx.Rngs(0))
    jaxseq.interop.load_torch_state_dict(jcell, tcell.state_dict())
    xs = np.random.default_rng(0).standard_normal((steps, 1, I)).astype(np.float32)
    txs = torch.from_numpy(xs)
    jxs = [jnp.asarray(x) for x in xs]
    zeros = jnp.zeros((1, H), jnp.float32)
    h0 = (zeros, zeros) if kind == "lstm" else zeros
    graphdef, state = nnx.split(jcell)

    @jax.jit
    def functional(state, x, h):
        return nnx.merge(graphdef, state)(x, h)

    @nnx.jit
    def module_step(cell, x, h):
        return cell(x, h)

    def run_functional():
        h = h0
        for x in jxs:
            h = functional(state, x, h)
        return jax.block_until_ready(h)

    def run_nnx_jit():
        h = h0
        for x in jxs:
            h = module_step(jcell, x, h)
        return jax.block_until_ready(h)

    def run_torch():
        h = None
        with torch.inference_mode():
            for x in txs:
                h = tcell(x, h)
        return h

    fns = {"jaxseq_module": run_functional, "jaxseq_nnx_jit": run_nnx_jit, "torch": run_torch}
    last = {k: f() for k, f in fns.items()}  # warm-up (compiles) and the values
    ref = np.asarray(last["torch"][0] if kind == "lstm" else last["torch"])
    for k in ("jaxseq_module", "jaxseq_nnx_jit"):
        got = np.asarray(last[k][0] if kind == "lstm" else last[k])
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"{k}: last state differs from torch's")
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) / steps * 1e6)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "kind": kind,
        "I": I,
        "H": H,
        "steps": steps,
        "median_us": med,
        "ratio_vs_torch": {k: med[k] / med["torch"] for k in fns if k != "torch"},
    }
