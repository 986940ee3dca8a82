"""``plastic-rl train``: train PlasticA2C, PlasticPPO or sb3-contrib's RecurrentPPO (RL Baselines3 Zoo conventions).

A new run goes to ``LOGDIR/<algo>/<env>_<N>/``; ``--resume CHECKPOINT`` (or a run folder: its latest checkpoint)
continues a run exactly; ``-i MODEL`` starts a new run from a saved model's parameters. See
:mod:`plastic_rl.agents.training`.
"""

from __future__ import annotations

import argparse

from plastic_rl.agents.config import TrainConfig, add_train_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from plastic_rl.agents.training import resume_run, train_new_run

    config = TrainConfig.from_options(vars(args))
    if config.resume is None:
        train_new_run(config)
    else:
        resume_run(config)
    return 0
