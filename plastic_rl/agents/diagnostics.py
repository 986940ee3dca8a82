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


def parameter_group(name: str) -> str:
    """The group of a policy parameter: ``alpha``, ``eta``, ``w`` (recurrent weights), ``heads`` or ``input``
    (input projection, biases and the LSTM's weights)."""
    groups = {"core.plasticity_coefficient": "alpha", "core.eta_raw": "eta", "core.weight": "w"}
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


# The columns that say at which step a row of progress.csv was logged (per update; held-out measurements).
STEP_COLUMNS = ("time/total_timesteps", "heldout/total_timesteps")


class _ContinuedCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV writer continuing a file whose header is ``keys`` (SB3's own starts the file afresh)."""

    def __init__(self, filename: str, keys: list[str]) -> None:
        self.file = open(filename, "r+")  # noqa: SIM115  (closed by the logger, as SB3's)
        self.file.seek(0, 2)
        self.keys = list(keys)
        self.separator = ","
        self.quotechar = '"'


class ProgressCSVCallback(BaseCallback):
    """Write every value the model logs per update (losses, gradient norms, plasticity statistics, rewards) to
    the CSV ``path`` as well, one row per update, from the start of training.

    A run resumed from a checkpoint keeps the rows logged up to the checkpoint's step and continues the file."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _on_training_start(self) -> None:
        if self.model.num_timesteps > 0 and self.path.exists():
            keys = self._keep_rows_until(self.model.num_timesteps)
            self.model.logger.output_formats.append(_ContinuedCSVOutputFormat(str(self.path), keys))
        else:
            self.model.logger.output_formats.append(CSVOutputFormat(str(self.path)))

    def _keep_rows_until(self, step: int) -> list[str]:
        """Cut the file before its first row logged after ``step`` (rewritten atomically); returns its header."""
        import csv
        import io

        from plastic_rl.core.files import atomic_write_text

        with open(self.path, newline="") as file:
            rows = list(csv.reader(file))
        if not rows:
            return []
        header, kept = rows[0], [rows[0]]
        step_indices = [header.index(column) for column in STEP_COLUMNS if column in header]
        for row in rows[1:]:
            logged_at = [float(row[index]) for index in step_indices if index < len(row) and row[index]]
            if any(value > step for value in logged_at):
                break
            kept.append(row)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(kept)
        atomic_write_text(self.path, buffer.getvalue())
        return header

    def _on_step(self) -> bool:
        return True
