"""Gymnasium environments of the paper's tasks, registered by ``import plastic_rl``."""

from __future__ import annotations

import gymnasium as gym

# String entry points: registering imports nothing heavy; gym.make imports the env's module.
ENTRY_POINTS: dict[str, str] = {
    "PlasticMaze-v0": "plastic_rl.envs.maze:PlasticMazeEnv",
    "PlasticPatternMemory-v0": "plastic_rl.envs.pattern_memory:PatternMemoryEnv",
    "PlasticOmniglot-v0": "plastic_rl.envs.omniglot:OmniglotEnv",
    "PlasticImageCompletion-v0": "plastic_rl.envs.image_completion:ImageCompletionEnv",
}


# The episode length of each env's defaults, for tools that read the spec (RL Zoo, SB3 utilities). The envs end
# their episodes themselves (terminated=True) at their own length, so Gymnasium's TimeLimit never acts at the
# defaults; an env made with a LONGER episode needs max_episode_steps given to gym.make as well. The episodic
# classification tasks have none: their length is N x K + 1 of the keywords chosen. No reward_threshold: no task has
# a "solved" level (the maze's reward keeps growing with skill).
MAX_EPISODE_STEPS: dict[str, int] = {
    "PlasticMaze-v0": 250,
    "PlasticPatternMemory-v0": 205,
    "PlasticImageCompletion-v0": 210,
}


def register_envs() -> None:
    """Register every environment of the suite with Gymnasium (idempotent)."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=MAX_EPISODE_STEPS.get(env_id))
