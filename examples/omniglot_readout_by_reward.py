"""Omniglot 5-way 1-shot from reward alone with a plastic read-out: the supervised classifier's network (Conv-4, then a
plastic layer whose trace the shown labels drive), trained by REINFORCE instead of cross-entropy.

The control for examples/omniglot_by_reward.py, whose recurrent core stays at chance (RESULTS.md, Experiment 3,
"Omniglot from reward alone"): here the label of each shown drawing is the post-synaptic side of the plastic layer, so
one step writes "these features -> this class" and the query reads it back. The answer is sampled from the query's
logits; the reward is 1 when it names the query's class (the episode's target is used for that and nothing else);
the update is the log-probability of the answer times the reward minus a running baseline, plus an entropy bonus.

    PLASTIC_RL_DATA=../shared/data python examples/omniglot_readout_by_reward.py [--minutes 8 --seed 100]
"""

import argparse
import time

import numpy as np
import torch

from plastic_rl.supervised.omniglot import OmniglotTask, evaluate

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--minutes", type=float, default=1.0, help="training time")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--batch-size", type=int, default=32, help="episodes per update")
parser.add_argument("--learning-rate", type=float, default=2e-3)
parser.add_argument("--entropy", type=float, default=0.01, help="entropy bonus")
args = parser.parse_args()
torch.set_num_threads(1)
torch.manual_seed(args.seed)

task = OmniglotTask()  # 5-way 1-shot, one query, the Vinyals split
model = task.build_model("plastic", embedding="conv4", normalize_features=True, alpha_init=10.0)  # RESULTS' recipe
optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
rng = np.random.default_rng(args.seed)
baseline, episodes, started = 1 / task.ways, 0, time.perf_counter()
while time.perf_counter() - started < 60 * args.minutes:
    batch = task.sample(args.batch_size, rng)
    answers = torch.distributions.Categorical(logits=model(batch.inputs)[-1])  # the query's logits
    actions = answers.sample()
    rewards = (actions == batch.targets[-1].argmax(-1)).float()  # what the env pays: the target is used for this only
    loss = -((rewards - baseline) * answers.log_prob(actions)).mean() - args.entropy * answers.entropy().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    baseline = 0.99 * baseline + 0.01 * rewards.mean().item()
    episodes += args.batch_size
    if episodes % (100 * args.batch_size) == 0:
        print(f"{episodes:,} episodes, {time.perf_counter() - started:.0f} s: reward {baseline:.3f} (running mean)")
print(f"trained {episodes:,} episodes in {time.perf_counter() - started:.0f} s")
result = evaluate(model, task, part="test", episodes=500, seed=1)
print(f"5-way 1-shot accuracy on 500 test episodes: {result['accuracy']:.1%} +/- {result['ci95']:.1%} (chance 20%)")
