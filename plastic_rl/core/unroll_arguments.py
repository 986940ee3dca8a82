"""The checks every unroll path (autograd loop, fused PyTorch, C++ kernel) makes of its arguments, and the two small
types they share: a module below both :mod:`plastic_rl.core.functional` and :mod:`plastic_rl.core.fused`, which
import it at the top.

Conventions as in :mod:`plastic_rl.core.functional`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from plastic_rl.core.rules import get_rule


class Modulator(NamedTuple):
    """The network's neuromodulator head: ``M(t) = tanh(x(t) @ weight + bias)``, ``weight`` ``(N, K)``, ``bias``
    ``(K,)``, with ``K = 1`` (one value per episode) or ``N`` (one per post-synaptic neuron)."""

    weight: Tensor
    bias: Tensor


class UnrollArguments(NamedTuple):
    """The tensors of one unroll, in the order :func:`~plastic_rl.core.functional.recurrent_unroll` and
    :func:`~plastic_rl.core.fused.fused_unroll` take them: every path checks and passes them as this one object.
    ``eligibility_trace`` and ``modulator`` are those of a rule that has them."""

    drive: Tensor
    activation: Tensor
    trace: Tensor | None
    weight: Tensor
    plasticity_coefficient: Tensor | None
    hebbian_learning_rate: Tensor | None
    bias: Tensor | None
    episode_starts: Tensor | None
    reset_activation: Tensor
    eligibility_trace: Tensor | None = None
    modulator: Modulator | None = None


def _shape_error(name: str, expected: str, tensor: Tensor) -> ValueError:
    return ValueError(f"{name} must have shape {expected}; got {tuple(tensor.shape)}")


def check_state(
    activation: Tensor,
    trace: Tensor | None,
    batch: int,
    size: int,
    plastic: bool,
    eligibility_trace: Tensor | None = None,
    eligibility: bool = False,
) -> None:
    """Raise a ``ValueError`` unless ``activation`` is ``(batch, size)`` and ``trace`` (and, for a rule with
    ``eligibility``, ``eligibility_trace``) is ``(batch, size, size)`` (``None`` allowed for a plastic layer,
    required for a non-plastic one).

    A state of another batch size would broadcast in the autograd loop and be read past its end by the C++ kernel.
    """
    if activation.dim() != 2 or tuple(activation.shape) != (batch, size):
        raise _shape_error("the state's activation", f"(B={batch}, N={size}) to match the inputs", activation)
    if eligibility_trace is not None:
        if not (plastic and eligibility):
            raise ValueError("the state's eligibility_trace must be None unless the layer's rule has one")
        if eligibility_trace.dim() != 3 or tuple(eligibility_trace.shape) != (batch, size, size):
            raise _shape_error("the state's eligibility_trace", f"(B={batch}, N={size}, N={size})", eligibility_trace)
    if trace is None:
        return
    if not plastic:
        raise ValueError("the state's hebbian_trace must be None for a non-plastic layer (plasticity='none')")
    if trace.dim() != 3 or tuple(trace.shape) != (batch, size, size):
        raise _shape_error("the state's hebbian_trace", f"(B={batch}, N={size}, N={size})", trace)


def check_unroll_arguments(arguments: UnrollArguments, rule: str = "hebb") -> None:
    """Raise a ``ValueError`` naming the first of ``arguments`` whose shape, dtype or device does not fit the others
    (or ``rule``): every path (autograd loop, fused PyTorch, C++ kernel) assumes they do."""
    plasticity_rule = get_rule(rule)
    drive, weight, coefficient, modulator = (
        arguments.drive, arguments.weight, arguments.plasticity_coefficient, arguments.modulator
    )  # fmt: skip
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise _shape_error("weight", "(N, N)", weight)
    size = weight.shape[0]
    if drive.dim() != 3 or drive.shape[2] != size:
        raise _shape_error("drive", f"(T, B, N={size})", drive)
    steps, batch = drive.shape[:2]
    check_state(
        arguments.activation,
        arguments.trace,
        batch,
        size,
        coefficient is not None,
        arguments.eligibility_trace,
        plasticity_rule.eligibility,
    )
    if coefficient is not None:
        if coefficient.numel() != 1 and tuple(coefficient.shape) != (size, size):
            raise _shape_error("plasticity_coefficient", f"(N={size}, N={size}) or one element", coefficient)
        learning_rate = arguments.hebbian_learning_rate
        if plasticity_rule.uses_learning_rate and (learning_rate is None or learning_rate.numel() != 1):
            raise ValueError(
                f"hebbian_learning_rate must be a one-element tensor when plasticity_coefficient is given "
                f"(rule {rule!r})"
            )
        if plasticity_rule.modulated:
            if modulator is None:
                raise ValueError(f"rule {rule!r} needs a modulator (the network's neuromodulator head)")
            outputs = modulator.weight.shape[-1] if modulator.weight.dim() == 2 else -1
            if modulator.weight.dim() != 2 or modulator.weight.shape[0] != size or outputs not in (1, size):
                raise _shape_error("the modulator's weight", f"(N={size}, 1) or (N={size}, N={size})", modulator.weight)
            if tuple(modulator.bias.shape) != (outputs,):
                raise _shape_error("the modulator's bias", f"({outputs},)", modulator.bias)
    if arguments.bias is not None and tuple(arguments.bias.shape) != (size,):
        raise _shape_error("bias", f"(N={size},)", arguments.bias)
    if tuple(arguments.reset_activation.shape) != (size,):
        raise _shape_error("reset_activation", f"(N={size},)", arguments.reset_activation)
    starts = arguments.episode_starts
    if starts is not None:
        if tuple(starts.shape) != (steps, batch):
            raise _shape_error("episode_starts", f"(T={steps}, B={batch})", starts)
        if starts.dtype != torch.bool:
            raise ValueError(f"episode_starts must be a bool tensor; got {starts.dtype}")
    for name, tensor in _named_tensors(arguments).items():
        if tensor is None:
            continue
        if tensor.device != drive.device:
            raise ValueError(f"{name} is on {tensor.device} but drive is on {drive.device}: move both to one device")
        if name != "episode_starts" and not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor; got {tensor.dtype}")


def _named_tensors(arguments: UnrollArguments) -> dict[str, Tensor | None]:
    """Every tensor of ``arguments`` by the name its errors give it."""
    named: dict[str, Tensor | None] = {
        "hebbian_trace" if name == "trace" else name: value
        for name, value in arguments._asdict().items()
        if name != "modulator"
    }
    named["the modulator's weight"] = None if arguments.modulator is None else arguments.modulator.weight
    named["the modulator's bias"] = None if arguments.modulator is None else arguments.modulator.bias
    return named


def reset_where(starts: Tensor, value: Tensor, reset_value: Tensor | float) -> Tensor:
    """Replace the batch rows of ``value`` where ``starts`` (B,) is true by ``reset_value``."""
    mask = starts.reshape(-1, *([1] * (value.dim() - 1)))
    return torch.where(mask, reset_value, value)
