"""Pattern memorization (the paper's Experiment 1) as a Gymnasium environment, and its batched sampler."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from plastic_rl.core.options import check_choice, check_positive_int
from plastic_rl.envs.frames import answer_frame, warn_no_render_mode
from plastic_rl.envs.presentation import PresentationSchedule

RENDER_COLUMNS = 40
RENDER_CELL_PIXELS = 8


@dataclass(frozen=True)
class PatternMemoryProtocol:
    """The numbers of a pattern-memory episode.

    An episode shows ``pattern_count`` random binary patterns (each element +1 or -1) of
    ``pattern_size`` elements, each for ``steps_shown`` steps followed by ``gap_steps`` steps of zero
    input; the whole sequence is shown ``repetitions`` times, in a new random order each time. Then
    one of the patterns, with ``round(degraded_fraction * pattern_size)`` of its elements set to 0,
    is shown for ``query_steps`` steps (``steps_shown`` when ``None``); the output at the query's last
    step is scored against the full pattern.

    The defaults are the paper's protocol (205 steps); :data:`FAST_PROTOCOL` holds the authors'
    faster variant (106 steps).
    """

    pattern_count: int = 5
    pattern_size: int = 1000
    steps_shown: int = 10
    gap_steps: int = 3
    repetitions: int = 3
    degraded_fraction: float = 0.5
    query_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("pattern_count", "pattern_size"):
            check_positive_int(name, getattr(self, name))
        _ = self.schedule  # building it validates the schedule's numbers
        fraction = self.degraded_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"degraded_fraction must be a number in [0, 1); got {fraction!r}")

    @property
    def schedule(self) -> PresentationSchedule:
        """When each pattern and the query are shown."""
        return PresentationSchedule(
            self.pattern_count, self.steps_shown, self.gap_steps, self.repetitions, self.query_length
        )

    @property
    def query_length(self) -> int:
        return self.steps_shown if self.query_steps is None else self.query_steps

    @property
    def query_start(self) -> int:
        """Index of the first query step."""
        return self.schedule.query_start

    @property
    def episode_length(self) -> int:
        return self.schedule.episode_length

    @property
    def degraded_count(self) -> int:
        return round(self.degraded_fraction * self.pattern_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def draw_episode(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One episode: the inputs ``(T, pattern_size)`` and the full queried pattern ``(pattern_size,)``.

        The draws, in order: the patterns, each repetition's order, the queried pattern, the
        degraded elements. The env and :func:`sample_pattern_episodes` both go through here, which
        is what makes them produce the same episodes from the same seed.
        """
        patterns = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(self.pattern_count, self.pattern_size))
        inputs = self.schedule.present(patterns, rng)
        target = patterns[rng.integers(self.pattern_count)]
        query = target.copy()
        query[rng.permutation(self.pattern_size)[: self.degraded_count]] = 0.0
        inputs[self.query_start :] = query
        return inputs, target


FAST_PROTOCOL = PatternMemoryProtocol(steps_shown=6, gap_steps=4, repetitions=2)
"""The authors' faster variant of the protocol: 6 steps shown, 4 empty, 2 repetitions (106 steps)."""

COMPARISON_PROTOCOL = PatternMemoryProtocol(pattern_count=2, pattern_size=50, steps_shown=3, gap_steps=1, repetitions=1)
"""The small task of the authors' own plastic vs RNN vs LSTM comparison (the paper's Figure 3 commands): 2 patterns of
50 bits, each shown 3 steps then 1 empty, once, then the degraded query for 3 steps (11 steps)."""

PROTOCOLS = {"paper": PatternMemoryProtocol(), "fast": FAST_PROTOCOL, "comparison": COMPARISON_PROTOCOL}
"""The protocols by name (``--protocol`` of the pattern task's commands)."""


def sample_pattern_episodes(
    protocol: PatternMemoryProtocol, rng: np.random.Generator, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` episodes at once: inputs ``(T, B, pattern_size)`` and targets ``(B, pattern_size)``.

    Column ``b`` is the episode that the ``b``-th ``reset`` of a :class:`PatternMemoryEnv` seeded
    like ``rng`` would give.
    """
    check_positive_int("batch_size", batch_size)
    episodes = [protocol.draw_episode(rng) for _ in range(batch_size)]
    inputs = np.stack([episode[0] for episode in episodes], axis=1)
    targets = np.stack([episode[1] for episode in episodes])
    return inputs, targets


def make_rng(seed: int | None) -> np.random.Generator:
    """The generator that ``env.reset(seed=seed)`` gives the env, for use with the batched sampler."""
    return seeding.np_random(seed)[0]


class PatternMemoryEnv(gym.Env):
    """Pattern memorization: remember five binary patterns, then complete a half-erased one.

    Each episode follows a :class:`PatternMemoryProtocol` (every number is a keyword here; the
    defaults are the paper's protocol, 205 steps).

    Observation: ``Box(-1, 1, (pattern_size,))``, the current input vector — a pattern, zeros (the
    gaps), or the degraded query pattern (elements +1, -1 or 0).

    Action: ``Box(-1, 1, (pattern_size,))``, the network's output vector.

    Reward: 0, except for the action taken on the query's last step: minus the mean squared error,
    per element, between the action and the full pattern. That step ends the episode.

    Info: ``"target"`` (the full pattern) whenever the returned observation is a query step, and
    ``"scored"`` (whether the action for the returned observation is the scored one), so that a
    supervised learner can use the env directly.

    Rendering: ``render_mode="rgb_array"`` draws the current input as a grid of ``ceil(pattern_size / 40)``
    rows of 40 elements, 8 x 8 pixels each: +1 black, -1 white, 0 (gaps, erased bits) grey; once the scored action
    has been taken, the network's output and the full pattern beside it.

    How the input reaches a network is the network's business: the paper clamps a neuron whose
    input element is non-zero to it, the authors' code adds 20 x the input to the pre-activation
    (both offered by :class:`plastic_rl.supervised.patterns.PatternMemoryTask`'s models).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        pattern_count: int = 5,
        pattern_size: int = 1000,
        steps_shown: int = 10,
        gap_steps: int = 3,
        repetitions: int = 3,
        degraded_fraction: float = 0.5,
        query_steps: int | None = None,
    ) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.protocol = PatternMemoryProtocol(
            pattern_count, pattern_size, steps_shown, gap_steps, repetitions, degraded_fraction, query_steps
        )
        shape = (pattern_size,)
        self.observation_space = spaces.Box(-1.0, 1.0, shape, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape, dtype=np.float32)
        self._inputs = np.zeros((self.protocol.episode_length, pattern_size), dtype=np.float32)
        self._target = np.zeros(shape, dtype=np.float32)
        self._answer: np.ndarray | None = None  # the scored action, for render()
        self._step = 0

    def _info(self) -> dict[str, Any]:
        if self._step < self.protocol.query_start:
            return {"scored": False}
        return {"target": self._target.copy(), "scored": self._step == self.protocol.episode_length - 1}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._inputs, self._target = self.protocol.draw_episode(self.np_random)
        self._answer = None
        self._step = 0
        return self._inputs[0].copy(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._step >= self.protocol.episode_length:
            raise RuntimeError("step() called after the episode ended; call reset()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self._target.shape or not np.all(np.abs(action) <= 1):  # NaN fails the test too
            raise ValueError(
                f"action must be an array of shape {self._target.shape} with values in [-1, 1]; got shape "
                f"{action.shape}{'' if action.shape != self._target.shape else ' with values outside it or NaN'}"
            )
        terminated = self._step == self.protocol.episode_length - 1
        reward = 0.0
        if terminated:
            error = action - self._target
            reward = -float(np.mean(np.square(error)))
            self._answer = action.copy()
        self._step += 1
        if terminated:
            return np.zeros_like(self._target), reward, True, False, {"target": self._target.copy(), "scored": False}
        return self._inputs[self._step].copy(), reward, False, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            warn_no_render_mode()
            return None
        current = self._inputs[min(self._step, self.protocol.episode_length - 1)]
        return answer_frame(current, self._answer, self._target, RENDER_COLUMNS, RENDER_CELL_PIXELS, 1.0, -1.0)
