"""The supervised side of the experiment runner: one run is one ``plastic-rl supervised TASK`` run (a
:class:`~plastic_rl.supervised.config.SupervisedConfig`).

Serves every task registered in :data:`plastic_rl.supervised.task.TASKS`; its options are the task's
own and the shared trainer's. The trainer resumes exactly from its checkpoint, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from plastic_rl.core.options import check_utf8_path
from plastic_rl.experiments.adapter import Curve, TaskAdapter, parse_command
from plastic_rl.supervised.config import SupervisedConfig, add_task_arguments
from plastic_rl.supervised.options import add_trainer_arguments
from plastic_rl.supervised.task import SupervisedTask, get_task_class, registered_task

# Written by ``plastic-rl supervised`` into its run folder.
CHECKPOINT, CURVE, MODEL, TENSORBOARD = "checkpoint.pt", "curve.csv", "model.pt", "tensorboard"
# --score: the last evaluation during training (validation data), or the final model on the task's test part.
SCORES = ("validation", "test")
# Test episodes drawn for --score test (the same for every run): a 95% CI of about 0.03 on an accuracy.
TEST_EPISODES = 1000
# The run command's options that the experiment sets per run; it passes the others through (and sweeps them).
PER_RUN_OPTIONS = ("task", "model", "seed", "threads", "no_progress", "run_dir", "resume")


def _read_curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as file:
        return [{name: float(value) for name, value in row.items() if value != ""} for row in csv.DictReader(file)]


def _column_curve(folder: Path, column: str) -> Curve:
    """A run's ``column`` of its curve file against training episodes, on the rows that have it."""
    rows = [row for row in _read_curve(folder / CURVE) if column in row]
    return Curve(np.array([row["episodes"] for row in rows]), np.array([row[column] for row in rows]))


@dataclass(frozen=True)
class SupervisedStudyOptions:
    """The options of a study of ``plastic-rl supervised TASK`` runs: ``runs``, what every run shares (the run
    command's options that the experiment passes through; :meth:`SupervisedAdapter.config` sets each run's model,
    seed and threads), how runs are scored (``score``, one of :data:`SCORES`, on ``test_episodes``), and the values
    of the evaluations' primary metric whose first reaching is tabulated (``reach``)."""

    runs: SupervisedConfig
    score: str = "validation"
    test_episodes: int = TEST_EPISODES
    reach: tuple[float, ...] = ()


class SupervisedAdapter(TaskAdapter[SupervisedConfig, SupervisedStudyOptions]):
    """Runs of the supervised task ``task``; conditions are the task's models.

    The score (``--score``): the primary metric of the run's last evaluation during training
    (``validation``), or of its final model on ``--test-episodes`` episodes of the task's test part
    (``test``; the same episodes for every run, measured once per model), with the task's other metrics
    tabulated beside it.
    """

    budget_option = "steps"
    budget_key = "steps"
    extendable = True  # the trainer's steps are a total and it resumes exactly, so it just trains on
    higher_is_better = False  # a task's primary metric is an error
    location_options = ("run_dir", "resume", "data_dir", "no_progress")
    log_scale = True

    def __init__(self, task: str) -> None:
        super().__init__(task)
        self.registered = registered_task(task)

    @property
    def task_class(self) -> type[SupervisedTask]:
        """The task's class, imported when a study is planned (it imports torch; ``--help`` needs the registry only)."""
        return get_task_class(self.task)

    @property
    def metric(self) -> str:
        """The task's primary metric, which scores every run."""
        return self.task_class.primary_metric

    def _passed_options(self) -> list[str]:
        """The run command's options that the experiment passes through, in the command's order."""
        return [name for name in self.default_config().as_options() if name not in PER_RUN_OPTIONS]

    def _swept_value(self, name: str, value: str) -> Any:
        """``--sweep``'s ``value`` of the run command's option ``name``, parsed and checked as the command does."""
        if isinstance(self.default_config().as_options().get(name), bool):  # a flag: on or off
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{name} is a flag: its values are true and false; got {value!r}")
            return value.lower() == "true"
        command = ["supervised", self.task]
        return parse_command(lambda parser: add_task_arguments(parser, self.task), command, [_flag(name), value])[name]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--conditions",
            nargs="+",
            choices=self.registered.model_names,
            default=list(self.registered.model_names),
            help="models to compare",
        )
        parser.add_argument(
            "--score",
            choices=SCORES,
            default=SupervisedStudyOptions.score,
            help="each run's final score: its last evaluation during training (validation data; the default), or its "
            "final model on --test-episodes episodes of test data",
        )
        parser.add_argument(
            "--test-episodes",
            type=int,
            default=TEST_EPISODES,
            help=f"test episodes per run for --score test, the same for all runs (at least 2; default {TEST_EPISODES})",
        )
        parser.add_argument(
            "--reach",
            type=float,
            nargs="+",
            default=[],
            metavar="VALUE",
            help="also tabulate each run's training episodes until an evaluation's primary metric first reaches "
            "(is at most) each VALUE; inf where it never does",
        )
        add_trainer_arguments(parser, single_seed=False)
        self.registered.add_arguments(parser)

    def task_options(self, parsed: Mapping[str, Any]) -> SupervisedStudyOptions:
        # The experiment declares the run command's options under the same names; those it lacks (--overwrite)
        # or leaves unset keep the run's defaults.
        given = {name: parsed[name] for name in self._passed_options() if parsed.get(name) is not None}
        runs = SupervisedConfig.from_options({**given, "task": self.task, "model": self.registered.model_names[0]})
        return SupervisedStudyOptions(runs, parsed["score"], parsed["test_episodes"], tuple(parsed.get("reach") or ()))

    def check_options(self, options: SupervisedStudyOptions, out: Path) -> None:
        check_utf8_path("-f", str(out))  # every run writes TensorBoard events under it
        if options.score == "test" and self.task_class.test_scores is SupervisedTask.test_scores:  # not overridden
            raise ValueError(f"--score test needs a task with test data; the {self.task!r} task has none")
        if options.test_episodes < 2:
            raise ValueError(f"--test-episodes must be an integer >= 2; got {options.test_episodes}")
        trainer = options.runs.trainer
        if options.reach and not 0 < trainer.eval_interval <= trainer.steps:
            raise ValueError(
                f"--reach needs evaluations during training: --eval-interval must be between 1 and --steps "
                f"({trainer.steps}); got {trainer.eval_interval}"
            )
        if not all(math.isfinite(value) for value in options.reach):
            raise ValueError(f"--reach values must be finite numbers; got {' '.join(map(str, options.reach))}")
        if trainer.steps < trainer.log_interval:
            raise ValueError(
                f"--steps ({trainer.steps}) must be at least --log-interval ({trainer.log_interval}): a run that logs "
                "no step has no curve and no score for the summary"
            )
        # The task's settings and data, checked before any run starts.
        task = self.task_class.from_options(options.runs.task_options, options.runs.data_dir)
        task.check_data()
        super().check_options(options, out)

    # Without evaluations a run is scored on its training episodes; with fewer, on a noisier sample.
    scoring_options = ("eval_interval", "eval_episodes")

    def unused_options(self, condition: str) -> frozenset[str]:
        return self.registered.model_options.unused_by(condition)

    def check_run(self, config: SupervisedConfig) -> None:
        from plastic_rl.supervised.runs import task_and_model  # torch: not for --help

        task_and_model(config)

    def budget(self, options: SupervisedStudyOptions) -> int:
        return options.runs.trainer.steps

    def config(
        self, options: SupervisedStudyOptions, condition: str, seed: int, overrides: dict[str, str]
    ) -> SupervisedConfig:
        passed = self._passed_options()
        unknown = set(overrides) - set(passed)
        if unknown:
            raise ValueError(
                f"--sweep and --condition-set keys must be options of plastic-rl supervised {self.task} "
                f"({', '.join(sorted(passed))}); "
                f"got {', '.join(sorted(unknown))}"
            )
        shared = {name: value for name, value in options.runs.as_options().items() if name in passed}
        swept = {name: self._swept_value(name, value) for name, value in overrides.items()}
        per_run = {
            "task": self.task,
            "model": condition,
            "seed": seed,
            "threads": options.runs.trainer.threads or 1,  # one torch thread per job unless asked otherwise
            "no_progress": True,
        }
        return SupervisedConfig.from_options({**shared, **swept, **per_run})

    def default_config(self) -> SupervisedConfig:
        return SupervisedConfig.from_options({"task": self.task, "model": self.registered.model_names[0]})

    def command(self, config: SupervisedConfig) -> list[str]:
        options = config.as_options()
        argv = ["supervised", self.task]
        for name in ("model", "seed", "threads", "no_progress", *self._passed_options()):
            value = options[name]
            if isinstance(value, bool):  # a flag
                argv += [_flag(name)] if value else []
            elif value is not None:
                argv += [_flag(name), str(value)]
        return argv

    def location(self, folder: Path) -> list[str]:
        return ["--run-dir", str(folder)]

    def launch(self, config: SupervisedConfig, folder: Path) -> None:
        from plastic_rl.supervised.runs import train_run  # torch: not for --help

        checkpoint = folder / CHECKPOINT
        if not checkpoint.exists():  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(folder / TENSORBOARD, ignore_errors=True)
            for name in (CURVE, MODEL):
                (folder / name).unlink(missing_ok=True)
        resume = str(checkpoint) if checkpoint.exists() else None
        train_run(replace(config, run_dir=str(folder), resume=resume))

    def progress(self, folder: Path, options: dict[str, Any]) -> float:
        path = folder / CURVE
        if not path.exists():
            return 0.0
        rows = _read_curve(path)
        return min(rows[-1]["step"] / options["steps"], 1.0) if rows else 0.0

    def curve(self, folder: Path, options: dict[str, Any]) -> Curve:
        return _column_curve(folder, self.metric)

    def _test_means(self, folder: Path) -> dict[str, float]:
        from plastic_rl.supervised.model_files import cached_test_scores  # torch: not for --help

        scores = cached_test_scores(
            folder / MODEL, self.study_options.test_episodes, data_dir=self.study_options.runs.data_dir
        )
        return {name: float(values.mean()) for name, values in scores.items()}

    def final_score(self, folder: Path, options: dict[str, Any]) -> float:
        """The final model's test score (``--score test``), else the last evaluation's primary metric (the last
        training mean when the run never evaluated)."""
        if self.study_options.score == "test":
            return self._test_means(folder)[self.metric]
        evaluations = self._evaluations(folder)
        return float((evaluations if len(evaluations.y) else self.curve(folder, options)).y[-1])

    def describe(self, options: dict[str, Any], swept: set[str]) -> str:
        defaults = {**asdict(self.registered.options()), **asdict(self.registered.model_options())}
        # The settings that differ from the task's defaults; summary.md gives a run's whole command line.
        settings = [
            f"{name}={options[name]}"
            for name, default in defaults.items()
            if name not in swept and options.get(name) != default
        ]
        budget = f"{options['steps']:,} steps, batch {options['batch_size']}"
        return f"{self.task} ({', '.join([*settings, budget])})"

    def _evaluations(self, folder: Path) -> Curve:
        """The run's evaluations during training: the primary metric on validation data against training episodes."""
        return _column_curve(folder, f"eval_{self.metric}")

    def further_curves(self, folder: Path, options: dict[str, Any]) -> dict[str, Curve]:
        evaluations = self._evaluations(folder)
        return {f"eval {self.metric} (validation data)": evaluations} if len(evaluations.x) else {}

    def final_details(self, folder: Path, options: dict[str, Any]) -> dict[str, float]:
        details: dict[str, float] = {}
        evaluations = self._evaluations(folder)
        for value in self.study_options.reach:
            reached = evaluations.x[evaluations.y <= value]
            details[f"episodes to eval {self.metric} <= {value:g}"] = float(reached[0]) if len(reached) else math.inf
        if self.study_options.score == "test":
            means = self._test_means(folder)
            details.update({f"test {name}": value for name, value in means.items() if name != self.metric})
        return details

    def labels(self) -> dict[str, str]:
        if self.study_options.score == "test":
            scored = f"{self.metric} of the final model on {self.study_options.test_episodes:,} test episodes"
        elif 0 < (trainer := self.study_options.runs.trainer).eval_interval <= trainer.steps:
            scored = f"final eval {self.metric} (validation data)"
        else:  # --eval-interval 0, or more steps than the runs train
            scored = (
                f"{self.metric} of the last training steps (the runs never evaluated: --eval-interval "
                f"{trainer.eval_interval}, --steps {trainer.steps})"
            )
        return {"x": "training episodes", "y": f"{self.metric} (training mean)", "score": scored}


def _flag(name: str) -> str:
    """The run command's option of the parsed name ``name`` (``learning_rate``: ``--learning-rate``)."""
    return "--" + name.replace("_", "-")
