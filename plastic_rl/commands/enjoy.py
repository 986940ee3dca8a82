"""``plastic-rl enjoy``: watch a trained agent (RL Baselines3 Zoo conventions), with its Hebbian trace.

Loads the latest run (or ``--exp-id N``) of ``--env`` from ``LOGDIR/<algo>/<env>_<N>/``, or a pretrained agent
shipped with the package (``--pretrained maze``), and plays episodes in the pygame window; on PlasticMaze-v0 a
plastic agent's trace (``--panel``: the trace, alpha ⊙ Hebb or the effective weights, neurons in one clustered order
fixed per model, see :mod:`plastic_rl.agents.trace_panel`) is shown in the side panel as it changes, with its norm
along the bottom and a tick at each reward hit.

``--panel-scale episode`` (the default) keeps the panel's colour scale, and the strip's axis, fixed over each
episode, so growth shows: the episode is first played once without drawing, with the same env seed and torch seed
(hence the same actions), to find its largest values (for the colours, the 99th percentile of ``|value|``: the
top 1% saturate). ``frame`` fits both to every frame; a number fixes the colour scale.

``--record out.mp4`` saves the episodes through Gymnasium's ``RecordVideo`` (needs moviepy, in the
``plastic-rl[video]`` extra); ``out.gif`` (or a missing moviepy) writes a GIF with Pillow instead
(:class:`~plastic_rl.agents.recording.VideoRecorder`).
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from plastic_rl.agents.hyperparameters import algorithm_class, check_env_id
from plastic_rl.agents.run_folders import read_run_config
from plastic_rl.agents.trace_panel import NEURON_ORDERS, PANEL_CONTENTS, TracePanel, play_episode
from plastic_rl.commands.run_selection import add_run_selection, selected_model
from plastic_rl.core.options import check_device, non_negative_int, positive_int, reported_as_bad_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_selection(parser, model_file=False)
    parser.add_argument("--n-episodes", type=positive_int, default=1, help="episodes to play")
    parser.add_argument("--no-render", action="store_true", help="do not open a window")
    parser.add_argument("--deterministic", action="store_true", help="take the most likely actions")
    parser.add_argument(
        "--record", default=None, metavar="OUT.mp4", help="save the episodes as an MP4 video (or a GIF: OUT.gif)"
    )
    parser.add_argument(
        "--panel", default="plastic", choices=list(PANEL_CONTENTS), help="what the side panel shows (plastic agents)"
    )
    parser.add_argument(
        "--panel-order", default="activity", choices=list(NEURON_ORDERS), help="order of the neurons (fixed per model)"
    )
    parser.add_argument(
        "--panel-scale", default="episode", help="colour scale: episode (fixed per episode), frame, or a number"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the episodes")


def _accepts(env_id: str, keyword: str) -> bool:
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    return creator is not None and keyword in inspect.signature(creator).parameters


def _panel_scale(value: str) -> str | float:
    if value in ("episode", "frame"):
        return value
    try:
        scale = float(value)
    except ValueError:
        scale = -1.0
    if not 0 < scale < float("inf"):
        raise ValueError(f"--panel-scale must be 'episode', 'frame' or a number > 0; got {value!r}")
    return scale


def run(args: argparse.Namespace) -> int:
    from plastic_rl.agents.recording import VideoRecorder

    with reported_as_bad_input():
        check_device("--device", args.device)
        check_env_id(args.env)
        panel_scale = _panel_scale(args.panel_scale)
        model_path, folder = selected_model(args)
        config = read_run_config(folder)
        env_id = config["env"]
        model: Any = algorithm_class(config["algo"]).load(model_path, device=args.device)
    print(f"Loaded {model_path} ({config['algo']}, policy {config['policy']})")

    show_trace = getattr(model.policy, "plasticity", "none") != "none" and _accepts(env_id, "show_trace_panel")
    render_mode = "rgb_array" if args.record else None if args.no_render else "human"
    env_kwargs = dict(config["hyperparameters"].get("env_kwargs") or {})
    panel = TracePanel(model.policy, args.panel, args.panel_order) if show_trace and render_mode else None
    env = gym.make(env_id, render_mode=render_mode, **env_kwargs, **({"show_trace_panel": True} if panel else {}))
    recorder = None
    if args.record:
        recorder = VideoRecorder(Path(args.record), args.n_episodes)
        env = recorder.wrap(env)
    for episode in range(args.n_episodes):
        seed = args.seed + episode
        scales = None
        if panel is not None and (panel_scale != "frame" or panel.needs_activity):
            # A first pass without drawing, the same episode (same seeds), to fit the scales (and the order) to it.
            silent_env = gym.make(env_id, **env_kwargs)
            _, fitted = play_episode(model, silent_env, seed, args.deterministic, panel)
            silent_env.close()
            if panel_scale != "frame":
                scales = (panel_scale if isinstance(panel_scale, float) else fitted[0], fitted[1])
        total_reward, _ = play_episode(model, env, seed, args.deterministic, panel, scales)
        print(f"episode {episode + 1}: reward {total_reward:.1f}")
    env.close()
    if recorder is not None:
        for path in recorder.save():
            print(f"Saved {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
