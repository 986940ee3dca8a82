"""The rules of PlasticMaze-v0, written once over a batch of mazes.

:class:`~plastic_rl.envs.maze.PlasticMazeEnv` (one maze: a batch of one) and
:class:`~plastic_rl.envs.batched_maze.BatchedMaze` (many mazes stepped with array operations) both step their mazes
here, so the walls, the move, the wall-bump penalty, the reward hit and its teleport, the observation and the end of
an episode exist in one place. The rules hold no random state: every draw comes from the generator of the maze it
is for, passed in, in the same order for a maze whichever batch it is in, so a maze seeded alike runs the same
episode alone or batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from plastic_rl.core.memory import check_fits

# Row and column change of each action, in action order: 0 up, 1 right, 2 down, 3 left.
ACTION_MOVES: tuple[tuple[int, int], ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))
TIME_UNITS = ("fraction", "steps")
NO_ACTION = -1  # the previous action of a maze that has not moved yet this episode


def maze_walls(size: int) -> np.ndarray:
    """Wall map of a ``size`` x ``size`` maze with its border: a bool array of shape ``(size + 2, size + 2)``.

    The border is all walls; inside, every square whose row and column (counted in the full grid) are both even
    is a wall, a regular grid of ``((size - 1) // 2) ** 2`` walls (16 for size 9). The centre is always free:
    when the rule puts a wall there (size 7, 11, ...) it is cleared.
    """
    grid_size = size + 2
    check_fits(f"a maze of size {size}", 17 * grid_size**2)  # two int64 index grids and the bool wall map
    rows, cols = np.indices((grid_size, grid_size))
    walls = (rows % 2 == 0) & (cols % 2 == 0)
    walls[[0, -1], :] = True
    walls[:, [0, -1]] = True
    walls[grid_size // 2, grid_size // 2] = False
    return walls


class MazeSquare(NamedTuple):
    """A square of the maze's full grid (border included): a ``(row, col)`` tuple of ints."""

    row: int
    col: int

    def __deepcopy__(self, memo: dict) -> MazeSquare:
        # Immutable, so a deep copy is the square itself. SB3's DummyVecEnv deep-copies every info dict at every
        # step, and copying the two positions as plain tuples was half of that copy's cost.
        return self


@dataclass
class MazeState:
    """Where a batch of mazes stands: one entry per maze in each array, changed in place by :class:`MazeRules`."""

    positions: np.ndarray
    """The agent's square as a flat index of the full grid, ``row * width + col`` (int64): one lookup per step."""
    reward_indices: np.ndarray
    """The reward square, as an index into :attr:`MazeRules.free_positions` (int64)."""
    reward_hits: np.ndarray
    """Times the reward square was reached this episode (int64)."""
    steps: np.ndarray
    """Steps taken this episode (int64)."""
    previous_rewards: np.ndarray
    """The reward of the previous step, 0 after a reset (float64)."""
    previous_actions: np.ndarray
    """The previous action, :data:`NO_ACTION` after a reset (int64)."""
    episode_returns: np.ndarray
    """The rewards summed over this episode (float64, summed step by step as Monitor sums them)."""

    def take(self, index: int) -> MazeState:
        """A copy of maze ``index`` as a batch of one."""
        return MazeState(**{name: array[index : index + 1].copy() for name, array in self.arrays().items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by its field name (the arrays themselves, not copies)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Overwrite the arrays in place with ``arrays`` (by field name, as :meth:`arrays` gives them)."""
        for name, values in arrays.items():
            getattr(self, name)[:] = values


class MazeRules:
    """The dynamics of mazes of one configuration, as functions of a :class:`MazeState` batch.

    The keywords are those of :class:`~plastic_rl.envs.maze.PlasticMazeEnv`, which validates them and documents
    the task; the arrays below are read-only. Squares are flat indices of the full grid (``row * width + col``),
    so that each rule is a lookup in a flat table: on a batch of one (the single env) the cost of a step is the
    number of numpy calls. ``generators`` arguments hold one generator per maze of the batch, indexed as the state
    is: a maze's draws come only from its own generator.
    """

    def __init__(
        self,
        size: int,
        episode_length: int,
        reward_value: float,
        wall_penalty: float,
        observe_previous_action: bool,
        observe_time: bool,
        time_units: str,
        observe_bias: bool,
    ) -> None:
        self.episode_length = episode_length
        self.reward_value = reward_value
        self.wall_penalty = wall_penalty
        self.observe_previous_action = observe_previous_action
        self.observe_time = observe_time
        self.observe_bias = observe_bias
        self.time_divisor = episode_length if time_units == "fraction" else 1
        self.n_observations = 10 + 4 * observe_previous_action + observe_time + observe_bias
        self.time_index = 10 + 4 * observe_previous_action
        """Where the time sits in the observation (when observed)."""

        self.walls = _read_only(maze_walls(size))
        """Wall map of the full grid (border included), ``[row, col]``."""
        self.width = self.walls.shape[1]
        self._flat_walls = self.walls.ravel()
        self.start_position = MazeSquare(size // 2 + 1, size // 2 + 1)
        self.free_positions = _read_only(np.flatnonzero(~self.walls))
        """The free squares (flat), in row-major order: the reward square and the teleports are drawn among them."""
        self.start_index = self.free_index(self.start_position)
        """Index of the start (centre) square in :attr:`free_positions`."""
        # The 3 x 3 neighbourhood of every square, looked up at each step rather than sliced and concatenated.
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(self.walls, 1, constant_values=True), (3, 3))
        self.neighbourhoods = _read_only(windows.reshape(-1, 9).astype(np.float32))
        """``((size + 2) ** 2, 9)`` float32: the observed 3 x 3 neighbourhood of every (flat) square."""
        # What an observation holds on each square before the step's own entries (reward, action, time) are
        # written: the neighbourhood, and the bias.
        square_observations = np.zeros((self.walls.size, self.n_observations), dtype=np.float32)
        square_observations[:, :9] = self.neighbourhoods
        if observe_bias:
            square_observations[:, -1] = 1.0
        self._square_observations = _read_only(square_observations)
        self.moves = _read_only(np.array([row * self.width + col for row, col in ACTION_MOVES], dtype=np.int64))
        """Each action's change of the flat square."""
        # The reward of each outcome of a step, indexed by 2 * hit + bump: a lookup costs less than two np.where.
        self._outcome_rewards = _read_only(np.array([0.0, -wall_penalty, reward_value], dtype=np.float64))
        # The previous action one-hot, indexed by the action; NO_ACTION (-1) picks the last row, all zeros.
        self._action_codes = _read_only(np.eye(len(ACTION_MOVES) + 1, len(ACTION_MOVES), dtype=np.float32))
        # Positions in the infos come from a table of shared (immutable) squares: building them was most of the cost
        # of a batched step.
        self._squares = [MazeSquare(row, col) for row, col in np.ndindex(self.walls.shape)]

    def free_index(self, square: tuple[int, int]) -> int:
        """The index of ``square`` (``(row, col)``) in :attr:`free_positions`; ``ValueError`` if it is not free."""
        row, col = square
        if not (0 <= row < self.walls.shape[0] and 0 <= col < self.width) or self.walls[row, col]:
            raise ValueError(f"square must be a free square of the maze; got {square!r}")
        return int(np.searchsorted(self.free_positions, row * self.width + col))

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and highest observation, float32, for the observation space."""
        low = np.zeros(self.n_observations, dtype=np.float32)
        high = np.ones(self.n_observations, dtype=np.float32)
        low[9], high[9] = -self.wall_penalty, self.reward_value
        if self.observe_time:
            high[self.time_index] = self.episode_length / self.time_divisor
        return low, high

    def new_state(self, n_mazes: int) -> MazeState:
        """``n_mazes`` mazes before their first episode: the agent and the reward square at the centre."""
        return MazeState(
            positions=np.full(n_mazes, self.free_positions[self.start_index], dtype=np.int64),
            reward_indices=np.full(n_mazes, self.start_index, dtype=np.int64),
            reward_hits=np.zeros(n_mazes, dtype=np.int64),
            steps=np.zeros(n_mazes, dtype=np.int64),
            previous_rewards=np.zeros(n_mazes, dtype=np.float64),
            previous_actions=np.full(n_mazes, NO_ACTION, dtype=np.int64),
            episode_returns=np.zeros(n_mazes, dtype=np.float64),
        )

    def start_episodes(
        self, state: MazeState, indices: Sequence[int], generators: Sequence[np.random.Generator]
    ) -> None:
        """Start a new episode in the mazes ``indices``: a new reward square, the agent at the centre."""
        for index in indices:
            state.reward_indices[index] = self._free_index_skipping(generators[index], self.start_index)
        state.positions[indices] = self.free_positions[self.start_index]
        state.reward_hits[indices] = 0
        state.steps[indices] = 0
        state.previous_rewards[indices] = 0.0
        state.previous_actions[indices] = NO_ACTION
        state.episode_returns[indices] = 0.0

    def step(
        self, state: MazeState, actions: np.ndarray, generators: Sequence[np.random.Generator]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Take one step in every maze with ``actions`` (int64 in 0..3, one per maze): the ``(rewards, dones)``.

        A bump into a wall costs ``wall_penalty`` and leaves the agent in place; stepping onto the reward square
        gives ``reward_value`` and teleports the agent to a uniformly drawn free square other than the reward
        square; any other move just moves. ``dones`` (bool) marks the mazes whose episode has reached
        ``episode_length`` steps; the rewards are float64.
        """
        targets = state.positions + self.moves[actions]
        bumps = self._flat_walls[targets]
        hits = targets == self.free_positions[state.reward_indices]  # the reward square is free: never a bump
        np.copyto(state.positions, targets, where=~bumps)
        for index in hits.nonzero()[0].tolist():
            landing = self._free_index_skipping(generators[index], int(state.reward_indices[index]))
            state.positions[index] = self.free_positions[landing]
        state.reward_hits += hits
        rewards = self._outcome_rewards[2 * hits + bumps]
        state.steps += 1
        state.episode_returns += rewards
        state.previous_rewards[:] = rewards
        state.previous_actions[:] = actions
        return rewards, state.steps >= self.episode_length

    def observe(self, state: MazeState) -> np.ndarray:
        """The mazes' observations, ``(n_mazes, n_observations)`` float32 (the layout is the env's docstring's)."""
        observations = self._square_observations[state.positions]
        observations[:, 9] = state.previous_rewards
        if self.observe_previous_action:
            observations[:, 10:14] = self._action_codes[state.previous_actions]
        if self.observe_time:
            observations[:, self.time_index] = state.steps / self.time_divisor
        return observations

    def infos(self, state: MazeState, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The info dicts of the mazes ``indices``: ``agent_position``, ``reward_position`` (:class:`MazeSquare`),
        ``reward_hits`` and ``step`` (ints)."""
        agent_squares, reward_squares = self.agent_squares(state), self.reward_squares(state)
        hits, steps = state.reward_hits.tolist(), state.steps.tolist()
        return [
            {
                "agent_position": agent_squares[index],
                "reward_position": reward_squares[index],
                "reward_hits": hits[index],
                "step": steps[index],
            }
            for index in indices
        ]

    def agent_squares(self, state: MazeState) -> list[MazeSquare]:
        """Each maze's agent square."""
        return [self._squares[position] for position in state.positions.tolist()]

    def reward_squares(self, state: MazeState) -> list[MazeSquare]:
        """Each maze's reward square."""
        return [self._squares[position] for position in self.free_positions[state.reward_indices].tolist()]

    def _free_index_skipping(self, generator: np.random.Generator, excluded_index: int) -> int:
        """A uniformly drawn index of :attr:`free_positions` other than ``excluded_index``: drawing among
        ``n_free - 1`` and skipping the excluded one keeps the draw uniform, with one draw from ``generator``."""
        index = int(generator.integers(len(self.free_positions) - 1))
        return index + (index >= excluded_index)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
