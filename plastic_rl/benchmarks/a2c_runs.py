"""What ``plastic-rl bench a2c`` times: PlasticA2C, or the rollout path it replaced (:class:`ReferencePlasticA2C`), on
timed envs, one update at a time (:class:`TimedRun`)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from plastic_rl.agents.a2c import PlasticA2C
from plastic_rl.agents.hyperparameters import hyperparameters_for_policy, policy_settings
from plastic_rl.agents.make_env import make_training_env
from plastic_rl.agents.training import algorithm_arguments, build_model
from plastic_rl.benchmarks.measure import timed


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
        self._compute_returns(rollout_buffer, new_obs, dones, state)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True


class TimedVecEnv(VecEnvWrapper):
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


class UpdateTimer(BaseCallback):
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


class TimedRun:
    """One model on its env, trained one update at a time; keeps each update's wall time and the rollout's and the
    env's share of them. ``reference``: the previous rollout path (:class:`ReferencePlasticA2C`); ``autograd_core``:
    today's path with the plastic core on its autograd loop, as a rule without a fused form runs."""

    def __init__(
        self, args: argparse.Namespace, policy: str, n_envs: int, reference: bool, autograd_core: bool = False
    ) -> None:
        hyperparameters = hyperparameters_for_policy("plastic_a2c", args.env, policy)  # as train reads it
        hyperparameters["n_steps"] = args.n_steps
        policy_kwargs = {**hyperparameters["policy_kwargs"], "hidden_size": args.hidden_size}
        hyperparameters["policy_kwargs"] = policy_kwargs
        env_kwargs = hyperparameters.get("env_kwargs") or {}
        if reference:
            self.env = TimedVecEnv(make_vec_env(args.env, n_envs=n_envs, seed=args.seed, env_kwargs=env_kwargs))
            algorithm_kwargs = algorithm_arguments(hyperparameters, n_envs)
            policy_name, policy_kwargs = policy_settings("plastic_a2c", policy, policy_kwargs)
            self.model = ReferencePlasticA2C(
                policy_name,
                self.env,
                policy_kwargs=policy_kwargs,
                seed=args.seed,
                device=args.device,
                **algorithm_kwargs,
            )
        else:
            self.env = TimedVecEnv(make_training_env(args.env, n_envs, seed=args.seed, env_kwargs=env_kwargs))
            self.model = build_model("plastic_a2c", policy, self.env, hyperparameters, args.seed, args.device)
            if autograd_core:  # the layer's reference loop: no recorded rollout, train() unrolls again with autograd
                self.model.policy.core.implementation = "autograd"
        self.steps_per_update = n_envs * args.n_steps
        self.update_seconds: list[float] = []
        self.timer = UpdateTimer()
        self.env_seconds = self.rollout_seconds = 0.0

    def update(self, record: bool = True) -> None:
        """Train one update; with ``record``, keep its times."""
        first = self.model.num_timesteps == 0
        self.env.seconds, self.timer.rollout_seconds = 0.0, 0.0
        seconds, _ = timed(
            lambda: self.model.learn(self.steps_per_update, callback=self.timer, reset_num_timesteps=first),
            self.model.device,
        )
        if record:
            self.update_seconds.append(seconds)
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
