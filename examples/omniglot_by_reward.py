"""Omniglot 5-way 1-shot learned from reward alone: PlasticA2C on PlasticOmniglot-v0 for about a minute, then scored
on test classes it never saw.

Each episode shows one labelled drawing of each of 5 classes, then an unlabelled one; the agent names it with an
action and gets reward 1 when right. The drawings go through the supervised classifier's Conv-4 embedding
(ImageKeyExtractor), the plastic core's Hebbian trace is the only memory of the episode's labels.

    PLASTIC_RL_DATA=../shared/data python examples/omniglot_by_reward.py
"""

import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import ImageKeyExtractor, PlasticA2C

TRAIN_SECONDS = 60
torch.set_num_threads(1)

# 16 episodes of 6 steps per update; the Vinyals split's training classes.
train_env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", part="train")] * 16)
model = PlasticA2C(
    "PlasticRecurrentPolicy",
    train_env,
    n_steps=6,  # one whole episode per env and update
    gamma=1.0,  # the reward comes at the last step: no discounting within 6 steps
    learning_rate=1e-3,
    ent_coef=0.01,
    policy_kwargs=dict(hidden_size=64, features_extractor_class=ImageKeyExtractor),
    seed=0,
)
started = time.perf_counter()
while time.perf_counter() - started < TRAIN_SECONDS:
    model.learn(16 * 6 * 50, reset_num_timesteps=False)
print(f"trained {model.num_timesteps // 6:,} episodes in {time.perf_counter() - started:.0f} s")

# Test classes, greedy answers; the recurrent state goes back in at every step.
test_env = gym.make("PlasticOmniglot-v0", part="test")
correct = []
for seed in range(1_000_000, 1_000_500):
    observation, _ = test_env.reset(seed=seed)
    state, start, terminated, reward = None, np.ones(1, dtype=bool), False, 0.0
    while not terminated:
        action, state = model.predict(observation, state=state, episode_start=start, deterministic=True)
        start = np.zeros(1, dtype=bool)
        observation, reward, terminated, _, _ = test_env.step(int(action))
    correct.append(reward)
accuracy, half_width = np.mean(correct), 1.96 * np.std(correct) / np.sqrt(len(correct))
print(f"5-way 1-shot accuracy on 500 test episodes: {accuracy:.1%} +/- {half_width:.1%} (chance 20%)")
