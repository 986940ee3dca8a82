"""RL Baselines3 Zoo's scripts with ``plastic_a2c`` and ``plastic_ppo`` registered (the ``plastic-rl[zoo]`` extra)::

    python -m plastic_rl.commands.zoo train --algo plastic_a2c --env PlasticMaze-v0 --gym-packages plastic_rl
    python -m plastic_rl.commands.zoo enjoy --algo plastic_a2c --env PlasticMaze-v0 -f logs
    python -m plastic_rl.commands.zoo record_video --algo plastic_a2c --env PlasticMaze-v0 -f logs -n 250
    python -m plastic_rl.commands.zoo plot_train --algo plastic_a2c --env PlasticMaze-v0 -f logs [-o curve.png]

Everything after the script name is the Zoo's own command line (``--gym-packages`` may be given to every script;
``plot_train`` also takes ``-o/--output``, and writes ``plot_train.png`` when there is no display). Without
``--conf-file``, ``train`` reads the hyperparameters of ``plastic-rl train``
(``plastic_rl/agents/hyperparams/<algo>.yml``, which name the policy the Zoo builds).

It is not a ``plastic-rl`` command: its command line is the Zoo's, so it is a launcher run with ``python -m``, as the
Zoo's own ``train_sbx.py`` is. Why the Zoo needs a launcher, and what this one runs with, is in
:mod:`plastic_rl.agents.zoo`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from plastic_rl.agents.zoo import register, zoo_arguments
from plastic_rl.core.files import atomic_path

# launcher script name -> the Zoo's "module:function", or its module when the script is only a __main__ block
ZOO_SCRIPTS: dict[str, str] = {
    "train": "rl_zoo3.train:train",
    "enjoy": "rl_zoo3.enjoy:enjoy",
    "record_video": "rl_zoo3.record_video",
    "plot_train": "rl_zoo3.plots.plot_train:plot_train",
}


def _save_figures_instead_of_showing(path: Path) -> None:
    """Make ``plt.show()`` write the open figures to ``path`` (``-1``, ``-2``, ... before the suffix after the
    first): the Zoo's ``plot_train`` only shows its figure, which a machine without a display never sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save() -> None:
        for index, number in enumerate(plt.get_fignums()):
            target = path if index == 0 else path.with_name(f"{path.stem}-{index}{path.suffix}")
            with atomic_path(target) as partial:
                plt.figure(number).savefig(partial)
            print(f"Saved {target}")

    plt.show = save  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m plastic_rl.commands.zoo {{{','.join(ZOO_SCRIPTS)}}} [RL Zoo options]"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        print("RL Baselines3 Zoo's scripts with plastic_a2c and plastic_ppo registered; SCRIPT --help: its options")
        return 0
    if not argv or argv[0] not in ZOO_SCRIPTS:
        print(usage, file=sys.stderr)
        return 2
    script, arguments = argv[0], zoo_arguments(argv[0], argv[1:])
    if script == "plot_train":
        # Our option, not the Zoo's: where the figure goes when there is no display to show it on.
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output", "-o")
        known, arguments = parser.parse_known_args(arguments)
        if known.output or not os.environ.get("DISPLAY"):
            _save_figures_instead_of_showing(Path(known.output or "plot_train.png"))
    register()
    module_name, _, function_name = ZOO_SCRIPTS[script].partition(":")
    sys.argv = [module_name, *arguments]
    if function_name:
        getattr(importlib.import_module(module_name), function_name)()
    else:
        runpy.run_module(module_name, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
