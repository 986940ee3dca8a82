"""Detecting a training run that diverged: a loss, gradient or parameter that is no longer finite.

Both trainers (the supervised trainer and PlasticA2C / PlasticPPO) check after every backward pass,
before the optimizer step, so that a diverged run stops at the step where it diverged with its
parameters still those of the last good step, or skips that step when asked to.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class TrainingDiverged(FloatingPointError):
    """Training produced a NaN or infinite loss, gradient or parameter; the message says where and why."""


def find_non_finite(
    loss: Tensor | None, named_parameters: Iterable[tuple[str, Tensor]], *, gradients: bool
) -> str | None:
    """The first non-finite quantity (``"loss"``, ``"gradient of NAME"``, ``"parameter NAME"``), or ``None``.

    ``gradients`` selects whether the parameters' ``.grad`` or the parameters themselves are checked.
    """
    if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
        return "loss"
    candidates = [(name, parameter.grad if gradients else parameter) for name, parameter in named_parameters]
    named = [(name, tensor.detach()) for name, tensor in candidates if tensor is not None and tensor.numel() > 0]
    if not named:
        return None
    # One reduction and one synchronisation in the usual, finite case; only then find the culprit.
    if bool(torch.isfinite(torch.stack([tensor.float().sum() for _, tensor in named]).sum())):
        return None
    kind = "gradient of" if gradients else "parameter"
    for name, tensor in named:
        if not bool(torch.isfinite(tensor).all()):
            return f"{kind} {name}"
    return None  # the sum overflowed, yet every value is finite


def divergence_message(
    where: str, quantity: str, learning_rate: float, advice: str = "", *, updated: bool = True
) -> str:
    """The error message of :class:`TrainingDiverged`: where, what, the likely cause and what to do.

    ``updated=False``: no update had been applied since the model was made or loaded, so the learning rate cannot
    be the cause; the model's starting values or the inputs are."""
    if not updated:
        cause = (
            "No update had been applied yet, so the learning rate is not the cause: the model's starting values "
            "(e.g. too large an eta or init_scale) or its inputs are"
        )
    else:
        cause = f"The learning rate ({learning_rate:g}) is the likely cause: lower it (or clip the gradients)"
    return f"training diverged at {where}: the {quantity} is NaN or infinite. {cause}{advice}"


def check_finite_parameters(named_parameters: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Raise ``ValueError`` naming the first parameter that holds a NaN or an infinity (training from it could only
    diverge, and the error would blame the learning rate)."""
    problem = find_non_finite(None, named_parameters, gradients=False)
    if problem is not None:
        raise ValueError(f"the model's {problem} holds NaN or infinite values: a model must start from finite ones")
