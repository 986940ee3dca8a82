"""Train a plastic agent on the maze with PlasticA2C, the Stable-Baselines3 way."""

from stable_baselines3.common.env_util import make_vec_env

import plastic_rl  # noqa: F401  (registers PlasticMaze-v0)
from plastic_rl.agents import PlasticA2C

# 32 episodes per update; the agent sees its previous action and the time, as in the paper.
env = make_vec_env("PlasticMaze-v0", n_envs=32, env_kwargs=dict(observe_previous_action=True, observe_time=True))
model = PlasticA2C("PlasticRecurrentPolicy", env, policy_kwargs=dict(plasticity="full", hidden_size=200), verbose=1)
model.learn(total_timesteps=1_000_000, progress_bar=True)
model.save("plastic_maze")
