"""The pattern-memorization task (the paper's Experiment 1) for the supervised trainer."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from plastic_rl.core.options import check_choice
from plastic_rl.envs.pattern_memory import PROTOCOLS, PatternMemoryProtocol, sample_pattern_episodes
from plastic_rl.supervised.models import build_memory_model
from plastic_rl.supervised.options import PATTERN_MODELS, PatternOptions
from plastic_rl.supervised.task import Episodes, SupervisedTask, masked_mean


class PatternMemoryTask(SupervisedTask):
    """Complete a half-erased binary pattern from a set shown earlier in the episode.

    Episodes follow a :class:`~plastic_rl.envs.pattern_memory.PatternMemoryProtocol` (the keywords
    here are its fields) and come from the same sampler as ``PlasticPatternMemory-v0``. Only the
    query's last step is scored. Loss: the mean squared error there. Metrics: ``wrong_bits`` (the
    fraction of elements whose output has the wrong sign; an untrained clamped network sits near
    25%: the clamped half is right, the other half is a coin toss) and ``squared_error``.

    Models (see :func:`~plastic_rl.supervised.models.build_memory_model`): ``"plastic"``, the
    paper's network of ``pattern_size + 1`` neurons; ``"rnn"``, non-plastic with ``extra_neurons``
    more neurons (2,000 in the paper); ``"lstm"``.
    """

    name = "patterns"
    primary_metric = "wrong_bits"
    model_names = PATTERN_MODELS

    def __init__(self, **protocol: Any) -> None:
        self.protocol = PatternMemoryProtocol(**protocol)

    def config(self) -> dict[str, Any]:
        return self.protocol.as_dict()

    def sample(self, batch_size: int, rng: np.random.Generator) -> Episodes:
        input_array, patterns = sample_pattern_episodes(self.protocol, rng, batch_size)
        inputs = torch.from_numpy(input_array)
        targets = torch.zeros_like(inputs)
        targets[-1] = torch.from_numpy(patterns)
        mask = torch.zeros(inputs.shape[0], batch_size, 1, dtype=torch.bool)
        mask[-1] = True
        return Episodes(inputs, targets, mask)

    def loss(self, outputs: Tensor, episodes: Episodes) -> Tensor:
        return masked_mean((outputs - episodes.targets).square(), episodes.mask)

    def metrics(self, outputs: Tensor, episodes: Episodes) -> dict[str, float]:
        wrong = (outputs * episodes.targets <= 0).to(outputs.dtype)
        return {
            "wrong_bits": masked_mean(wrong, episodes.mask).item(),
            "squared_error": self.loss(outputs, episodes).item(),
        }

    def build_model(self, model_name: str = "plastic", **options: Any) -> nn.Module:
        check_choice("model_name", model_name, self.model_names)
        return build_memory_model(model_name, self.protocol.pattern_size, **options)

    @classmethod
    def from_options(cls, options: PatternOptions, data_dir: str | None = None) -> PatternMemoryTask:
        """The named protocol with the values that ``options`` replace (``data_dir``: unused, no dataset)."""
        overrides = {
            field.name: getattr(options, field.name)
            for field in fields(PatternMemoryProtocol)
            if getattr(options, field.name) is not None
        }
        return cls(**replace(PROTOCOLS[options.protocol], **overrides).as_dict())
