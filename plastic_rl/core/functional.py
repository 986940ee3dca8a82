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

import functools
import math
import warnings

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from plastic_rl.core import fused
from plastic_rl.core.rules import Traces, get_rule, rule_names
from plastic_rl.core.unroll_arguments import Modulator, UnrollArguments, check_unroll_arguments, reset_where


def neuromodulation(post: Tensor, modulator: Modulator) -> Tensor:
    """``M(t)`` of the activations ``post`` ``(B, N)``, shaped ``(B, 1, K)`` to scale a ``(B, N, N)`` trace."""
    return torch.tanh(post @ modulator.weight + modulator.bias).unsqueeze(1)


def update_trace(
    traces: Traces,
    pre: Tensor,
    post: Tensor,
    hebbian_learning_rate: Tensor | None,
    rule: str,
    trace_clip: float | None,
    modulation: Tensor | None = None,
) -> Traces:
    """One step of the plastic traces by the registered ``rule`` (:mod:`plastic_rl.core.rules`).

    Parameters
    ----------
    traces : the Hebbian trace (B, N_pre, N_post) before the step, and the eligibility trace of a rule with one.
    pre, post : (B, N_pre) and (B, N_post) activations.
    hebbian_learning_rate : scalar tensor, ``eta`` (``None`` for a rule that has none).
    rule : a registered rule's name, e.g. ``"hebb"`` — ``H <- (1 - eta) H + eta pre post`` — or ``"oja"`` —
        ``H <- H + eta post (pre - post H)``.
    trace_clip : clamp the Hebbian trace to ``[-trace_clip, trace_clip]`` when not ``None``.
    modulation : the neuromodulator ``M(t)`` (see :func:`neuromodulation`) of a modulated rule.
    """
    traces = get_rule(rule).update(traces, pre, post, hebbian_learning_rate, modulation)
    if trace_clip is not None:
        traces = traces._replace(hebbian=traces.hebbian.clamp(-trace_clip, trace_clip))
    return traces


def plastic_matvec(x: Tensor, weight: Tensor, plasticity_coefficient: Tensor | None, trace: Tensor | None) -> Tensor:
    """``x @ (w + alpha * hebb)`` for a batch: ``(B, N_pre) -> (B, N_post)``, or ``(B, R, N_pre) -> (B, R, N_post)``
    for ``R`` rows read through the same trace of each batch element."""
    out = x @ weight
    if plasticity_coefficient is None:
        return out
    assert trace is not None, "a plastic layer's step needs its trace"
    rows = x if x.dim() == 3 else x.unsqueeze(1)
    if plasticity_coefficient.numel() == 1:
        # One shared alpha: scale the (cheap) matvec instead of the whole trace.
        plastic = plasticity_coefficient * torch.bmm(rows, trace)
    else:
        plastic = torch.bmm(rows, plasticity_coefficient * trace)
    return out + (plastic if x.dim() == 3 else plastic.squeeze(1))


def recurrent_step(
    drive: Tensor,
    activation: Tensor,
    traces: Traces | None,
    weight: Tensor,
    plasticity_coefficient: Tensor | None,
    hebbian_learning_rate: Tensor | None,
    bias: Tensor | None,
    *,
    rule: str,
    input_mode: str,
    trace_clip: float | None,
    bias_neuron: bool,
    modulator: Modulator | None = None,
) -> tuple[Tensor, Traces | None]:
    """One step of the plastic recurrent layer.

    ``drive`` is the (already mapped) input, ``(B, N)``. With ``input_mode="add"`` it is added to the
    pre-activation; with ``"clamp"`` a neuron whose drive is non-zero outputs its drive. With
    ``bias_neuron`` the last neuron is held at 1. A modulated rule reads ``M(t)`` of the new activation from
    ``modulator``. Returns the new activation and traces.
    """
    pre_activation = plastic_matvec(activation, weight, plasticity_coefficient, None if traces is None else traces[0])
    if bias is not None:
        pre_activation = pre_activation + bias
    if input_mode == "add":
        new_activation = torch.tanh(pre_activation + drive)
    else:
        new_activation = torch.where(drive != 0, drive, torch.tanh(pre_activation))
    if bias_neuron:
        new_activation = torch.cat([new_activation[:, :-1], torch.ones_like(new_activation[:, -1:])], dim=1)
    if traces is not None:
        modulation = None if modulator is None else neuromodulation(new_activation, modulator)
        traces = update_trace(traces, activation, new_activation, hebbian_learning_rate, rule, trace_clip, modulation)
    return new_activation, traces


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
    eligibility_trace: Tensor | None = None,
    modulator: Modulator | None = None,
    overwrite_trace: bool = False,
    recorded: fused.RecordedUnroll | None = None,
) -> tuple[Tensor, Tensor, Traces | None]:
    """Run :func:`recurrent_step` over a ``(T, B, N)`` drive.

    Where ``episode_starts[t]`` is true the state is reset (activation to ``reset_activation``,
    traces to zero) before step ``t``. Returns the activations of every step ``(T, B, N)`` and the
    final activation and traces (``None`` for a non-plastic layer). ``eligibility_trace`` (zero when ``None``) and
    ``modulator`` are those of a rule that has them (:mod:`plastic_rl.core.rules`).

    ``implementation``: ``"autograd"`` (this loop, the reference), ``"fused"``
    (:func:`plastic_rl.core.fused.fused_unroll`: the C++ kernel on the CPU when it builds, else its
    PyTorch backend; a ``ValueError`` for a rule it does not run) or ``"auto"`` (the fused unroll where it is
    faster: see :func:`use_fused`). ``overwrite_trace``: the fused unroll may write the final trace into ``trace``'s
    memory when no gradient is recorded, and ``recorded`` (a :class:`~plastic_rl.core.fused.RecordedUnroll` of this
    sequence) spares it the forward (:func:`plastic_rl.core.fused.fused_unroll`). Under ``"auto"``, a rule that
    the fused unroll does not run takes this loop with gradient checkpointing (segments of ``sqrt(T)`` steps
    recomputed in the backward), so that its memory stays ``O(sqrt(T))`` traces instead of ``O(T)``.
    """
    plastic = plasticity_coefficient is not None
    fused_path = (
        implementation != "autograd"
        and drive.dim() == 3
        and drive.shape[0] > 0
        and use_fused(implementation, drive, rule, plastic)
    )
    arguments = UnrollArguments(
        drive,
        activation,
        trace,
        weight,
        plasticity_coefficient,
        hebbian_learning_rate,
        bias,
        episode_starts,
        reset_activation,
        eligibility_trace,
        modulator,
    )
    if not fused_path:  # the fused unroll checks its own: checking here too cost as much again per rollout step
        check_unroll_arguments(arguments, rule)
    if recorded is not None and not fused_path:
        raise ValueError("a recorded unroll is differentiated by the fused unroll: implementation 'auto' or 'fused'")
    if fused_path:
        return fused.unroll(
            arguments,
            rule=rule,
            input_mode=input_mode,
            trace_clip=trace_clip,
            bias_neuron=bias_neuron,
            overwrite_trace=overwrite_trace,
            recorded=recorded,
        )
    traces = None
    if plastic:
        if trace is None:
            trace = weight.new_zeros(activation.shape[0], *weight.shape)
        if get_rule(rule).eligibility and eligibility_trace is None:
            eligibility_trace = torch.zeros_like(trace)
        traces = Traces(trace, eligibility_trace)

    def run_steps(
        first: int, last: int, activation: Tensor, traces: Traces | None
    ) -> tuple[Tensor, Tensor, Traces | None]:
        outputs = []
        for t in range(first, last):
            if episode_starts is not None:
                starts = episode_starts[t]
                activation = reset_where(starts, activation, reset_activation)
                if traces is not None:
                    eligibility = traces.eligibility
                    traces = Traces(
                        reset_where(starts, traces.hebbian, 0.0),
                        None if eligibility is None else reset_where(starts, eligibility, 0.0),
                    )
            activation, traces = recurrent_step(
                drive[t],
                activation,
                traces,
                weight,
                plasticity_coefficient,
                hebbian_learning_rate,
                bias,
                rule=rule,
                input_mode=input_mode,
                trace_clip=trace_clip,
                bias_neuron=bias_neuron,
                modulator=modulator,
            )
            outputs.append(activation)
        return torch.stack(outputs), activation, traces

    steps = drive.shape[0]
    if steps == 0:
        return drive.new_empty(drive.shape), activation, traces
    if implementation == "autograd" or not torch.is_grad_enabled():
        return run_steps(0, steps, activation, traces)
    # A rule without a fused form under "auto": plain autograd would keep a few B x N x N tensors per step
    # (gigabytes at the maze's sizes), so the backward recomputes segments of sqrt(T) steps from their first state.
    every = math.ceil(math.sqrt(steps))
    segments = []
    for first in range(0, steps, every):
        last = min(first + every, steps)
        segment, activation, traces = checkpoint(
            run_steps, first, last, activation, traces, use_reentrant=False, preserve_rng_state=False
        )
        segments.append(segment)
    return torch.cat(segments), activation, traces


@functools.cache
def _notice_autograd_fallback(rule: str) -> None:
    warnings.warn(
        f"plastic_rl: the fused unroll does not run rule {rule!r} (fused rules: {', '.join(rule_names('torch'))}); "
        "using the autograd loop",
        stacklevel=3,
    )


def use_fused(implementation: str, drive: Tensor, rule: str = "hebb", plastic: bool = True) -> bool:
    """Whether ``implementation`` (``"auto"``, ``"fused"`` or ``"autograd"``) runs the fused unroll of ``drive``.

    ``"auto"`` uses it where the C++ kernel runs (the CPU, when it builds), and the fused PyTorch backend
    elsewhere only when gradients are needed, where it saves memory; a plastic ``rule`` that the fused unroll
    does not run goes to the autograd loop, with a one-line notice (once per rule).
    """
    if implementation == "autograd":
        return False
    if implementation == "fused":
        return True
    if plastic and not get_rule(rule).supports("torch"):
        _notice_autograd_fallback(rule)
        return False
    backend = fused.resolve_backend("auto", drive.device, drive.dtype, rule if plastic else None)
    return backend == "cpp" or torch.is_grad_enabled()
