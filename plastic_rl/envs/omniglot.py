"""Omniglot N-way K-shot classification (the paper's Experiment 3): a Gymnasium environment and its batched sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from plastic_rl.core.options import check_choice, check_positive_int
from plastic_rl.data.omniglot import IMAGE_SIZE, ROTATIONS, OmniglotImages, OmniglotSplit, load_images, make_split
from plastic_rl.envs.frames import grey_cells, side_by_side, warn_no_render_mode
from plastic_rl.envs.presentation import PresentationSchedule

RENDER_PIXELS = 4  # screen pixels a side per image pixel


@dataclass(frozen=True)
class OmniglotClasses:
    """The classes episodes are drawn from: ``images`` rows, and their rotations (``None``: drawn per episode)."""

    images: np.ndarray
    rows: np.ndarray
    rotations: np.ndarray | None

    @classmethod
    def of(cls, images: OmniglotImages, split: OmniglotSplit, part: str) -> OmniglotClasses:
        rows, rotations = split.classes(part, images)
        return cls(images.images, rows, rotations)


@dataclass(frozen=True)
class OmniglotEpisode:
    """One episode: ``images`` ``(T, 31, 31)`` float32 in [0, 1], ``labels`` ``(T,)`` (-1 at a query), ``targets``
    ``(queries,)``, the label of each query in order."""

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray


def check_episode_size(classes: OmniglotClasses, ways: int, shots: int, queries: int = 1) -> None:
    """Refuse an episode that ``classes`` cannot fill: more ways than classes, or more drawings than a class has."""
    check_positive_int("queries", queries)
    drawings = classes.images.shape[1]
    if shots + queries > drawings:
        raise ValueError(
            f"shots + queries must be at most the {drawings} drawings per character; got {shots} + {queries}"
        )
    if ways > len(classes.rows):
        raise ValueError(f"ways must be at most the {len(classes.rows)} classes available; got {ways}")


def draw_episode(
    classes: OmniglotClasses, ways: int, shots: int, rng: np.random.Generator, queries: int = 1
) -> OmniglotEpisode:
    """An N-way K-shot episode: ``ways * shots`` labelled drawings in random order, then ``queries`` unlabelled ones.

    The draws, in order: the classes (distinct), their rotations (when drawn per episode), ``shots +
    queries`` distinct drawings of each class (the first ``shots`` are shown, the others go to its queries
    in turn), the queried classes (each uniform, independently), the order of the shown drawings. Label
    ``i`` is the ``i``-th class drawn, so labels are a fresh random assignment in every episode. The
    paper's protocol is one query; more queries of the same shown drawings give the trainer more scored
    steps per episode.
    """
    check_episode_size(classes, ways, shots, queries)
    drawings = classes.images.shape[1]
    chosen = rng.choice(len(classes.rows), size=ways, replace=False)
    rotations = rng.integers(ROTATIONS, size=ways) if classes.rotations is None else classes.rotations[chosen]
    picks = rng.random((ways, drawings)).argsort(axis=1)[:, : shots + queries]
    targets = rng.integers(ways, size=queries)
    order = rng.permutation(ways * shots)
    pictures = classes.images[classes.rows[chosen][:, None], picks]  # (ways, shots + queries, 31, 31)
    pictures = np.stack([np.rot90(pictures[way], int(rotations[way]), axes=(1, 2)) for way in range(ways)])
    shown_labels = np.repeat(np.arange(ways), shots)[order]
    shown_images = pictures[:, :shots].reshape(ways * shots, IMAGE_SIZE, IMAGE_SIZE)[order]
    # The m-th query of a class takes that class's (shots + m)-th drawing: no drawing is used twice.
    earlier_queries_of_same_class = (targets[None, :] == targets[:, None]).cumsum(axis=1).diagonal() - 1
    query_images = pictures[targets, shots + earlier_queries_of_same_class]
    images = np.concatenate([shown_images, query_images]).astype(np.float32) / 255.0
    return OmniglotEpisode(images, np.append(shown_labels, np.full(queries, -1)), targets)


def sample_omniglot_episodes(
    classes: OmniglotClasses, ways: int, shots: int, rng: np.random.Generator, batch_size: int, queries: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch_size`` episodes as arrays: images ``(T, B, 31, 31)``, labels ``(T, B)`` (-1: query), targets
    ``(queries, B)``.

    Column ``b`` is the episode that the ``b``-th ``reset`` of a :class:`OmniglotEnv` seeded like
    ``rng`` would give (with ``queries=1``, the env's protocol).
    """
    check_positive_int("batch_size", batch_size)
    episodes = [draw_episode(classes, ways, shots, rng, queries) for _ in range(batch_size)]
    images = np.stack([episode.images for episode in episodes], axis=1)
    labels = np.stack([episode.labels for episode in episodes], axis=1)
    return images, labels, np.stack([episode.targets for episode in episodes], axis=1)


class OmniglotEnv(gym.Env):
    """Omniglot one-shot classification: see one labelled drawing of each of N characters, name a new one.

    Each episode draws ``ways`` classes of the split's ``part`` and shows ``shots`` drawings of each,
    with their label, in random order, each for ``steps_shown`` steps; then one new drawing of one of them, without
    its label, for ``query_steps`` steps. See :func:`draw_episode` and, for the splits, :mod:`plastic_rl.data.omniglot`.
    A recurrent plastic network reads its trace with the previous step's activity, so it can recall what the query
    drawing was shown with only from the query's second step on (``query_steps=2``), and it associates a drawing with
    its label across steps most directly when both are held for two (``steps_shown=2``).

    Observation: ``Dict(image=Box(0, 1, (31, 31)), label=Box(0, 1, (ways,)))``: the drawing (ink = 1)
    and its one-hot label, all zeros at the query.

    Action: ``Discrete(ways)``, the class named. Only the action taken at the query's last step is scored.

    Reward: 1 if the query's class is named, else 0, given at the query's last step, which ends the episode;
    0 before. Episodes are ``ways * shots * steps_shown + query_steps`` steps long.

    Info: ``"target"`` (the query's label) on every step, for supervised use.

    Rendering: ``render_mode="rgb_array"`` draws the current drawing, 4 pixels per image pixel, and its label as a
    row of ``ways`` cells (the given class black); once the query is answered, the class named and the right one as
    two more rows.

    Parameters
    ----------
    ways, shots : N and K (5-way 1-shot by default).
    steps_shown, query_steps : steps each labelled drawing and the query are shown for (1 and 1: the paper's episode).
    split, part : ``"vinyals"``, ``"paper"``, ``"lake"`` or a split file (see
        :meth:`plastic_rl.data.omniglot.OmniglotSplit.from_file`), and ``"train"``, ``"validation"`` or ``"test"``.
    split_seed, test_characters, validation_characters : the paper split's draw.
    data_dir : the data directory (see :func:`plastic_rl.data.resolve_data_dir`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        ways: int = 5,
        shots: int = 1,
        split: str = "vinyals",
        part: str = "train",
        split_seed: int = 0,
        test_characters: int = 100,
        validation_characters: int = 100,
        data_dir: str | None = None,
        render_mode: str | None = None,
        steps_shown: int = 1,
        query_steps: int = 1,
    ) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        check_positive_int("ways", ways)
        check_positive_int("shots", shots)
        if ways < 2:
            raise ValueError(f"ways must be at least 2; got {ways}")
        images = load_images(data_dir)
        self.split = make_split(split, images, split_seed, test_characters, validation_characters)
        self.classes = OmniglotClasses.of(images, self.split, part)
        self.ways, self.shots = ways, shots
        self.schedule = PresentationSchedule(ways * shots, steps_shown, 0, 1, query_steps)
        """When each labelled drawing and the query are shown (a drawing at a time, in the episode's order)."""
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0.0, 1.0, (IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32),
                "label": spaces.Box(0.0, 1.0, (ways,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Discrete(ways)
        self._episode: OmniglotEpisode | None = None
        self._answer: int | None = None  # the class named at the query, for render()
        self._step = 0

    def _shown(self, step: int) -> int:
        """The index into the episode's drawings of what ``step`` shows."""
        schedule = self.schedule
        return min(step, schedule.query_start) // schedule.steps_shown

    def _observation(self, step: int | None = None) -> dict[str, np.ndarray]:
        """The observation at ``step`` (default: the current one)."""
        episode = self._episode
        assert episode is not None, "reset() draws the episode"
        shown = self._shown(self._step if step is None else step)
        label = np.zeros(self.ways, dtype=np.float32)
        if episode.labels[shown] >= 0:
            label[episode.labels[shown]] = 1.0
        return {"image": episode.images[shown].copy(), "label": label}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._episode = draw_episode(self.classes, self.ways, self.shots, self.np_random)
        self._answer = None
        self._step = 0
        return self._observation(), {"target": int(self._episode.targets[0])}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._episode is None or self._step >= self.schedule.episode_length:
            raise RuntimeError("step() called after the episode ended; call reset()")
        info = {"target": int(self._episode.targets[0])}
        if self._step == self.schedule.episode_length - 1:
            self._step += 1
            self._answer = int(action)
            reward = float(self._answer == info["target"])
            final = {"image": np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32), "label": np.zeros(self.ways, np.float32)}
            return final, reward, True, False, info
        self._step += 1
        return self._observation(), 0.0, False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            warn_no_render_mode()
            return None
        episode = self._episode
        assert episode is not None, "reset() draws the episode"
        step = min(self._step, self.schedule.episode_length - 1)
        drawing = grey_cells(episode.images[self._shown(step)], IMAGE_SIZE, RENDER_PIXELS, 1.0, 0.0)
        rows = [self._observation(step)["label"]]
        if self._answer is not None:
            rows += [np.eye(self.ways)[self._answer], np.eye(self.ways)[episode.targets[0]]]
        cell = max(IMAGE_SIZE * RENDER_PIXELS // self.ways, 1)
        labels = np.concatenate([grey_cells(row, self.ways, cell, 1.0, 0.0) for row in rows])
        return side_by_side([drawing, labels])
