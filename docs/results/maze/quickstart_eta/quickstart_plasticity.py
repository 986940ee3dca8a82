"""The README's Quick Start (block 1 verbatim: 100,000 steps, 1 env) with eta, mean |alpha| and the trace norm
recorded after every rollout, to see whether plasticity stays on (RESULTS.md, Experiment 4, 2026-12-07).

    PYTHONPATH=CHECKOUT python quickstart_plasticity.py OUT.csv SEED

Run on a checkout of each commit compared; summary.csv beside this file has one row per run.
"""

import csv
import sys

import gymnasium as gym
import torch
from stable_baselines3.common.callbacks import BaseCallback

import plastic_rl  # noqa: F401
from plastic_rl.agents import PlasticA2C

torch.set_num_threads(1)
out = sys.argv[1]


class Record(BaseCallback):
    rows = []

    def _on_rollout_end(self):
        core = self.model.policy.core
        eta = core.hebbian_learning_rate
        state = self.model._last_recurrent_state
        trace = torch.linalg.matrix_norm(state[1]).mean().item()
        self.rows.append([self.num_timesteps, float(eta), core.plasticity_coefficient.abs().mean().item(), trace])

    def _on_step(self):
        return True


env = gym.make("PlasticMaze-v0")
seed = int(sys.argv[2])
model = PlasticA2C("PlasticRecurrentPolicy", env, policy_kwargs=dict(plasticity="full"), verbose=0, seed=seed)
record = Record()
model.learn(total_timesteps=100_000, callback=record)
with open(out, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["steps", "eta", "mean_abs_alpha", "trace_norm"])
    writer.writerows(record.rows)
rows = record.rows
print(
    out,
    "updates",
    len(rows),
    "eta first/last",
    rows[0][1],
    rows[-1][1],
    "min eta",
    min(r[1] for r in rows),
    "updates with trace norm 0:",
    sum(r[3] == 0 for r in rows),
    "alpha last",
    rows[-1][2],
)
