"""Image completion learned from reward alone: PlasticA2C on PlasticImageCompletion-v0 for about a minute, then
scored on test images.

A small version of the paper's Experiment 2: 2 CIFAR-10 images (grayscale, 1,024 pixels), each shown 3 steps, the
sequence twice, then one with its top or bottom half hidden; the agent's action at the last step is the image it
recalls, rewarded with minus its mean squared error on the hidden half (`plastic-rl supervised images` learns the
full task from the error itself; here the agent only sees the reward).

    PLASTIC_RL_DATA=../shared/data python examples/images_by_reward.py
"""

import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C

TRAIN_SECONDS = 60
PROTOCOL = dict(image_count=2, steps_shown=3, gap_steps=1, repetitions=2, query_steps=1)
torch.set_num_threads(1)

env = DummyVecEnv([lambda: gym.make("PlasticImageCompletion-v0", split="train", **PROTOCOL)] * 8)
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
    model.learn(8 * steps * 20, reset_num_timesteps=False)
print(f"trained {model.num_timesteps // steps:,} episodes in {time.perf_counter() - started:.0f} s")

test_env = DummyVecEnv([lambda: Monitor(gym.make("PlasticImageCompletion-v0", split="test", **PROTOCOL))])
test_env.seed(1_000_000)
mean, spread = evaluate_policy(model, test_env, n_eval_episodes=200, deterministic=True)
print(f"reward (minus the hidden half's mean squared error) on 200 test episodes: {mean:.3f} +/- {spread:.3f}")


class ZeroFill:  # the reference that recalls nothing: every hidden pixel at 0 (the images' mean)
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.zeros((len(observation), 1024), dtype=np.float32), None


test_env.seed(1_000_000)
zero_mean, _ = evaluate_policy(ZeroFill(), test_env, n_eval_episodes=200)
print(f"zero fill on the same episodes: {zero_mean:.3f}")
