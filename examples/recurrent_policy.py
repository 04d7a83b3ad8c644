"""A recurrent policy with episode resets: PPO on CartPole with the velocities hidden.

The task: CartPole (the classic equations of gym's CartPole-v1: a pole on a cart, push
left or right with force 10 every 0.02 s, reward 1 per step, the episode ends when the
cart leaves |x| <= 2.4 or the pole leans past 12 degrees, and is cut at ``--max-steps``)
written in JAX, many environments stepped at once with ``jax.vmap`` and reset
automatically when their episode ends. The twist: the policy observes the **positions
only** (cart position x and pole angle theta), not the velocities. A policy that sees one
observation can't tell a pole that is falling from one that is rising, so it has to
remember the previous observations (partial observability). An LSTM can do that (it
can learn the difference of two consecutive positions, a velocity); a feedforward MLP
on the same observations can't.

Training: PPO with GAE (the structure of purejaxrl's PPO-RNN). Every update collects a
rollout of K = ``--steps`` steps from E = ``--envs`` environments, acting one step at
a time with the same module (a (1, E, I) input and the carried state); then trains
``--epochs`` PPO epochs on the whole rollout as one (K, E) sequence batch, split into
``--minibatches`` groups of environments. The whole update (rollout, GAE, every epoch
and Adam step) is one jitted function built from ``lax.scan``.

Why resets: a rollout of K steps holds the end of one episode and the start of the
next in the same row. The LSTM state must start from zeros at every new episode,
when acting (step by step) and when training (on the whole sequence). ``jaxseq.nn.LSTM``
does both with one call::

    out, hx_out = lstm(x, hx, resets=resets)

``x`` is the rollout (K, E, I), ``hx`` the state stored at the rollout's start,
``resets[t, n]`` True where env n starts a new episode at step t (its episode ended at
t - 1); every new episode starts from zeros (the default ``reset_hx``). The training
forward pass then reproduces the logits the policy computed while acting, step by step,
to float32 rounding (the table's last column); PPO's probability ratios start at 1 as
they must.

Policies compared (``--policies``), each with the same PPO settings and budget:

* ``lstm``: the LSTM with resets, acting and training (as above);
* ``lstm_noreset``: the same LSTM, its state never reset: it acts and trains as if the
  episodes of an env were one long stream, and every episode starts from the previous
  one's stale state (consistent, but leaky);
* ``lstm_mismatch``: resets when acting, none in training: the common bug. The training
  pass no longer reproduces the acting policy (its logit difference is of order 1 at
  the first steps of every episode after a reset), so PPO's ratios and clipping are
  computed against the wrong old policy there;
* ``mlp``: a feedforward policy on the same observations (no memory).

Each reports the mean return of the episodes that ended during training (curves), its
final value (mean ± std over the last ``--last`` updates), the return of the final policy
acting greedily on ``--eval-envs`` fresh episodes, wall time, env steps/s, and the
largest difference between acting and training logits (for ``lstm`` also what that
difference would be without ``resets=`` in training).

What to expect (defaults, seed 0): the LSTMs balance the pole for the whole 200 steps
when acting greedily, the MLP for about 40. On this task the two resetting mistakes cost
little return: every episode starts near upright and the LSTM re-estimates the
velocities from two positions within a few steps, so a stale state (or a few wrong
ratios) is forgotten quickly. What resets buy here is correctness (the training pass is
the acting policy; see the last column); on tasks whose memory spans an episode
(a cue shown once, a hidden per-episode parameter) a leaked state can mislead for
longer.

Outputs in ``--out``: ``table.md``, ``results.json`` and ``recurrent_policy.png``
(return against environment steps; the pole angle in one greedy episode of each final
policy). JAX only (``--framework jax``); one JAX device.

    python examples/recurrent_policy.py                 # 4 policies, ~3 min on 2 CPU cores
    python examples/recurrent_policy.py --policies lstm,mlp --updates 800 --max-steps 500
    python examples/recurrent_policy.py --tiny          # smoke test (numbers meaningless)
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from _common import (
    PARALLEL,
    ExampleError,
    Timer,
    base_parser,
    configure_devices,
    mean_spread,
    new_figure,
    parse_args,
    parse_list,
    prepare_out,
    progress,
    run_main,
    save_figure,
    save_results,
    show_table,
)

POLICIES = ("lstm", "lstm_noreset", "lstm_mismatch", "mlp")
NAMES = {
    "lstm": "LSTM with resets",
    "lstm_noreset": "LSTM without resets",
    "lstm_mismatch": "LSTM, resets when acting only",
    "mlp": "feedforward MLP",
}


def build_parser():
    p = base_parser(
        __doc__.split("\n\n")[0],
        epochs=4,
        hidden_size=64,
        framework="jax",
        out="runs/recurrent_policy",
    )
    p.set_defaults(devices=1)  # one training stream per policy: a single JAX device
    p.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated subset of {','.join(POLICIES)}",
    )
    p.add_argument("--updates", type=int, default=500, help="PPO updates (rollouts)")
    p.add_argument("--envs", type=int, default=64, help="environments E stepped in parallel")
    p.add_argument("--steps", type=int, default=64, help="rollout length K per update")
    p.add_argument(
        "--minibatches", type=int, default=4, help="minibatches per epoch (groups of envs)"
    )
    p.add_argument("--max-steps", type=int, default=200, help="episode length cap (truncation)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (annealed to 0)")
    p.add_argument("--gamma", type=float, default=0.99, help="discount")
    p.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda")
    p.add_argument("--clip", type=float, default=0.2, help="PPO clip range")
    p.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus")
    p.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
    p.add_argument("--clip-norm", type=float, default=0.5, help="gradient clipping by global norm")
    p.add_argument(
        "--last", type=int, default=20, help="final return: mean ± std over the last N updates"
    )
    p.add_argument("--eval-envs", type=int, default=64, help="greedy evaluation episodes")
    return p


TINY = {
    "updates": 3,
    "envs": 8,
    "steps": 16,
    "minibatches": 2,
    "epochs": 2,
    "hidden_size": 8,
    "max_steps": 50,
    "last": 2,
    "eval_envs": 4,
}


# --------------------------------------------------------------------------- environment

GRAVITY, MASS_CART, MASS_POLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = MASS_CART + MASS_POLE
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * math.pi / 360  # termination bounds
OBS_SIZE, N_ACTIONS = 2, 2  # observed (x, theta); actions push left (0) or right (1)


def cartpole_physics(state, action):
    """One Euler step of CartPole-v1: state (x, x_dot, theta, theta_dot) (4,), action 0/1."""
    import jax.numpy as jnp

    x, x_dot, theta, theta_dot = state[0], state[1], state[2], state[3]
    force = jnp.where(action == 1, FORCE, -FORCE)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (
        HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS)
    )
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    return jnp.stack(
        [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc]
    )


def terminated(state):
    """Whether the cart left the track or the pole fell (after a step)."""
    import jax.numpy as jnp

    return (jnp.abs(state[0]) > X_LIMIT) | (jnp.abs(state[2]) > THETA_LIMIT)


def observe(state):
    """The positions only, scaled to about [-1, 1]: (x / 2.4, theta / 12 degrees)."""
    import jax.numpy as jnp

    return jnp.stack([state[0] / X_LIMIT, state[2] / THETA_LIMIT])


def initial_state(key):
    """Every state variable uniform in [-0.05, 0.05], as gym."""
    import jax

    return jax.random.uniform(key, (4,), minval=-0.05, maxval=0.05)


def env_reset(key):
    """A fresh environment: ``{"physics", "t", "ret"}`` and its observation."""
    import jax.numpy as jnp

    physics = initial_state(key)
    return {"physics": physics, "t": jnp.int32(0), "ret": jnp.float32(0)}, observe(physics)


def env_step(key, env, action, max_steps):
    """Step one environment; on termination or truncation start a fresh episode.

    Returns ``(env, obs, reward, done, episode_return)``: ``obs`` of the new episode
    when ``done``, ``episode_return`` the finished episode's return (0 unless done)."""
    import jax
    import jax.numpy as jnp

    physics = cartpole_physics(env["physics"], action)
    t, ret = env["t"] + 1, env["ret"] + 1.0
    done = terminated(physics) | (t >= max_steps)
    fresh, fresh_obs = env_reset(key)
    stepped = {"physics": physics, "t": t, "ret": ret}
    env = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
    obs = jnp.where(done, fresh_obs, observe(physics))
    return env, obs, jnp.float32(1.0), done, jnp.where(done, ret, 0.0)


# --------------------------------------------------------------------------- policy


def make_policy(kind, hidden, seed):
    """The actor-critic (an ``nnx.Module``): encoder, core (LSTM or a dense layer), heads."""
    from flax import nnx

    import jaxseq.nn

    class Policy(nnx.Module):
        """obs -> tanh(Linear) -> LSTM or tanh(Linear) -> (logits (2,), value)."""

        def __init__(self, recurrent, rngs):
            ortho = nnx.initializers.orthogonal
            self.recurrent = recurrent
            self.encoder = nnx.Linear(OBS_SIZE, hidden, kernel_init=ortho(math.sqrt(2)), rngs=rngs)
            if recurrent:
                self.core = jaxseq.nn.LSTM(hidden, hidden, rngs=rngs)
            else:
                self.core = nnx.Linear(hidden, hidden, kernel_init=ortho(math.sqrt(2)), rngs=rngs)
            self.actor = nnx.Linear(hidden, N_ACTIONS, kernel_init=ortho(0.01), rngs=rngs)
            self.critic = nnx.Linear(hidden, 1, kernel_init=ortho(1.0), rngs=rngs)

        def __call__(self, obs, hx, resets=None):
            """obs (T, N, 2), hx ``(h, c)`` each (1, N, H), resets (T, N) bool or None
            -> logits (T, N, 2), values (T, N), the final hx. With resets, every new
            episode's segment starts from zeros (the stack's default)."""
            import jax.numpy as jnp

            z = jnp.tanh(self.encoder(obs))
            if self.recurrent:
                z, hx = self.core(z, hx, resets=resets)
            else:
                z = jnp.tanh(self.core(z))
            return self.actor(z), self.critic(z)[..., 0], hx

    return Policy(kind != "mlp", nnx.Rngs(seed))


def zero_state(n, hidden):
    """The LSTM state (h, c) of ``n`` rows at an episode start: zeros (1, n, H) each."""
    import jax.numpy as jnp

    return (jnp.zeros((1, n, hidden), jnp.float32), jnp.zeros((1, n, hidden), jnp.float32))


# --------------------------------------------------------------------------- PPO


def make_trainer(kind, model, args):
    """``(init, update)``: ``init(key) -> carry``; ``update(carry) -> (carry, metrics)``,
    one jitted PPO update (rollout, GAE, epochs x minibatches of Adam steps)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    E, K, M, H = args.envs, args.steps, args.minibatches, args.hidden_size
    # lstm_noreset never resets, lstm_mismatch only when acting; the MLP has no state.
    act_resets, train_resets = kind in ("lstm", "lstm_mismatch"), kind == "lstm"
    graphdef, params = nnx.split(model)
    n_grad_steps = args.updates * args.epochs * M
    schedule = optax.linear_schedule(args.lr, 0.0, n_grad_steps)
    tx = optax.chain(optax.clip_by_global_norm(args.clip_norm), optax.adam(schedule, eps=1e-5))
    v_reset = jax.vmap(env_reset)
    v_step = jax.vmap(functools.partial(env_step, max_steps=args.max_steps))

    def apply(params, obs, hx, resets, use_resets):
        return nnx.merge(graphdef, params)(obs, hx, resets if use_resets else None)

    def init(key):
        env, obs = v_reset(jax.random.split(key, E))
        first = jnp.ones((E,), bool)  # every env starts an episode
        return (params, tx.init(params), env, obs, first, zero_state(E, H), key)

    def act(params, carry, key):
        """One step of all envs: returns the new carry and the transition."""
        env, obs, reset, hx = carry
        k_act, k_env = jax.random.split(key)
        logits, value, hx = apply(params, obs[None], hx, reset[None], act_resets)
        logits, value = logits[0], value[0]
        action = jax.random.categorical(k_act, logits)
        logp = jax.nn.log_softmax(logits)[jnp.arange(E), action]
        env, next_obs, reward, done, ep_ret = v_step(jax.random.split(k_env, E), env, action)
        tr = {
            "obs": obs,
            "reset": reset,
            "action": action,
            "logp": logp,
            "logits": logits,
            "value": value,
            "reward": reward,
            "done": done,
            "ep_ret": ep_ret,
        }
        return (env, next_obs, done, hx), tr

    def gae(tr, last_value):
        def back(carry, t):
            adv, next_value = carry
            nonterminal = 1.0 - t["done"].astype(jnp.float32)
            delta = t["reward"] + args.gamma * next_value * nonterminal - t["value"]
            adv = delta + args.gamma * args.gae_lambda * nonterminal * adv
            return (adv, t["value"]), adv

        _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), tr, reverse=True)
        return adv, adv + tr["value"]

    def loss_fn(params, mb):
        logits, value, _ = apply(params, mb["obs"], mb["hx"], mb["reset"], train_resets)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, mb["action"][..., None], -1)[..., 0]
        ratio = jnp.exp(logp - mb["logp"])
        adv = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
        pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - args.clip, 1 + args.clip) * adv)
        v_clipped = mb["value"] + jnp.clip(value - mb["value"], -args.clip, args.clip)
        v_loss = 0.5 * jnp.maximum((value - mb["target"]) ** 2, (v_clipped - mb["target"]) ** 2)
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
        loss = pg.mean() + args.vf_coef * v_loss.mean() - args.ent_coef * entropy.mean()
        return loss, {"entropy": entropy.mean(), "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean()}

    def sgd_step(state, mb):
        params, opt_state = state
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

    def epoch(state, key, batch):
        perm = jax.random.permutation(key, E)

        def split(a, axis):  # env axis -> (M, ..., E/M, ...) minibatches of whole envs
            a = jnp.take(a, perm, axis=axis)
            a = jnp.moveaxis(a, axis, 0).reshape((M, E // M) + a.shape[:axis] + a.shape[axis + 1 :])
            return jnp.moveaxis(a, 1, axis + 1)

        return jax.lax.scan(sgd_step, state, jax.tree.map(lambda a: split(a, 1), batch))

    @jax.jit
    def update(carry):
        params, opt_state, env, obs, reset, hx0, key = carry
        key, k_roll, k_epochs = jax.random.split(key, 3)
        (env, obs, reset, hx), tr = jax.lax.scan(
            lambda c, k: act(params, c, k), (env, obs, reset, hx0), jax.random.split(k_roll, K)
        )
        _, last_value, _ = apply(params, obs[None], hx, reset[None], act_resets)
        adv, target = gae(tr, last_value[0])
        # The training forward pass on the whole rollout reproduces the acting logits.
        train_logits, _, _ = apply(params, tr["obs"], hx0, tr["reset"], train_resets)
        diffs = {"logit_diff": jnp.abs(train_logits - tr["logits"]).max()}
        if kind == "lstm":  # what training without resets= would see on the same rollout
            leaky_logits, _, _ = nnx.merge(graphdef, params)(tr["obs"], hx0, None)
            diffs["logit_diff_without_resets"] = jnp.abs(leaky_logits - tr["logits"]).max()
        batch = {k: tr[k] for k in ("obs", "reset", "action", "logp", "value")}
        batch.update(adv=adv, target=target, hx=hx0)
        (params, opt_state), stats = jax.lax.scan(
            lambda s, k: epoch(s, k, batch),
            (params, opt_state),
            jax.random.split(k_epochs, args.epochs),
        )
        metrics = {
            "return_sum": tr["ep_ret"].sum(),
            "episodes": tr["done"].sum(),
            **diffs,
            **{k: v.mean() for k, v in stats.items()},
        }
        return (params, opt_state, env, obs, reset, hx, key), metrics

    return init, update, graphdef


def evaluate(graphdef, params, n_envs, max_steps, hidden, key):
    """The final policy acting greedily (argmax) on ``n_envs`` fresh episodes, one episode
    each (no auto-reset): returns (R,), the initial states (R, 4), the actions
    (max_steps, R) and the physics trajectory (max_steps, R, 4)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = nnx.merge(graphdef, params)
    physics = jax.vmap(initial_state)(jax.random.split(key, n_envs))

    def step(carry, _):
        physics, hx, alive = carry
        logits, _, hx = model(jax.vmap(observe)(physics)[None], hx)
        action = jnp.argmax(logits[0], -1)
        nxt = jax.vmap(cartpole_physics)(physics, action)
        still = alive & ~jax.vmap(terminated)(nxt)
        return (nxt, hx, still), (action, alive, nxt)

    carry = (physics, zero_state(n_envs, hidden), jnp.ones((n_envs,), bool))
    _, (actions, alive, traj) = jax.lax.scan(step, carry, None, length=max_steps)
    return alive.sum(0).astype(np.float32), physics, actions, traj


# --------------------------------------------------------------------------- run


def train_policy(kind, args):
    """Train one policy; return its record (curves, final numbers, timings, a replay)."""
    import jax

    model = make_policy(kind, args.hidden_size, args.seed)
    init, update, graphdef = make_trainer(kind, model, args)
    carry = init(jax.random.key(args.seed))
    steps_per_update = args.envs * args.steps
    curve, episodes, diffs, leaky = [], [], [], []
    with Timer() as total:
        with Timer() as first:  # compiling, and the first update
            carry, m = update(carry)
            m = jax.device_get(m)
        history = [m]
        bar = progress(range(args.updates - 1), desc=f"{NAMES[kind]:>20}", disable=args.no_progress)
        for _ in bar:
            carry, m = update(carry)
            m = jax.device_get(m)
            history.append(m)
            if m["episodes"] and not args.no_progress:
                bar.set_postfix({"return": f"{m['return_sum'] / m['episodes']:.1f}"}, refresh=False)
    for m in history:
        n = int(m["episodes"])
        curve.append(float(m["return_sum"]) / n if n else float("nan"))
        episodes.append(n)
        diffs.append(float(m["logit_diff"]))
        if "logit_diff_without_resets" in m:
            leaky.append(float(m["logit_diff_without_resets"]))
    rest_s = total.seconds - first.seconds
    last = [r for r in curve[-args.last :] if np.isfinite(r)]
    returns, init_states, actions, traj = (
        np.asarray(a)
        for a in evaluate(
            graphdef,
            carry[0],
            args.eval_envs,
            args.max_steps,
            args.hidden_size,
            jax.random.key(args.seed + 1),
        )
    )
    L = int(returns[0])
    record = {
        "policy": kind,
        "name": NAMES[kind],
        "curve": curve,
        "episodes": episodes,
        "final_returns": last,
        "final_return": float(np.mean(last)) if last else float("nan"),
        "eval_returns": returns,
        "eval_return": float(returns.mean()),
        "train_s": total.seconds,
        "first_update_s": first.seconds,  # includes compiling
        "env_steps": args.updates * steps_per_update,
        "env_steps_per_s": (args.updates - 1) * steps_per_update / rest_s if rest_s > 0 else None,
        "max_logit_diff_acting_vs_training": max(diffs),
        "max_logit_diff_without_resets": max(leaky) if leaky else None,
        "losses": [float(m["loss"]) for m in history],
        "entropy": [float(m["entropy"]) for m in history],
        # One greedy episode (env 0) to replay: initial state, actions, its return.
        "replay": {"initial_state": init_states[0], "actions": actions[:L, 0], "return": L},
        "eval_theta_degrees": np.degrees(traj[:L, 0, 2]),
    }
    fin = f"{record['final_return']:.1f}" if last else "-"
    print(
        f"{NAMES[kind]:>20}: training return {fin} (last {args.last} updates), greedy "
        f"{record['eval_return']:.1f}, {total.seconds:.1f} s, acting vs training logits "
        f"{record['max_logit_diff_acting_vs_training']:.1e}"
        + (f" (without resets= {max(leaky):.1e})" if leaky else "")
    )
    return record


# --------------------------------------------------------------------------- report


def summarize(records, args):
    headers = [
        "policy",
        f"training return (last {args.last} updates)",
        f"greedy return ({args.eval_envs} episodes)",
        "train s",
        "compile + first update s",
        "env steps/s",
        "max abs logit diff, acting vs training",
    ]
    rows = []
    for r in records:
        diff = f"{r['max_logit_diff_acting_vs_training']:.1e}"
        if r["max_logit_diff_without_resets"] is not None:
            diff += f" (without resets=: {r['max_logit_diff_without_resets']:.1e})"
        rows.append(
            [
                r["name"],
                mean_spread(r["final_returns"], "{:.1f}") if r["final_returns"] else "-",
                f"{r['eval_return']:.1f} ± {np.std(r['eval_returns'], ddof=1):.1f}"
                if len(r["eval_returns"]) > 1
                else f"{r['eval_return']:.1f}",
                f"{r['train_s']:.1f}",
                f"{r['first_update_s']:.1f}",
                f"{r['env_steps_per_s']:.0f}" if r["env_steps_per_s"] else "-",
                diff,
            ]
        )
    caption = (
        f"CartPole with positions only (velocities hidden), episodes cut at {args.max_steps} "
        f"steps (the best return); PPO, {args.updates} updates of {args.steps} steps x "
        f"{args.envs} envs ({args.updates * args.steps * args.envs} env steps), {args.epochs} "
        f"epochs x {args.minibatches} minibatches, hidden {args.hidden_size}, seed {args.seed}; "
        f"training return: mean ± std over updates of the mean return of the episodes that "
        f"ended in them; greedy: mean ± std over fresh episodes; JAX {PARALLEL['devices']} "
        f"device; {os.cpu_count()} CPU cores"
    )
    return caption, headers, rows


def smooth(curve, window):
    """Moving average of the finite values (NaN where an update ended no episode)."""
    c = np.asarray(curve, dtype=np.float64)
    out = np.full_like(c, np.nan)
    for i in range(len(c)):
        w = c[max(0, i - window + 1) : i + 1]
        w = w[np.isfinite(w)]
        if w.size:
            out[i] = w.mean()
    return out


def plot(records, args, path):
    fig, axes = new_figure(1, 2)
    colors = {"lstm": "tab:blue", "lstm_noreset": "tab:orange", "lstm_mismatch": "tab:red"}
    colors["mlp"] = "tab:gray"
    steps = np.arange(1, args.updates + 1) * args.envs * args.steps
    for r in records:
        c = colors[r["policy"]]
        axes[0, 0].plot(steps, r["curve"], color=c, alpha=0.25, linewidth=0.8)
        axes[0, 0].plot(steps, smooth(r["curve"], 10), color=c, label=r["name"])
        theta = np.asarray(r["eval_theta_degrees"])
        axes[0, 1].plot(
            np.arange(1, len(theta) + 1), theta, color=c, label=f"{r['name']} ({len(theta)} steps)"
        )
    axes[0, 0].set(
        xlabel="environment steps",
        ylabel="mean episode return",
        title="training (thin: per update; thick: moving average)",
    )
    axes[0, 0].legend(fontsize=8)
    for s in (-12, 12):
        axes[0, 1].axhline(s, color="black", linestyle=":", linewidth=1)
    axes[0, 1].set(
        xlabel="step",
        ylabel="pole angle (degrees)",
        title="one greedy episode of each final policy (it ends at ±12°)",
    )
    axes[0, 1].legend(fontsize=8)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def check_args(args):
    if args.framework != "jax":
        raise ExampleError("this example is JAX only: use --framework jax")
    positive = ("updates", "envs", "steps", "minibatches", "epochs", "hidden_size", "max_steps")
    positive += ("last", "eval_envs")
    bad = [f"--{k.replace('_', '-')}" for k in positive if getattr(args, k) < 1]
    if bad:
        raise ExampleError(f"{', '.join(bad)} must be >= 1")
    if args.envs % args.minibatches:
        raise ExampleError(
            f"--envs ({args.envs}) must be a multiple of --minibatches ({args.minibatches})"
        )


def main(argv=None):
    args = parse_args(build_parser(), argv, TINY)
    configure_devices(args)  # before any JAX use
    kinds = parse_list(args.policies, POLICIES, "--policies")
    check_args(args)
    out = prepare_out(args.out)  # fail early, before any training
    print(
        f"CartPole, positions only: {args.envs} envs x {args.steps} steps per update, "
        f"{args.updates} updates ({args.updates * args.envs * args.steps} env steps) per "
        f"policy; episodes cut at {args.max_steps} steps"
    )
    records = [train_policy(kind, args) for kind in kinds]
    caption, headers, rows = summarize(records, args)
    show_table(caption, headers, rows)
    png = plot(records, args, out / "recurrent_policy.png")
    results = {
        "config": vars(args),
        "env": {
            "name": "CartPole-v1 dynamics, observation (x / 2.4, theta / 12 degrees)",
            "max_steps": args.max_steps,
            "x_limit": X_LIMIT,
            "theta_limit": THETA_LIMIT,
        },
        "results": records,
    }
    save_results(out, "recurrent_policy", caption, headers, rows, results, also=[png])


if __name__ == "__main__":
    run_main(main)
