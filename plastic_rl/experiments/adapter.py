"""What the experiment runner needs from a kind of run: how to launch one, and how to read it back.

The runner (:mod:`plastic_rl.experiments.study`) owns the grid, the run folders, the scheduling and
the summary. A :class:`TaskAdapter` supplies the rest for one task: the configuration object of
one run (what the library's training function takes), its ``plastic-rl`` command line (which the run
folder records, so any run can be re-run alone), how to launch it into a folder and resume it there,
and how to read its learning curve and final score.
"""

from __future__ import annotations

import argparse
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

import numpy as np


class Curve(NamedTuple):
    """One run's learning curve: ``y`` at the training progress ``x`` (episodes)."""

    x: np.ndarray
    y: np.ndarray


class ArgumentError(ValueError):
    """A command line that the run's command would reject; raised instead of argparse's exit."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(f"{self.prog}: {message}")


def parse_command(
    add_arguments: Callable[[argparse.ArgumentParser], None], words: list[str], argv: list[str]
) -> dict[str, Any]:
    """The options that the CLI command ``words``, whose options ``add_arguments`` adds, parses from ``argv``."""
    parser = _RaisingParser(prog=f"plastic-rl {' '.join(words)}")
    add_arguments(parser)
    return vars(parser.parse_args(argv))


class RunConfig(Protocol):
    """A run's configuration object (:class:`~plastic_rl.agents.config.TrainConfig`,
    :class:`~plastic_rl.supervised.config.SupervisedConfig`)."""

    def as_options(self) -> dict[str, Any]:
        """Its options as plain data, named as the run's command line names them."""
        ...


ConfigT = TypeVar("ConfigT", bound=RunConfig)
OptionsT = TypeVar("OptionsT")


class TaskAdapter(ABC, Generic[ConfigT, OptionsT]):
    """How the runner launches one run of a task and reads its curve and final score.

    The experiment's options of the task are one typed object (:meth:`task_options`). A run is one configuration
    object (:meth:`config`), which :meth:`launch` trains into the run's folder (it differs between the driver and a
    Ray worker). Its options, less those that say where it writes, are the run's recorded configuration;
    :meth:`command` and :meth:`location` give the ``plastic-rl`` command line that runs it alone.
    """

    #: The experiment option that sets each run's budget (``--timesteps`` / ``--steps``).
    budget_option: ClassVar[str]
    #: The run command's option (its parsed name) that holds the budget.
    budget_key: ClassVar[str]
    #: Whether a finished run can be extended to a larger budget by resuming it (same result as a longer run).
    extendable: ClassVar[bool] = False
    #: Whether a higher final score is better (for the summary's wording).
    higher_is_better: ClassVar[bool]
    #: Options that say where a run writes, not what it does: left out of the configuration check.
    location_options: ClassVar[tuple[str, ...]]

    def __init__(self, task: str) -> None:
        self.task = task

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The task's options of ``plastic-rl experiment TASK`` (``--conditions`` included)."""

    @abstractmethod
    def task_options(self, parsed: Mapping[str, Any]) -> OptionsT:
        """The task's options of the experiment as its typed object, from the values of :meth:`add_arguments`'s
        options by their parsed names (other names are ignored)."""

    @abstractmethod
    def budget(self, options: OptionsT) -> int:
        """Each run's budget, from the task's options."""

    @abstractmethod
    def config(self, options: OptionsT, condition: str, seed: int, overrides: dict[str, str]) -> ConfigT:
        """The configuration of one run, from the task's options, its condition, seed and ``--sweep`` values
        (a ``ValueError`` if the run's command would reject them); its folder is :meth:`launch`'s."""

    @abstractmethod
    def default_config(self) -> ConfigT:
        """A run with every option at its default: a run folder recorded before an option existed had its default."""

    @abstractmethod
    def command(self, config: ConfigT) -> list[str]:
        """The ``plastic-rl`` arguments that run ``config`` alone, without its folder (see :meth:`location`)."""

    @abstractmethod
    def location(self, folder: Path) -> list[str]:
        """The arguments that make the run's command write into ``folder``."""

    def options(self, config: ConfigT) -> dict[str, Any]:
        """The run's recorded configuration: its options, less the :attr:`location_options`."""
        return {key: value for key, value in config.as_options().items() if key not in self.location_options}

    def read_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Recorded options as the run reads them: two runs whose read options are equal are the same run."""
        return options

    @abstractmethod
    def launch(self, config: ConfigT, folder: Path) -> None:
        """Train the run of ``config`` into ``folder``, resuming what an earlier launch left there."""

    @abstractmethod
    def progress(self, folder: Path, options: dict[str, Any]) -> float:
        """The fraction of the run's budget done, from its files (0 for an empty folder)."""

    @abstractmethod
    def curve(self, folder: Path, options: dict[str, Any]) -> Curve:
        """The learning curve of a finished run."""

    @abstractmethod
    def final_score(self, folder: Path, options: dict[str, Any]) -> float:
        """The score of a finished run that the summary's statistics compare."""

    def further_curves(self, folder: Path, options: dict[str, Any]) -> dict[str, Curve]:
        """Further curves of a finished run, ``{y-axis label: curve}``, that the summary draws beside the learning
        curve, one figure each (none unless a task has them; NaN values are left out of the percentiles)."""
        return {}

    def final_details(self, folder: Path, options: dict[str, Any]) -> dict[str, float]:
        """Further measurements of a finished run, ``{label: value}``, that the summary tabulates per condition
        beside the score (none unless a task has them)."""
        return {}

    @abstractmethod
    def describe(self, options: dict[str, Any], swept: set[str]) -> str:
        """What a run with ``options`` does, for plot titles and the summary (e.g. the env id and algorithm).

        ``swept`` are the ``--sweep`` keys, which the condition labels name instead.
        """

    @abstractmethod
    def labels(self) -> dict[str, str]:
        """Axis labels: ``{"x": ..., "y": ..., "score": ...}``."""

    #: Whether the curves' y axis is logarithmic.
    log_scale: ClassVar[bool] = False

    def check_options(self, options: OptionsT, out: Path) -> None:
        """Check the task's options (a ``ValueError`` if one is bad) for a study in the folder ``out``, and keep them
        for reading runs back."""
        self.study_options = options

    #: The run options that decide how a run is scored: the same for every run of a study, so that its scores compare.
    scoring_options: ClassVar[tuple[str, ...]] = ()

    def unused_options(self, condition: str) -> frozenset[str]:
        """The ``--condition-set`` keys that the condition's runs ignore (setting one for it is refused)."""
        return frozenset()

    def check_run(self, config: ConfigT) -> None:
        """Refuse (a ``ValueError``) a run that could not start, before any run of the study does; by default the
        options' checks are enough."""

    def shell_command(self, config: ConfigT, folder: Path) -> str:
        """The command line that runs (or resumes) this one run alone."""
        return shlex.join(["plastic-rl", *self.command(config), *self.location(folder)])
