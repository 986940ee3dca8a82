"""``plastic-rl play maze``: play PlasticMaze-v0 yourself with the arrow keys.

Hold an arrow key to walk (one square per frame, ``--fps`` frames a second); nothing happens while no key is
pressed, since the maze has no no-op action. Escape or closing the window quits. The reward square is shown in
gold, which the agent of the paper never sees: try to find it again after each teleport as fast as you can.
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym

from plastic_rl.core.options import non_negative_int, positive_float, positive_int, reported_as_bad_input
from plastic_rl.envs import MAZE_ID


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=None, help="seed of the sequence of episodes")
    parser.add_argument("--size", type=int, default=9, help="side of the maze without its border (odd, >= 5)")
    parser.add_argument("--episode-length", type=positive_int, default=250, help="steps per episode")
    parser.add_argument(
        "--fps", type=positive_int, default=None, help="steps a second while a key is held (default: 10)"
    )
    parser.add_argument("--zoom", type=positive_float, default=1.0, help="scale of the window")


def print_episode_end(
    obs_t: Any, obs_tp1: Any, action: int, reward: float, terminated: bool, truncated: bool, info: dict
) -> None:
    """A :func:`gymnasium.utils.play.play` callback that prints a summary line when an episode ends."""
    if terminated or truncated:
        print(f"episode over after {info['step']} steps: reward square reached {info['reward_hits']} times")


def run(args: argparse.Namespace) -> int:
    from gymnasium.utils.play import play  # pygame

    with reported_as_bad_input():
        env = gym.make(MAZE_ID, render_mode="rgb_array", size=args.size, episode_length=args.episode_length)
    # Seed once here and let play() reset unseeded, so each episode draws a new reward square.
    env.reset(seed=args.seed)
    try:
        play(
            env,
            fps=args.fps,
            zoom=args.zoom,
            callback=print_episode_end,
            keys_to_action=env.unwrapped.get_keys_to_action(),  # type: ignore[attr-defined]  # the maze's
            # Only used for a combination of arrow keys pressed together; wait_on_player does the rest.
            noop=0,
            wait_on_player=True,
        )
    finally:
        env.close()
    return 0
