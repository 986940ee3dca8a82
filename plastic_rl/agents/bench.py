"""``plastic-rl bench a2c``: training throughput of PlasticA2C's whole ``learn()`` loop on the maze.

Reports environment steps per second, where the time goes (env stepping, the policy during rollouts,
the re-run and backward pass of ``train()``) and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import time

from plastic_rl.agents.configuration import POLICIES
from plastic_rl.core.options import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="plastic", choices=list(POLICIES), help="policy condition")
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument("--n-envs", type=positive_int, default=32, help="envs (episodes per update)")
    parser.add_argument("--n-steps", type=positive_int, default=250, help="steps per env per update")
    parser.add_argument("--hidden-size", type=positive_int, default=200, help="recurrent neurons")
    parser.add_argument("--updates", type=positive_int, default=3, help="timed updates")
    parser.add_argument("--warmup-updates", type=non_negative_int, default=1, help="untimed updates first")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    import resource

    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecEnvWrapper

    import plastic_rl  # noqa: F401  (registers the envs)
    from plastic_rl.agents.cli_train import build_model
    from plastic_rl.agents.configuration import check_env_id, load_hyperparameters
    from plastic_rl.core.options import check_device, reported_as_bad_input

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    class TimedVecEnv(VecEnvWrapper):
        """Accumulates the time spent stepping the envs."""

        seconds = 0.0

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            start = time.perf_counter()
            result = self.venv.step_wait()
            TimedVecEnv.seconds += time.perf_counter() - start
            return result

    class RolloutTimer(BaseCallback):
        """Accumulates the time spent collecting rollouts (env stepping included)."""

        seconds = 0.0

        def _on_rollout_start(self) -> None:
            self._start = time.perf_counter()

        def _on_rollout_end(self) -> None:
            RolloutTimer.seconds += time.perf_counter() - self._start

        def _on_step(self) -> bool:
            return True

    with reported_as_bad_input():
        check_device("--device", args.device)
        check_env_id(args.env)
        hyperparameters = load_hyperparameters("plastic_a2c", args.env)
        hyperparameters["n_steps"] = args.n_steps
        policy_kwargs = {**(hyperparameters.get("policy_kwargs") or {}), "hidden_size": args.hidden_size}
        hyperparameters["policy_kwargs"] = policy_kwargs
        env = TimedVecEnv(
            make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed, env_kwargs=hyperparameters.get("env_kwargs"))
        )
        model = build_model("plastic_a2c", args.policy, env, hyperparameters, args.seed, args.device)
    steps_per_update = args.n_envs * args.n_steps
    if args.warmup_updates:
        model.learn(args.warmup_updates * steps_per_update)
    TimedVecEnv.seconds = RolloutTimer.seconds = 0.0
    start = time.perf_counter()
    model.learn(args.updates * steps_per_update, callback=RolloutTimer(), reset_num_timesteps=False)
    total = time.perf_counter() - start
    steps = args.updates * steps_per_update
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"PlasticA2C, policy {args.policy}, hidden {args.hidden_size}, n_envs {args.n_envs}, n_steps {args.n_steps}, "
        f"{torch.get_num_threads()} torch thread(s), device {model.device}"
    )
    print(
        f"throughput: {steps / total:,.0f} env steps/s "
        f"({total / args.updates:.3f} s per update of {steps_per_update} steps)"
    )
    print(f"  per episode-length sequence: {total / (args.updates * args.n_envs) * 1000:.1f} ms")
    rollout = RolloutTimer.seconds
    for name, seconds in [
        ("env stepping (VecEnv.step)", TimedVecEnv.seconds),
        ("policy + buffer in rollouts", rollout - TimedVecEnv.seconds),
        ("train(): re-run, backward, step", total - rollout),
    ]:
        print(f"  {name:<34} {seconds / args.updates:7.3f} s per update ({100 * seconds / total:4.1f} %)")
    print(f"peak memory (max RSS of the process): {peak_mib:,.0f} MiB")
    return 0
