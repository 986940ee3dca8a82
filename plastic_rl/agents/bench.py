"""``plastic-rl bench a2c``: training throughput of PlasticA2C's whole ``learn()`` loop on the maze.

For each number of envs it times the training path (``make_training_env``: the batched maze, the lean rollout
step that records the core's forward, and ``train()`` differentiating the recording) and, in the same run, the
per-step path it replaced (``DummyVecEnv`` of single mazes, SB3's distribution object and ``RolloutBuffer.add`` at
every step, a fresh trace per step, ``train()`` unrolling the forward again: :class:`ReferencePlasticA2C`), and prints
env steps per second, the ratio, where the time goes and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from plastic_rl.agents.a2c import PlasticA2C
from plastic_rl.agents.configuration import POLICIES, RUN_KEYS
from plastic_rl.core.memory import peak_bytes
from plastic_rl.core.options import non_negative_int, positive_int


class ReferencePlasticA2C(PlasticA2C):
    """PlasticA2C with the rollout path before the lean one: each step builds SB3's action distribution and goes
    through ``RolloutBuffer.add``, and every env's info is visited; nothing is recorded, so ``train()`` unrolls the
    rollout's forward again. Kept as the benchmark's and the tests' reference: the lean path must give the same
    episodes and parameters (to rounding), faster."""

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        assert self._last_obs is not None and self._last_recurrent_state is not None
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        state = self._last_recurrent_state
        self._rollout_initial_state = tuple(part.detach().clone() for part in state)
        callback.on_rollout_start()
        for _ in range(n_rollout_steps):
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)
                starts = th.as_tensor(self._last_episode_starts, device=self.device)
                latent, state = self.policy.unroll(obs_tensor.unsqueeze(0), state, starts.unsqueeze(0))
                distribution = self.policy._distribution(latent[0])
                actions = distribution.get_actions()
                values = self.policy.value_net(latent[0]).flatten()
                log_probs = distribution.log_prob(actions)
            actions = actions.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                self._last_recurrent_state = state
                return False
            self._update_info_buffer(infos, dones)
            rewards = self._bootstrap_truncated(rewards, infos, np.flatnonzero(dones), state)
            rollout_buffer.add(
                self._last_obs, actions.reshape(-1, 1), rewards, self._last_episode_starts, values, log_probs
            )
            self._last_obs = new_obs
            self._last_episode_starts = dones
        self._last_recurrent_state = state
        with th.no_grad():
            last_values = self.policy.predict_values(
                obs_as_tensor(new_obs, self.device), state, th.as_tensor(dones, device=self.device)
            )
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="plastic", choices=list(POLICIES), help="policy condition")
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument(
        "--n-envs", type=positive_int, nargs="+", default=[32, 64, 128], help="envs (episodes per update)"
    )
    parser.add_argument("--n-steps", type=positive_int, default=250, help="steps per env per update")
    parser.add_argument("--hidden-size", type=positive_int, default=200, help="recurrent neurons")
    parser.add_argument("--updates", type=positive_int, default=5, help="timed updates (the median is reported)")
    parser.add_argument("--warmup-updates", type=non_negative_int, default=1, help="untimed updates first")
    parser.add_argument(
        "--reference-updates", type=non_negative_int, default=2, help="timed updates of the previous path (0: skip it)"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")


class _TimedVecEnv(VecEnvWrapper):
    """Accumulates the time spent stepping the envs."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        start = time.perf_counter()
        result = self.venv.step_wait()
        self.seconds += time.perf_counter() - start
        return result


class _UpdateTimer(BaseCallback):
    """The time of each rollout (env stepping included)."""

    def __init__(self) -> None:
        super().__init__()
        self.rollout_seconds = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


class _TimedRun:
    """One model on its env, trained one update at a time; keeps each update's wall time and the rollout's and the
    env's share of them."""

    def __init__(self, args: argparse.Namespace, n_envs: int, reference: bool) -> None:
        from stable_baselines3.common.env_util import make_vec_env

        from plastic_rl.agents.cli_train import build_model
        from plastic_rl.agents.configuration import load_hyperparameters, policy_settings
        from plastic_rl.agents.make_env import make_training_env

        hyperparameters = load_hyperparameters("plastic_a2c", args.env)
        hyperparameters["n_steps"] = args.n_steps
        policy_kwargs = {**(hyperparameters.get("policy_kwargs") or {}), "hidden_size": args.hidden_size}
        hyperparameters["policy_kwargs"] = policy_kwargs
        env_kwargs = hyperparameters.get("env_kwargs") or {}
        if reference:
            self.env = _TimedVecEnv(make_vec_env(args.env, n_envs=n_envs, seed=args.seed, env_kwargs=env_kwargs))
            algorithm_kwargs = {key: value for key, value in hyperparameters.items() if key not in RUN_KEYS}
            policy_name, policy_kwargs = policy_settings("plastic_a2c", args.policy, policy_kwargs)
            self.model = ReferencePlasticA2C(
                policy_name,
                self.env,
                policy_kwargs=policy_kwargs,
                seed=args.seed,
                device=args.device,
                **algorithm_kwargs,
            )
        else:
            self.env = _TimedVecEnv(make_training_env(args.env, n_envs, seed=args.seed, env_kwargs=env_kwargs))
            self.model = build_model("plastic_a2c", args.policy, self.env, hyperparameters, args.seed, args.device)
        self.steps_per_update = n_envs * args.n_steps
        self.update_seconds: list[float] = []
        self.timer = _UpdateTimer()
        self.env_seconds = self.rollout_seconds = 0.0

    def update(self, timed: bool = True) -> None:
        first = self.model.num_timesteps == 0
        self.env.seconds, self.timer.rollout_seconds = 0.0, 0.0
        start = time.perf_counter()
        self.model.learn(self.steps_per_update, callback=self.timer, reset_num_timesteps=first)
        if timed:
            self.update_seconds.append(time.perf_counter() - start)
            self.env_seconds += self.env.seconds
            self.rollout_seconds += self.timer.rollout_seconds

    def summary(self) -> dict[str, Any]:
        median, total = statistics.median(self.update_seconds), sum(self.update_seconds)
        return {
            "steps_per_second": self.steps_per_update / median,
            "seconds_per_update": median,
            "spread": (min(self.update_seconds), max(self.update_seconds)),
            "env": self.env_seconds / total,
            "rollout": self.rollout_seconds / total,
        }


def run(args: argparse.Namespace) -> int:

    import plastic_rl  # noqa: F401  (registers the envs)
    from plastic_rl.agents.configuration import check_env_id
    from plastic_rl.core.options import check_device, reported_as_bad_input

    with reported_as_bad_input():
        check_device("--device", args.device)
        check_env_id(args.env)
    if args.threads is not None:
        th.set_num_threads(args.threads)
    print(
        f"PlasticA2C on {args.env}, policy {args.policy}, hidden {args.hidden_size}, n_steps {args.n_steps}, "
        f"{th.get_num_threads()} torch thread(s), device {args.device}; median of {args.updates} update(s) "
        f"({args.reference_updates} for the previous path), the two paths' updates interleaved"
    )
    for n_envs in args.n_envs:
        runs = {"new": _TimedRun(args, n_envs, reference=False)}
        if args.reference_updates > 0:
            runs["previous"] = _TimedRun(args, n_envs, reference=True)
        for timed_run in runs.values():
            for _ in range(args.warmup_updates):
                timed_run.update(timed=False)
        # Interleaved, so that a busy spell of a shared machine slows both paths rather than one.
        for index in range(max(args.updates, args.reference_updates)):
            if index < args.updates:
                runs["new"].update()
            if "previous" in runs and index < args.reference_updates:
                runs["previous"].update()
        new = runs["new"].summary()
        line = (
            f"n_envs {n_envs:4d}: {new['steps_per_second']:9,.0f} env steps/s "
            f"({new['seconds_per_update']:.3f} s per update, range {new['spread'][0]:.3f}-{new['spread'][1]:.3f}); "
            f"env {100 * new['env']:4.1f} %, policy + buffer {100 * (new['rollout'] - new['env']):4.1f} %, "
            f"train() {100 * (1 - new['rollout']):4.1f} %"
        )
        if "previous" in runs:
            old = runs["previous"].summary()
            line += (
                f"; previous path {old['steps_per_second']:,.0f} env steps/s: "
                f"{new['steps_per_second'] / old['steps_per_second']:.2f}x"
            )
        for timed_run in runs.values():
            timed_run.env.close()
        peak_mib = peak_bytes() / 2**20
        print(f"{line}; peak memory so far (max RSS) {peak_mib:,.0f} MiB", flush=True)
    return 0
