"""Training diagnostics of the recurrent agents: per-group gradient norms and a per-update CSV.

Why the plastic maze agents collapse into bumping walls is a question about the plasticity parameters, so
every update logs (TensorBoard and ``progress.csv`` of the run) the gradient norm of each parameter group beside
``plasticity/eta``, ``plasticity/mean_abs_alpha`` and ``plasticity/trace_norm``.
"""

from __future__ import annotations

from pathlib import Path

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat

# Parameter groups of a recurrent policy, for gradient diagnostics and the plasticity learning rate.
PLASTICITY_GROUPS = ("alpha", "eta")


def parameter_group(name: str) -> str:
    """The group of a policy parameter: ``alpha``, ``eta``, ``w`` (recurrent weights), ``heads`` or ``input``
    (input projection, biases and the LSTM's weights)."""
    groups = {"core.plasticity_coefficient": "alpha", "core.hebbian_learning_rate": "eta", "core.weight": "w"}
    if name in groups:
        return groups[name]
    return "heads" if name.startswith(("action_net", "value_net", "log_std")) else "input"


def gradient_norms(module: th.nn.Module) -> dict[str, float]:
    """The L2 norm of the gradients of each :func:`parameter_group` of ``module``, and of all (``total``)."""
    squares: dict[str, float] = {}
    for name, parameter in module.named_parameters():
        if parameter.grad is not None:
            group = parameter_group(name)
            squares[group] = squares.get(group, 0.0) + parameter.grad.detach().square().sum().item()
    squares["total"] = sum(squares.values())
    return {group: square**0.5 for group, square in squares.items()}


class ProgressCSVCallback(BaseCallback):
    """Write every value the model logs per update (losses, gradient norms, plasticity statistics, rewards) to
    the CSV ``path`` as well, one row per update, from the start of training."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _on_training_start(self) -> None:
        self.model.logger.output_formats.append(CSVOutputFormat(str(self.path)))

    def _on_step(self) -> bool:
        return True
