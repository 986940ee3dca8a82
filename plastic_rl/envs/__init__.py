"""Gymnasium environments of the paper's tasks, registered by ``import plastic_rl``."""

from __future__ import annotations

import gymnasium as gym

MAZE_ID = "PlasticMaze-v0"
"""The paper's maze (Experiment 4)."""

# String entry points: registering imports nothing heavy; gym.make imports the env's module.
ENTRY_POINTS: dict[str, str] = {
    MAZE_ID: "plastic_rl.envs.maze:PlasticMazeEnv",
    "PlasticPatternMemory-v0": "plastic_rl.envs.pattern_memory:PatternMemoryEnv",
    "PlasticOmniglot-v0": "plastic_rl.envs.omniglot:OmniglotEnv",
    "PlasticImageCompletion-v0": "plastic_rl.envs.image_completion:ImageCompletionEnv",
}
# The envs that have a batched form (a plastic_rl.envs.batched_env.BatchedEnv): training steps it instead of a vector
# of single envs.
BATCHED_ENTRY_POINTS: dict[str, str] = {
    MAZE_ID: "plastic_rl.envs.batched_maze:BatchedMaze",
}


def register_envs() -> None:
    """Register every environment of the suite with Gymnasium (idempotent).

    No ``max_episode_steps``: every env ends its own episodes (``terminated=True``) at the length its keywords give,
    so a registered TimeLimit could only cut, silently, an episode made longer than the default. No
    ``reward_threshold``: no task has a "solved" level (the maze's reward keeps growing with skill)."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)
