"""The ``plastic-rl`` command line: :data:`COMMANDS` maps the command words to their modules.

The commands live in :mod:`plastic_rl.commands` and the benchmarks in :mod:`plastic_rl.benchmarks`, a module per
command, which defines ``add_arguments(parser)`` and ``run(args)``. Only the module of the command being run is
imported, and it imports its heavy modules (torch, SB3, pygame, ...) in ``run``, so ``--help`` answers at once.

Errors are reported one way, here: a command raises, never prints an error or exits itself. Exit codes: 0 success;
1 some runs of an experiment failed (each named, the summary still written); 2 bad input
(``plastic-rl COMMAND: error: ...`` after the usage line, never a traceback: argparse's own errors, a
:class:`~plastic_rl.core.options.BadInputError` from a command, a :class:`~plastic_rl.data.DataError` or a file-system
fault); 3 training diverged
(:class:`~plastic_rl.core.divergence.TrainingDiverged`: the message names the step, the quantity and
the likely cause). With ``PLASTIC_RL_TRACEBACK=1`` in the environment these errors keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    """A command: the module that runs it (``add_arguments(parser)`` and ``run(args)``), its one-line help and, for
    the module that serves one command per supervised task, the ``task`` it presets."""

    module: str
    help: str
    task: str | None = None


COMMANDS: dict[tuple[str, ...], Command] = {
    ("train",): Command("plastic_rl.commands.train", "train an RL agent (PlasticA2C, PlasticPPO, RecurrentPPO)"),
    ("evaluate",): Command(
        "plastic_rl.commands.evaluate", "an agent vs random on held-out episodes (learning to learn)"
    ),
    ("enjoy",): Command("plastic_rl.commands.enjoy", "watch a trained agent, with its Hebbian trace"),
    ("play", "maze"): Command("plastic_rl.commands.play", "play PlasticMaze-v0 yourself with the arrow keys"),
    ("experiment",): Command(
        "plastic_rl.commands.experiment",
        "a resumable grid of runs of any task (maze, patterns, ...), local or on Ray, with statistics",
    ),
    ("supervised", "patterns"): Command(
        "plastic_rl.commands.supervised", "train on pattern memorization", task="patterns"
    ),
    ("supervised", "images"): Command(
        "plastic_rl.commands.supervised", "train on natural-image completion (CIFAR-10)", task="images"
    ),
    ("supervised",): Command(
        "plastic_rl.commands.supervised", "train on a supervised task: supervised TASK (patterns, omniglot, images)"
    ),
    ("evaluate", "omniglot"): Command(
        "plastic_rl.commands.evaluate_omniglot", "a trained Omniglot model's test accuracy, 95% CI"
    ),
    ("report", "images"): Command(
        "plastic_rl.commands.report", "image-completion models vs references on test images, Figures 4-6"
    ),
    ("download",): Command("plastic_rl.commands.download", "fetch a dataset's official files (Omniglot, CIFAR-10)"),
    ("build-kernel",): Command(
        "plastic_rl.commands.build_kernel", "build the C++ plastic kernel now (else at first use)"
    ),
    ("bench", "core"): Command("plastic_rl.benchmarks.core", "time the plastic core's unroll against autograd"),
    ("bench", "a2c"): Command("plastic_rl.benchmarks.a2c", "time PlasticA2C's learn() loop on the maze"),
    ("bench", "patterns"): Command("plastic_rl.benchmarks.patterns", "time pattern-memory training per episode"),
    ("bench", "images"): Command("plastic_rl.benchmarks.images", "time image-completion training per episode"),
    ("bench", "omniglot"): Command("plastic_rl.benchmarks.omniglot", "time Omniglot training per episode"),
}


def _usage(prefix: tuple[str, ...]) -> str:
    lines = [f"usage: plastic-rl {' '.join(prefix) + ' ' if prefix else ''}COMMAND [options]", "", "commands:"]
    for words, command in COMMANDS.items():
        if words[: len(prefix)] == prefix:
            lines.append(f"  {' '.join(words):<22} {command.help}")
    lines.append("")
    lines.append("Run 'plastic-rl COMMAND --help' for a command's options, 'plastic-rl --version' for the version.")
    return "\n".join(lines)


def _run_command(module, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from plastic_rl.core.divergence import TrainingDiverged
    from plastic_rl.core.files import file_fault_message
    from plastic_rl.core.options import BadInputError
    from plastic_rl.data import DataError

    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if os.environ.get("PLASTIC_RL_TRACEBACK"):
            raise
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    except (BadInputError, DataError, TrainingDiverged) as error:
        if os.environ.get("PLASTIC_RL_TRACEBACK"):
            raise
        if isinstance(error, TrainingDiverged):
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return 3
        parser.error(str(error))  # prints the usage line and "plastic-rl CMD: error: ...", exits 2
    except OSError as error:  # a file-system fault: a read-only or full disk, a file where a folder should be, ...
        if os.environ.get("PLASTIC_RL_TRACEBACK"):
            raise
        parser.error(file_fault_message(error))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A path with a byte that is not UTF-8 (held as a surrogate) is printed escaped, as stderr already does, rather
    # than stopping the command in a print.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    if argv == ["--version"]:
        from plastic_rl import __version__

        print(f"plastic-rl {__version__}")
        return 0
    # Longest command first, so that a command word can also be a command of its own ("evaluate" and "evaluate X").
    for words, command in sorted(COMMANDS.items(), key=lambda item: -len(item[0])):
        if tuple(argv[: len(words)]) == words:
            module = importlib.import_module(command.module)
            parser = argparse.ArgumentParser(prog=f"plastic-rl {' '.join(words)}", description=command.help)
            if command.task is not None:
                parser.set_defaults(task=command.task)
            module.add_arguments(parser)
            args = parser.parse_args(argv[len(words) :])
            return _run_command(module, parser, args)
    prefix = tuple(argv[:1]) if argv and any(w[0] == argv[0] for w in COMMANDS) else ()
    asked_for_help = not argv or argv[-1] in ("-h", "--help")
    print(_usage(prefix), file=sys.stdout if asked_for_help else sys.stderr)
    if not asked_for_help:
        print(f"\nplastic-rl: unknown command {' '.join(argv)!r}", file=sys.stderr)
    return 0 if asked_for_help else 2


if __name__ == "__main__":
    sys.exit(main())
