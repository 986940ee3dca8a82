"""PlasticMaze-v0: the meta-reinforcement-learning maze of Miconi, Clune & Stanley (ICML 2018), Experiment 4."""

from __future__ import annotations

import math
import operator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from plastic_rl.core.options import check_choice, check_positive_float, check_positive_int
from plastic_rl.envs.maze_rendering import MazeRenderer, frame_shape
from plastic_rl.envs.maze_rules import ACTION_MOVES, TIME_UNITS, MazeRules, MazeSquare, MazeState


def _action_index(action: Any) -> int:
    """``action`` as an int in [0, 4): what ``Discrete(4).contains`` accepts (Python and numpy integers, 0-d
    integer arrays), at a fraction of its cost on this per-step path."""
    try:
        index = operator.index(action)
    except TypeError:
        index = -1
    if not 0 <= index < len(ACTION_MOVES):
        raise ValueError(f"action must be one of 0 (up), 1 (right), 2 (down), 3 (left); got {action!r}")
    return index


class PlasticMazeEnv(gym.Env[np.ndarray, np.int64]):
    """The paper's maze: find the hidden reward square, again and again, within one episode.

    A ``size`` x ``size`` maze (default 9 x 9), surrounded by a border of walls (an 11 x 11 grid in all), in which
    every other square in either direction is a wall (16 wall squares in a regular grid at the default size, see
    :func:`~plastic_rl.envs.maze_rules.maze_walls`). Each episode one free square other than the centre is drawn,
    uniformly, as the reward square, which the agent cannot see. The agent starts each episode at the centre
    square. Stepping onto the reward square gives ``+reward_value`` and teleports the agent to a uniformly drawn
    free square other than the reward square; walking into a wall gives ``-wall_penalty`` and the agent stays put.
    All positions are ``(row, col)`` in the full grid, border included (the centre is
    ``(size // 2 + 1, size // 2 + 1)``). The rules live in :class:`~plastic_rl.envs.maze_rules.MazeRules`, with
    which :class:`~plastic_rl.envs.batched_maze.BatchedMaze` steps many mazes at once.

    The episode lasts exactly ``episode_length`` steps (default 250) and then ends with ``terminated=True``: the
    horizon is part of the task (the paper's A2C does not bootstrap there), so the env is never truncated.

    Action space
        ``Discrete(4)``: 0 up, 1 right, 2 down, 3 left.

    Observation space
        ``Box(float32)`` of shape ``(10,)`` by default, as in the paper:

        * ``[0:9]``: the 3 x 3 neighbourhood centred on the agent, row-major, 1 = wall, 0 = free;
        * ``[9]``: the reward received at the previous step (0 after ``reset``);
        * then, when enabled and in this order: the previous action one-hot (4 values, all 0 after ``reset``) if
          ``observe_previous_action``, the step count divided by ``episode_length`` (1 value, 0 after
          ``reset``, 1 at the end; the raw step count with ``time_units="steps"``) if ``observe_time``, and a
          constant 1 (a bias input) if ``observe_bias``.

    Reward
        ``+reward_value`` (10) on the reward square, ``-wall_penalty`` (-0.1) on a bump into a wall, 0 otherwise.

    Info
        ``"agent_position"`` and ``"reward_position"`` (:class:`MazeSquare`: ``(row, col)`` tuples of ints),
        ``"reward_hits"`` (times the reward square was reached this episode) and ``"step"`` (steps taken this
        episode).

    Rendering
        ``"rgb_array"`` returns ``uint8`` frames of shape ``(40 * (size + 2) + 32, 40 * (size + 2), 3)``, i.e.
        ``(472, 440, 3)`` at the default size; with ``show_trace_panel`` a square side panel doubles the width
        and a strip of 72 rows runs along the bottom: ``(544, 880, 3)``. The panel is reserved at construction, so
        all frames of an env have one shape (:attr:`frame_shape`). ``"human"`` shows the same picture in a window
        at ``metadata["render_fps"]``. The frame shows walls, free squares, the agent (blue disc) with a fading
        trail of its recent squares, the reward square (gold: shown to the viewer, hidden from the agent) with an
        orange ring flashing after each hit, a status line (step, episode reward, reward hits; orange at a hit),
        the side panel's heat map and the strip's curve of the panel's value over the episode, with a tick at
        each hit (both set with :meth:`set_panel_matrix`).

    Parameters
    ----------
    render_mode : str or None
        ``None``, ``"human"`` or ``"rgb_array"``.
    size : int
        Side of the maze without its border: odd, at least 5.
    episode_length : int
        Steps per episode (> 0).
    reward_value : float
        Reward for reaching the reward square (> 0, finite).
    wall_penalty : float
        Magnitude of the negative reward for walking into a wall (>= 0, finite).
    observe_previous_action : bool
        Append the previous action, one-hot, to the observation.
    observe_time : bool
        Append the step count divided by ``episode_length`` to the observation.
    time_units : str
        ``"fraction"`` (the step count divided by ``episode_length``) or ``"steps"`` (the raw step count, as
        the authors' maze code feeds it) for ``observe_time``.
    observe_bias : bool
        Append a constant 1 to the observation (the authors' code's bias input).
    show_trace_panel : bool
        Reserve a side panel in rendered frames for a heat map (e.g. the agent's Hebbian trace).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        size: int = 9,
        episode_length: int = 250,
        reward_value: float = 10.0,
        wall_penalty: float = 0.1,
        observe_previous_action: bool = False,
        observe_time: bool = False,
        time_units: str = "fraction",
        observe_bias: bool = False,
        show_trace_panel: bool = False,
    ) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        check_positive_int("size", size)
        if size < 5 or size % 2 == 0:
            raise ValueError(f"size must be an odd integer >= 5; got {size!r}")
        self.episode_length = check_positive_int("episode_length", episode_length)
        self.reward_value = check_positive_float("reward_value", reward_value)
        if not math.isfinite(self.reward_value):
            raise ValueError(f"reward_value must be a finite number > 0; got {reward_value!r}")
        if (
            isinstance(wall_penalty, bool)
            or not isinstance(wall_penalty, (int, float))
            or not 0 <= wall_penalty < math.inf
        ):
            raise ValueError(f"wall_penalty must be a finite number >= 0; got {wall_penalty!r}")
        self.wall_penalty = float(wall_penalty)
        for name, flag in (
            ("observe_previous_action", observe_previous_action),
            ("observe_time", observe_time),
            ("observe_bias", observe_bias),
            ("show_trace_panel", show_trace_panel),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False; got {flag!r}")

        self.render_mode = render_mode
        self.size = size
        self.observe_previous_action = observe_previous_action
        self.observe_time = observe_time
        self.time_units = check_choice("time_units", time_units, TIME_UNITS)
        self.observe_bias = observe_bias
        self.show_trace_panel = show_trace_panel

        self.rules = MazeRules(
            size=size,
            episode_length=episode_length,
            reward_value=self.reward_value,
            wall_penalty=self.wall_penalty,
            observe_previous_action=observe_previous_action,
            observe_time=observe_time,
            time_units=time_units,
            observe_bias=observe_bias,
        )
        """The maze's dynamics, shared with :class:`~plastic_rl.envs.batched_maze.BatchedMaze`."""
        self.walls = self.rules.walls
        """Wall map of the full grid (border included), ``[row, col]``, read-only."""
        self.start_position = self.rules.start_position
        low, high = self.rules.observation_bounds()
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(ACTION_MOVES))
        self.state: MazeState = self.rules.new_state(1)
        """Where the maze stands: a batch of one, stepped by :attr:`rules`."""
        self._panel_matrix: np.ndarray | None = None
        self._panel_title = "Hebbian trace"
        self._panel_scale: float | None = None
        self._panel_value: float | None = None
        self._panel_value_label = ""
        self._panel_value_scale: float | None = None
        self._renderer: MazeRenderer | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape ``(height, width, 3)`` of every frame this env renders."""
        return frame_shape(self.walls.shape[0], self.show_trace_panel)

    @property
    def agent_position(self) -> MazeSquare:
        """The agent's square."""
        return self.rules.agent_squares(self.state)[0]

    @property
    def reward_position(self) -> MazeSquare:
        """The reward square (hidden from the agent); settable to any free square, e.g. to stage a hit."""
        return self.rules.reward_squares(self.state)[0]

    @reward_position.setter
    def reward_position(self, square: tuple[int, int]) -> None:
        self.state.reward_indices[0] = self.rules.free_index(square)

    @property
    def reward_hits(self) -> int:
        """Times the reward square was reached this episode."""
        return int(self.state.reward_hits[0])

    @property
    def step_count(self) -> int:
        """Steps taken this episode."""
        return int(self.state.steps[0])

    @property
    def episode_reward(self) -> float:
        """The rewards summed over this episode."""
        return float(self.state.episode_returns[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.rules.start_episodes(self.state, [0], [self.np_random])
        if self.render_mode == "human":
            self.render()
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.step_count >= self.episode_length:
            raise RuntimeError("step() called after the episode ended; call reset()")
        actions = np.array([_action_index(action)])
        rewards, dones = self.rules.step(self.state, actions, [self.np_random])
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(rewards[0]), bool(dones[0]), False, self._info()

    def set_panel_matrix(
        self,
        matrix: np.ndarray | None,
        title: str = "Hebbian trace",
        scale: float | None = None,
        value: float | None = None,
        value_label: str = "norm",
        value_scale: float | None = None,
    ) -> None:
        """Set the matrix the side panel shows as a heat map (colour scale symmetric around 0).

        Parameters
        ----------
        matrix : np.ndarray or None
            A 2-D array of finite numbers (copied), e.g. ``hebbian_trace[0].detach().cpu().numpy()``;
            ``None`` clears the panel.
        title : str
            Text shown above the heat map.
        scale : float or None
            The magnitude drawn in the full end colours, fixed so that frames compare (larger values saturate);
            ``None`` fits the scale to each matrix.
        value : float or None
            This step's point of the strip along the bottom of the frame; ``None``: the matrix's Frobenius norm
            (nothing when ``matrix`` is ``None``).
        value_label : str
            The strip's label.
        value_scale : float or None
            The top of the strip's axis, fixed so that the curve's growth shows; ``None``: the smallest of 1, 2
            or 5 times a power of ten above the values so far.
        """
        if not self.show_trace_panel:
            raise ValueError("set_panel_matrix needs a side panel: construct the env with show_trace_panel=True")
        if matrix is not None:
            matrix = np.array(matrix, dtype=np.float64)
            if matrix.ndim != 2 or matrix.size == 0:
                raise ValueError(f"matrix must be a non-empty 2-D array; got shape {matrix.shape}")
            if not np.isfinite(matrix).all():
                raise ValueError("matrix must contain only finite numbers")
        if scale is not None:
            check_positive_float("scale", scale)
        if value_scale is not None:
            check_positive_float("value_scale", value_scale)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"value must be a finite number or None; got {value!r}")
        self._panel_matrix = matrix
        self._panel_title = str(title)
        self._panel_scale = None if scale is None else float(scale)
        if value is None and matrix is not None:
            value = float(np.linalg.norm(matrix))
        self._panel_value = value
        self._panel_value_label = str(value_label)
        self._panel_value_scale = None if value_scale is None else float(value_scale)

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """The arrow keys' pygame codes mapped to actions, for :func:`gymnasium.utils.play.play`."""
        from plastic_rl.envs.maze_rendering import arrow_keys

        return {(key,): action for action, key in enumerate(arrow_keys())}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn(
                "Calling render without specifying any render mode; "
                'construct the env with render_mode="rgb_array" or "human".'
            )
            return None
        if self._renderer is None:
            self._renderer = MazeRenderer(
                self.walls,
                render_mode=self.render_mode,
                render_fps=self.metadata["render_fps"],
                show_panel=self.show_trace_panel,
            )
        status = (
            f"step {self.step_count}/{self.episode_length}   "
            f"episode reward {self.episode_reward:.1f}   reward hits {self.reward_hits}"
        )
        return self._renderer.render(
            agent_position=self.agent_position,
            reward_position=self.reward_position,
            status=status,
            panel_matrix=self._panel_matrix,
            panel_title=self._panel_title,
            step=self.step_count,
            episode_length=self.episode_length,
            reward_hits=self.reward_hits,
            panel_scale=self._panel_scale,
            panel_value=self._panel_value,
            panel_value_label=self._panel_value_label,
            panel_value_scale=self._panel_value_scale,
        )

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _observation(self) -> np.ndarray:
        return self.rules.observe(self.state)[0]

    def _info(self) -> dict[str, Any]:
        return self.rules.infos(self.state, [0])[0]
