"""PlasticMaze-v0's batched form: ``n_envs`` mazes stepped at once with array operations.

``DummyVecEnv`` over ``Monitor(PlasticMazeEnv)`` costs tens of microseconds of Python per env and step (the
step, the wrapper, the info dicts and their deep copy); here one step of all the mazes is a handful of numpy
operations of :class:`~plastic_rl.envs.maze_rules.MazeRules`, the rules the single env steps with as a batch of
one. Each maze has its own generator, seeded and drawn from in the same order as the single env's ``np_random``, so
with the same seeds the batch gives exactly the transitions of single mazes (tested against ``make_vec_env``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from plastic_rl.core.options import check_positive_int
from plastic_rl.envs.batched_env import BatchStep, EndedEpisode
from plastic_rl.envs.maze import PlasticMazeEnv
from plastic_rl.envs.maze_rules import ACTION_MOVES


class BatchedMaze:
    """``n_envs`` independent PlasticMaze-v0 episodes stepped together
    (a :class:`~plastic_rl.envs.batched_env.BatchedEnv`).

    Each maze's observations, rewards, infos and episodes are those of a :class:`PlasticMazeEnv` reset with the same
    seed and given the same actions; :meth:`view` shows one maze as such an env, holding its current state (for its
    attributes, ``render``, ``set_panel_matrix``, ``frame_shape``, ...).

    Parameters
    ----------
    n_envs : number of mazes.
    max_episode_steps : ``gym.make``'s time limit, accepted so that the same ``env_kwargs`` serve both; the mazes
        end their episodes at ``episode_length`` themselves, so it must be at least that (or ``None``).
    **env_kwargs : the :class:`PlasticMazeEnv` keywords (``size``, ``episode_length``, ``render_mode``, ...),
        validated by it.
    """

    def __init__(self, n_envs: int, max_episode_steps: int | None = None, **env_kwargs: Any) -> None:
        check_positive_int("n_envs", n_envs)
        maze = PlasticMazeEnv(**env_kwargs)  # validates every keyword as the single env does
        if max_episode_steps is not None:
            check_positive_int("max_episode_steps", max_episode_steps)
            if max_episode_steps < maze.episode_length:
                raise ValueError(
                    f"max_episode_steps must be at least episode_length = {maze.episode_length} (the batched maze "
                    f"never truncates an episode; shorten episode_length instead); got {max_episode_steps}"
                )
        self.num_envs = n_envs
        self.env_kwargs = dict(env_kwargs)
        self.rules = maze.rules
        self.observation_space = maze.observation_space
        self.action_space = maze.action_space
        self.state = self.rules.new_state(n_envs)
        """All the mazes' state, stepped by :attr:`rules`."""
        self._generators: list[np.random.Generator] = []  # one per maze from the first reset on
        self._views: list[PlasticMazeEnv | None] = [None] * n_envs

    @property
    def was_reset(self) -> bool:
        """Whether the mazes have generators yet: :meth:`step` and :meth:`get_state` need a reset first."""
        return bool(self._generators)

    def reset(self, seeds: Sequence[int | None]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Start every maze's episode, reseeding maze ``i`` with ``seeds[i]`` where it is not ``None`` (as
        ``PlasticMazeEnv.reset(seed=...)``; fresh entropy at the first reset): the observations and the infos."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"seeds must hold one seed (or None) per maze, {self.num_envs}; got {len(seeds)}")
        if not self._generators:
            self._generators = [seeding.np_random(seed)[0] for seed in seeds]
        else:
            for index, seed in enumerate(seeds):
                if seed is not None:
                    self._generators[index] = seeding.np_random(seed)[0]
        indices = range(self.num_envs)
        self.rules.start_episodes(self.state, indices, self._generators)
        return self.rules.observe(self.state), self.rules.infos(self.state, indices)

    def step(self, actions: np.ndarray) -> BatchStep:
        """One step of every maze with ``actions`` (an integer per maze, 0 up, 1 right, 2 down, 3 left); a maze
        whose episode ended starts its next one."""
        self._check_reset()
        rewards, dones = self.rules.step(self.state, self._checked_actions(actions), self._generators)
        observations = self.rules.observe(self.state)
        infos = self.rules.infos(self.state, range(self.num_envs))
        if not dones.any():
            return BatchStep(observations, rewards, dones, infos, [])
        done_indices = np.flatnonzero(dones).tolist()
        returns, lengths = self.state.episode_returns.tolist(), self.state.steps.tolist()
        self.rules.start_episodes(self.state, done_indices, self._generators)
        reset_infos = self.rules.infos(self.state, done_indices)
        ended = [
            EndedEpisode(index, observations[index], returns[index], lengths[index], reset_info)
            for index, reset_info in zip(done_indices, reset_infos, strict=True)
        ]
        return BatchStep(self.rules.observe(self.state), rewards, dones, infos, ended)

    def view(self, index: int) -> PlasticMazeEnv:
        """A :class:`PlasticMazeEnv` holding maze ``index``'s current state and drawing from its generator (built
        on first use and kept, with its renderer and panel matrix)."""
        view = self._views[index]
        if view is None:
            view = self._views[index] = PlasticMazeEnv(**self.env_kwargs)
        view.state = self.state.take(index)
        if self._generators:
            view.np_random = self._generators[index]
        return view

    def get_state(self) -> dict[str, Any]:
        """The mazes' arrays (``"arrays"``) and their generators' states (``"generators"``).

        The agent's square is saved as ``"rows"`` and ``"cols"``, as checkpoints have held it from the start."""
        self._check_reset()
        arrays = {name: array.copy() for name, array in self.state.arrays().items()}
        rows, cols = np.divmod(arrays.pop("positions"), self.rules.width)
        return {
            "arrays": {"rows": rows, "cols": cols, **arrays},
            "generators": [generator.bit_generator.state for generator in self._generators],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s ``state`` (other keys are ignored)."""
        if len(state["generators"]) != self.num_envs:
            raise ValueError(f"state is of {len(state['generators'])} maze(s); this batch has {self.num_envs} maze(s)")
        arrays = dict(state["arrays"])
        arrays["positions"] = np.asarray(arrays.pop("rows")) * self.rules.width + np.asarray(arrays.pop("cols"))
        self.state.load(arrays)
        self._generators = []
        for generator_state in state["generators"]:
            generator, _ = seeding.np_random(0)
            generator.bit_generator.state = generator_state
            self._generators.append(generator)

    def close(self) -> None:
        for view in self._views:
            if view is not None:
                view.close()

    def _check_reset(self) -> None:
        if not self.was_reset:
            raise RuntimeError("the mazes have not been reset yet: call reset() first")

    def _checked_actions(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` as ``num_envs`` int64 in 0..3, or a ``ValueError`` that says what they are instead."""
        actions = np.asarray(actions)
        if actions.shape not in ((self.num_envs,), (self.num_envs, 1)) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be {self.num_envs} integers in 0..3 (one per env); got {actions.dtype} {actions.shape}"
            )
        actions = actions.reshape(self.num_envs).astype(np.int64, copy=False)
        if actions.min() < 0 or actions.max() >= len(ACTION_MOVES):
            raise ValueError(f"actions must be one of 0 (up), 1 (right), 2 (down), 3 (left); got {actions}")
        return actions
