"""The shared supervised trainer and the paper's supervised tasks.

Tasks are registered by name in :data:`plastic_rl.supervised.task.TASKS`; one
:class:`SupervisedTrainer` trains any of them, and :func:`load_model` brings a saved model back.
"""

from plastic_rl.core.exports import lazy_exports

_TASK, _TRAINER = "plastic_rl.supervised.task", "plastic_rl.supervised.trainer"
_FILES = "plastic_rl.supervised.model_files"
_EXPORTS = {
    "TASKS": _TASK,
    "Episodes": _TASK,
    "SupervisedTask": _TASK,
    "SupervisedTrainer": _TRAINER,
    "get_task_class": _TASK,
    "load_model": _FILES,
    "load_task": _FILES,
    "make_task": _TASK,
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
