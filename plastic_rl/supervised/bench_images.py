"""``plastic-rl bench images``: time image-completion training (see :mod:`plastic_rl.supervised.bench`)."""

from __future__ import annotations

import argparse

from plastic_rl.supervised.bench import add_task_arguments, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "images")


__all__ = ["add_arguments", "run"]
