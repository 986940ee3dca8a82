"""Train a plastic agent on the maze with PlasticA2C, the Stable-Baselines3 way."""

from plastic_rl.agents import PlasticA2C
from plastic_rl.agents.make_env import make_training_env

# 32 episodes per update; the agent sees its previous action and the time, as in the paper. For the maze,
# make_training_env returns the batched VecEnv (the transitions of SB3's make_vec_env, stepped all at once).
env = make_training_env(
    "PlasticMaze-v0", n_envs=32, seed=0, env_kwargs=dict(observe_previous_action=True, observe_time=True)
)
model = PlasticA2C("PlasticRecurrentPolicy", env, policy_kwargs=dict(plasticity="full", hidden_size=200), verbose=1)
model.learn(total_timesteps=1_000_000, progress_bar=True)
model.save("plastic_maze")
