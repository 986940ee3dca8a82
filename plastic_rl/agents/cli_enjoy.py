"""``plastic-rl enjoy``: watch a trained agent (RL Baselines3 Zoo conventions), with its Hebbian trace.

Loads the latest run (or ``--exp-id N``) of ``--env`` from ``LOGDIR/<algo>/<env>_<N>/`` and plays episodes in
the pygame window; on PlasticMaze-v0 a plastic agent's Hebbian trace is shown in the side panel as it changes.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from plastic_rl.agents.configuration import ALGORITHMS
from plastic_rl.core.options import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument("-f", "--log-folder", default="logs", help="the folder given to plastic-rl train")
    parser.add_argument("--algo", default=None, choices=list(ALGORITHMS), help="algorithm (default: the latest run's)")
    parser.add_argument("--exp-id", type=non_negative_int, default=0, help="run number N of <env>_<N> (0: the latest)")
    parser.add_argument("--load-best", action="store_true", help="load best_model.zip instead of the final model")
    parser.add_argument("--n-episodes", type=positive_int, default=1, help="episodes to play")
    parser.add_argument("--no-render", action="store_true", help="do not open a window")
    parser.add_argument("--deterministic", action="store_true", help="take the most likely actions")
    parser.add_argument("--record", default=None, metavar="OUT.gif", help="save the episodes' frames as a GIF")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the episodes")


def _accepts(env_id: str, keyword: str) -> bool:
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    return keyword in inspect.signature(creator).parameters


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np
    import yaml

    import plastic_rl  # noqa: F401  (registers the envs)
    from plastic_rl.agents.configuration import algorithm_class, check_env_id, find_run_folder
    from plastic_rl.core.options import check_device, reported_as_bad_input

    with reported_as_bad_input():
        check_device("--device", args.device)
        check_env_id(args.env)
        folder = find_run_folder(args.log_folder, args.env, args.algo, args.exp_id)
        try:
            config = yaml.safe_load((folder / "config.yml").read_text())
            algo = config["algo"]
        except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
            raise ValueError(f"{folder / 'config.yml'}: not a readable run configuration ({error})") from error
        model_path = folder / "best_model.zip" if args.load_best else folder / f"{args.env}.zip"
        model = algorithm_class(algo).load(model_path, device=args.device)
    print(f"Loaded {model_path} ({config['algo']}, policy {config['policy']})")

    show_trace = getattr(model.policy, "plasticity", "none") != "none" and _accepts(args.env, "show_trace_panel")
    render_mode = "rgb_array" if args.record else None if args.no_render else "human"
    env_kwargs = dict(config["hyperparameters"].get("env_kwargs") or {})
    if show_trace and render_mode is not None:
        env_kwargs["show_trace_panel"] = True
    env = gym.make(args.env, render_mode=render_mode, **env_kwargs)
    frames = []
    for episode in range(args.n_episodes):
        obs, _ = env.reset(seed=args.seed + episode)
        state, episode_start, done, total_reward = None, True, False, 0.0
        while not done:
            action, state = model.predict(
                obs, state=state, episode_start=np.array([episode_start]), deterministic=args.deterministic
            )
            episode_start = False
            if env_kwargs.get("show_trace_panel"):
                env.unwrapped.set_panel_matrix(state[1][0], title="Hebbian trace")
            obs, reward, terminated, truncated, _ = env.step(action)
            total_reward += float(reward)
            done = terminated or truncated
            if args.record:
                frames.append(env.render())
        print(f"episode {episode + 1}: reward {total_reward:.1f}")
    env.close()
    if args.record:
        from PIL import Image

        from plastic_rl.core.files import atomic_write

        images = [Image.fromarray(frame) for frame in frames]
        duration = int(1000 / env.metadata.get("render_fps", 10))
        with atomic_write(Path(args.record)) as handle:
            images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
        print(f"Saved {args.record} ({len(images)} frames)")
    return 0
