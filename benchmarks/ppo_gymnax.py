"""PPO with a recurrent policy on a gymnax memory task: jaxseq's GRU against the Flax cell scan.

The recurrent core that JAX reinforcement-learning code copies (purejaxrl's PPO-RNN,
``ScannedRNN``) is a Flax linen ``GRUCell`` under ``nn.scan``, its carry reset with
``jnp.where(reset, zeros, carry)`` at each step. This benchmark trains the same PPO agent
twice on a gymnax task, once with that core (``flax``) and once with ``jaxseq.linen.GRU``
called with ``resets=`` (``jaxseq``), and compares:

* **returns**: the mean return of the episodes that ended in each update. The two agents
  start from the same weights (the Flax cell's initial weights converted exactly with
  ``jaxseq.interop.from_flax_cell``), the same environments and the same random numbers,
  so their curves differ only through float32 rounding;
* **env-steps per second** of the whole training (rollouts, GAE and every PPO epoch in one
  jitted ``lax.scan``; compile time excluded);
* **update**: one PPO update's epochs on a stored rollout (forward and backward through the
  whole (T, N) rollout, ``--epochs`` x ``--minibatches`` Adam steps);
* **act**: one jitted policy step for all environments (an agent acting).

Times are medians of ``--repeats`` interleaved rounds. Writes ``ppo_gymnax.json``,
``ppo_gymnax.md`` and ``ppo_gymnax.png`` into ``--out``.

    python -m benchmarks.ppo_gymnax [--env MemoryChain-bsuite] [--updates 200] [--out DIR]

Needs the ``rl`` extra (gymnax). Numbers mean something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxseq
from benchmarks.acting import time_call
from jaxseq.interop import from_flax_cell

CORES = ("flax", "jaxseq")


class _ResetGRUStep(nn.Module):
    """One step of the Flax core: the carry restarts from zeros where ``reset``."""

    hidden: int

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: tuple[jax.Array, jax.Array]):
        x, reset = inputs
        carry = jnp.where(reset[:, None], jnp.zeros_like(carry), carry)
        return nn.GRUCell(self.hidden, name="cell")(carry, x)


_ScannedGRU = nn.scan(
    _ResetGRUStep,
    variable_broadcast="params",
    split_rngs={"params": False},
    in_axes=0,
    out_axes=0,
)


class Policy(nn.Module):
    """Embedding -> GRU core -> actor and critic heads, on (T, N) sequences.

    ``core="flax"``: the scanned ``GRUCell``; ``core="jaxseq"``: ``jaxseq.linen.GRU``
    with ``resets=`` (its state (1, N, H), the Flax core's (N, H)).
    """

    actions: int
    hidden: int
    core: str

    @nn.compact
    def __call__(self, h: jax.Array, obs: jax.Array, resets: jax.Array):
        x = nn.relu(nn.Dense(self.hidden, name="embed")(obs))
        if self.core == "flax":
            h, y = _ScannedGRU(self.hidden, name="core")(h, (x, resets))
        else:
            y, h = jaxseq.linen.GRU(self.hidden, name="core")(x, h, resets=resets)
        logits = nn.Dense(self.actions, name="pi_out")(nn.relu(nn.Dense(self.hidden)(y)))
        value = nn.Dense(1, name="v_out")(nn.relu(nn.Dense(self.hidden)(y)))[..., 0]
        return h, logits, value


def flax_to_jaxseq(params: Any) -> Any:
    """The ``flax`` policy's parameters as the ``jaxseq`` policy's: the core's GRUCell
    converted exactly (linen's GRUCell is torch's GRU with ``b_hr = b_hz = 0``)."""
    out = dict(params["params"])
    out["core"] = from_flax_cell(params["params"]["core"]["cell"])
    return {"params": out}


class Rollout(NamedTuple):
    obs: jax.Array  # (T, N, O)
    resets: jax.Array  # (T, N) bool: the step starts a new episode
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    ret: jax.Array  # the return of an episode ending at the step, else 0


def make_agent(env_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The jitted pieces for both cores: ``init``, ``train`` (the whole training),
    ``update`` (the PPO epochs on one rollout), ``act`` (one policy step)."""
    import gymnax

    env, env_params = gymnax.make(env_name)
    if args.memory_length is not None:  # MemoryChain: the steps between the cue and the answer
        if not hasattr(env_params, "memory_length"):
            raise SystemExit(f"--memory-length: {env_name} has no memory_length parameter")
        env_params = env_params.replace(memory_length=args.memory_length)
    n_actions = env.action_space(env_params).n
    N, T = args.envs, args.steps
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(args.lr, eps=1e-5))
    policies = {core: Policy(n_actions, args.hidden, core) for core in CORES}

    def zeros_h(core: str) -> jax.Array:
        return jnp.zeros((N, args.hidden) if core == "flax" else (1, N, args.hidden))

    def init(key: jax.Array) -> dict[str, Any]:
        k_net, k_env, k_run = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_env, N), env_params
        )
        p = policies["flax"].init(k_net, zeros_h("flax"), obs[None], jnp.zeros((1, N), bool))
        params = {"flax": p, "jaxseq": flax_to_jaxseq(p)}
        start = (env_state, obs, jnp.ones((N,), bool), jnp.zeros((N,)), k_run)
        return {core: (params[core], tx.init(params[core]), zeros_h(core), start) for core in CORES}

    def rollout(core, params, h, start):
        policy = policies[core]

        def step(carry, _):
            env_state, obs, reset, h, acc, key = carry
            key, k_act, k_env = jax.random.split(key, 3)
            h, logits, value = policy.apply(params, h, obs[None], reset[None])
            action = jax.random.categorical(k_act, logits[0])
            logp = jax.nn.log_softmax(logits[0])[jnp.arange(N), action]
            # gymnax steps and resets each env at the end of its episode (auto-reset)
            obs2, env_state, reward, terminated, truncated, _ = jax.vmap(
                env.step, in_axes=(0, 0, 0, None)
            )(jax.random.split(k_env, N), env_state, action, env_params)
            done = jnp.logical_or(terminated, truncated)
            acc = acc + reward  # the running return of each env's episode
            out = Rollout(obs, reset, action, logp, value[0], reward, done, acc * done)
            return (env_state, obs2, done, h, acc * (1 - done), key), out

        env_state, obs, reset, acc, key = start
        (env_state, obs, reset, h_end, acc, key), ro = jax.lax.scan(
            step, (env_state, obs, reset, h, acc, key), None, T
        )
        _, _, last_value = policy.apply(params, h_end, obs[None], reset[None])
        return ro, h_end, (env_state, obs, reset, acc, key), last_value[0]

    def advantages(ro: Rollout, last_value: jax.Array):
        def back(carry, t):
            gae, next_value = carry
            mask = 1.0 - t.done
            delta = t.reward + args.gamma * next_value * mask - t.value
            gae = delta + args.gamma * args.lam * mask * gae
            return (gae, t.value), gae

        _, adv = jax.lax.scan(back, (jnp.zeros(N), last_value), ro, reverse=True)
        return adv, adv + ro.value

    def update(core, params, opt_state, h0, ro: Rollout, last_value, key):
        policy = policies[core]
        adv, target = advantages(ro, last_value)

        def loss_fn(p, h, batch):
            ro_b, adv_b, target_b = batch
            _, logits, value = policy.apply(p, h, ro_b.obs, ro_b.resets)
            logp_all = jax.nn.log_softmax(logits)
            logp = jnp.take_along_axis(logp_all, ro_b.action[..., None], -1)[..., 0]
            ratio = jnp.exp(logp - ro_b.logp)
            a = (adv_b - adv_b.mean()) / (adv_b.std() + 1e-8)
            pg = -jnp.minimum(ratio * a, jnp.clip(ratio, 0.8, 1.2) * a).mean()
            v_clip = ro_b.value + jnp.clip(value - ro_b.value, -0.2, 0.2)
            v_loss = 0.5 * jnp.maximum((value - target_b) ** 2, (v_clip - target_b) ** 2).mean()
            entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
            return pg + 0.5 * v_loss - 0.01 * entropy

        def epoch(carry, k):
            params, opt_state = carry
            perm = jax.random.permutation(k, N).reshape(args.minibatches, -1)

            def minibatch(carry, idx):
                params, opt_state = carry
                take = partial(jnp.take, indices=idx, axis=1)
                batch = (jax.tree.map(take, ro), take(adv), take(target))
                h = jnp.take(h0, idx, axis=0 if core == "flax" else 1)
                grads = jax.grad(loss_fn)(params, h, batch)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            return jax.lax.scan(minibatch, (params, opt_state), perm)[0], None

        keys = jax.random.split(key, args.epochs)
        return jax.lax.scan(epoch, (params, opt_state), keys)[0]

    def train(core, state, n_updates):
        def one(state, _):
            params, opt_state, h, start = state
            ro, h_end, start, last_value = rollout(core, params, h, start)
            key, k_upd = jax.random.split(start[-1])
            params, opt_state = update(core, params, opt_state, h, ro, last_value, k_upd)
            done = ro.done.sum()
            mean_ret = jnp.where(done > 0, ro.ret.sum() / jnp.maximum(done, 1), jnp.nan)
            return (params, opt_state, h_end, start[:-1] + (key,)), mean_ret

        return jax.lax.scan(one, state, None, n_updates)

    def act(core, params, h, obs, reset):
        return policies[core].apply(params, h, obs[None], reset[None])

    jit_train = {c: jax.jit(partial(train, c), static_argnums=1) for c in CORES}
    jit_update = {c: jax.jit(partial(update, c)) for c in CORES}
    jit_rollout = {c: jax.jit(partial(rollout, c)) for c in CORES}
    jit_act = {c: jax.jit(partial(act, c)) for c in CORES}
    return {
        "init": init,
        "train": jit_train,
        "update": jit_update,
        "rollout": jit_rollout,
        "act": jit_act,
        "n_actions": n_actions,
    }


def _waited(fn, *a) -> Any:
    return jax.block_until_ready(fn(*a))


def run(args: argparse.Namespace) -> dict[str, Any]:
    agent = make_agent(args.env, args)
    state = agent["init"](jax.random.key(args.seed))
    steps_per_update = args.envs * args.steps
    result: dict[str, Any] = {"curves": {}, "sps": {}, "update_ms": {}, "act_us": {}}
    # Training: compiled ahead of time, then timed from the first update to the last.
    compiled = {c: agent["train"][c].lower(state[c], args.updates).compile() for c in CORES}
    for core in CORES:
        t = time.perf_counter()
        _, curve = jax.block_until_ready(compiled[core](state[core]))
        wall = time.perf_counter() - t
        result["curves"][core] = np.asarray(curve).tolist()
        result["sps"][core] = args.updates * steps_per_update / wall
    # Update and act on the same stored rollout / state, interleaved rounds.
    update_fn, act_fn = {}, {}
    for core in CORES:
        params, opt_state, h, start = state[core]
        ro, _, (_, obs, reset, _, _), last_value = agent["rollout"][core](params, h, start)
        upd_args = (params, opt_state, h, ro, last_value, jax.random.key(1))
        update_fn[core] = partial(_waited, agent["update"][core], *upd_args)
        act_fn[core] = partial(_waited, agent["act"][core], params, h, obs, reset)
        update_fn[core]()  # compile
        act_fn[core]()
    upd: dict[str, list[float]] = {c: [] for c in CORES}
    acts: dict[str, list[float]] = {c: [] for c in CORES}
    for r in range(args.repeats):
        for core in CORES if r % 2 == 0 else CORES[::-1]:
            upd[core].append(time_call(update_fn[core], 1))
            acts[core].append(time_call(act_fn[core], 50))
    for core in CORES:
        result["update_ms"][core] = 1e3 * statistics.median(upd[core])
        result["act_us"][core] = 1e6 * statistics.median(acts[core])
    return result


def report(args: argparse.Namespace, result: dict[str, Any], out: Path) -> str:
    curves = {c: np.asarray(v, float) for c, v in result["curves"].items()}
    last = max(1, args.updates // 10)
    lines = [
        f"# PPO on {args.env}"
        + (f" (memory length {args.memory_length})" if args.memory_length else "")
        + ": jaxseq.linen.GRU vs the Flax GRUCell scan",
        "",
        f"{args.updates} updates of {args.envs} envs x {args.steps} steps, hidden {args.hidden}, "
        f"{args.epochs} epochs x {args.minibatches} minibatches, seed {args.seed}, float32; "
        f"times: medians of {args.repeats} interleaved rounds; ratio = jaxseq / flax.",
        "",
        "| | flax | jaxseq | ratio |",
        "|---|---|---|---|",
    ]

    def row(name: str, key: str, fmt: str) -> None:
        f, j = result[key]["flax"], result[key]["jaxseq"]
        lines.append(f"| {name} | {f:{fmt}} | {j:{fmt}} | {j / f:.2f} |")

    row("env-steps/s, whole training", "sps", ".0f")
    row("one PPO update, ms", "update_ms", ".1f")
    row("one policy step, µs", "act_us", ".1f")
    f_ret = np.nanmean(curves["flax"][-last:])
    j_ret = np.nanmean(curves["jaxseq"][-last:])
    lines.append(f"| mean return, last {last} updates | {f_ret:.3f} | {j_ret:.3f} | |")
    both = np.isfinite(curves["flax"]) & np.isfinite(curves["jaxseq"])
    first_diff = np.flatnonzero(curves["flax"][both] != curves["jaxseq"][both])
    n_same = int(first_diff[0]) if first_diff.size else args.updates
    same = f"equal in the first {n_same} of {args.updates} updates" + (
        ", then float32 rounding lets them drift apart" if first_diff.size else ""
    )
    lines += [
        "",
        f"Mean returns of the two agents (same initial weights, same random numbers): {same}.",
        "",
        f"Machine: {platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "ppo_gymnax.md").write_text(text)
    (out / "ppo_gymnax.json").write_text(json.dumps({"args": vars(args), **result}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for core in CORES:
        ax.plot(curves[core], label=f"{core} ({result['sps'][core]:.0f} env-steps/s)")
    title = args.env + (f", memory length {args.memory_length}" if args.memory_length else "")
    ax.set(xlabel="PPO update", ylabel="mean return of finished episodes", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ppo_gymnax.png", dpi=100)
    plt.close(fig)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="MemoryChain-bsuite")
    p.add_argument(
        "--memory-length",
        type=int,
        default=None,
        help="MemoryChain's memory length (default: the environment's, 5)",
    )
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--out", default="runs/ppo_gymnax")
    args = p.parse_args(argv)
    if args.envs % args.minibatches:
        p.error(f"--envs {args.envs} must be a multiple of --minibatches {args.minibatches}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(report(args, run(args), out))


if __name__ == "__main__":
    main()
