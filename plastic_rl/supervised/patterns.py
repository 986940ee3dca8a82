"""The pattern-memorization task (the paper's Experiment 1) for the supervised trainer."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from plastic_rl.core.options import INPUT_MODES, check_choice, positive_float
from plastic_rl.core.rules import rule_names
from plastic_rl.envs.pattern_memory import FAST_PROTOCOL, PatternMemoryProtocol, sample_pattern_episodes
from plastic_rl.supervised.models import PlasticRecurrentNetwork, SequenceLSTM
from plastic_rl.supervised.task import Episodes, SupervisedTask, masked_mean

PROTOCOLS = {"paper": PatternMemoryProtocol(), "fast": FAST_PROTOCOL}
# The authors' code adds 20 x the input to the pre-activation; clamping needs no gain.
DEFAULT_INPUT_GAIN = {"clamp": 1.0, "add": 20.0}


class PatternMemoryTask(SupervisedTask):
    """Complete a half-erased binary pattern from a set shown earlier in the episode.

    Episodes follow a :class:`~plastic_rl.envs.pattern_memory.PatternMemoryProtocol` (the keywords
    here are its fields) and come from the same sampler as ``PlasticPatternMemory-v0``. Only the
    query's last step is scored. Loss: the mean squared error there. Metrics: ``wrong_bits`` (the
    fraction of elements whose output has the wrong sign; an untrained clamped network sits near
    25%: the clamped half is right, the other half is a coin toss) and ``squared_error``.

    Models:

    - ``"plastic"``: the paper's network — ``pattern_size + 1`` neurons (one per element and a bias
      neuron), full plasticity, decaying Hebb, learned eta.
    - ``"rnn"``: the same network without plasticity and with ``extra_neurons`` more neurons (2,000
      in the paper), which get no input; the output is still read from the first ``pattern_size``.
    - ``"lstm"``: an LSTM of ``lstm_hidden_size`` cells with a linear readout.
    """

    name = "patterns"
    primary_metric = "wrong_bits"
    model_names = ("plastic", "rnn", "lstm")

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

    def build_model(  # type: ignore[override]  # a task names its own options
        self,
        model_name: str = "plastic",
        *,
        input_mode: str = "clamp",
        input_gain: float | None = None,
        rule: str = "hebb",
        hebbian_learning_rate: float = 0.01,
        extra_neurons: int = 2000,
        lstm_hidden_size: int = 2000,
    ) -> nn.Module:
        check_choice("model_name", model_name, self.model_names)
        size = self.protocol.pattern_size
        if model_name == "lstm":
            return SequenceLSTM(size, size, lstm_hidden_size)
        check_choice("input_mode", input_mode, INPUT_MODES)
        if isinstance(extra_neurons, bool) or not isinstance(extra_neurons, int) or extra_neurons < 0:
            raise ValueError(f"extra_neurons must be an integer >= 0; got {extra_neurons!r}")
        plastic = model_name == "plastic"
        return PlasticRecurrentNetwork(
            size,
            size,
            size + 1 + (0 if plastic else extra_neurons),
            plasticity="full" if plastic else "none",
            rule=rule,
            input_mode=input_mode,
            input_gain=DEFAULT_INPUT_GAIN[input_mode] if input_gain is None else input_gain,
            bias="neuron",
            hebbian_learning_rate=hebbian_learning_rate,
        )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("pattern protocol")
        group.add_argument(
            "--protocol",
            choices=tuple(PROTOCOLS),
            default="paper",
            help="'paper': 10 steps shown, 3 empty, 3 repetitions (205 steps); 'fast': the authors' 6/4/2 (106 steps)",
        )
        for field, kind in (
            ("pattern_count", int),
            ("pattern_size", int),
            ("steps_shown", int),
            ("gap_steps", int),
            ("repetitions", int),
            ("degraded_fraction", float),
            ("query_steps", int),
        ):
            group.add_argument(f"--{field.replace('_', '-')}", type=kind, help="override the protocol's value")
        group = parser.add_argument_group("pattern models")
        group.add_argument("--input-mode", choices=INPUT_MODES, default="clamp", help="how inputs reach the neurons")
        group.add_argument(
            "--input-gain", type=positive_float, help="input factor (default: 1 with clamp, 20 with add)"
        )
        group.add_argument("--rule", choices=rule_names(), default="hebb", help="Hebbian rule of the plastic model")
        group.add_argument("--eta", type=positive_float, default=0.01, help="initial Hebbian learning rate")
        group.add_argument("--extra-neurons", type=int, default=2000, help="extra neurons of the 'rnn' baseline")
        group.add_argument("--lstm-hidden-size", type=int, default=2000, help="cells of the 'lstm' baseline")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> tuple[PatternMemoryTask, dict[str, Any]]:
        overrides = {
            field: getattr(args, field)
            for field in PatternMemoryProtocol.__dataclass_fields__
            if getattr(args, field, None) is not None
        }
        protocol = replace(PROTOCOLS[args.protocol], **overrides)
        model_options = dict(
            input_mode=args.input_mode,
            input_gain=args.input_gain,
            rule=args.rule,
            hebbian_learning_rate=args.eta,
            extra_neurons=args.extra_neurons,
            lstm_hidden_size=args.lstm_hidden_size,
        )
        return cls(**protocol.as_dict()), model_options
