"""``plastic-rl build-kernel``: build the C++ plastic kernel now, rather than at the first unroll of a run.

The first use of the fused unroll builds the kernel (1-3 minutes, once per kernel source and machine); ``make run``
and ``make test`` call this command right after installing, so that no training run pauses for the build.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from plastic_rl.core.fused.cpp_backend import cpp_extension_module  # torch

    start = time.perf_counter()
    module = cpp_extension_module()
    if module is None:
        print("plastic-rl build-kernel: the C++ kernel is unavailable here (see the warning above): the fused unroll "
              "runs on its PyTorch backend", file=sys.stderr)  # fmt: skip
        return 0
    print(f"C++ plastic kernel ready: {module.__file__} ({time.perf_counter() - start:.0f} s)")
    return 0
