"""The RL side of the experiment runner: one run is one ``plastic-rl train`` run (a
:class:`~plastic_rl.agents.config.TrainConfig`), for any env id.

A run trains into ``RUN/train/`` (model ``<env>.zip``, ``config.yml``, monitor CSVs and checkpoints every
``--save-freq`` env steps) through :func:`plastic_rl.agents.training.train_run`, which continues an
interrupted run exactly from its latest checkpoint. Its curve is the reward of every training episode
from the monitor files; its final score is chosen with ``--score`` from :data:`SCORES`.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from plastic_rl.agents.config import TrainConfig, add_held_out_settings
from plastic_rl.agents.curves import monitor_episodes
from plastic_rl.agents.evaluation import evaluate, held_out_seeds
from plastic_rl.agents.hyperparameters import ALGORITHMS, POLICIES, algorithm_class, parse_key_values
from plastic_rl.agents.run_folders import read_run_config
from plastic_rl.core.files import cached_json, file_sha256
from plastic_rl.core.options import config_from
from plastic_rl.experiments.adapter import Curve, TaskAdapter

TRAIN_FOLDER = "train"


def episode_rewards(train_folder: Path) -> tuple[np.ndarray, int]:
    """Rewards of all training episodes of a run, in the order they ended, and their total steps (monitor CSVs)."""
    steps, rewards = monitor_episodes(train_folder)
    return rewards, int(steps[-1]) if len(steps) else 0


def final_training_reward(train_folder: Path, options: dict[str, Any], study: RLStudyOptions) -> float:
    """Mean reward of the last ``--final-fraction`` of the run's training episodes."""
    rewards, _ = episode_rewards(train_folder)
    if not len(rewards):
        raise ValueError(f"no monitor CSV with episodes under {train_folder}")
    return float(rewards[-max(int(len(rewards) * study.final_fraction), 1) :].mean())


# Held-out episodes per run for --score heldout: enough that one run's 95% CI is a few reward units.
HELD_OUT_EPISODES = 300
# The held-out evaluation of a run's final model, kept beside it: a summary evaluates each model once.
HELD_OUT_RECORD = "heldout.json"
#: What the summary tabulates per condition from each run's held-out evaluation: the learning-to-learn
#: signature (later gap / first hit, each over episodes with two hits or more; a memoryless policy scores about 1).
HELD_OUT_DETAILS = {
    "ratio_of_means": "later gap / first hit",
    "first_hit_steps_mean_of_two_hit_episodes": "steps to first hit",
    "later_gap_mean": "later gap",
    "hits_mean": "hits",
    "no_hit_episodes": f"episodes with no hit (of {HELD_OUT_EPISODES})",
    "wall_bumps_mean": "wall bumps",
}


def held_out_evaluation(train_folder: Path, options: dict[str, Any]) -> dict[str, float]:
    """The statistics (:meth:`~plastic_rl.agents.evaluation.EvaluationResult.statistics`) of the run's final
    model on :data:`HELD_OUT_EPISODES` held-out episodes (env seeds never used in training), sampled actions unless
    the run's ``heldout_deterministic``, of its env with its ``heldout_env_kwargs`` over its own.

    Read from ``heldout.json`` beside the model when it was made from the same model file, else measured and
    written there."""
    models = sorted(train_folder.rglob(f"{options['env']}.zip"))
    if not models:
        raise ValueError(f"no final model {options['env']}.zip under {train_folder}")
    seeds = held_out_seeds(HELD_OUT_EPISODES)
    held_out_kwargs = parse_key_values(options.get("heldout_env_kwargs"), "--heldout-env-kwargs")
    deterministic = bool(options.get("heldout_deterministic"))
    key: dict[str, Any] = {"model_sha256": file_sha256(models[0]), "first_seed": seeds[0], "episodes": len(seeds)}
    # Only when set, so that the records of runs without them stay valid.
    key.update({"env_kwargs": held_out_kwargs} if held_out_kwargs else {})
    key.update({"deterministic": True} if deterministic else {})

    def measure() -> dict[str, float]:
        config = read_run_config(models[0].parent)
        model = algorithm_class(options["algo"]).load(models[0], device="cpu")
        env_kwargs = {**(config["hyperparameters"].get("env_kwargs") or {}), **held_out_kwargs}
        return evaluate(model, options["env"], env_kwargs, seeds=seeds, deterministic=deterministic).summary

    return cached_json(models[0].parent / HELD_OUT_RECORD, key, measure)


def held_out_reward(train_folder: Path, options: dict[str, Any], study: RLStudyOptions) -> float:
    """Mean reward of the run's final model on the held-out episodes of :func:`held_out_evaluation`."""
    return float(held_out_evaluation(train_folder, options)["reward_mean"])


#: Held-out points that ``--score heldout_curve`` averages: the last ones of the run's ``--heldout-freq`` curve.
CURVE_POINTS_SCORED = 3
#: The held-out curves the summary draws beside the training curve: ``progress.csv`` column -> axis label.
HELD_OUT_CURVES = {
    "reward_mean": "held-out reward per episode",
    "ratio_of_means": "held-out later gap / first hit",
}


def held_out_curves(train_folder: Path, statistics: Sequence[str], every: int) -> dict[str, Curve]:
    """The run's ``heldout/<statistic>`` of each of ``statistics`` against training episodes: its measurements
    every ``every`` env steps (``--heldout-freq``) in ``progress.csv``, read once; NaN where a measurement has no
    finite value, e.g. a ratio without two-hit episodes.

    Only the measurements at multiples of ``every`` count: a run resumed from a checkpoint by an older plastic-rl
    (e.g. commit b67974a, which runs the round-3 maze study) also measured at the step it resumed from, off the
    grid that every run shares."""
    path = train_folder / "progress.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    points = [
        row for row in rows if row.get("heldout/total_timesteps") and float(row["heldout/total_timesteps"]) % every == 0
    ]
    rewards, steps = episode_rewards(train_folder)
    steps_per_episode = steps / len(rewards) if len(rewards) else 1.0
    x = np.array([float(row["heldout/total_timesteps"]) / steps_per_episode for row in points])
    return {
        statistic: Curve(x, np.array([float(row.get(f"heldout/{statistic}") or "nan") for row in points]))
        for statistic in statistics
    }


def held_out_curve_reward(train_folder: Path, options: dict[str, Any], study: RLStudyOptions) -> float:
    """Mean held-out reward of the last :data:`CURVE_POINTS_SCORED` points of the run's held-out curve."""
    assert study.heldout_freq is not None, "--score heldout_curve needs --heldout-freq (checked with the options)"
    curve = held_out_curves(train_folder, ["reward_mean"], study.heldout_freq)["reward_mean"]
    if len(curve.y) < CURVE_POINTS_SCORED:
        raise ValueError(
            f"{train_folder} has {len(curve.y)} held-out measurements; --score heldout_curve averages the last "
            f"{CURVE_POINTS_SCORED} (train with a smaller --heldout-freq)"
        )
    return float(curve.y[-CURVE_POINTS_SCORED:].mean())


#: ``--score`` name -> ``score(train_folder, run_options, study_options) -> float``. ``train_folder``
#: holds the ``plastic-rl train`` run (``<algo>/<env>_1/<env>.zip``); ``run_options`` are its options.
SCORES: dict[str, Callable[[Path, dict[str, Any], RLStudyOptions], float]] = {
    "training": final_training_reward,
    "heldout": held_out_reward,
    "heldout_curve": held_out_curve_reward,
}


@dataclass(frozen=True)
class RLStudyOptions:
    """The options of a study of ``plastic-rl train`` runs (``plastic-rl experiment maze``), named as that command
    names them; its parser's defaults are these fields'.

    Every run trains ``algo`` on ``env`` for ``timesteps`` env steps with ``n_envs`` envs (``None``: the YAML's), a
    checkpoint every ``save_freq`` steps, the ``hyperparams_set``, ``-params`` (``hyperparams``) and ``env_kwargs``
    given, and its held-out signature every ``heldout_freq`` steps on ``heldout_episodes`` episodes (``None``: not
    measured), of the env with ``heldout_env_kwargs`` over its own (e.g. Omniglot's test classes), answered with the
    most likely actions when ``heldout_deterministic``: these two also hold for ``--score heldout``. ``score`` (a
    :data:`SCORES` name) and ``final_fraction``, ``bin_episodes`` (``None``: about 40 curve points) say how runs are
    read back.
    """

    env: str = "PlasticMaze-v0"
    algo: str = "plastic_a2c"
    timesteps: int = 1_000_000
    n_envs: int | None = None
    device: str = "cpu"
    save_freq: int = 100_000
    hyperparams_set: str | None = None
    hyperparams: tuple[str, ...] | None = None
    env_kwargs: tuple[str, ...] | None = None
    score: str = "training"
    heldout_freq: int | None = None
    heldout_episodes: int = 100
    heldout_env_kwargs: tuple[str, ...] | None = None
    heldout_deterministic: bool = False
    final_fraction: float = 0.1
    bin_episodes: int | None = None


class RLAdapter(TaskAdapter[TrainConfig, RLStudyOptions]):
    """``plastic-rl train`` runs on any Gymnasium env id; conditions are ``--policy`` names."""

    budget_option = "timesteps"
    budget_key = "n_timesteps"
    higher_is_better = True
    location_options = ("log_folder", "no_progress_bar")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        defaults = RLStudyOptions()
        parser.add_argument(
            "--conditions", nargs="+", default=list(POLICIES), choices=list(POLICIES), help="policies to compare"
        )
        parser.add_argument("--env", default=defaults.env, help="Gymnasium env id")
        parser.add_argument("--algo", default=defaults.algo, choices=list(ALGORITHMS), help="algorithm of every run")
        parser.add_argument("--timesteps", type=int, default=defaults.timesteps, help="env steps per run")
        parser.add_argument("--n-envs", type=int, default=None, help="episodes per update (default: from the YAML)")
        parser.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"], help="torch device")
        parser.add_argument(
            "--save-freq",
            type=int,
            default=defaults.save_freq,
            help="checkpoint every F env steps, to resume interrupted runs",
        )
        parser.add_argument(
            "--hyperparams-set", default=None, metavar="NAME", help="a named entry <env>:NAME of the YAML, every run"
        )
        parser.add_argument(
            "-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="passed to every run"
        )
        parser.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="passed to every run")
        parser.add_argument(
            "--score",
            default=defaults.score,
            choices=list(SCORES),
            help="each run's final score: its last training episodes, its final model on 300 held-out episodes, or "
            f"the mean held-out reward of the last {CURVE_POINTS_SCORED} --heldout-freq measurements",
        )
        parser.add_argument(
            "--heldout-freq",
            type=int,
            default=None,
            help="each run measures its learning-to-learn signature on held-out episodes every F env steps "
            "(heldout/* in its progress.csv)",
        )
        parser.add_argument(
            "--heldout-episodes",
            type=int,
            default=defaults.heldout_episodes,
            help="held-out episodes per --heldout-freq measurement (the same episodes each time)",
        )
        add_held_out_settings(parser)
        parser.add_argument(
            "--final-fraction", type=float, default=defaults.final_fraction, help="last fraction of episodes scored"
        )
        parser.add_argument("--bin-episodes", type=int, default=None, help="episodes per curve point (default: auto)")

    def task_options(self, parsed: Mapping[str, Any]) -> RLStudyOptions:
        return config_from(RLStudyOptions, parsed)

    def budget(self, options: RLStudyOptions) -> int:
        return options.timesteps

    def config(self, options: RLStudyOptions, condition: str, seed: int, overrides: dict[str, str]) -> TrainConfig:
        # A sweep's key is a hyperparameter: its values join -params.
        hyperparameters = [*(options.hyperparams or ()), *(f"{key}:{value}" for key, value in overrides.items())]
        config = TrainConfig(
            algo=options.algo,
            env=options.env,
            policy=condition,
            seed=seed,
            n_timesteps=options.timesteps,
            device=options.device,
            save_freq=options.save_freq,
            threads=1,  # one torch thread per job
            no_progress_bar=True,
            n_envs=options.n_envs or None,  # 0: the YAML's, as when not given
            hyperparams_set=options.hyperparams_set or None,
            hyperparams=tuple(hyperparameters) or None,
            env_kwargs=options.env_kwargs or None,
            heldout_env_kwargs=options.heldout_env_kwargs or None,
            heldout_deterministic=options.heldout_deterministic,
        )
        if options.heldout_freq:
            config = replace(config, heldout_freq=options.heldout_freq, heldout_episodes=options.heldout_episodes)
        return config

    def default_config(self) -> TrainConfig:
        return TrainConfig()

    def command(self, config: TrainConfig) -> list[str]:
        argv = ["train", "--algo", config.algo, "--env", config.env, "--policy", config.policy]
        argv += ["--seed", str(config.seed), "-n", str(config.n_timesteps), "--device", config.device]
        argv += ["--save-freq", str(config.save_freq), "--threads", str(config.threads), "--no-progress-bar"]
        if config.n_envs:
            argv += ["--n-envs", str(config.n_envs)]
        if config.hyperparams_set:
            argv += ["--hyperparams-set", config.hyperparams_set]
        if config.heldout_freq:
            argv += ["--heldout-freq", str(config.heldout_freq), "--heldout-episodes", str(config.heldout_episodes)]
        if config.heldout_env_kwargs:
            argv += ["--heldout-env-kwargs", *config.heldout_env_kwargs]
        if config.heldout_deterministic:
            argv += ["--heldout-deterministic"]
        if config.hyperparams:
            argv += ["-params", *config.hyperparams]
        if config.env_kwargs:
            argv += ["--env-kwargs", *config.env_kwargs]
        return argv

    def location(self, folder: Path) -> list[str]:
        # For the command line that re-runs it alone (plastic-rl train numbers its folder under -f);
        # the runner itself trains into exactly RUN/train.
        return ["-f", str(folder / TRAIN_FOLDER)]

    def read_options(self, options: dict[str, Any]) -> dict[str, Any]:
        # -params are recorded as written: learning_rate:3e-3 and learning_rate:0.003 are one value.
        return {**options, "hyperparams": parse_key_values(options.get("hyperparams"), "-params")}

    def check_run(self, config: TrainConfig) -> None:
        from plastic_rl.agents.training import check_run  # torch and SB3: not for --help

        check_run(config)

    def launch(self, config: TrainConfig, folder: Path) -> None:
        from plastic_rl.agents.training import train_run  # torch and SB3: not for --help

        train_run(folder / TRAIN_FOLDER, config)

    def progress(self, folder: Path, options: dict[str, Any]) -> float:
        _, steps = episode_rewards(folder / TRAIN_FOLDER)
        return min(steps / options["n_timesteps"], 1.0)

    def check_options(self, options: RLStudyOptions, out: Path) -> None:
        if options.n_envs is not None and options.n_envs < 0:  # 0 is the YAML's, as when not given
            raise ValueError(f"--n-envs must be a positive integer; got {options.n_envs}")
        if options.save_freq < 1:
            raise ValueError(f"--save-freq must be a positive integer; got {options.save_freq}")
        if not 0 < options.final_fraction <= 1:
            raise ValueError(f"--final-fraction must be in (0, 1]; got {options.final_fraction}")
        if options.heldout_freq is not None and options.heldout_freq < 1:
            raise ValueError(f"--heldout-freq must be a positive integer; got {options.heldout_freq}")
        if options.heldout_episodes < 1:
            raise ValueError(f"--heldout-episodes must be a positive integer; got {options.heldout_episodes}")
        if options.score == "heldout_curve" and options.heldout_freq is None:
            raise ValueError("--score heldout_curve needs --heldout-freq (the held-out measurements it averages)")
        if options.bin_episodes is not None and options.bin_episodes < 1:
            raise ValueError(f"--bin-episodes must be a positive integer; got {options.bin_episodes}")
        super().check_options(options, out)

    def curve(self, folder: Path, options: dict[str, Any]) -> Curve:
        rewards, _ = episode_rewards(folder / TRAIN_FOLDER)
        self.bin_episodes = self.study_options.bin_episodes or max(len(rewards) // 40, 1)
        n_bins = len(rewards) // self.bin_episodes
        binned = rewards[: n_bins * self.bin_episodes].reshape(n_bins, self.bin_episodes).mean(axis=1)
        return Curve(self.bin_episodes * np.arange(1, n_bins + 1), binned)

    def further_curves(self, folder: Path, options: dict[str, Any]) -> dict[str, Curve]:
        if self.study_options.heldout_freq is None:
            return {}
        curves = held_out_curves(folder / TRAIN_FOLDER, list(HELD_OUT_CURVES), self.study_options.heldout_freq)
        return {label: curves[key] for key, label in HELD_OUT_CURVES.items()}

    def final_score(self, folder: Path, options: dict[str, Any]) -> float:
        return SCORES[self.study_options.score](folder / TRAIN_FOLDER, options, self.study_options)

    def final_details(self, folder: Path, options: dict[str, Any]) -> dict[str, float]:
        study = self.study_options
        if study.score == "heldout":
            statistics = held_out_evaluation(folder / TRAIN_FOLDER, options)
            return {label: float(statistics[key]) for key, label in HELD_OUT_DETAILS.items()}
        if study.score == "heldout_curve" and study.heldout_freq is not None:  # it is: checked with the options
            # The same points as the score: the mean of the last measurements (NaN ones left out).
            details = {}
            curves = held_out_curves(folder / TRAIN_FOLDER, list(HELD_OUT_DETAILS), study.heldout_freq)
            for key, label in HELD_OUT_DETAILS.items():
                if key == "no_hit_episodes":
                    label = f"episodes with no hit (of {study.heldout_episodes})"
                last = curves[key].y[-CURVE_POINTS_SCORED:]
                details[label] = float(np.nanmean(last)) if np.isfinite(last).any() else float("nan")
            return details
        return {}

    def describe(self, options: dict[str, Any], swept: set[str]) -> str:
        return f"{options['env']} ({options['algo']}, {options['n_timesteps']:,} env steps per run)"

    def labels(self) -> dict[str, str]:
        if self.study_options.score == "training":
            scored = f"mean reward of the last {self.study_options.final_fraction:.0%} of each run's training episodes"
        elif self.study_options.score == "heldout_curve":
            study = self.study_options
            scored = (
                f"mean held-out reward ({study.heldout_episodes} episodes) of the last {CURVE_POINTS_SCORED} "
                f"measurements, every {study.heldout_freq:,} env steps"
            )
        else:
            scored = f"{self.study_options.score} score"
        return {
            "x": "training episodes",
            "y": f"reward per episode (mean of {getattr(self, 'bin_episodes', 1)})",
            "score": scored,
        }
