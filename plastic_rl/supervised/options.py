"""The command-line options of supervised training: the trainer's, the models' and each registered task's.

``plastic-rl supervised TASK``, ``plastic-rl bench TASK`` and the experiment runner declare their options from here
(see :func:`plastic_rl.supervised.task.add_task_arguments`). Models and rules are named, not built, so this module
imports no torch and ``--help`` answers at once; a task's ``from_args`` turns the parsed options into the task.
"""

from __future__ import annotations

import argparse
import os

from plastic_rl.core.options import (
    EMBEDDINGS,
    INPUT_MODES,
    NON_FINITE_ACTIONS,
    non_negative_int,
    positive_float,
    positive_int,
    rule_name,
)
from plastic_rl.envs.image_completion import DEGRADATIONS, ImageCompletionProtocol
from plastic_rl.envs.pattern_memory import PROTOCOLS

LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# The models of each task (the first is its default).
MEMORY_MODELS = ("plastic", "shared", "rnn", "lstm")  # of plastic_rl.supervised.models.build_memory_model
PATTERN_MODELS = ("plastic", "rnn", "lstm")
OMNIGLOT_HEADS = ("plastic", "linear", "prototypical")


def add_trainer_arguments(parser: argparse.ArgumentParser, *, single_seed: bool = True) -> None:
    """The options every supervised training command shares (``--seed`` unless ``single_seed`` is false)."""
    group = parser.add_argument_group("training")
    group.add_argument(
        "--steps", type=positive_int, default=1000, help="total Adam steps (episodes = steps x batch size)"
    )
    group.add_argument("--batch-size", type=positive_int, default=1, help="episodes per step")
    group.add_argument("--learning-rate", type=positive_float, default=1e-3, help="Adam's learning rate")
    group.add_argument(
        "--learning-rate-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        default="constant",
        help="constant, or cosine: annealed to zero over --steps",
    )
    group.add_argument("--gradient-clip", type=positive_float, help="clip the gradient norm to this value")
    group.add_argument(
        "--on-non-finite",
        choices=NON_FINITE_ACTIONS,
        default="raise",
        help="at a NaN/inf loss or gradient: stop (exit 3, the last checkpoint kept) or skip the step (counted)",
    )
    if single_seed:
        group.add_argument("--seed", type=non_negative_int, default=0, help="seed of the model and of the episodes")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    group.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    group.add_argument("--log-interval", type=positive_int, default=10, help="steps averaged into one curve row")
    group.add_argument(
        "--eval-interval", type=non_negative_int, default=100, help="steps between evaluations (0: none)"
    )
    group.add_argument("--eval-episodes", type=positive_int, default=32, help="fresh episodes per evaluation")
    group.add_argument(
        "--checkpoint-interval", type=non_negative_int, default=100, help="steps between checkpoints (0: end only)"
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--data-dir",
        default=os.environ.get("PLASTIC_RL_DATA"),
        help="dataset folder for the image and Omniglot tasks (default: $PLASTIC_RL_DATA)",
    )


def add_memory_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`~plastic_rl.supervised.models.build_memory_model` (the pattern and image tasks')."""
    group = parser.add_argument_group("models")
    group.add_argument("--input-mode", choices=INPUT_MODES, default="clamp", help="how inputs reach the neurons")
    group.add_argument("--input-gain", type=positive_float, help="input factor (default: 1 with clamp, 20 with add)")
    group.add_argument(
        "--rule",
        type=rule_name,
        default="hebb",
        help="Hebbian rule of the plastic models: one of plastic_rl.core.rules (a wrong name lists them)",
    )
    group.add_argument("--eta", type=positive_float, default=0.01, help="initial Hebbian learning rate")
    group.add_argument("--extra-neurons", type=int, default=2000, help="extra neurons of the 'rnn' baseline")
    group.add_argument("--lstm-hidden-size", type=int, default=2000, help="cells of the 'lstm' baseline")


def add_pattern_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the pattern task (:class:`~plastic_rl.supervised.patterns.PatternMemoryTask`) and its models."""
    group = parser.add_argument_group("pattern protocol")
    group.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default="paper",
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
        group.add_argument(f"--{field.replace('_', '-')}", type=kind, help="override the protocol's value")
    add_memory_model_arguments(parser)


def add_omniglot_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the Omniglot task (:class:`~plastic_rl.supervised.omniglot.OmniglotTask`) and its models."""
    group = parser.add_argument_group("omniglot episodes")
    group.add_argument("--ways", type=int, default=5, help="classes per episode (N)")
    group.add_argument("--shots", type=int, default=1, help="labelled drawings per class (K)")
    group.add_argument(
        "--queries",
        type=int,
        default=1,
        help="query drawings per training/validation episode, all scored (the paper: 1; test scores always use 1)",
    )
    group.add_argument(
        "--split",
        default="vinyals",
        metavar="SPLIT",
        help="'vinyals' (standard), 'paper', 'lake' (background alphabets for training, evaluation alphabets for "
        "test, upright) or a split FILE or folder of your class lists ([train]/[validation]/[test] sections)",
    )
    group.add_argument("--split-seed", type=int, default=0, help="seed of the held-out characters (paper, lake)")
    group.add_argument("--test-characters", type=int, default=100, help="paper split: characters held out for test")
    group.add_argument(
        "--validation-characters", type=int, default=100, help="characters held out for validation (paper, lake)"
    )
    group = parser.add_argument_group("omniglot models")
    group.add_argument("--embedding", choices=EMBEDDINGS, default="paper", help="'paper' (stride-2 tanh) or 'conv4'")
    group.add_argument(
        "--rule",
        type=rule_name,
        default="oja",
        help="Hebbian rule of the plastic head: one of plastic_rl.core.rules (a wrong name lists them)",
    )
    group.add_argument("--eta", type=float, default=1.0, help="initial Hebbian learning rate")
    group.add_argument("--alpha-init", type=float, default=1.0, help="initial plasticity coefficients (mean)")
    group.add_argument(
        "--no-fixed-weight", action="store_true", help="plastic head without fixed weights (alpha * Hebb only)"
    )
    group.add_argument(
        "--normalize-features", action="store_true", help="unit-length features (the head reads cosines)"
    )


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the image task (:class:`~plastic_rl.supervised.images.ImageCompletionTask`) and its models."""
    group = parser.add_argument_group("image protocol (defaults: the paper's, 210 steps)")
    defaults = ImageCompletionProtocol()
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
        "--validation-fraction",
        type=float,
        default=0.1,
        help="the last fraction of the training images (at least --image-count), held out for the evaluations "
        "during training (default 0.1); test images are read only by test scores and reports",
    )
    add_memory_model_arguments(parser)
