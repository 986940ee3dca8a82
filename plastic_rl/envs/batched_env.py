"""Batched forms of the suite's envs: many episodes of one env stepped at once with array operations.

An env whose registration names a batched form (:data:`plastic_rl.envs.BATCHED_ENTRY_POINTS`) is trained on it
instead of a vector of single envs: the batched form gives exactly the transitions of ``n_envs`` copies of the env,
env ``i`` seeded ``seeds[i]``, at a fraction of the Python cost per step. :class:`BatchedEnv` is what such a form
provides; it knows nothing of any RL library (the SB3 VecEnv over it is
:class:`~plastic_rl.agents.batched_vec_env.BatchedVecEnv`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import gymnasium as gym
import numpy as np

from plastic_rl.envs import BATCHED_ENTRY_POINTS


class EndedEpisode(NamedTuple):
    """An episode that ended at a batched step, and the new one that replaced it."""

    env_index: int
    """Which env of the batch."""
    final_observation: np.ndarray
    """The episode's last observation (the step's observations hold the new episode's first)."""
    episode_return: float
    """The episode's rewards, summed step by step."""
    length: int
    """The episode's steps."""
    reset_info: dict[str, Any]
    """The new episode's first info."""


class BatchStep(NamedTuple):
    """What one step of a batch returns; an env whose episode ended has already started its next one."""

    observations: np.ndarray
    """``(n_envs, ...)``: each env's next observation (a new episode's first where one ended)."""
    rewards: np.ndarray
    """``(n_envs,)`` float64."""
    dones: np.ndarray
    """``(n_envs,)`` bool: the episode ended (terminated; a batched form never truncates)."""
    infos: list[dict[str, Any]]
    """Each env's info of this step (of the episode that ended, where one did)."""
    ended: list[EndedEpisode]
    """The episodes that ended, in env order."""


class BatchedEnv(Protocol):
    """``num_envs`` episodes of one env stepped together; env ``i`` draws from its own generator only."""

    num_envs: int
    observation_space: gym.spaces.Space
    """One env's observation space."""
    action_space: gym.spaces.Space
    """One env's action space."""

    @property
    def was_reset(self) -> bool:
        """Whether the envs have been reset (their generators seeded): stepping and saving need it."""
        ...

    def reset(self, seeds: Sequence[int | None]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Start every env's episode, reseeding env ``i`` with ``seeds[i]`` where it is not ``None`` (fresh
        entropy at the first reset): the observations and the infos."""
        ...

    def step(self, actions: np.ndarray) -> BatchStep:
        """One step of every env (a ``ValueError`` names bad actions); ended episodes start again."""
        ...

    def view(self, index: int) -> gym.Env:
        """A single env holding env ``index``'s current state, for its attributes, rendering and other methods
        that leave the episode as it is."""
        ...

    def get_state(self) -> dict[str, Any]:
        """Everything that continues the batch exactly (plain data: arrays, numbers, generator states)."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s ``state``."""
        ...

    def close(self) -> None:
        """Close the views' windows."""
        ...


def batched_form(env_id: str) -> Callable[..., BatchedEnv] | None:
    """The batched form of ``env_id`` (``"plastic_rl:"`` prefix allowed), called as ``form(n_envs, **env_kwargs)``,
    or ``None`` where the env has none."""
    entry_point = BATCHED_ENTRY_POINTS.get(env_id.removeprefix("plastic_rl:"))
    if entry_point is None:
        return None
    module_name, _, attribute = entry_point.partition(":")
    form: Callable[..., BatchedEnv] = getattr(importlib.import_module(module_name), attribute)
    return form
