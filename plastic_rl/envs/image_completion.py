"""Natural-image completion (the paper's Experiment 2) as a Gymnasium environment, and its batched sampler."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from plastic_rl.core.options import check_choice, check_float_range, check_positive_int
from plastic_rl.envs.frames import answer_frame, warn_no_render_mode
from plastic_rl.envs.presentation import PresentationSchedule

RENDER_PIXELS = 4  # screen pixels a side per image pixel

DEGRADATIONS = ("top_bottom", "left_right", "random_pixels")


@dataclass(frozen=True)
class ImageCompletionProtocol:
    """The numbers of an image-completion episode.

    An episode shows ``image_count`` different images (square, ``image_side`` pixels a side,
    flattened row-major), each for ``steps_shown`` steps followed by ``gap_steps`` steps of zero
    input; the whole sequence is shown ``repetitions`` times, in a new random order each time. Then
    one of the images, degraded, is shown for ``query_steps`` steps, and the output at the query's
    last step is scored on the degraded (hidden) pixels. ``degradation`` says which pixels are
    hidden (set to 0):

    - ``"top_bottom"``: the top or the bottom half, drawn at random (the paper);
    - ``"left_right"``: the left or the right half, drawn at random;
    - ``"random_pixels"``: ``round(degraded_fraction * pixels)`` pixels drawn at random; with
      ``degraded_fraction_max``, each query's fraction is first drawn uniformly from
      ``[degraded_fraction, degraded_fraction_max]`` (one network for every erasure in between).

    The defaults are the paper's protocol: 3 images, 20 steps each plus 3 empty, 3 repetitions,
    a 3-step query (210 steps).
    """

    image_count: int = 3
    steps_shown: int = 20
    gap_steps: int = 3
    repetitions: int = 3
    query_steps: int = 3
    degradation: str = "top_bottom"
    degraded_fraction: float = 0.5
    image_side: int = 32
    degraded_fraction_max: float | None = None

    def __post_init__(self) -> None:
        for name in ("image_count", "image_side"):
            check_positive_int(name, getattr(self, name))
        _ = self.schedule  # building it validates the schedule's numbers
        check_choice("degradation", self.degradation, DEGRADATIONS)
        if self.degradation in ("top_bottom", "left_right") and self.image_side % 2:
            raise ValueError(f"image_side must be even to hide half of the image; got {self.image_side}")
        check_float_range("degraded_fraction", self.degraded_fraction, 0, 1, low_open=True, high_open=True)
        if self.degradation == "random_pixels":
            self._check_hides_some("degraded_fraction", self.degraded_fraction)
        if self.degraded_fraction_max is not None:
            if self.degradation != "random_pixels":
                raise ValueError(
                    f"degraded_fraction_max needs degradation 'random_pixels'; got degradation {self.degradation!r}"
                )
            check_float_range(
                "degraded_fraction_max",
                self.degraded_fraction_max,
                self.degraded_fraction,
                1,
                low_open=True,
                high_open=True,
            )
            self._check_hides_some("degraded_fraction_max", self.degraded_fraction_max)

    def _check_hides_some(self, name: str, fraction: float) -> None:
        """A query must hide at least one pixel (its error is over the hidden ones) and show at least one."""
        if not 1 <= round(fraction * self.image_size) <= self.image_size - 1:
            raise ValueError(
                f"{name} must hide between 1 and {self.image_size - 1} of the {self.image_size} pixels; got {fraction} "
                f"({round(fraction * self.image_size)} pixels)"
            )

    @property
    def schedule(self) -> PresentationSchedule:
        """When each image and the query are shown."""
        return PresentationSchedule(
            self.image_count, self.steps_shown, self.gap_steps, self.repetitions, self.query_steps
        )

    @property
    def image_size(self) -> int:
        """Pixels per image (the observation and action size)."""
        return self.image_side * self.image_side

    @property
    def query_start(self) -> int:
        return self.schedule.query_start

    @property
    def episode_length(self) -> int:
        return self.schedule.episode_length

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """``images`` as float32 ``(N, image_size)`` if there are at least ``image_count`` of that size."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 2 or images.shape[1] != self.image_size:
            raise ValueError(f"images must be an (N, {self.image_size}) array; got shape {images.shape}")
        if len(images) < self.image_count:
            raise ValueError(f"images must hold at least image_count={self.image_count} images; got {len(images)}")
        return images

    def hidden_pixels(self, rng: np.random.Generator) -> np.ndarray:
        """A boolean ``(image_size,)`` mask of the pixels one query hides, drawn with ``rng``."""
        side = self.image_side
        if self.degradation == "random_pixels":
            fraction = self.degraded_fraction
            if self.degraded_fraction_max is not None:
                fraction = rng.uniform(fraction, self.degraded_fraction_max)
            hidden = np.zeros(self.image_size, dtype=bool)
            hidden[rng.permutation(self.image_size)[: round(fraction * self.image_size)]] = True
            return hidden
        hidden = np.zeros((side, side), dtype=bool)
        half = slice(side // 2, side) if rng.integers(2) else slice(0, side // 2)
        if self.degradation == "top_bottom":
            hidden[half, :] = True
        else:
            hidden[:, half] = True
        return hidden.reshape(-1)

    def draw_episode(self, images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One episode from the pool ``images`` ``(N, image_size)``.

        Returns the inputs ``(T, image_size)``, the full queried image ``(image_size,)`` and the
        mask of its hidden pixels ``(image_size,)``. The draws, in order: the images (distinct
        indices into the pool), each repetition's order, the queried image, the hidden pixels. The
        env and :func:`sample_image_episodes` both go through here.
        """
        shown = images[rng.choice(len(images), size=self.image_count, replace=False)]
        inputs = self.schedule.present(shown, rng)
        target = shown[rng.integers(self.image_count)]
        hidden = self.hidden_pixels(rng)
        inputs[self.query_start :] = np.where(hidden, np.float32(0), target)
        return inputs, target.copy(), hidden


def sample_image_episodes(
    protocol: ImageCompletionProtocol, images: np.ndarray, rng: np.random.Generator, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch_size`` episodes at once: inputs ``(T, B, size)``, targets ``(B, size)``, hidden masks ``(B, size)``.

    Column ``b`` is the episode that the ``b``-th ``reset`` of an :class:`ImageCompletionEnv` on the
    same images, seeded like ``rng``, would give.
    """
    check_positive_int("batch_size", batch_size)
    episodes = [protocol.draw_episode(images, rng) for _ in range(batch_size)]
    inputs = np.stack([episode[0] for episode in episodes], axis=1)
    targets = np.stack([episode[1] for episode in episodes])
    hidden = np.stack([episode[2] for episode in episodes])
    return inputs, targets, hidden


class ImageCompletionEnv(gym.Env):
    """Natural-image completion: see three images, then fill in the hidden half of one of them.

    Each episode follows an :class:`ImageCompletionProtocol` (every number is a keyword here; the
    defaults are the paper's protocol, 210 steps). The images are CIFAR-10's, in the authors'
    grayscale (:func:`plastic_rl.data.cifar.load_grayscale`): ``split="train"`` draws from the
    training batches, ``split="test"`` from the test batch only; ``images`` (an ``(N, 1024)`` array
    in [-1, 1]) replaces the dataset.

    Observation: ``Box(-1, 1, (1024,))``, the current input — an image, zeros (the gaps), or the
    degraded query (hidden pixels 0).

    Action: ``Box(-1, 1, (1024,))``, the network's output image.

    Reward: 0, except for the action taken on the query's last step: minus the mean squared error
    between the action and the full image over the hidden pixels. That step ends the episode.

    Info: ``"target"`` (the full image) and ``"hidden"`` (the boolean mask of hidden pixels) whenever
    the returned observation is a query step, and ``"scored"`` (whether the action for the returned
    observation is the scored one).

    Rendering: ``render_mode="rgb_array"`` draws the current input, 4 pixels per image pixel (-1 black, +1 white,
    hidden pixels and gaps grey), and, once the scored action has been taken, the network's output image and the
    full image beside it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        image_count: int = 3,
        steps_shown: int = 20,
        gap_steps: int = 3,
        repetitions: int = 3,
        query_steps: int = 3,
        degradation: str = "top_bottom",
        degraded_fraction: float = 0.5,
        degraded_fraction_max: float | None = None,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        images: np.ndarray | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.protocol = ImageCompletionProtocol(
            image_count,
            steps_shown,
            gap_steps,
            repetitions,
            query_steps,
            degradation,
            degraded_fraction,
            degraded_fraction_max=degraded_fraction_max,
        )
        if images is None:
            from plastic_rl.data.cifar import load_grayscale

            images = load_grayscale(split, data_dir)
        self.images = self.protocol.check_images(images)
        shape = (self.protocol.image_size,)
        self.observation_space = spaces.Box(-1.0, 1.0, shape, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape, dtype=np.float32)
        self._inputs = np.zeros((self.protocol.episode_length, *shape), dtype=np.float32)
        self._target = np.zeros(shape, dtype=np.float32)
        self._hidden = np.zeros(shape, dtype=bool)
        self._answer: np.ndarray | None = None  # the scored action, for render()
        self._step = 0

    def _info(self) -> dict[str, Any]:
        if self._step < self.protocol.query_start:
            return {"scored": False}
        return {
            "target": self._target.copy(),
            "hidden": self._hidden.copy(),
            "scored": self._step == self.protocol.episode_length - 1,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._inputs, self._target, self._hidden = self.protocol.draw_episode(self.images, self.np_random)
        self._answer = None
        self._step = 0
        return self._inputs[0].copy(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._step >= self.protocol.episode_length:
            raise RuntimeError("step() called after the episode ended; call reset()")
        terminated = self._step == self.protocol.episode_length - 1
        reward = 0.0
        if terminated:
            self._answer = np.asarray(action, dtype=np.float32).copy()
            error = self._answer - self._target
            reward = -float(np.mean(np.square(error[self._hidden])))
        self._step += 1
        if terminated:
            final = {"target": self._target.copy(), "hidden": self._hidden.copy(), "scored": False}
            return np.zeros_like(self._target), reward, True, False, final
        return self._inputs[self._step].copy(), reward, False, False, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            warn_no_render_mode()
            return None
        current = self._inputs[min(self._step, self.protocol.episode_length - 1)]
        return answer_frame(current, self._answer, self._target, self.protocol.image_side, RENDER_PIXELS, -1.0, 1.0)
