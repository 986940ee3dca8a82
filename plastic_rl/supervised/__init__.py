"""The shared supervised trainer and the paper's supervised tasks.

Tasks are registered by name in :data:`plastic_rl.supervised.task.TASKS`; one
:class:`SupervisedTrainer` trains any of them, and :func:`load_model` brings a saved model back.
"""

from plastic_rl.supervised.task import TASKS, Episodes, SupervisedTask, get_task_class, make_task
from plastic_rl.supervised.trainer import SupervisedTrainer, load_model, load_task

__all__ = [
    "TASKS",
    "Episodes",
    "SupervisedTask",
    "SupervisedTrainer",
    "get_task_class",
    "load_model",
    "load_task",
    "make_task",
]
