"""Held-out evaluation of a trained agent: reward with a confidence interval and the learning-to-learn signature.

A meta-learner on ``PlasticMaze-v0`` should explore until it first reaches the hidden reward square and then,
having learnt where it is, return to it faster after each teleport. :func:`evaluate` runs a model (or a
uniformly random policy) on many held-out episodes at once, one parallel env per episode, and measures per
episode the total reward, the reward hits (steps with a positive reward: in the maze, reaching the reward
square), the steps to the first hit, the mean gap between later hits and the wall bumps (steps with a
negative reward).

Which ratio is the headline: **the ratio of means** — the mean gap between later hits divided by the mean
steps to the first hit, both over the episodes with at least two hits, with a bootstrap 95% CI. The mean of
the per-episode ratios is also reported, but one episode whose first hit came after a few steps gives a huge
ratio, so it is dominated by its tail (its median is reported beside it). A memoryless policy does not score
1: the episode's fixed length censors the later gaps (they must fit in the steps left) and the agent starts at
the centre but restarts from a random square, so always compare with the random policy on the same seeds.

Env seeds: training seeds env ``i`` of ``n_envs`` with ``seed + i`` (``make_vec_env``), its evaluation
callback with ``seed + 10_000 + i``; the held-out episodes here use seeds from :data:`HELD_OUT_FIRST_SEED`
(1,000,000) up, disjoint from any training seed below ``HELD_OUT_FIRST_SEED - 10_000 - n_envs``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from plastic_rl.core.options import check_positive_int
from plastic_rl.envs import MAZE_ID

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

HELD_OUT_FIRST_SEED = 1_000_000
"""First env seed of the default held-out episodes (never a training seed: see the module docstring)."""
DEFAULT_EPISODES = 300
BOOTSTRAP_RESAMPLES = 2000


def make_evaluation_env(env_id: str, env_kwargs: dict[str, Any], seeds: Sequence[int]) -> VecEnv:
    """A VecEnv of ``len(seeds)`` copies of ``env_id`` whose env ``i`` starts its next episode from ``seeds[i]``.

    Built as training builds its envs (:func:`~plastic_rl.agents.make_env.make_training_env`: an env's batched form
    where it has one, the same episodes as single envs), without monitor files.
    """
    from plastic_rl.agents.make_env import make_training_env

    env = make_training_env(env_id, len(seeds), env_kwargs=env_kwargs)
    # VecEnv.seed() only takes the first of consecutive seeds; reset() consumes this per-env list.
    env._seeds = [int(seed) for seed in seeds]
    return env


class RandomPolicy:
    """A uniformly random policy with the recurrent ``predict`` contract (actions drawn by ``action_space``)."""

    def __init__(self, action_space: gym.Space, seed: int | None = None) -> None:
        self.action_space = action_space
        self._rng = np.random.default_rng(seed)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        n_envs = len(next(iter(observation.values())) if isinstance(observation, dict) else observation)
        if isinstance(self.action_space, gym.spaces.Discrete):
            actions = self.action_space.start + self._rng.integers(self.action_space.n, size=n_envs)
            return actions, state
        self.action_space.seed(int(self._rng.integers(2**31)))
        return np.stack([self.action_space.sample() for _ in range(n_envs)]), state


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (Student's t); NaN where undefined."""
    if len(values) == 0:
        return math.nan, math.nan
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan
    from scipy import stats  # a second and more to import: not for the commands' --help

    half_width = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, float(half_width)


def _ratio_of_means_ci(gaps: np.ndarray, first_hits: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of ``mean(gaps) / mean(first_hits)``, resampling episodes."""
    if len(gaps) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(gaps), size=(BOOTSTRAP_RESAMPLES, len(gaps)))
    ratios = gaps[picks].mean(axis=1) / first_hits[picks].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class EvaluationResult:
    """Per-episode measurements of one policy on held-out episodes, and their statistics.

    Attributes
    ----------
    name : the policy's label in tables and files.
    seeds : the env seed of each episode.
    deterministic : whether the actions were the most likely ones instead of sampled.
    rewards : (n,) total reward of each episode.
    lengths : (n,) steps of each episode.
    wall_bumps : (n,) steps with a negative reward (in the maze: walking into a wall).
    hit_steps : for each episode, the 1-based steps at which a positive reward came (reward hits).
    summary : the statistics (see :meth:`statistics`), computed at construction.
    """

    name: str
    seeds: list[int]
    deterministic: bool
    rewards: np.ndarray
    lengths: np.ndarray
    wall_bumps: np.ndarray
    hit_steps: list[list[int]]
    summary: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.summary = self.statistics()

    @property
    def hits(self) -> np.ndarray:
        return np.array([len(steps) for steps in self.hit_steps])

    @property
    def first_hit_steps(self) -> np.ndarray:
        """(n,) steps to the first hit; NaN for an episode without a hit."""
        return np.array([steps[0] if steps else math.nan for steps in self.hit_steps], dtype=float)

    @property
    def later_gaps(self) -> np.ndarray:
        """(n,) mean gap in steps between successive hits after the first; NaN with fewer than two hits."""
        return np.array([np.mean(np.diff(steps)) if len(steps) > 1 else math.nan for steps in self.hit_steps])

    def statistics(self) -> dict[str, float]:
        """Reward (mean, 95% CI half-width, median), hits, episodes with no hit, first-hit steps, later gaps
        and their ratio: of the means (the headline, with a bootstrap CI) and per episode (mean, median)."""
        first_hits, gaps = self.first_hit_steps, self.later_gaps
        hit_any = ~np.isnan(first_hits)
        hit_twice = ~np.isnan(gaps)
        reward_mean, reward_ci = _mean_ci(self.rewards)
        first_mean, first_ci = _mean_ci(first_hits[hit_any])
        gap_mean, gap_ci = _mean_ci(gaps[hit_twice])
        first_of_twice = float(np.mean(first_hits[hit_twice])) if hit_twice.any() else math.nan
        ratio = gap_mean / first_of_twice if hit_twice.any() else math.nan
        ratio_low, ratio_high = _ratio_of_means_ci(gaps[hit_twice], first_hits[hit_twice])
        per_episode = gaps[hit_twice] / first_hits[hit_twice]
        return {
            "episodes": len(self.rewards),
            "reward_mean": reward_mean,
            "reward_ci95": reward_ci,
            "reward_median": float(np.median(self.rewards)),
            "hits_mean": float(np.mean(self.hits)),
            "no_hit_episodes": int(np.sum(~hit_any)),
            "first_hit_steps_mean": first_mean,
            "first_hit_steps_ci95": first_ci,
            "two_hit_episodes": int(np.sum(hit_twice)),
            "first_hit_steps_mean_of_two_hit_episodes": first_of_twice,
            "later_gap_mean": gap_mean,
            "later_gap_ci95": gap_ci,
            "ratio_of_means": ratio,
            "ratio_of_means_ci95_low": ratio_low,
            "ratio_of_means_ci95_high": ratio_high,
            "per_episode_ratio_mean": float(np.mean(per_episode)) if len(per_episode) else math.nan,
            "per_episode_ratio_median": float(np.median(per_episode)) if len(per_episode) else math.nan,
            "wall_bumps_mean": float(np.mean(self.wall_bumps)),
        }

    def episode_rows(self) -> list[dict[str, Any]]:
        """One dict per episode, for a CSV."""
        return [
            {
                "policy": self.name,
                "seed": seed,
                "reward": float(reward),
                "length": int(length),
                "hits": len(steps),
                "first_hit_step": steps[0] if steps else "",
                "later_gap_mean": "" if math.isnan(gap) else float(gap),
                "wall_bumps": int(bumps),
                "hit_steps": " ".join(map(str, steps)),
            }
            for seed, reward, length, steps, gap, bumps in zip(
                self.seeds, self.rewards, self.lengths, self.hit_steps, self.later_gaps, self.wall_bumps, strict=True
            )
        ]


def held_out_seeds(n_episodes: int, first_seed: int = HELD_OUT_FIRST_SEED) -> list[int]:
    """The env seeds of ``n_episodes`` held-out episodes: ``first_seed, first_seed + 1, ...``."""
    check_positive_int("n_episodes", n_episodes)
    return list(range(first_seed, first_seed + n_episodes))


def evaluate(
    model: Any,
    env_id: str = MAZE_ID,
    env_kwargs: dict[str, Any] | None = None,
    n_episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    deterministic: bool = False,
    *,
    name: str = "agent",
    max_parallel: int = 100,
    make_env: Callable[[str, dict[str, Any], Sequence[int]], VecEnv] = make_evaluation_env,
) -> EvaluationResult:
    """Run ``model`` on held-out episodes, many in parallel, and measure each one.

    Parameters
    ----------
    model : anything with the recurrent ``predict(obs, state, episode_start, deterministic)`` contract
        (PlasticA2C, PlasticPPO, sb3-contrib's RecurrentPPO, :class:`RandomPolicy`), or ``"random"`` for a
        uniformly random policy seeded from the first episode's seed.
    env_id, env_kwargs : the env and its keyword arguments (those the model was trained with).
    n_episodes : number of episodes (default :data:`DEFAULT_EPISODES`, or ``len(seeds)``).
    seeds : the env seed of each episode (default: :func:`held_out_seeds`, never used in training).
    deterministic : take the most likely actions instead of sampling them (the default: a meta-learner
        explores by sampling). Sampling uses torch's generator seeded with ``seeds[0]``: the same call gives the
        same result.
    name : the label of the results.
    max_parallel : at most this many envs at a time (more is slower per episode: each plastic env holds an
        ``N x N`` trace).
    make_env : builds the VecEnv of one batch of episodes (see :func:`make_evaluation_env`).
    """
    if seeds is None:
        seeds = held_out_seeds(DEFAULT_EPISODES if n_episodes is None else n_episodes)
    seeds = [int(seed) for seed in seeds]
    if n_episodes is not None and n_episodes != len(seeds):
        raise ValueError(f"n_episodes must equal len(seeds) = {len(seeds)} when both are given; got {n_episodes}")
    check_positive_int("number of episodes", len(seeds))
    check_positive_int("max_parallel", max_parallel)
    env_kwargs = dict(env_kwargs or {})
    if isinstance(model, str):
        if model != "random":
            raise ValueError(f"model must be a model with predict() or 'random'; got {model!r}")
        probe = gym.make(env_id, **env_kwargs)
        model = RandomPolicy(probe.action_space, seed=seeds[0])
        probe.close()
    rewards: list[float] = []
    lengths: list[int] = []
    bumps: list[int] = []
    hit_steps: list[list[int]] = []
    import torch  # not for the commands' --help, which read this module's defaults

    # Sampled actions come from torch's generator: seeded from the episodes, so that an evaluation is repeatable
    # (and not a draw that depends on what ran before), without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds[0])
        for start in range(0, len(seeds), max_parallel):
            batch_env = make_env(env_id, env_kwargs, seeds[start : start + max_parallel])
            batch_rewards, batch_lengths, batch_bumps, batch_hit_steps = _run_batch(model, batch_env, deterministic)
            rewards.extend(batch_rewards)
            lengths.extend(batch_lengths)
            bumps.extend(batch_bumps)
            hit_steps.extend(batch_hit_steps)
    return EvaluationResult(
        name=name,
        seeds=seeds,
        deterministic=deterministic,
        rewards=np.array(rewards, dtype=float),
        lengths=np.array(lengths, dtype=int),
        wall_bumps=np.array(bumps, dtype=int),
        hit_steps=hit_steps,
    )


def _run_batch(model: Any, env: VecEnv, deterministic: bool) -> tuple[list, list, list, list[list[int]]]:
    """One episode in each env of ``env`` (then closed); steps after an env's episode ended are ignored."""
    n_envs = env.num_envs
    observations = env.reset()
    state = None
    episode_starts = np.ones(n_envs, dtype=bool)
    running = np.ones(n_envs, dtype=bool)
    totals = np.zeros(n_envs)
    lengths = np.zeros(n_envs, dtype=int)
    bumps = np.zeros(n_envs, dtype=int)
    hit_steps: list[list[int]] = [[] for _ in range(n_envs)]
    while running.any():
        actions, state = model.predict(
            observations, state=state, episode_start=episode_starts, deterministic=deterministic
        )
        observations, rewards, dones, _ = env.step(actions)
        lengths += running
        totals += np.where(running, rewards, 0.0)
        bumps += running & (rewards < 0)
        for index in np.flatnonzero(running & (rewards > 0)):
            hit_steps[index].append(int(lengths[index]))
        running &= ~dones
        episode_starts = dones
    env.close()
    return totals.tolist(), lengths.tolist(), bumps.tolist(), hit_steps


def compare_with_random(
    model: Any,
    env_id: str = MAZE_ID,
    env_kwargs: dict[str, Any] | None = None,
    n_episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    deterministic: bool = False,
) -> list[EvaluationResult]:
    """:func:`evaluate` ``model`` and a uniformly random policy on the same episodes: ``[agent, random]``."""
    agent = evaluate(model, env_id, env_kwargs, n_episodes, seeds, deterministic, name="trained agent")
    random = evaluate("random", env_id, env_kwargs, seeds=agent.seeds, name="random policy")
    return [agent, random]


def format_table(results: Sequence[EvaluationResult]) -> str:
    """A plain-text table of the results' statistics, one row per policy."""
    width = max(14, *(len(result.name) for result in results))
    header = (
        f"{'policy':<{width}} {'reward, 95% CI':>17} {'hits':>5} {'no hit':>7} {'1st hit':>8} {'later gap':>10} "
        f"{'gap/1st (95% CI)':>19} {'per-ep.':>8} {'bumps':>6}"
    )
    lines = [header]
    for result in results:
        s = result.summary
        ratio = f"{s['ratio_of_means']:.2f} ({s['ratio_of_means_ci95_low']:.2f}-{s['ratio_of_means_ci95_high']:.2f})"
        lines.append(
            f"{result.name:<{width}} {s['reward_mean']:>8.1f} +/- {s['reward_ci95']:<5.1f} {s['hits_mean']:>5.1f} "
            f"{s['no_hit_episodes']:>7d} {s['first_hit_steps_mean']:>8.1f} {s['later_gap_mean']:>10.1f} "
            f"{ratio:>19} {s['per_episode_ratio_median']:>8.2f} {s['wall_bumps_mean']:>6.1f}"
        )
    first = results[0]
    how = "most likely actions" if first.deterministic else "sampled actions"
    lines.append(
        f"{first.summary['episodes']} episodes, env seeds {first.seeds[0]}..{first.seeds[-1]}, {how}. "
        "1st hit: mean steps to the first reward (episodes with a hit); later gap: mean steps between later hits "
        "(episodes with >= 2 hits); gap/1st: ratio of those means over episodes with >= 2 hits (bootstrap CI); "
        "per-ep.: median per-episode ratio; bumps: wall bumps per episode."
    )
    return "\n".join(lines)


def write_results(
    results: Sequence[EvaluationResult], path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """``path`` (JSON: the statistics of each policy and ``metadata``) and, beside it, ``<stem>_episodes.csv``
    (one row per policy and episode), both written atomically."""
    import csv
    import io
    import json
    from pathlib import Path

    from plastic_rl.core.files import atomic_write_text

    path = Path(path)
    document = {
        **(metadata or {}),
        "deterministic": results[0].deterministic,
        "seeds": results[0].seeds,
        "headline": "ratio_of_means: later_gap_mean / first_hit_steps_mean_of_two_hit_episodes",
        "policies": {result.name: result.summary for result in results},
    }
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=True) + "\n")
    rows = [row for result in results for row in result.episode_rows()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path.with_name(f"{path.stem}_episodes.csv"), buffer.getvalue())


def log_summary(logger: Any, result: EvaluationResult, step: int, prefix: str = "heldout") -> None:
    """Record the finite statistics of ``result`` as ``<prefix>/<name>`` scalars in an SB3 logger and dump them
    at ``step`` (e.g. ``model.logger`` after ``learn()``: TensorBoard gets them when it is configured)."""
    for key, value in result.summary.items():
        if math.isfinite(value):
            logger.record(f"{prefix}/{key}", value)
    logger.dump(step)
