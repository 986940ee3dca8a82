"""Which trained agent a command reads (``enjoy``, ``evaluate``): the latest run of ``--env`` under ``-f`` (or
``--exp-id N``, ``--algo``), its best model (``--load-best``), a model file (``--model``, where the command takes it)
or a pretrained agent shipped with the package (``--pretrained``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plastic_rl.agents.hyperparameters import ALGORITHMS
from plastic_rl.agents.pretrained import PRETRAINED_AGENTS, pretrained_folder
from plastic_rl.agents.run_folders import find_run_folder
from plastic_rl.core.options import non_negative_int


def add_run_selection(parser: argparse.ArgumentParser, *, model_file: bool) -> None:
    """The options that select the agent; ``model_file``: also ``--model PATH.zip``."""
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument("-f", "--log-folder", default="logs", help="the folder given to plastic-rl train")
    parser.add_argument("--algo", default=None, choices=list(ALGORITHMS), help="algorithm (default: the latest run's)")
    parser.add_argument("--exp-id", type=non_negative_int, default=0, help="run number N of <env>_<N> (0: the latest)")
    parser.add_argument("--load-best", action="store_true", help="load best_model.zip instead of the final model")
    if model_file:
        parser.add_argument(
            "--model", default=None, metavar="PATH.zip", help="a model file of a run folder (e.g. a checkpoint)"
        )
    parser.add_argument(
        "--pretrained",
        default=None,
        choices=list(PRETRAINED_AGENTS),
        help="an agent shipped with the package instead of a run of -f",
    )


def selected_model(args: argparse.Namespace) -> tuple[Path, Path]:
    """The model file that the options of :func:`add_run_selection` name, and the run folder whose ``config.yml``
    describes it."""
    model = getattr(args, "model", None)
    if model is not None and args.pretrained is not None:
        raise ValueError("--model and --pretrained each name the model: give one")
    if args.pretrained is not None:
        folder = pretrained_folder(args.pretrained)
        return folder / f"{PRETRAINED_AGENTS[args.pretrained]}.zip", folder
    if model is not None:
        model_path = Path(model)
        if not model_path.is_file():
            raise ValueError(f"--model must be an existing model file; got {model!r}")
        return model_path, model_path.parent
    folder = find_run_folder(args.log_folder, args.env, args.algo, args.exp_id)
    return folder / ("best_model.zip" if args.load_best else f"{args.env}.zip"), folder
