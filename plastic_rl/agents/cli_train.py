"""``plastic-rl train``: train PlasticA2C, PlasticPPO or sb3-contrib's RecurrentPPO (RL Baselines3 Zoo conventions).

Writes ``LOGDIR/<algo>/<env>_<N>/``: the final model ``<env>.zip``, ``best_model.zip`` (with ``--eval-freq``),
checkpoints (with ``--save-freq``), ``config.yml`` and one monitor CSV per env.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from plastic_rl.agents.configuration import ALGORITHMS, POLICIES, RUN_KEYS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", default="plastic_a2c", choices=list(ALGORITHMS), help="algorithm")
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument(
        "--policy",
        default="plastic",
        choices=list(POLICIES),
        help="plastic / homogeneous / rnn: PlasticRecurrentPolicy with plasticity full / shared / none; lstm: LSTM",
    )
    parser.add_argument("-n", "--n-timesteps", type=int, default=None, help="env steps (default: from the YAML)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: from the YAML)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (default 0: torch's default, all cores; the experiment command runs one per job)",
    )
    parser.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"], help="VecEnv class")
    parser.add_argument("-f", "--log-folder", default="logs", help="runs go to LOGDIR/<algo>/<env>_<N>/")
    parser.add_argument("-tb", "--tensorboard-log", default=None, help="TensorBoard log folder")
    parser.add_argument("--eval-freq", type=int, default=-1, help="evaluate every F env steps (-1: never)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument("--save-freq", type=int, default=-1, help="checkpoint every F env steps (-1: never)")
    parser.add_argument(
        "-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="override hyperparameters"
    )
    parser.add_argument(
        "--hyperparams-set", default=None, metavar="NAME", help="a named entry <env>:NAME of the YAML (e.g. authors)"
    )
    parser.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="override env kwargs")
    parser.add_argument(
        "--compare-random",
        action="store_true",
        help="after training, evaluate the agent beside a random policy on held-out episodes (plastic-rl evaluate)",
    )
    parser.add_argument("--compare-episodes", type=int, default=300, help="episodes for --compare-random")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (1: print the training logs)")


def build_model(
    algo: str,
    policy: str,
    env: Any,
    hyperparameters: dict[str, Any],
    seed: int,
    device: str = "auto",
    tensorboard_log: str | None = None,
    verbose: int = 0,
) -> Any:
    """The ``algo`` model with the ``--policy`` ``policy`` on ``env``, from a hyperparameter entry."""
    from plastic_rl.agents.configuration import algorithm_class, policy_settings

    algorithm_kwargs = {key: value for key, value in hyperparameters.items() if key not in RUN_KEYS}
    if algorithm_kwargs.get("batch_size") == "rollout":
        algorithm_kwargs["batch_size"] = algorithm_kwargs["n_steps"] * env.num_envs
    policy_name, policy_kwargs = policy_settings(algo, policy, hyperparameters.get("policy_kwargs") or {})
    return algorithm_class(algo)(
        policy_name,
        env,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device=device,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **algorithm_kwargs,
    )


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    import plastic_rl  # noqa: F401  (registers the envs)
    from plastic_rl.agents.configuration import load_hyperparameters, next_run_folder, parse_key_values
    from plastic_rl.agents.diagnostics import ProgressCSVCallback
    from plastic_rl.envs import ENTRY_POINTS

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    hyperparameters = load_hyperparameters(args.algo, args.env, args.hyperparams_set)
    overrides = parse_key_values(args.hyperparams, "-params")
    for key in ("env_kwargs", "policy_kwargs"):
        # A dict given with -params completes the file's dict rather than replacing it.
        if isinstance(overrides.get(key), dict):
            overrides[key] = {**(hyperparameters.get(key) or {}), **overrides[key]}
    hyperparameters.update(overrides)
    env_kwargs = {**(hyperparameters.get("env_kwargs") or {}), **parse_key_values(args.env_kwargs, "--env-kwargs")}
    hyperparameters["env_kwargs"] = env_kwargs
    n_envs = args.n_envs or hyperparameters.get("n_envs", 1)
    n_timesteps = args.n_timesteps or hyperparameters.get("n_timesteps", 100_000)
    hyperparameters.update(n_envs=n_envs, n_timesteps=n_timesteps)

    folder = next_run_folder(args.log_folder, args.algo, args.env)
    folder.mkdir(parents=True)
    vec_env_class = SubprocVecEnv if args.vec_env == "subproc" else DummyVecEnv
    # "plastic_rl:<id>" makes SubprocVecEnv's worker processes import plastic_rl, which registers its envs.
    env_id = f"plastic_rl:{args.env}" if args.env in ENTRY_POINTS else args.env
    env = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        monitor_dir=str(folder),
        vec_env_cls=vec_env_class,
    )
    model = build_model(
        args.algo, args.policy, env, hyperparameters, args.seed, args.device, args.tensorboard_log, args.verbose
    )
    config = {
        "algo": args.algo,
        "env": args.env,
        "policy": args.policy,
        "seed": args.seed,
        "device": args.device,
        "hyperparameters": hyperparameters,
        "command": " ".join(["plastic-rl", *sys.argv[1:]]),
    }
    (folder / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    callbacks = [ProgressCSVCallback(folder / "progress.csv")]
    if args.save_freq > 0:
        callbacks.append(CheckpointCallback(max(args.save_freq // n_envs, 1), str(folder), name_prefix="rl_model"))
    if args.eval_freq > 0:
        eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 10_000, env_kwargs=env_kwargs)
        # Sampled actions: the trained policy of a meta-learner explores within the episode by sampling.
        callbacks.append(
            EvalCallback(
                eval_env,
                n_eval_episodes=args.eval_episodes,
                eval_freq=max(args.eval_freq // n_envs, 1),
                best_model_save_path=str(folder),
                log_path=str(folder),
                deterministic=False,
            )
        )
    print(f"Training {args.algo} ({args.policy}) on {args.env} for {n_timesteps} steps with {n_envs} envs -> {folder}")
    model.learn(
        n_timesteps,
        callback=callbacks,
        progress_bar=not args.no_progress_bar,
        tb_log_name=f"{args.algo}_{args.env}_{args.policy}",
    )
    model_path = folder / f"{args.env}.zip"
    model.save(model_path)
    print(f"Saved {model_path}")
    env.close()

    if args.compare_random:
        from plastic_rl.agents.evaluation import compare_with_random, format_table, log_summary, write_results

        results = compare_with_random(model, args.env, env_kwargs, args.compare_episodes)
        print(format_table(results))
        write_results(results, folder / "evaluation.json", {"model": str(model_path), "env_kwargs": env_kwargs})
        log_summary(model.logger, results[0], model.num_timesteps)
    return 0
