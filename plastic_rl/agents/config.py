"""The options of an RL training run: :class:`TrainConfig`, and its command line ``plastic-rl train``.

The library's training functions (:mod:`plastic_rl.agents.training`) take a :class:`TrainConfig`; the train command
parses its command line into one, and the experiment runner builds one per maze run. A resumable checkpoint stores its
options (:meth:`TrainConfig.as_options`, see :mod:`plastic_rl.agents.checkpoints`). It imports nothing heavy, so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from plastic_rl.agents.hyperparameters import ALGORITHMS, POLICIES
from plastic_rl.core.options import config_from, non_negative_int, positive_int


@dataclass(frozen=True)
class TrainConfig:
    """An RL training run: the options of ``plastic-rl train``, by their names there (``--n-timesteps`` is
    ``n_timesteps``), with their defaults; ``None`` takes the value from the hyperparameter YAML or means "never".

    ``hyperparams``, ``env_kwargs`` and ``heldout_env_kwargs`` hold ``KEY:VALUE`` strings as the command line takes them
    (``-params``, ``--env-kwargs``, ``--heldout-env-kwargs``); their values are read as YAML when the run starts.
    """

    algo: str = "plastic_a2c"
    env: str = "PlasticMaze-v0"
    policy: str = "plastic"
    n_timesteps: int | None = None
    device: str = "auto"
    seed: int = 0
    n_envs: int | None = None
    threads: int | None = None
    vec_env: str = "dummy"
    log_folder: str = "logs"
    tensorboard_log: str | None = None
    eval_freq: int | None = None
    eval_episodes: int = 10
    heldout_freq: int | None = None
    heldout_episodes: int = 100
    heldout_env_kwargs: tuple[str, ...] | None = None
    heldout_deterministic: bool = False
    save_freq: int | None = None
    resume: str | None = None
    trained_agent: str | None = None
    video_freq: int | None = None
    hyperparams: tuple[str, ...] | None = None
    hyperparams_set: str | None = None
    env_kwargs: tuple[str, ...] | None = None
    compare_random: bool = False
    compare_episodes: int = 300
    no_progress_bar: bool = False
    verbose: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrainConfig:
        """The run of options named as the command line names them (its parsed ``vars``, or a checkpoint's stored
        options); an option that is absent, e.g. one added since a checkpoint was written, takes its default."""
        return config_from(cls, options)

    def as_options(self) -> dict[str, Any]:
        """The options as plain data, as the command line parses them (lists for ``-params`` and ``--env-kwargs``):
        what a checkpoint, a run's ``args.yml`` and the experiment runner's ``run.json`` record."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """All the options of ``plastic-rl train``, with :class:`TrainConfig`'s defaults."""
    defaults = TrainConfig()
    parser.add_argument("--algo", default=defaults.algo, choices=list(ALGORITHMS), help="algorithm")
    parser.add_argument("--env", default=defaults.env, help="Gymnasium env id")
    parser.add_argument(
        "--policy",
        default=defaults.policy,
        choices=list(POLICIES),
        help="plastic / homogeneous / rnn: PlasticRecurrentPolicy with plasticity full / shared / none; neuromod / "
        "retroneuromod: with Backpropamine's simple / retroactive neuromodulation; lstm: LSTM; readout: "
        "PlasticReadoutPolicy (a plastic read-out that the observation's label writes, for PlasticOmniglot-v0)",
    )
    parser.add_argument(
        "-n",
        "--n-timesteps",
        type=positive_int,
        default=defaults.n_timesteps,
        help="env steps (default: from the YAML)",
    )
    parser.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--n-envs", type=positive_int, default=defaults.n_envs, help="parallel envs (default: from the YAML)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=defaults.threads,
        help="torch threads (default: torch's default, all cores; the experiment command runs one per job)",
    )
    parser.add_argument("--vec-env", default=defaults.vec_env, choices=["dummy", "subproc"], help="VecEnv class")
    parser.add_argument("-f", "--log-folder", default=defaults.log_folder, help="runs go to LOGDIR/<algo>/<env>_<N>/")
    parser.add_argument("-tb", "--tensorboard-log", default=defaults.tensorboard_log, help="TensorBoard log folder")
    parser.add_argument(
        "--eval-freq", type=positive_int, default=defaults.eval_freq, help="evaluate every F env steps (default: never)"
    )
    parser.add_argument(
        "--eval-episodes", type=positive_int, default=defaults.eval_episodes, help="episodes per evaluation"
    )
    parser.add_argument(
        "--heldout-freq",
        type=positive_int,
        default=defaults.heldout_freq,
        help="measure the learning-to-learn signature on held-out episodes every F env steps (heldout/* in "
        "progress.csv and TensorBoard; default: never)",
    )
    parser.add_argument(
        "--heldout-episodes",
        type=positive_int,
        default=defaults.heldout_episodes,
        help="held-out episodes per --heldout-freq measurement",
    )
    add_held_out_settings(parser)
    parser.add_argument(
        "--save-freq",
        type=positive_int,
        default=defaults.save_freq,
        help="checkpoint every F env steps, between updates (default: never)",
    )
    parser.add_argument(
        "--resume",
        default=defaults.resume,
        metavar="CHECKPOINT",
        help="continue the run of this checkpoint (or of a run folder's latest one) exactly, with its own options",
    )
    parser.add_argument(
        "-i",
        "--trained-agent",
        default=defaults.trained_agent,
        metavar="MODEL",
        help="start from this saved model's parameters (a .zip or a checkpoint) and train -n more steps",
    )
    parser.add_argument(
        "--video-freq",
        type=positive_int,
        default=defaults.video_freq,
        help="with -tb: log an episode with its trace panel to TensorBoard every F env steps (default: never)",
    )
    parser.add_argument(
        "-params",
        "--hyperparams",
        nargs="+",
        default=defaults.hyperparams,
        metavar="KEY:VALUE",
        help="override hyperparameters",
    )
    parser.add_argument(
        "--hyperparams-set",
        default=defaults.hyperparams_set,
        metavar="NAME",
        help="a named entry <env>:NAME of the YAML (e.g. authors)",
    )
    parser.add_argument(
        "--env-kwargs", nargs="+", default=defaults.env_kwargs, metavar="KEY:VALUE", help="override env kwargs"
    )
    parser.add_argument(
        "--compare-random",
        action="store_true",
        help="after training, evaluate the agent beside a random policy on held-out episodes (plastic-rl evaluate)",
    )
    parser.add_argument(
        "--compare-episodes", type=positive_int, default=defaults.compare_episodes, help="episodes for --compare-random"
    )
    parser.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--verbose",
        type=int,
        default=defaults.verbose,
        choices=[0, 1, 2],
        help="SB3 verbosity (1: print the training logs)",
    )


def add_held_out_settings(parser: argparse.ArgumentParser) -> None:
    """``--heldout-env-kwargs`` and ``--heldout-deterministic``: which episodes the held-out measurements are of and
    how they are answered (``plastic-rl train``, and ``plastic-rl experiment maze`` for every run)."""
    parser.add_argument(
        "--heldout-env-kwargs",
        nargs="+",
        default=TrainConfig.heldout_env_kwargs,
        metavar="KEY:VALUE",
        help="env kwargs of the held-out episodes over the run's own, e.g. part:test (Omniglot's test classes)",
    )
    parser.add_argument(
        "--heldout-deterministic",
        action="store_true",
        help="answer the held-out episodes with the most likely actions (default: sampled, as a maze agent explores)",
    )
