"""The task interface of the supervised trainer, and the registry of tasks.

A task supplies batched episodes, its loss and metrics, and its models; the trainer and the
``plastic-rl supervised`` command only ever talk to a task through :class:`SupervisedTask`, so a new
task is one module, its options (a dataclass and the function that adds them to a parser, in
:mod:`plastic_rl.supervised.options`) and one line in :data:`TASKS`. This module imports no torch (it names the
tensors' types only), so that the commands can list the tasks and their options at once.
"""

from __future__ import annotations

import argparse
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from plastic_rl.core.options import check_choice
from plastic_rl.supervised.options import (
    MEMORY_MODELS,
    OMNIGLOT_HEADS,
    PATTERN_MODELS,
    ImageOptions,
    MemoryModelOptions,
    ModelOptions,
    OmniglotModelOptions,
    OmniglotOptions,
    PatternOptions,
    TaskOptions,
    add_image_arguments,
    add_omniglot_arguments,
    add_pattern_arguments,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor, nn


class Episodes(NamedTuple):
    """A batch of episodes, time-major.

    ``inputs`` is ``(T, B, input_size)``; ``targets`` ``(T, B, output_size)``; ``mask`` is a boolean
    tensor broadcastable to ``targets`` that says which steps (and elements) are scored.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> Episodes:
        return Episodes(*(tensor.to(device) for tensor in self))


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the elements where ``mask`` (broadcast to ``values``) is true."""
    mask = mask.expand_as(values)
    return values[mask].mean()


class SupervisedTask(ABC):
    """A supervised meta-learning task: episodes, a loss, metrics and default models.

    Subclasses set ``name``, ``primary_metric`` (lower is better; shown in the progress bar and used
    for the experiment's thresholds) and ``model_names`` (the first is the default model), and take
    their settings as constructor keywords, which :meth:`config` returns so that a saved model can
    rebuild its task.
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    model_names: ClassVar[tuple[str, ...]]

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor keywords that rebuild this task."""

    @abstractmethod
    def sample(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        """``batch_size`` fresh episodes, drawn with ``rng`` only (so runs are reproducible)."""

    def sample_validation(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        """Episodes for the trainer's evaluations: held-out validation classes where the task has them.

        By default the same as :meth:`sample` (tasks whose episodes are all fresh random data).
        """
        return self.sample(batch_size, rng)

    def check_data(self) -> None:
        """Load the task's training and validation data and check that they make episodes (a ``ValueError`` or
        :class:`~plastic_rl.data.DataError` if not), so that a command fails before it writes anything.

        Nothing to check by default (tasks whose episodes are fresh random data)."""
        return None

    def test_scores(self, model: nn.Module, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Per-episode scores ``{metric: (episodes,) array}`` of ``model`` on ``episodes`` test episodes drawn with
        ``seed`` (the same episodes for every model); ``primary_metric`` first. Tasks with held-out test data
        (images, classes) override it."""
        raise ValueError(f"the {self.name!r} task has no test part (its episodes are all fresh random data)")

    @abstractmethod
    def loss(self, outputs: Tensor, episodes: Episodes) -> Tensor:
        """The training loss of the model's ``outputs`` ``(T, B, output_size)``."""

    @abstractmethod
    def metrics(self, outputs: Tensor, episodes: Episodes) -> dict[str, float]:
        """Named scores of ``outputs``; must include ``primary_metric``."""

    @abstractmethod
    def build_model(self, model_name: str, **options: Any) -> nn.Module:
        """A fresh model for this task; ``model_name`` is one of ``model_names``.

        The model maps ``episodes.inputs`` to outputs ``(T, B, output_size)`` and has a ``config``
        attribute holding its constructor keywords (see :func:`plastic_rl.supervised.load_model`).
        """

    @classmethod
    @abstractmethod
    def from_options(cls, options: Any, data_dir: str | None = None) -> SupervisedTask:
        """The task of its options (an instance of its registry entry's ``options`` class); ``data_dir`` is the
        dataset folder of tasks that read one (None: ``$PLASTIC_RL_DATA``)."""


class RegisteredTask(NamedTuple):
    """A task of the registry: its class as ``"module:Class"`` (imported only when the task is used), its
    ``model_names`` (the class's own; the first is the default), the classes of its options and of its models'
    options, and the function that adds both to a parser."""

    task_class: str
    model_names: tuple[str, ...]
    options: type[TaskOptions]
    model_options: type[ModelOptions]
    add_arguments: Callable[[argparse.ArgumentParser], None]


TASKS: dict[str, RegisteredTask] = {
    "patterns": RegisteredTask(
        "plastic_rl.supervised.patterns:PatternMemoryTask",
        PATTERN_MODELS,
        PatternOptions,
        MemoryModelOptions,
        add_pattern_arguments,
    ),
    "omniglot": RegisteredTask(
        "plastic_rl.supervised.omniglot:OmniglotTask",
        OMNIGLOT_HEADS,
        OmniglotOptions,
        OmniglotModelOptions,
        add_omniglot_arguments,
    ),
    "images": RegisteredTask(
        "plastic_rl.supervised.images:ImageCompletionTask",
        MEMORY_MODELS,
        ImageOptions,
        MemoryModelOptions,
        add_image_arguments,
    ),
}


def registered_task(name: str) -> RegisteredTask:
    """The registry's entry ``name``; a ``ValueError`` lists the known tasks otherwise."""
    return TASKS[check_choice("task", name, TASKS)]


def get_task_class(name: str) -> type[SupervisedTask]:
    """The task class registered as ``name``; a ``ValueError`` lists the known tasks otherwise."""
    module_name, class_name = registered_task(name).task_class.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_task(name: str, **config: Any) -> SupervisedTask:
    """The task registered as ``name``, built with ``config``."""
    return get_task_class(name)(**config)
