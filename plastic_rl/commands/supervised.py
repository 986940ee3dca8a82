"""``plastic-rl supervised TASK``: train a model on a supervised task of the registry (patterns, omniglot, images).

One command serves every task registered in :data:`plastic_rl.supervised.task.TASKS`: ``plastic-rl supervised TASK
...`` parses the task as a sub-command, and the CLI's own ``supervised patterns`` and ``supervised images`` preset it.
The run itself is :func:`plastic_rl.supervised.runs.train_run`.
"""

from __future__ import annotations

import argparse

from plastic_rl.supervised.config import SupervisedConfig, add_task_arguments
from plastic_rl.supervised.task import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.get_default("task")
    if task is not None:  # preset by the CLI: one task's options
        add_task_arguments(parser, task)
        return
    subparsers = parser.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(TASKS))
    for name in TASKS:
        add_task_arguments(subparsers.add_parser(name, help=f"train on the {name!r} task"), name)


def run(args: argparse.Namespace) -> int:
    from plastic_rl.supervised.runs import train_run

    train_run(SupervisedConfig.from_options(vars(args)))
    return 0
