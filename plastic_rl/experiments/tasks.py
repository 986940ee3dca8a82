"""The tasks of the experiment runner: ``maze`` (``plastic-rl train`` runs on any Gymnasium env id) and every
supervised task registered in :data:`plastic_rl.supervised.task.TASKS`, each read through its
:class:`~plastic_rl.experiments.adapter.TaskAdapter`."""

from __future__ import annotations

from plastic_rl.experiments.adapter import TaskAdapter
from plastic_rl.experiments.rl import RLAdapter
from plastic_rl.experiments.supervised import SupervisedAdapter
from plastic_rl.supervised.task import TASKS

RL_TASK = "maze"


def task_names() -> list[str]:
    """The tasks of ``plastic-rl experiment``."""
    return [RL_TASK, *TASKS]


def adapter_for(task: str) -> TaskAdapter:
    """How to launch and read back the runs of ``task``."""
    return RLAdapter(task) if task == RL_TASK else SupervisedAdapter(task)
