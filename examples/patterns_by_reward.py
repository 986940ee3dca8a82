"""Pattern memory learned from reward alone: PlasticA2C on PlasticPatternMemory-v0 for about a minute, then scored on
new episodes.

A small version of the paper's task (Experiment 1): 3 patterns of 50 bits, each shown 3 steps, the sequence twice,
then one with half its bits zeroed; the agent's action at the last step is its completion, rewarded with minus its
mean squared error (the supervised trainer, `plastic-rl supervised patterns`, learns the full task from the error
itself; here the agent only sees the reward).

    python examples/patterns_by_reward.py
"""

import time

import gymnasium as gym
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C

TRAIN_SECONDS = 60
PROTOCOL = dict(pattern_count=3, pattern_size=50, steps_shown=3, gap_steps=1, repetitions=2)
torch.set_num_threads(1)

env = DummyVecEnv([lambda: gym.make("PlasticPatternMemory-v0", **PROTOCOL)] * 16)
steps = env.get_attr("protocol")[0].episode_length
model = PlasticA2C(
    "PlasticRecurrentPolicy",
    env,
    n_steps=steps,  # one whole episode per env and update
    gamma=1.0,  # the only reward is at the last step
    learning_rate=1e-3,
    policy_kwargs=dict(hidden_size=64),
    seed=0,
)
started = time.perf_counter()
while time.perf_counter() - started < TRAIN_SECONDS:
    model.learn(16 * steps * 20, reset_num_timesteps=False)
print(f"trained {model.num_timesteps // steps:,} episodes in {time.perf_counter() - started:.0f} s")

test_env = DummyVecEnv([lambda: Monitor(gym.make("PlasticPatternMemory-v0", **PROTOCOL))])
test_env.seed(1_000_000)
mean, spread = evaluate_policy(model, test_env, n_eval_episodes=200, deterministic=True)
print(f"reward (minus the mean squared error of the completion) on 200 new episodes: {mean:.3f} +/- {spread:.3f}")
print("for reference: an all-zero completion scores -1.000, copying the degraded query about -0.5")
