"""A supervised training run's configuration: :class:`SupervisedConfig`, and its command line
``plastic-rl supervised TASK``.

The library's :func:`~plastic_rl.supervised.runs.train_run` takes a :class:`SupervisedConfig`; the supervised command
parses its command line into one (:meth:`SupervisedConfig.from_options`), and the experiment runner builds one per
run. Its options keep the command line's names and order (:meth:`SupervisedConfig.as_options`, what a study's
``run.json`` records). It imports no torch, so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from plastic_rl.core.options import config_from
from plastic_rl.supervised.options import ModelOptions, TaskOptions, TrainerOptions, add_trainer_arguments
from plastic_rl.supervised.task import registered_task

# The options of the run itself, beside the trainer's, the task's and its models'.
RUN_OPTIONS = ("run_dir", "resume", "overwrite", "data_dir")


@dataclass(frozen=True, kw_only=True)
class SupervisedConfig:
    """A supervised training run: the model ``model`` (one of the task's ``model_names``) trained on the registered
    task ``task``, which ``task_options`` and ``model_options`` (instances of its registry entry's classes) set up.

    ``run_dir`` None: a new numbered folder ``runs/supervised/TASK/MODEL-seedSEED[_N]``, or ``resume``'s folder;
    ``resume``: a checkpoint to continue (its task, model and settings are kept); ``overwrite``: replace the run
    already in ``run_dir``; ``data_dir``: the dataset folder of tasks that read one (None: ``$PLASTIC_RL_DATA``).
    """

    task: str
    model: str
    run_dir: str | None = None
    resume: str | None = None
    overwrite: bool = False
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    data_dir: str | None = None
    task_options: TaskOptions
    model_options: ModelOptions

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SupervisedConfig:
        """The run of options named as ``plastic-rl supervised TASK`` names them (its parsed ``vars``, a run's
        recorded options): ``task`` and ``model`` are needed, any other option that is absent takes its default."""
        task = registered_task(options["task"])
        return cls(
            task=options["task"],
            model=options["model"],
            **{name: options[name] for name in RUN_OPTIONS if name in options},
            trainer=config_from(TrainerOptions, options),
            task_options=config_from(task.options, options),
            model_options=config_from(task.model_options, options),
        )

    def as_options(self) -> dict[str, Any]:
        """The options as plain data, named and ordered as ``plastic-rl supervised TASK`` declares them."""
        options: dict[str, Any] = {}
        for name, value in asdict(self).items():  # the trainer's, the task's and the models' options as dicts
            options.update(value if isinstance(value, dict) else {name: value})
        return options


def add_task_arguments(parser: argparse.ArgumentParser, task_name: str) -> None:
    """All the options of ``plastic-rl supervised <task_name>``: the run's, the trainer's and the task's."""
    task = registered_task(task_name)
    parser.set_defaults(task=task_name)
    parser.add_argument("--model", choices=task.model_names, default=task.model_names[0])
    parser.add_argument(
        "--run-dir",
        help=f"output folder (default: a new runs/supervised/{task_name}/MODEL-seedSEED[_N], or the --resume folder)",
    )
    parser.add_argument("--resume", help="checkpoint to continue from (its task, model and settings are kept)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir")
    add_trainer_arguments(parser)
    task.add_arguments(parser)
