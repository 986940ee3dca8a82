"""What a study is asked (the options of ``plastic-rl experiment TASK``), as one typed object that
:func:`~plastic_rl.experiments.study.plan` and :func:`~plastic_rl.experiments.study.run_study` take.

It imports nothing heavy, so that the command's ``--help`` reads its defaults at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plastic_rl.core.options import config_from


@dataclass(frozen=True)
class StudyOptions:
    """A study: the grid (``conditions`` x seeds x ``--sweep`` values), its folder, where its runs go, and the task's
    own options, the typed object of its adapter (:meth:`~plastic_rl.experiments.adapter.TaskAdapter.task_options`).

    ``sweep``: one ``(key, value, ...)`` per ``--sweep``, a run per combination of values. ``condition_set``: one
    ``(condition, key, value)`` per ``--condition-set``, a setting of that condition's runs only. ``jobs``: runs at a
    time (``None``: the study's last, else one per CPU). ``launcher``: ``"local"`` (a process pool) or ``"ray"``
    (joining the cluster at ``address``; ``None``: a local one).
    """

    task: str
    conditions: tuple[str, ...]
    out: str
    task_options: Any
    seeds: int = 10
    first_seed: int = 0
    sweep: tuple[tuple[str, ...], ...] = ()
    condition_set: tuple[tuple[str, str, str], ...] = ()
    jobs: int | None = None
    launcher: str = "local"
    address: str | None = None

    @classmethod
    def from_parsed(cls, parsed: Mapping[str, Any], task_options: Any) -> StudyOptions:
        """The study of the command line's values by their parsed names (the fields' names), with the task's
        options."""
        sweep = [tuple(words) for words in parsed["sweep"]]
        condition_set = [tuple(words) for words in parsed.get("condition_set") or ()]
        values = {**parsed, "sweep": sweep, "condition_set": condition_set, "task_options": task_options}
        return config_from(cls, values)
