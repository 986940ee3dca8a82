"""The step math of plastic networks, in one place.

Everything that trains a plastic network in this suite — RL rollouts, the A2C/PPO re-runs and the
supervised trainers — goes through these functions, so a faster implementation of the unroll can be
swapped in here without touching any caller.

Conventions: weights are indexed ``[pre, post]``; activations are ``(B, N)``; the Hebbian trace is
``(B, N_pre, N_post)``. For the recurrent layer, neuron ``j`` at step ``t`` is::

    x_j(t) = tanh( sum_i (w[i, j] + alpha[i, j] * hebb[i, j](t)) * x_i(t - 1) + b_j + drive_j(t) )

and the trace then follows the chosen rule with ``pre = x(t - 1)`` and ``post = x(t)``.

:func:`recurrent_unroll` is the plain-autograd reference; with ``implementation="fused"`` (or
``"auto"``) it hands the sequence to :mod:`plastic_rl.core.fused`, which computes the same results
with a hand-written backward pass in a fraction of the memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from plastic_rl.core import fused


def update_trace(
    trace: Tensor,
    pre: Tensor,
    post: Tensor,
    hebbian_learning_rate: Tensor,
    rule: str,
    trace_clip: float | None,
) -> Tensor:
    """One step of the Hebbian trace.

    Parameters
    ----------
    trace : (B, N_pre, N_post) trace before the step.
    pre, post : (B, N_pre) and (B, N_post) activations.
    hebbian_learning_rate : scalar tensor, ``eta``.
    rule : ``"hebb"`` — ``H <- (1 - eta) H + eta pre post`` — or ``"oja"`` —
        ``H <- H + eta post (pre - post H)``.
    trace_clip : clamp the result to ``[-trace_clip, trace_clip]`` when not ``None``.
    """
    outer = pre.unsqueeze(2) * post.unsqueeze(1)
    if rule == "hebb":
        trace = torch.lerp(trace, outer, hebbian_learning_rate)
    else:
        trace = trace + hebbian_learning_rate * (outer - post.square().unsqueeze(1) * trace)
    if trace_clip is not None:
        trace = trace.clamp(-trace_clip, trace_clip)
    return trace


def plastic_matvec(x: Tensor, weight: Tensor, plasticity_coefficient: Tensor | None, trace: Tensor | None) -> Tensor:
    """``x @ (w + alpha * hebb)`` for a batch: ``(B, N_pre) -> (B, N_post)``."""
    out = x @ weight
    if plasticity_coefficient is None:
        return out
    assert trace is not None, "a plastic layer's step needs its trace"
    if plasticity_coefficient.numel() == 1:
        # One shared alpha: scale the (cheap) matvec instead of the whole trace.
        return out + plasticity_coefficient * torch.bmm(x.unsqueeze(1), trace).squeeze(1)
    return out + torch.bmm(x.unsqueeze(1), plasticity_coefficient * trace).squeeze(1)


def recurrent_step(
    drive: Tensor,
    activation: Tensor,
    trace: Tensor | None,
    weight: Tensor,
    plasticity_coefficient: Tensor | None,
    hebbian_learning_rate: Tensor | None,
    bias: Tensor | None,
    *,
    rule: str,
    input_mode: str,
    trace_clip: float | None,
    bias_neuron: bool,
) -> tuple[Tensor, Tensor | None]:
    """One step of the plastic recurrent layer.

    ``drive`` is the (already mapped) input, ``(B, N)``. With ``input_mode="add"`` it is added to the
    pre-activation; with ``"clamp"`` a neuron whose drive is non-zero outputs its drive. With
    ``bias_neuron`` the last neuron is held at 1. Returns the new activation and trace.
    """
    pre_activation = plastic_matvec(activation, weight, plasticity_coefficient, trace)
    if bias is not None:
        pre_activation = pre_activation + bias
    if input_mode == "add":
        new_activation = torch.tanh(pre_activation + drive)
    else:
        new_activation = torch.where(drive != 0, drive, torch.tanh(pre_activation))
    if bias_neuron:
        new_activation = torch.cat([new_activation[:, :-1], torch.ones_like(new_activation[:, -1:])], dim=1)
    if trace is not None:
        assert hebbian_learning_rate is not None, "a trace needs its learning rate"
        trace = update_trace(trace, activation, new_activation, hebbian_learning_rate, rule, trace_clip)
    return new_activation, trace


def reset_where(starts: Tensor, value: Tensor, reset_value: Tensor | float) -> Tensor:
    """Replace the batch rows of ``value`` where ``starts`` (B,) is true by ``reset_value``."""
    mask = starts.reshape(-1, *([1] * (value.dim() - 1)))
    return torch.where(mask, reset_value, value)


def recurrent_unroll(
    drive: Tensor,
    activation: Tensor,
    trace: Tensor | None,
    weight: Tensor,
    plasticity_coefficient: Tensor | None,
    hebbian_learning_rate: Tensor | None,
    bias: Tensor | None,
    episode_starts: Tensor | None,
    reset_activation: Tensor,
    *,
    rule: str,
    input_mode: str,
    trace_clip: float | None,
    bias_neuron: bool,
    implementation: str = "autograd",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run :func:`recurrent_step` over a ``(T, B, N)`` drive.

    Where ``episode_starts[t]`` is true the state is reset (activation to ``reset_activation``,
    trace to zero) before step ``t``. Returns the activations of every step ``(T, B, N)`` and the
    final activation and trace.

    ``implementation``: ``"autograd"`` (this loop, the reference), ``"fused"``
    (:func:`plastic_rl.core.fused.fused_unroll`: the C++ kernel on the CPU when it builds, else its
    PyTorch backend) or ``"auto"`` (the fused unroll where it is faster: see :func:`use_fused`).
    """
    if implementation != "autograd" and drive.shape[0] > 0 and use_fused(implementation, drive):
        return fused.fused_unroll(
            drive,
            activation,
            trace,
            weight,
            plasticity_coefficient,
            hebbian_learning_rate,
            bias,
            episode_starts,
            reset_activation,
            rule=rule,
            input_mode=input_mode,
            trace_clip=trace_clip,
            bias_neuron=bias_neuron,
        )
    outputs = []
    for t in range(drive.shape[0]):
        if episode_starts is not None:
            activation = reset_where(episode_starts[t], activation, reset_activation)
            if trace is not None:
                trace = reset_where(episode_starts[t], trace, 0.0)
        activation, trace = recurrent_step(
            drive[t],
            activation,
            trace,
            weight,
            plasticity_coefficient,
            hebbian_learning_rate,
            bias,
            rule=rule,
            input_mode=input_mode,
            trace_clip=trace_clip,
            bias_neuron=bias_neuron,
        )
        outputs.append(activation)
    return torch.stack(outputs), activation, trace


def use_fused(implementation: str, drive: Tensor) -> bool:
    """Whether ``implementation`` (``"auto"``, ``"fused"`` or ``"autograd"``) runs the fused unroll of ``drive``.

    ``"auto"`` uses it where the C++ kernel runs (the CPU, when it builds), and the fused PyTorch backend
    elsewhere only when gradients are needed, where it saves memory.
    """
    if implementation == "autograd":
        return False
    if implementation == "fused":
        return True
    return fused.resolve_backend("auto", drive.device, drive.dtype) == "cpp" or torch.is_grad_enabled()
