"""The held-out evaluation: its statistics on a scripted policy with known hit times, and on the maze."""

from __future__ import annotations

import csv
import functools
import json
import math
import statistics

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from scipy import stats
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C
from plastic_rl.agents.evaluation import (
    HELD_OUT_FIRST_SEED,
    compare_with_random,
    evaluate,
    format_table,
    write_results,
)
from plastic_rl.cli import main

HIT, BUMP, NOTHING = 1, 2, 0


def episode_length(seed: int) -> int:
    return 12 + seed % 5


def hit_schedule(seed: int) -> list[int]:
    """The 1-based steps at which the scripted policy hits: none, one, or every ``gap`` steps from ``first``."""
    if seed % 4 == 0:
        return []
    first, gap = 2 + seed % 7, 1 + seed % 3
    steps = list(range(first, episode_length(seed) + 1, gap))
    return steps[:1] if seed % 4 == 1 else steps


def bump_schedule(seed: int) -> list[int]:
    return [step for step in range(1, episode_length(seed) + 1) if step % 5 == 0 and step not in hit_schedule(seed)]


class ScriptedEnv(gym.Env):
    """Observation ``[steps taken, episode seed]``; action 1 gives +10 (a hit), 2 gives -0.1 (a bump), 0 nothing.
    Each episode lasts ``episode_length(seed)`` steps."""

    observation_space = spaces.Box(-1.0, 1e6, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode_seed, self.steps = (-1 if seed is None else seed), 0
        return np.array([0, self.episode_seed], np.float32), {}

    def step(self, action):
        self.steps += 1
        reward = {NOTHING: 0.0, HIT: 10.0, BUMP: -0.1}[int(action)]
        done = self.steps >= episode_length(self.episode_seed)
        return np.array([self.steps, self.episode_seed], np.float32), reward, done, False, {}


class ScriptedPolicy:
    """Hits and bumps on each episode's schedules; counts its calls to check the recurrent contract."""

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        assert len(episode_start) == len(observation)
        actions = []
        for steps, seed in observation.astype(int):
            step = steps + 1
            actions.append(HIT if step in hit_schedule(seed) else BUMP if step in bump_schedule(seed) else NOTHING)
        return np.array(actions), state


gym.register("ScriptedHits-v0", entry_point=ScriptedEnv)


def expected_statistics(seeds: list[int]) -> dict[str, float]:
    """The statistics, computed here from the schedules alone."""
    hits = [hit_schedule(seed) for seed in seeds]
    rewards = [10.0 * len(h) - 0.1 * len(bump_schedule(seed)) for seed, h in zip(seeds, hits, strict=True)]
    first = [h[0] for h in hits if h]
    twice = [h for h in hits if len(h) > 1]
    gaps = [statistics.mean(b - a for a, b in zip(h, h[1:], strict=False)) for h in twice]
    first_of_twice = [h[0] for h in twice]
    t = stats.t.ppf(0.975, len(seeds) - 1)
    return {
        "episodes": len(seeds),
        "reward_mean": statistics.mean(rewards),
        "reward_ci95": t * statistics.stdev(rewards) / math.sqrt(len(rewards)),
        "hits_mean": statistics.mean(len(h) for h in hits),
        "no_hit_episodes": sum(not h for h in hits),
        "first_hit_steps_mean": statistics.mean(first),
        "two_hit_episodes": len(twice),
        "later_gap_mean": statistics.mean(gaps),
        "ratio_of_means": statistics.mean(gaps) / statistics.mean(first_of_twice),
        "per_episode_ratio_median": statistics.median(g / f for g, f in zip(gaps, first_of_twice, strict=True)),
        "wall_bumps_mean": statistics.mean(len(bump_schedule(seed)) for seed in seeds),
    }


def test_statistics_of_a_scripted_policy_with_known_hit_times():
    seeds = [3, 8, 13, 21, 4, 9, 30, 17, 5, 11, 2, 26, 7]
    expected = expected_statistics(seeds)
    assert expected["no_hit_episodes"] > 0 and 0 < expected["two_hit_episodes"] < len(seeds)  # every case occurs
    # Batches of 4 parallel envs whose episodes end at different steps.
    result = evaluate(ScriptedPolicy(), "ScriptedHits-v0", seeds=seeds, max_parallel=4)
    for key, value in expected.items():
        assert result.summary[key] == pytest.approx(value), key
    assert result.seeds == seeds
    assert [list(h) for h in result.hit_steps] == [hit_schedule(seed) for seed in seeds]
    assert result.lengths.tolist() == [episode_length(seed) for seed in seeds]
    low, high = result.summary["ratio_of_means_ci95_low"], result.summary["ratio_of_means_ci95_high"]
    assert low <= result.summary["ratio_of_means"] <= high


def test_seeds_and_episode_counts_are_checked():
    with pytest.raises(ValueError, match="n_episodes must equal len"):
        evaluate(ScriptedPolicy(), "ScriptedHits-v0", n_episodes=3, seeds=[1, 2])
    with pytest.raises(ValueError, match="n_episodes must be a positive integer"):
        evaluate(ScriptedPolicy(), "ScriptedHits-v0", n_episodes=0)
    with pytest.raises(ValueError, match="'random'"):
        evaluate("greedy", "ScriptedHits-v0", n_episodes=2)


def test_maze_agent_and_random_policy_on_the_same_held_out_episodes(tmp_path):
    torch.manual_seed(0)
    env_kwargs = dict(size=5, episode_length=30, observe_previous_action=True)
    model = PlasticA2C(
        "PlasticRecurrentPolicy",
        make_vec_env("PlasticMaze-v0", n_envs=2, env_kwargs=env_kwargs),
        n_steps=30,
        policy_kwargs=dict(hidden_size=8),
    )
    agent, random = compare_with_random(model, "PlasticMaze-v0", env_kwargs, n_episodes=12)
    assert agent.seeds == random.seeds == list(range(HELD_OUT_FIRST_SEED, HELD_OUT_FIRST_SEED + 12))
    for result in (agent, random):
        # In the maze a hit is +10 and a bump -0.1, nothing else.
        np.testing.assert_allclose(result.rewards, 10 * result.hits - 0.1 * result.wall_bumps, atol=1e-9)
        assert (result.lengths == 30).all()
    again = evaluate("random", "PlasticMaze-v0", env_kwargs, seeds=agent.seeds, name="random policy")
    assert again.hit_steps == random.hit_steps
    deterministic = [evaluate(model, "PlasticMaze-v0", env_kwargs, n_episodes=6, deterministic=True) for _ in "ab"]
    assert deterministic[0].hit_steps == deterministic[1].hit_steps
    # Sampled actions too are the same every time (the sampling is seeded from the episodes), and the caller's
    # random state is left as it was.
    torch.manual_seed(1)
    expected_draw = torch.rand(3)
    torch.manual_seed(1)
    sampled = [evaluate(model, "PlasticMaze-v0", env_kwargs, n_episodes=6).rewards for _ in "ab"]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert torch.equal(torch.rand(3), expected_draw)
    other_episodes = evaluate(model, "PlasticMaze-v0", env_kwargs, seeds=[5, 6, 7, 8, 9, 10])

    # The batched maze that evaluation uses gives the episodes that single envs give.
    def single_envs(env_id, kwargs, seeds):
        env = DummyVecEnv([functools.partial(gym.make, env_id, **kwargs)] * len(seeds))
        env._seeds = list(seeds)
        return env

    through_single_envs = evaluate(model, "PlasticMaze-v0", env_kwargs, seeds=[5, 6, 7, 8, 9, 10], make_env=single_envs)
    assert through_single_envs.hit_steps == other_episodes.hit_steps
    np.testing.assert_array_equal(through_single_envs.rewards, other_episodes.rewards)
    assert other_episodes.seeds != agent.seeds[:6]
    assert "trained agent" in format_table([agent, random])
    write_results([agent, random], tmp_path / "out.json", {"note": "test"})
    document = json.loads((tmp_path / "out.json").read_text())
    assert set(document["policies"]) == {"trained agent", "random policy"} and document["note"] == "test"
    rows = (tmp_path / "out_episodes.csv").read_text().splitlines()
    assert len(rows) == 1 + 24


def test_evaluate_command_on_a_trained_run(tmp_path, capsys):
    threads = torch.get_num_threads()
    tiny = ["--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]
    assert main(["train", "-f", str(tmp_path), "--n-envs", "2", "--no-progress-bar", "-n", "20", *tiny]) == 0
    assert main(["evaluate", "-f", str(tmp_path), "--n-episodes", "5", "--first-seed", "7"]) == 0
    torch.set_num_threads(threads)
    folder = tmp_path / "plastic_a2c" / "PlasticMaze-v0_1"
    document = json.loads((folder / "evaluation.json").read_text())
    assert document["seeds"] == [7, 8, 9, 10, 11] and document["policies"]["random policy"]["episodes"] == 5
    assert "random policy" in capsys.readouterr().out
    # --lesion: the same agent with alpha = 0 on the same episodes, beside it.
    lesion = ["--n-episodes", "5", "--first-seed", "7", "--no-random", "--lesion", "--out", str(tmp_path / "l.json")]
    assert main(["evaluate", "-f", str(tmp_path), *lesion]) == 0
    lesioned = json.loads((tmp_path / "l.json").read_text())["policies"]
    assert set(lesioned) == {"trained agent", "plasticity lesioned"}
    assert lesioned["trained agent"] == document["policies"]["trained agent"]  # the agent itself is left intact
    # --env-kwargs replaces the run's own for the held-out episodes (e.g. Omniglot's test classes: part:test).
    longer = ["--env-kwargs", "episode_length:12", "--no-random", "--out", str(tmp_path / "longer.json")]
    assert main(["evaluate", "-f", str(tmp_path), "--n-episodes", "2", *longer]) == 0
    document = json.loads((tmp_path / "longer.json").read_text())
    assert (document["env_kwargs"]["size"], document["env_kwargs"]["episode_length"]) == (5, 12)
    rows = list(csv.DictReader((tmp_path / "longer_episodes.csv").open()))
    assert [row["length"] for row in rows] == ["12", "12"]
    rnn = tmp_path / "rnn"
    assert (
        main(["train", "-f", str(rnn), "--policy", "rnn", "--n-envs", "2", "--no-progress-bar", "-n", "20", *tiny]) == 0
    )
    torch.set_num_threads(threads)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "-f", str(rnn), "--n-episodes", "2", "--lesion"])
    assert stopped.value.code == 2
    assert "--lesion needs a plastic policy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "--model", str(tmp_path / "missing.zip")])
    assert stopped.value.code == 2
    assert "plastic-rl evaluate: error: --model must be an existing model file" in capsys.readouterr().err
