"""Omniglot 5-way 1-shot learned from reward alone: PlasticA2C on PlasticOmniglot-v0 for a minute (or --minutes),
scored on test classes it never saw every --eval-every minutes of training.

Each episode shows one labelled drawing of each of 5 classes, then an unlabelled one; the agent names it with an
action and gets reward 1 when right. The drawings go through the supervised classifier's Conv-4 embedding
(ImageKeyExtractor). The policy (--policy) and its settings are those of `plastic-rl train --env PlasticOmniglot-v0
--policy P` (the packaged YAML):
- readout (the default): PlasticReadoutPolicy, the supervised classifier's plastic head, whose trace the shown labels
  write and the query reads (the entry "PlasticOmniglot-v0:readout");
- plastic, rnn, lstm: a recurrent core of 64 neurons (plastic, plain, LSTM), each drawing and the query held for two
  steps (the entry "PlasticOmniglot-v0"). The plastic core stays at chance (RESULTS.md, Experiment 3, "Omniglot from
  reward alone", which says what limits it).

The score: greedy answers on --eval-episodes held-out episodes of the test classes (the same episodes each time), with
a 95% confidence interval; the minutes are training time (scoring excluded). --out writes the curve as CSV.
--embedding-from RUN/model.pt copies the embedding of a `plastic-rl supervised omniglot` model and freezes it (a
diagnostic: do the features or the association limit it?).

    PLASTIC_RL_DATA=../shared/data python examples/omniglot_by_reward.py [--policy readout --minutes 30 --eval-every 5]
"""

import argparse
import csv
import io
import time

import gymnasium as gym
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents.evaluation import evaluate
from plastic_rl.agents.hyperparameters import hyperparameters_for_policy, parse_key_values
from plastic_rl.agents.training import build_model
from plastic_rl.core.files import atomic_write_text
from plastic_rl.supervised import load_model

ENV = "PlasticOmniglot-v0"
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--policy", default="readout", choices=["readout", "plastic", "rnn", "lstm"])
parser.add_argument("--minutes", type=float, default=1.0, help="training time")
parser.add_argument("--eval-every", type=float, help="minutes of training between scores (default: --minutes)")
parser.add_argument("--eval-episodes", type=int, default=1000, help="held-out test-class episodes per score")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--embedding-from", metavar="MODEL.pt", help="a supervised Omniglot model's embedding, frozen")
parser.add_argument("--policy-kwargs", nargs="+", default=[], metavar="KEY:VALUE", help="over the YAML's")
parser.add_argument("--out", metavar="CURVE.csv", help="write minutes, episodes, accuracy and its CI here")
args = parser.parse_args()
torch.set_num_threads(1)

entry = hyperparameters_for_policy("plastic_a2c", ENV, args.policy, "readout" if args.policy == "readout" else None)
entry["policy_kwargs"].update(parse_key_values(args.policy_kwargs, "--policy-kwargs"))
if args.embedding_from:
    entry["policy_kwargs"]["features_extractor_kwargs"] = {"frozen": True}
env_kwargs = entry["env_kwargs"]
train_env = DummyVecEnv([lambda: gym.make(ENV, **env_kwargs)] * entry["n_envs"])
model = build_model("plastic_a2c", args.policy, train_env, entry, seed=args.seed)
if args.embedding_from:
    supervised = load_model(args.embedding_from)
    model.policy.features_extractor.embedding.load_state_dict(supervised.embedding.state_dict())
steps_per_update = entry["n_envs"] * entry["n_steps"]  # one whole episode per env and update

test_env_kwargs = {**env_kwargs, "part": "test"}  # classes never trained on
curve, trained_seconds = [], 0.0
eval_every = args.eval_every or args.minutes
while trained_seconds < 60 * args.minutes - 1e-9:
    started = time.perf_counter()
    next_score = min(trained_seconds + 60 * eval_every, 60 * args.minutes)
    while trained_seconds + time.perf_counter() - started < next_score:
        model.learn(steps_per_update * 10, reset_num_timesteps=False)
    trained_seconds += time.perf_counter() - started
    score = evaluate(model, ENV, test_env_kwargs, n_episodes=args.eval_episodes, deterministic=True).summary
    episodes = model.num_timesteps // entry["n_steps"]
    curve.append(dict(minutes=trained_seconds / 60, episodes=episodes, accuracy=score["reward_mean"],
                      ci95=score["reward_ci95"]))  # fmt: skip
    print(f"{trained_seconds / 60:.1f} min, {episodes:,} episodes: {score['reward_mean']:.1%} +/- "
          f"{score['reward_ci95']:.1%} on {args.eval_episodes} test-class episodes (chance 20%)")  # fmt: skip
    if args.out:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
        atomic_write_text(args.out, text.getvalue())
