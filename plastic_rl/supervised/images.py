"""The natural-image completion task (the paper's Experiment 2) for the supervised trainer."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from plastic_rl.core.options import check_choice, check_float_range
from plastic_rl.envs.image_completion import ImageCompletionProtocol, sample_image_episodes
from plastic_rl.supervised.models import build_memory_model
from plastic_rl.supervised.options import MEMORY_MODELS, ImageOptions
from plastic_rl.supervised.task import Episodes, SupervisedTask, masked_mean

# Completions that need no training, as references for the trained models.
REFERENCE_COMPLETIONS = ("zero", "mean", "nearest", "neighbours")
# The image pools of an episode: training and validation images both come from the training batches.
PARTS = ("train", "validation", "test")


class ImageCompletionTask(SupervisedTask):
    """Complete the hidden half of one of the CIFAR-10 images shown earlier in the episode.

    Episodes follow an :class:`~plastic_rl.envs.image_completion.ImageCompletionProtocol` (the
    keywords here are its fields) and come from the same sampler as ``PlasticImageCompletion-v0``.
    CIFAR-10 has no validation split, so the last ``validation_fraction`` of the training batches'
    images (at least ``image_count``) are held out as one: training episodes draw from the others,
    the trainer's evaluations (:meth:`sample_validation`) from these, and test episodes
    (``sample_part("test", ...)``, what results report) from the test batch's only. ``data_dir`` is
    the data directory (:func:`plastic_rl.data.resolve_data_dir`); ``images`` —
    ``{"train": array, "test": array}`` of ``(N, 1024)`` images in [-1, 1] — replaces the dataset
    (it is not saved with a model).

    Only the hidden pixels at the query's last step are scored. Loss and ``hidden_mse``: the mean
    squared error there. ``closer_fraction``: the fraction of queries whose completion is closer,
    on the hidden pixels, to the queried image than to each of the other images shown.

    Models: those of :func:`~plastic_rl.supervised.models.build_memory_model` — ``"plastic"`` (the
    paper's 1,025 neurons, per-connection alpha), ``"shared"`` (one alpha), ``"rnn"``, ``"lstm"``.
    References that need no training (:meth:`reference_completions`): ``"zero"`` (fill with 0),
    ``"mean"`` (the mean of the shown images), ``"nearest"`` (the shown image whose visible
    pixels are closest to the query's: the best a pure look-up can do) and ``"neighbours"``
    (:func:`neighbour_fill`: what the query's own smoothness gives, with no memory of the shown images).
    """

    name = "images"
    primary_metric = "hidden_mse"
    model_names = MEMORY_MODELS

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        images: dict[str, np.ndarray] | None = None,
        validation_fraction: float = 0.1,
        **protocol: Any,
    ) -> None:
        self.protocol = ImageCompletionProtocol(**protocol)
        self.validation_fraction = check_float_range(
            "validation_fraction", validation_fraction, 0, 1, low_open=True, high_open=True
        )
        self.data_dir = None if data_dir is None else str(data_dir)
        self._images = {split: self.protocol.check_images(array) for split, array in (images or {}).items()}

    def config(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "validation_fraction": self.validation_fraction, **self.protocol.as_dict()}

    def images(self, split: str) -> np.ndarray:
        """The ``"train"`` or ``"test"`` image pool, read from the data directory on first use."""
        if split not in self._images:
            from plastic_rl.data.cifar import load_grayscale

            self._images[split] = self.protocol.check_images(load_grayscale(split, self.data_dir))
        return self._images[split]

    def pool(self, part: str) -> np.ndarray:
        """The images of ``part``: ``"train"``, ``"validation"`` (the training batches' last ones) or ``"test"``."""
        check_choice("part", part, PARTS)
        if part == "test":
            return self.images("test")
        images = self.images("train")
        held_out = max(round(self.validation_fraction * len(images)), self.protocol.image_count)
        if len(images) - held_out < self.protocol.image_count:
            raise ValueError(
                f"{len(images)} training images cannot be split into training and validation images of at least "
                f"image_count={self.protocol.image_count} each (validation_fraction={self.validation_fraction})"
            )
        return images[-held_out:] if part == "validation" else images[:-held_out]

    def check_data(self) -> None:
        self.pool("train")  # the training and validation parts, split and checked

    def sample_part(self, part: str, batch_size: int, rng: np.random.Generator) -> Episodes:
        """``batch_size`` episodes of the images of ``part`` (see :meth:`pool`)."""
        input_array, images, hidden = sample_image_episodes(self.protocol, self.pool(part), rng, batch_size)
        inputs = torch.from_numpy(input_array)
        targets = torch.zeros_like(inputs)
        targets[-1] = torch.from_numpy(images)
        mask = torch.zeros(inputs.shape, dtype=torch.bool)
        mask[-1] = torch.from_numpy(hidden)
        return Episodes(inputs, targets, mask)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        return self.sample_part("train", batch_size, rng)

    def sample_validation(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        return self.sample_part("validation", batch_size, rng)

    def test_scores(self, model: nn.Module, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
        scores = score_test_episodes(self, {"model": model}, episodes, seed)["model"]
        return {"hidden_mse": scores["hidden_mse"], "closer_fraction": scores["closer"].astype(np.float64)}

    def loss(self, outputs: Tensor, episodes: Episodes) -> Tensor:
        return masked_mean((outputs - episodes.targets).square(), episodes.mask)

    def episode_scores(self, completions: Tensor, episodes: Episodes) -> dict[str, Tensor]:
        """Per-episode scores of ``completions`` ``(B, 1024)`` of the queries: ``hidden_mse`` and ``closer``."""
        hidden = episodes.mask[-1].to(completions.dtype)
        target = episodes.targets[-1].to(completions.dtype)
        shown = self.protocol.schedule.first_showing(episodes.inputs).to(completions.dtype)  # (K, B, size)
        pixels = hidden.sum(-1)
        hidden_mse = ((completions - target).square() * hidden).sum(-1) / pixels
        distances = ((completions - shown).square() * hidden).sum(-1)  # (K, B)
        is_target = (shown == target).all(-1)
        to_target = torch.where(is_target, distances, torch.inf).amin(0)
        to_others = torch.where(is_target, torch.inf, distances).amin(0)
        return {"hidden_mse": hidden_mse, "closer": to_target < to_others}

    def metrics(self, outputs: Tensor, episodes: Episodes) -> dict[str, float]:
        scores = self.episode_scores(outputs[-1], episodes)
        return {
            "hidden_mse": self.loss(outputs, episodes).item(),
            "closer_fraction": scores["closer"].float().mean().item(),
        }

    def reference_completions(self, episodes: Episodes) -> dict[str, Tensor]:
        """The completions ``(B, 1024)`` of the references in :data:`REFERENCE_COMPLETIONS`."""
        query = episodes.inputs[-1]
        visible = (~episodes.mask[-1]).to(query.dtype)
        shown = self.protocol.schedule.first_showing(episodes.inputs)
        nearest = ((shown - query).square() * visible).sum(-1).argmin(0)  # (B,)
        return {
            "zero": torch.zeros_like(query),
            "mean": shown.mean(0),
            "nearest": shown[nearest, torch.arange(query.shape[0])],
            "neighbours": neighbour_fill(query, episodes.mask[-1], self.protocol.image_side),
        }

    def build_model(self, model_name: str = "plastic", **options: Any) -> nn.Module:
        check_choice("model_name", model_name, self.model_names)
        return build_memory_model(model_name, self.protocol.image_size, **options)

    @classmethod
    def from_options(cls, options: ImageOptions, data_dir: str | None = None) -> ImageCompletionTask:
        return cls(data_dir=data_dir, **asdict(options))


def neighbour_fill(images: Tensor, hidden: Tensor, side: int) -> Tensor:
    """``images`` ``(B, side * side)`` with each ``hidden`` pixel replaced by the mean of the visible pixels in the
    smallest square around it that holds any: a completion from the image's smoothness alone, no memory."""
    batch = images.shape[0]
    visible = (~hidden).to(images.dtype).reshape(batch, 1, side, side)
    values = images.reshape(batch, 1, side, side) * visible
    filled, left = images.clone(), hidden.clone()
    for radius in range(1, side):
        if not left.any():
            break
        window = 2 * radius + 1  # the pools' means share the window's size, so their ratio is the visible mean
        sums = nn.functional.avg_pool2d(values, window, stride=1, padding=radius).reshape(batch, -1)
        counts = nn.functional.avg_pool2d(visible, window, stride=1, padding=radius).reshape(batch, -1)
        reached = left & (counts > 0)
        filled[reached] = (sums / counts.clamp_min(1e-12))[reached]
        left &= ~reached
    return filled


@torch.no_grad()
def score_test_episodes(
    task: ImageCompletionTask, models: dict[str, nn.Module], episodes: int, seed: int = 0, batch_size: int = 32
) -> dict[str, dict[str, np.ndarray]]:
    """Per-episode ``hidden_mse`` and ``closer`` of every model and reference on the same ``episodes`` test episodes.

    The episodes depend on ``seed`` and the image count only, so every model (and every call) sees the same ones.
    """
    rng = np.random.default_rng([seed, task.protocol.image_count])
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    remaining = episodes
    while remaining > 0:
        batch = task.sample_part("test", min(batch_size, remaining), rng)
        completions = dict(task.reference_completions(batch))
        completions.update({label: model(batch.inputs)[-1] for label, model in models.items()})
        for label, completion in completions.items():
            for name, values in task.episode_scores(completion, batch).items():
                scores.setdefault(label, {}).setdefault(name, []).append(values.numpy())
        remaining -= len(batch.targets[-1])
    return {
        label: {name: np.concatenate(parts) for name, parts in by_name.items()} for label, by_name in scores.items()
    }
