"""Load the agent saved by train_maze.py and watch it in the pygame window, with its Hebbian trace."""

import gymnasium as gym
import numpy as np

import plastic_rl  # noqa: F401  (registers PlasticMaze-v0)
from plastic_rl.agents import PlasticA2C
from plastic_rl.agents.trace_panel import TracePanel

model = PlasticA2C.load("plastic_maze")
env = gym.make(
    "PlasticMaze-v0", render_mode="human", show_trace_panel=True, observe_previous_action=True, observe_time=True
)
# alpha * Hebb, the part of the trace that acts, with the neurons clustered by alpha (plastic-rl enjoy's panel; its
# default "activity" order needs an episode played first).
panel = TracePanel(model.policy, content="plastic", order="parameters")
obs, _ = env.reset(seed=0)
state, episode_start, done, total_reward = None, np.ones(1, dtype=bool), False, 0.0
while not done:
    # The state (activations, Hebbian trace) goes back in at every step, as with sb3-contrib's RecurrentPPO.
    action, state = model.predict(obs, state=state, episode_start=episode_start)
    episode_start = np.zeros(1, dtype=bool)
    matrix, norm = panel.matrix_and_value(state)
    env.unwrapped.set_panel_matrix(matrix, panel.title, value=norm, value_label=panel.value_label)
    obs, reward, terminated, truncated, _ = env.step(action)
    total_reward += float(reward)
    done = terminated or truncated
print(f"episode reward: {total_reward:.1f}")
env.close()
