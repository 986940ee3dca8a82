"""``plastic-rl bench patterns``: seconds per episode and peak memory of pattern-memory training (the harness of
:mod:`plastic_rl.benchmarks.supervised`, on the pattern task)."""

from __future__ import annotations

import argparse

from plastic_rl.benchmarks.supervised import add_task_arguments, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser, "patterns")


__all__ = ["add_arguments", "run"]
