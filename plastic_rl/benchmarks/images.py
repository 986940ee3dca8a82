"""``plastic-rl bench images``: seconds per episode and peak memory of image-completion training (the harness of
:mod:`plastic_rl.benchmarks.supervised`, on the image task)."""

from __future__ import annotations

import argparse

from plastic_rl.benchmarks.supervised import add_task_arguments, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "images")


__all__ = ["add_arguments", "run"]
