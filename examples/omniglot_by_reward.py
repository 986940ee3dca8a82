"""Omniglot 5-way 1-shot learned from reward alone: PlasticA2C on PlasticOmniglot-v0 for a minute (or --minutes),
then scored on test classes it never saw.

Each episode shows one labelled drawing of each of 5 classes, then an unlabelled one; the agent names it with an
action and gets reward 1 when right. The drawings go through the supervised classifier's Conv-4 embedding
(ImageKeyExtractor); the plastic core's Hebbian trace is the only memory of the episode's labels. Each drawing and the
query are held for two steps: the core reads its trace with the previous step's activity, so the query must be that
activity when the answer counts. At these settings it stays at chance within minutes, even on a frozen supervised
embedding (RESULTS.md, Experiment 3, "Omniglot from reward alone", and what limits it).

--embedding-from RUN/model.pt copies the embedding of a `plastic-rl supervised omniglot` model and freezes it: then
only the recurrent association is learnt from reward (a diagnostic: do the features or the association limit it?).

    PLASTIC_RL_DATA=../shared/data python examples/omniglot_by_reward.py [--minutes 10 --embedding-from RUN/model.pt]
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import ImageKeyExtractor, PlasticA2C
from plastic_rl.agents.hyperparameters import parse_key_values
from plastic_rl.supervised import load_model

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--minutes", type=float, default=1.0, help="training time")
parser.add_argument("--embedding-from", metavar="MODEL.pt", help="a supervised Omniglot model's embedding, frozen")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument(
    "--policy-kwargs", nargs="+", default=[], metavar="KEY:VALUE", help="policy settings over the ones below"
)
args = parser.parse_args()
torch.set_num_threads(1)

PROTOCOL = dict(steps_shown=2, query_steps=2)  # 5 drawings x 2 steps, then the query for 2: 12 steps
STEPS = 12
extractor = dict(frozen=args.embedding_from is not None)
train_env = DummyVecEnv([lambda: gym.make("PlasticOmniglot-v0", part="train", **PROTOCOL)] * 16)
model = PlasticA2C(
    "PlasticRecurrentPolicy",
    train_env,
    n_steps=STEPS,  # one whole episode per env and update
    gamma=1.0,  # the reward comes at the last step: no discounting within an episode
    learning_rate=1e-3,
    ent_coef=0.01,
    # eta 0.1: at the maze's 0.01 a 12-step trace is too faint to learn from, at 0.5 decaying Hebb keeps 0.2% of the
    # first drawing by the query; alphas (and weights) in [0, 0.1): a random sign per alpha scrambles the recall.
    policy_kwargs={
        "hidden_size": 64,
        "hebbian_learning_rate": 0.1,
        "init_scale": 0.1,
        "init_distribution": "uniform",
        "features_extractor_class": ImageKeyExtractor,
        "features_extractor_kwargs": extractor,
        **parse_key_values(args.policy_kwargs, "--policy-kwargs"),
    },
    seed=args.seed,
)
if args.embedding_from:
    supervised = load_model(args.embedding_from)
    model.policy.features_extractor.embedding.load_state_dict(supervised.embedding.state_dict())
started = time.perf_counter()
while time.perf_counter() - started < 60 * args.minutes:
    model.learn(16 * STEPS * 50, reset_num_timesteps=False)
print(f"trained {model.num_timesteps // STEPS:,} episodes in {time.perf_counter() - started:.0f} s")

# Test classes, greedy answers; the recurrent state goes back in at every step.
test_env = gym.make("PlasticOmniglot-v0", part="test", **PROTOCOL)
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
