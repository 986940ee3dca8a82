"""The options of an RL training run, as ``plastic-rl train`` takes them.

One declaration serves the train command, the experiment runner's maze runs (which record and compare them) and every
resumable checkpoint (which stores the parsed options, see :mod:`plastic_rl.agents.checkpoints`). It imports nothing
heavy, so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse

from plastic_rl.agents.configuration import ALGORITHMS, POLICIES
from plastic_rl.core.options import non_negative_int, positive_int


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """All the options of ``plastic-rl train``."""
    parser.add_argument("--algo", default="plastic_a2c", choices=list(ALGORITHMS), help="algorithm")
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument(
        "--policy",
        default="plastic",
        choices=list(POLICIES),
        help="plastic / homogeneous / rnn: PlasticRecurrentPolicy with plasticity full / shared / none; neuromod / "
        "retroneuromod: with Backpropamine's simple / retroactive neuromodulation; lstm: LSTM",
    )
    parser.add_argument(
        "-n", "--n-timesteps", type=positive_int, default=None, help="env steps (default: from the YAML)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--n-envs", type=positive_int, default=None, help="parallel envs (default: from the YAML)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: torch's default, all cores; the experiment command runs one per job)",
    )
    parser.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"], help="VecEnv class")
    parser.add_argument("-f", "--log-folder", default="logs", help="runs go to LOGDIR/<algo>/<env>_<N>/")
    parser.add_argument("-tb", "--tensorboard-log", default=None, help="TensorBoard log folder")
    parser.add_argument(
        "--eval-freq", type=positive_int, default=None, help="evaluate every F env steps (default: never)"
    )
    parser.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation")
    parser.add_argument(
        "--heldout-freq",
        type=positive_int,
        default=None,
        help="measure the learning-to-learn signature on held-out episodes every F env steps (heldout/* in "
        "progress.csv and TensorBoard; default: never)",
    )
    parser.add_argument(
        "--heldout-episodes", type=positive_int, default=100, help="held-out episodes per --heldout-freq measurement"
    )
    parser.add_argument(
        "--save-freq",
        type=positive_int,
        default=None,
        help="checkpoint every F env steps, between updates (default: never)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue the run of this checkpoint (or of a run folder's latest one) exactly, with its own options",
    )
    parser.add_argument(
        "-i",
        "--trained-agent",
        default=None,
        metavar="MODEL",
        help="start from this saved model's parameters (a .zip or a checkpoint) and train -n more steps",
    )
    parser.add_argument(
        "--video-freq",
        type=positive_int,
        default=None,
        help="with -tb: log an episode with its trace panel to TensorBoard every F env steps (default: never)",
    )
    parser.add_argument(
        "-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="override hyperparameters"
    )
    parser.add_argument(
        "--hyperparams-set", default=None, metavar="NAME", help="a named entry <env>:NAME of the YAML (e.g. authors)"
    )
    parser.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="override env kwargs")
    parser.add_argument(
        "--compare-random",
        action="store_true",
        help="after training, evaluate the agent beside a random policy on held-out episodes (plastic-rl evaluate)",
    )
    parser.add_argument("--compare-episodes", type=positive_int, default=300, help="episodes for --compare-random")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--verbose", type=int, default=0, choices=[0, 1, 2], help="SB3 verbosity (1: print the training logs)"
    )
