"""A VecEnv that steps ``n_envs`` PlasticMaze-v0 mazes at once with array operations.

``DummyVecEnv`` over ``Monitor(PlasticMazeEnv)`` costs tens of microseconds of Python per env and step (the
step, the wrapper, the info dicts and their deep copy); here one step of all the mazes is a handful of numpy
operations. The dynamics, every constructor option, the random draws and the Monitor bookkeeping are those of
:class:`~plastic_rl.envs.maze.PlasticMazeEnv` wrapped in SB3's ``Monitor``: each maze has its own generator,
seeded and drawn from in the same order as the single env's ``np_random``, so with the same seed this VecEnv
gives exactly the transitions of ``make_vec_env("PlasticMaze-v0", n_envs, seed)`` (tested).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from plastic_rl.core.memory import check_open_files
from plastic_rl.core.options import check_positive_int
from plastic_rl.envs.maze import ACTION_MOVES, MazeSquare, PlasticMazeEnv

ENV_ID = "PlasticMaze-v0"
# Methods that would change one maze behind the batch's back: the VecEnv's own reset/step/seed do that.
_STATE_CHANGING_METHODS = ("reset", "step")


class BatchedMazeVecEnv(VecEnv):
    """``n_envs`` independent PlasticMaze-v0 episodes stepped together, with Monitor-style episode statistics.

    Observations, actions, rewards and ``infos`` are those of ``DummyVecEnv`` over ``Monitor(PlasticMazeEnv)``:
    each info holds ``agent_position``, ``reward_position``, ``reward_hits`` and ``step``; at the end of an
    episode also ``terminal_observation`` and ``episode`` (``{"r", "l", "t"}``), and the maze is reset.
    ``get_attr``, ``set_attr`` and ``env_method`` reach a :class:`PlasticMazeEnv` view of each maze that holds its
    current state (for ``render``, ``set_panel_matrix``, ``frame_shape``, ...); frames are drawn only when asked
    for (``render()``, ``get_images()``), also in ``"human"`` mode. ``get_state``/``set_state`` save and restore
    everything that continues the mazes exactly (used by the training checkpoints).

    Parameters
    ----------
    n_envs : number of mazes.
    monitor_dir : folder of the Monitor CSVs (``<rank>.monitor.csv``, as ``make_vec_env`` names them), or
        ``None`` for none.
    max_episode_steps : ``gym.make``'s time limit, accepted so that the same ``env_kwargs`` serve both; the mazes
        end their episodes at ``episode_length`` themselves, so it must be at least that (or ``None``).
    **env_kwargs : the :class:`PlasticMazeEnv` keywords (``size``, ``episode_length``, ``render_mode``, ...),
        validated by it.
    """

    def __init__(
        self,
        n_envs: int,
        monitor_dir: str | os.PathLike | None = None,
        max_episode_steps: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        check_positive_int("n_envs", n_envs)
        if monitor_dir is not None:
            check_open_files(f"n_envs={n_envs} (a monitor file each)", n_envs)
        self.env_kwargs = dict(env_kwargs)
        maze = PlasticMazeEnv(**env_kwargs)  # validates every keyword as the single env does
        if max_episode_steps is not None:
            check_positive_int("max_episode_steps", max_episode_steps)
            if max_episode_steps < maze.episode_length:
                raise ValueError(
                    f"max_episode_steps must be at least episode_length = {maze.episode_length} (the batched maze "
                    f"never truncates an episode; shorten episode_length instead); got {max_episode_steps}"
                )
        self._maze = maze
        self._views: list[PlasticMazeEnv | None] = [None] * n_envs
        self._free_squares = maze.free_squares
        self._flat_squares = [MazeSquare(row, col) for row, col in np.ndindex(maze.walls.shape)]
        self._free_square_objects = [MazeSquare(int(row), int(col)) for row, col in maze.free_squares]
        self._moves = np.array(ACTION_MOVES, dtype=np.int64)
        self._n_actions = len(ACTION_MOVES)
        assert maze.observation_space.shape is not None
        n_observations = maze.observation_space.shape[0]
        self._observations = np.zeros((n_envs, n_observations), dtype=np.float32)
        self._rows = np.full(n_envs, maze.start_position.row, dtype=np.int64)
        self._cols = np.full(n_envs, maze.start_position.col, dtype=np.int64)
        self._reward_indices = np.full(n_envs, maze.start_index, dtype=np.int64)
        self._reward_hits = np.zeros(n_envs, dtype=np.int64)
        self._steps = np.zeros(n_envs, dtype=np.int64)
        self._previous_rewards = np.zeros(n_envs, dtype=np.float64)
        self._previous_actions = np.full(n_envs, -1, dtype=np.int64)
        self._episode_returns = np.zeros(n_envs, dtype=np.float64)
        self._generators: list[np.random.Generator | None] = [None] * n_envs
        self._actions: np.ndarray | None = None
        self.t_start = time.time()
        self.monitor_dir = None if monitor_dir is None else os.fspath(monitor_dir)
        # Opened at the first reset (new files) or by set_state (the files of the run being resumed, cut back).
        self._writers: list[ResultsWriter] = []
        super().__init__(n_envs, maze.observation_space, maze.action_space)

    # --- the dynamics ---------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        for index in range(self.num_envs):
            if self._seeds[index] is not None or self._generators[index] is None:
                self._generators[index], _ = seeding.np_random(self._seeds[index])
        self._reset_seeds()
        self._reset_options()
        if self.monitor_dir is not None and not self._writers:
            header: dict[str, float | str] = {"t_start": self.t_start, "env_id": ENV_ID}
            self._writers = [ResultsWriter(path, header=header) for path in self._monitor_paths()]
        self._start_episodes(np.arange(self.num_envs))
        self.reset_infos = self._infos(range(self.num_envs))
        return self._observe().copy()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape not in ((self.num_envs,), (self.num_envs, 1)) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be {self.num_envs} integers in 0..3 (one per env); got {actions.dtype} {actions.shape}"
            )
        actions = actions.reshape(self.num_envs).astype(np.int64, copy=False)
        if actions.min() < 0 or actions.max() >= self._n_actions:
            raise ValueError(f"actions must be one of 0 (up), 1 (right), 2 (down), 3 (left); got {actions}")
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() needs a step_async(actions) first")
        actions, self._actions = self._actions, None
        maze = self._maze
        target_rows = self._rows + self._moves[actions, 0]
        target_cols = self._cols + self._moves[actions, 1]
        bumps = maze.walls[target_rows, target_cols]
        reward_squares = self._free_squares[self._reward_indices]
        hits = ~bumps & (target_rows == reward_squares[:, 0]) & (target_cols == reward_squares[:, 1])
        moves = ~bumps & ~hits
        self._rows[moves] = target_rows[moves]
        self._cols[moves] = target_cols[moves]
        for index in np.flatnonzero(hits).tolist():
            row, col = self._free_squares[self._index_skipping(index, int(self._reward_indices[index]))]
            self._rows[index], self._cols[index] = row, col
        self._reward_hits += hits
        rewards = np.where(bumps, -maze.wall_penalty, np.where(hits, maze.reward_value, 0.0))
        self._steps += 1
        self._episode_returns += rewards
        self._previous_rewards[:] = rewards
        self._previous_actions[:] = actions
        dones = self._steps >= maze.episode_length
        observations = self._observe()
        infos = self._infos(range(self.num_envs))
        for info in infos:
            # As DummyVecEnv says at every step: the maze's horizon is a termination, never a truncation.
            info["TimeLimit.truncated"] = False
        if dones.any():
            done_indices = np.flatnonzero(dones)
            elapsed = round(time.time() - self.t_start, 6)
            for index in done_indices.tolist():
                episode = {"r": round(float(self._episode_returns[index]), 6), "l": int(self._steps[index])}
                episode["t"] = elapsed
                infos[index]["episode"] = episode
                infos[index]["terminal_observation"] = observations[index].copy()
                if self._writers:
                    self._writers[index].write_row(episode)
            self._start_episodes(done_indices)
            observations = self._observe()
            for index, info in zip(done_indices.tolist(), self._infos(done_indices.tolist()), strict=True):
                self.reset_infos[index] = info
        return observations.copy(), rewards.astype(np.float32), dones, infos

    def _start_episodes(self, indices: np.ndarray) -> None:
        """Start a new episode in the mazes ``indices``: a new reward square, the agent at the centre."""
        maze = self._maze
        for index in indices.tolist():
            self._reward_indices[index] = self._index_skipping(index, maze.start_index)
        self._rows[indices] = maze.start_position.row
        self._cols[indices] = maze.start_position.col
        self._reward_hits[indices] = 0
        self._steps[indices] = 0
        self._previous_rewards[indices] = 0.0
        self._previous_actions[indices] = -1
        self._episode_returns[indices] = 0.0

    def _generator(self, env_index: int) -> np.random.Generator:
        generator = self._generators[env_index]
        assert generator is not None, "reset() seeds every maze's generator"
        return generator

    def _index_skipping(self, env_index: int, excluded_index: int) -> int:
        """As :meth:`PlasticMazeEnv._index_skipping`, drawn from maze ``env_index``'s generator."""
        index = int(self._generator(env_index).integers(len(self._free_squares) - 1))
        return index + (index >= excluded_index)

    def _observe(self) -> np.ndarray:
        maze, observations = self._maze, self._observations
        observations[:, :9] = maze.neighbourhoods[self._rows, self._cols]
        observations[:, 9] = self._previous_rewards
        if maze.observe_previous_action:
            observations[:, 10:14] = self._previous_actions[:, None] == np.arange(self._n_actions)
        if maze.observe_time:
            observations[:, maze.time_index] = self._steps / maze.time_divisor
        if maze.observe_bias:
            observations[:, -1] = 1.0
        return observations

    def _infos(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        # Positions come from tables of shared (immutable) MazeSquares: building them was most of the step's cost.
        agent_squares = (self._rows * self._maze.walls.shape[1] + self._cols).tolist()
        reward_indices, hits, steps = self._reward_indices.tolist(), self._reward_hits.tolist(), self._steps.tolist()
        flat_squares, free_squares = self._flat_squares, self._free_square_objects
        return [
            {
                "agent_position": flat_squares[agent_squares[index]],
                "reward_position": free_squares[reward_indices[index]],
                "reward_hits": hits[index],
                "step": steps[index],
            }
            for index in indices
        ]

    # --- exact resume ---------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the mazes, their generators and the monitor files' ends."""
        self._check_seeded()
        return {
            "arrays": {
                name: getattr(self, f"_{name}").copy()
                for name in (
                    "rows",
                    "cols",
                    "reward_indices",
                    "reward_hits",
                    "steps",
                    "previous_rewards",
                    "previous_actions",
                    "episode_returns",
                )
            },
            "generators": [self._generator(index).bit_generator.state for index in range(self.num_envs)],
            "t_start": self.t_start,
            "monitor_sizes": [writer.file_handler.tell() for writer in self._writers],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s ``state``; the monitor files are cut back to where it was taken."""
        arrays = state["arrays"]
        n_monitors = self.num_envs if self.monitor_dir is not None else 0
        if len(state["generators"]) != self.num_envs or len(state["monitor_sizes"]) != n_monitors:
            raise ValueError(
                f"state is of {len(state['generators'])} env(s) with {len(state['monitor_sizes'])} monitor file(s); "
                f"this VecEnv has {self.num_envs} env(s) and {n_monitors} monitor file(s)"
            )
        for name, values in arrays.items():
            getattr(self, f"_{name}")[:] = values
        self._generators = []
        for generator_state in state["generators"]:
            generator, _ = seeding.np_random(0)
            generator.bit_generator.state = generator_state
            self._generators.append(generator)
        self.t_start = state["t_start"]
        for writer in self._writers:
            writer.close()
        self._writers = []
        for path, size in zip(self._monitor_paths(), state["monitor_sizes"], strict=True):
            # Episodes written after the state was taken are cut: the resumed run writes them again.
            with open(path, "r+b") as file:
                file.truncate(size)
            self._writers.append(ResultsWriter(path, override_existing=False))

    def _monitor_paths(self) -> list[str]:
        """``<monitor_dir>/<rank>.monitor.csv``, as ``make_vec_env`` names them."""
        if self.monitor_dir is None:
            return []
        return [os.path.join(self.monitor_dir, f"{rank}.{Monitor.EXT}") for rank in range(self.num_envs)]

    def _check_seeded(self) -> None:
        if any(generator is None for generator in self._generators):
            raise RuntimeError("the VecEnv has not been reset yet: call reset() first")

    # --- SB3's VecEnv plumbing ------------------------------------------------------------------------

    def _view(self, index: int) -> PlasticMazeEnv:
        """A :class:`PlasticMazeEnv` holding maze ``index``'s current state (built on first use, kept for its
        renderer and panel matrix)."""
        view = self._views[index]
        if view is None:
            view = self._views[index] = PlasticMazeEnv(**self.env_kwargs)
        view.agent_position = MazeSquare(int(self._rows[index]), int(self._cols[index]))
        view._reward_index = int(self._reward_indices[index])
        view.reward_position = view._square(view._reward_index)
        view.reward_hits = int(self._reward_hits[index])
        view.step_count = int(self._steps[index])
        view.episode_reward = float(self._episode_returns[index])
        view._previous_reward = float(self._previous_rewards[index])
        previous_action = int(self._previous_actions[index])
        view._previous_action = None if previous_action < 0 else previous_action
        if self._generators[index] is not None:
            view._np_random = self._generators[index]
        return view

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self._view(index), attr_name) for index in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"cannot set {attr_name!r} on the batched maze: its mazes are arrays; construct it with the keyword instead"
        )

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name in _STATE_CHANGING_METHODS:
            raise ValueError(f"env_method({method_name!r}) is not supported: use the VecEnv's own {method_name}()")
        return [
            getattr(self._view(index), method_name)(*method_args, **method_kwargs) for index in self._indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # The episode statistics are Monitor's: evaluate_policy reads them as it reads a Monitor's.
        return [issubclass(Monitor, wrapper_class) for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for view in self._views:
            if view is not None:
                view.close()
