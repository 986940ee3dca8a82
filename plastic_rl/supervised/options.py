"""The options of supervised training, as typed objects and on the command line: the trainer's, the models' and each
registered task's.

Each group is a frozen dataclass whose field defaults are the options' only defaults (:class:`TrainerOptions`, a
task's :class:`TaskOptions` and its models' :class:`ModelOptions`), and a function that declares the group's options
for argparse under the same names. ``plastic-rl supervised TASK``, ``plastic-rl bench TASK`` and the experiment runner
declare their options from here (a run's whole configuration is
:class:`~plastic_rl.supervised.config.SupervisedConfig`). Models and rules are named, not built, so this module imports
no torch and ``--help`` answers at once; a task's ``from_options`` turns its options into the task.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from plastic_rl.core.options import (
    EMBEDDINGS,
    INPUT_MODES,
    NON_FINITE_ACTIONS,
    non_negative_int,
    positive_float,
    positive_int,
    rule_name,
)
from plastic_rl.data import environment_data_dir
from plastic_rl.envs.image_completion import DEGRADATIONS, ImageCompletionProtocol
from plastic_rl.envs.pattern_memory import PROTOCOLS

LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# The models of each task (the first is its default).
MEMORY_MODELS = ("plastic", "shared", "rnn", "lstm")  # of plastic_rl.supervised.models.build_memory_model
PATTERN_MODELS = ("plastic", "rnn", "lstm")
LSTM_OUTPUTS = ("readout", "clamped")  # of plastic_rl.supervised.models.SequenceLSTM
OMNIGLOT_HEADS = ("plastic", "linear", "prototypical")


@dataclass(frozen=True)
class TrainerOptions:
    """The options of the supervised trainer (:class:`~plastic_rl.supervised.trainer.SupervisedTrainer`) that every
    supervised training command shares; ``threads`` None leaves torch's choice."""

    steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1e-3
    learning_rate_schedule: str = "constant"
    gradient_clip: float | None = None
    on_non_finite: str = "raise"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    log_interval: int = 10
    eval_interval: int = 100
    eval_episodes: int = 32
    checkpoint_interval: int = 100
    no_progress: bool = False


@dataclass(frozen=True)
class TaskOptions:
    """A task's own options (its registry entry's ``options``), which its ``from_options`` turns into the task."""


@dataclass(frozen=True)
class ModelOptions(ABC):
    """The options of a task's models (its registry entry's ``model_options``)."""

    @abstractmethod
    def keywords(self) -> dict[str, Any]:
        """The keywords of the task's ``build_model``."""

    @classmethod
    def unused_by(cls, model: str) -> frozenset[str]:
        """The options that the model ``model`` ignores (its architecture has no use for them)."""
        return frozenset()


@dataclass(frozen=True)
class MemoryModelOptions(ModelOptions):
    """The options of :func:`~plastic_rl.supervised.models.build_memory_model` (the pattern and image tasks' models);
    ``eta`` is the initial Hebbian learning rate, ``input_gain`` None the input mode's default."""

    input_mode: str = "clamp"
    input_gain: float | None = None
    rule: str = "hebb"
    eta: float = 0.01
    extra_neurons: int = 2000
    lstm_hidden_size: int = 2000
    lstm_output: str = "readout"

    @classmethod
    def unused_by(cls, model: str) -> frozenset[str]:
        recurrent_only = {"input_mode", "input_gain", "extra_neurons"}
        unused = {
            "plastic": {"extra_neurons", "lstm_hidden_size", "lstm_output"},
            "shared": {"extra_neurons", "lstm_hidden_size", "lstm_output"},
            "rnn": {"rule", "eta", "lstm_hidden_size", "lstm_output"},
            "lstm": {"rule", "eta", *recurrent_only},
        }
        return frozenset(unused.get(model, ()))

    def keywords(self) -> dict[str, Any]:
        return dict(
            input_mode=self.input_mode,
            input_gain=self.input_gain,
            rule=self.rule,
            hebbian_learning_rate=self.eta,
            extra_neurons=self.extra_neurons,
            lstm_hidden_size=self.lstm_hidden_size,
            lstm_output=self.lstm_output,
        )


@dataclass(frozen=True)
class PatternOptions(TaskOptions):
    """The pattern task's options: a named protocol of :data:`~plastic_rl.envs.pattern_memory.PROTOCOLS`, and the
    protocol's values that replace the named one's (None keeps it)."""

    protocol: str = "paper"
    pattern_count: int | None = None
    pattern_size: int | None = None
    steps_shown: int | None = None
    gap_steps: int | None = None
    repetitions: int | None = None
    degraded_fraction: float | None = None
    query_steps: int | None = None


@dataclass(frozen=True)
class OmniglotOptions(TaskOptions):
    """The Omniglot task's options (:class:`~plastic_rl.supervised.omniglot.OmniglotTask`'s keywords)."""

    ways: int = 5
    shots: int = 1
    queries: int = 1
    split: str = "vinyals"
    split_seed: int = 0
    test_characters: int = 100
    validation_characters: int = 100


@dataclass(frozen=True)
class OmniglotModelOptions(ModelOptions):
    """The options of the Omniglot task's models (:class:`~plastic_rl.supervised.omniglot.OmniglotClassifier`)."""

    embedding: str = "paper"
    rule: str = "oja"
    eta: float = 1.0
    alpha_init: float = 1.0
    no_fixed_weight: bool = False
    normalize_features: bool = False

    @classmethod
    def unused_by(cls, model: str) -> frozenset[str]:
        return frozenset() if model == "plastic" else frozenset({"rule", "eta", "alpha_init", "no_fixed_weight"})

    def keywords(self) -> dict[str, Any]:
        return dict(
            embedding=self.embedding,
            rule=self.rule,
            fixed_weight=not self.no_fixed_weight,
            hebbian_learning_rate=self.eta,
            alpha_init=self.alpha_init,
            normalize_features=self.normalize_features,
        )


@dataclass(frozen=True)
class ImageOptions(TaskOptions):
    """The image task's options (:class:`~plastic_rl.supervised.images.ImageCompletionTask`'s keywords); the
    protocol's defaults are :class:`~plastic_rl.envs.image_completion.ImageCompletionProtocol`'s (the paper's)."""

    image_count: int = ImageCompletionProtocol.image_count
    steps_shown: int = ImageCompletionProtocol.steps_shown
    gap_steps: int = ImageCompletionProtocol.gap_steps
    repetitions: int = ImageCompletionProtocol.repetitions
    query_steps: int = ImageCompletionProtocol.query_steps
    degradation: str = ImageCompletionProtocol.degradation
    degraded_fraction: float = ImageCompletionProtocol.degraded_fraction
    degraded_fraction_max: float | None = ImageCompletionProtocol.degraded_fraction_max
    validation_fraction: float = 0.1


def add_trainer_arguments(parser: argparse.ArgumentParser, *, single_seed: bool = True) -> None:
    """The options every supervised training command shares (:class:`TrainerOptions`; ``--seed`` unless
    ``single_seed`` is false) and ``--data-dir``."""
    defaults = TrainerOptions()
    group = parser.add_argument_group("training")
    group.add_argument(
        "--steps", type=positive_int, default=defaults.steps, help="total Adam steps (episodes = steps x batch size)"
    )
    group.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="episodes per step")
    group.add_argument(
        "--learning-rate", type=positive_float, default=defaults.learning_rate, help="Adam's learning rate"
    )
    group.add_argument(
        "--learning-rate-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        default=defaults.learning_rate_schedule,
        help="constant, or cosine: annealed to zero over --steps",
    )
    group.add_argument(
        "--gradient-clip",
        type=positive_float,
        default=defaults.gradient_clip,
        help="clip the gradient norm to this value",
    )
    group.add_argument(
        "--on-non-finite",
        choices=NON_FINITE_ACTIONS,
        default=defaults.on_non_finite,
        help="at a NaN/inf loss or gradient: stop (exit 3, the last checkpoint kept) or skip the step (counted)",
    )
    if single_seed:
        group.add_argument(
            "--seed", type=non_negative_int, default=defaults.seed, help="seed of the model and of the episodes"
        )
    group.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    group.add_argument(
        "--threads", type=positive_int, default=defaults.threads, help="torch CPU threads (default: torch's choice)"
    )
    group.add_argument(
        "--log-interval", type=positive_int, default=defaults.log_interval, help="steps averaged into one curve row"
    )
    group.add_argument(
        "--eval-interval",
        type=non_negative_int,
        default=defaults.eval_interval,
        help="steps between evaluations (0: none)",
    )
    group.add_argument(
        "--eval-episodes", type=positive_int, default=defaults.eval_episodes, help="fresh episodes per evaluation"
    )
    group.add_argument(
        "--checkpoint-interval",
        type=non_negative_int,
        default=defaults.checkpoint_interval,
        help="steps between checkpoints (0: end only)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--data-dir",
        # The environment's folder, read now: the task, and the model file that records it, name the folder read.
        default=environment_data_dir(),
        help="dataset folder for the image and Omniglot tasks (default: $PLASTIC_RL_DATA)",
    )


def add_memory_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :class:`MemoryModelOptions` (the pattern and image tasks' models)."""
    defaults = MemoryModelOptions()
    group = parser.add_argument_group("models")
    group.add_argument(
        "--input-mode", choices=INPUT_MODES, default=defaults.input_mode, help="how inputs reach the neurons"
    )
    group.add_argument(
        "--input-gain",
        type=positive_float,
        default=defaults.input_gain,
        help="input factor (default: 1 with clamp, 20 with add)",
    )
    group.add_argument(
        "--rule",
        type=rule_name,
        default=defaults.rule,
        help="Hebbian rule of the plastic models: one of plastic_rl.core.rules (a wrong name lists them)",
    )
    group.add_argument("--eta", type=positive_float, default=defaults.eta, help="initial Hebbian learning rate")
    group.add_argument(
        "--extra-neurons", type=int, default=defaults.extra_neurons, help="extra neurons of the 'rnn' baseline"
    )
    group.add_argument(
        "--lstm-hidden-size", type=int, default=defaults.lstm_hidden_size, help="cells of the 'lstm' baseline"
    )
    group.add_argument(
        "--lstm-output",
        choices=LSTM_OUTPUTS,
        default=defaults.lstm_output,
        help="the 'lstm' baseline's output: a linear readout of its cells, or its first cells clamped to the input "
        "like the recurrent networks' neurons (the authors' Figure 3 comparison)",
    )


def add_pattern_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the pattern task (:class:`PatternOptions`) and its models."""
    defaults = PatternOptions()
    group = parser.add_argument_group("pattern protocol")
    group.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default=defaults.protocol,
        help="'paper': 10 steps shown, 3 empty, 3 repetitions (205 steps); 'fast': the authors' 6/4/2 (106 steps); "
        "'comparison': the authors' baseline comparison, 2 patterns of 50 bits, 3/1/1 (11 steps)",
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
        group.add_argument(
            f"--{field.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, field),
            help="override the protocol's value",
        )
    add_memory_model_arguments(parser)


def add_omniglot_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the Omniglot task (:class:`OmniglotOptions`) and its models (:class:`OmniglotModelOptions`)."""
    defaults, model_defaults = OmniglotOptions(), OmniglotModelOptions()
    group = parser.add_argument_group("omniglot episodes")
    group.add_argument("--ways", type=int, default=defaults.ways, help="classes per episode (N)")
    group.add_argument("--shots", type=int, default=defaults.shots, help="labelled drawings per class (K)")
    group.add_argument(
        "--queries",
        type=int,
        default=defaults.queries,
        help="query drawings per training/validation episode, all scored (the paper: 1; test scores always use 1)",
    )
    group.add_argument(
        "--split",
        default=defaults.split,
        metavar="SPLIT",
        help="'vinyals' (standard), 'paper', 'lake' (background alphabets for training, evaluation alphabets for "
        "test, upright) or a split FILE or folder of your class lists ([train]/[validation]/[test] sections)",
    )
    group.add_argument(
        "--split-seed", type=int, default=defaults.split_seed, help="seed of the held-out characters (paper, lake)"
    )
    group.add_argument(
        "--test-characters",
        type=int,
        default=defaults.test_characters,
        help="paper split: characters held out for test",
    )
    group.add_argument(
        "--validation-characters",
        type=int,
        default=defaults.validation_characters,
        help="characters held out for validation (paper, lake)",
    )
    group = parser.add_argument_group("omniglot models")
    group.add_argument(
        "--embedding", choices=EMBEDDINGS, default=model_defaults.embedding, help="'paper' (stride-2 tanh) or 'conv4'"
    )
    group.add_argument(
        "--rule",
        type=rule_name,
        default=model_defaults.rule,
        help="Hebbian rule of the plastic head: one of plastic_rl.core.rules (a wrong name lists them)",
    )
    group.add_argument("--eta", type=float, default=model_defaults.eta, help="initial Hebbian learning rate")
    group.add_argument(
        "--alpha-init", type=float, default=model_defaults.alpha_init, help="initial plasticity coefficients (mean)"
    )
    group.add_argument(
        "--no-fixed-weight", action="store_true", help="plastic head without fixed weights (alpha * Hebb only)"
    )
    group.add_argument(
        "--normalize-features", action="store_true", help="unit-length features (the head reads cosines)"
    )


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the image task (:class:`ImageOptions`) and its models."""
    group = parser.add_argument_group("image protocol (defaults: the paper's, 210 steps)")
    defaults = ImageOptions()
    for field in ("image_count", "steps_shown", "gap_steps", "repetitions", "query_steps"):
        group.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field))
    group.add_argument("--degradation", choices=DEGRADATIONS, default=defaults.degradation)
    group.add_argument(
        "--degraded-fraction",
        type=float,
        default=defaults.degraded_fraction,
        help="fraction of pixels hidden with --degradation random_pixels",
    )
    group.add_argument(
        "--degraded-fraction-max",
        type=float,
        default=defaults.degraded_fraction_max,
        help="with --degradation random_pixels: each query hides a fraction drawn uniformly from "
        "[--degraded-fraction, this]",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="the last fraction of the training images (at least --image-count), held out for the evaluations "
        "during training (default 0.1); test images are read only by test scores and reports",
    )
    add_memory_model_arguments(parser)
