"""The presentation schedule shared by the memory tasks (patterns, images): show items, then a query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from plastic_rl.core.options import check_positive_int

if TYPE_CHECKING:
    import torch

# numpy arrays (the envs) and torch tensors (the trainer) slice alike.
ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class PresentationSchedule:
    """When each item and the query are shown in a memory episode.

    The ``item_count`` items are each shown for ``steps_shown`` steps followed by ``gap_steps`` steps
    of zero input; the whole sequence is shown ``repetitions`` times, in a new random order each
    time; then the query is shown for ``query_steps`` steps. Only the output at the query's last
    step is scored.
    """

    item_count: int
    steps_shown: int
    gap_steps: int
    repetitions: int
    query_steps: int

    def __post_init__(self) -> None:
        for name in ("steps_shown", "repetitions", "query_steps"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.gap_steps, bool) or not isinstance(self.gap_steps, int) or self.gap_steps < 0:
            raise ValueError(f"gap_steps must be an integer >= 0; got {self.gap_steps!r}")

    @property
    def query_start(self) -> int:
        """Index of the first query step."""
        return self.item_count * (self.steps_shown + self.gap_steps) * self.repetitions

    @property
    def episode_length(self) -> int:
        return self.query_start + self.query_steps

    def present(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The inputs ``(T, size)`` of an episode showing ``items`` ``(item_count, size)``; the query steps are 0.

        Draws one permutation of the items per repetition from ``rng``, in order; the caller then
        draws its query and writes it into ``inputs[query_start:]``.
        """
        inputs = np.zeros((self.episode_length, items.shape[1]), dtype=np.float32)
        block = self.steps_shown + self.gap_steps
        step = 0
        for _ in range(self.repetitions):
            for index in rng.permutation(self.item_count):
                inputs[step : step + self.steps_shown] = items[index]
                step += block
        return inputs

    def first_showing(self, inputs: ArrayLike) -> ArrayLike:
        """The items as first shown in ``inputs`` ``(T, ..., size)``: ``(item_count, ..., size)``.

        Every repetition shows every item once, so these are all the episode's items (in the
        first repetition's order).
        """
        block = self.steps_shown + self.gap_steps
        return inputs[0 : self.item_count * block : block]
