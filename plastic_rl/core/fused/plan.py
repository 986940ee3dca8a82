"""The checkpoint plan of the fused unroll, and the buffers that both backends fill.

The forward keeps the activations of every step, ``O(T B N)``, and the trace only at checkpoints; the backward walks
the sequence in reverse and rebuilds the trace of each step on the way, either

* by inverting the decay, ``H(t) = (H(t+1) - eta pre post^T) / decay`` (``decay = 1 - eta q(post)``: see
  :class:`plastic_rl.core.rules.DecayForm`), which is exact without clipping; each inverted step multiplies rounding
  errors by ``1 / decay``, so a checkpoint restarts it from the stored trace before the amplification exceeds
  ``exp(AMPLIFICATION_LOG_BUDGET)``; or
* by recomputing the traces of a segment forward from its checkpoint (``sqrt(T)`` steps apart), which is what
  very large ``eta`` falls back to, and clipping on a backend that cannot flag it.

A clip is not invertible where it acted. The C++ backend inverts a clipped trace all the same: its forward flags,
per segment between checkpoints, the elements that the clip touched there (a bit per element and segment), and its
backward recomputes the rows that hold them forward from the segment's checkpoint (``sqrt(T)`` steps apart at most),
keeping only the flagged elements' values.

The plan with the smaller memory is chosen per call (:func:`plan_checkpoints`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from plastic_rl.core.rules import DecayForm, get_rule

# exp(7) ~ 1e3 amplification keeps float64 at ~1e-13; float32 gets exp(1), about its own rounding.
AMPLIFICATION_LOG_BUDGET = {torch.float64: 7.0, torch.float32: 1.0}


@dataclass(frozen=True)
class UnrollOptions:
    """The static options of an unroll (those of :func:`plastic_rl.core.functional.recurrent_step`).

    ``plasticity``: ``"none"``, ``"shared"`` (one plasticity coefficient) or ``"full"`` (one per connection).
    """

    plasticity: str
    rule: str
    input_mode: str
    trace_clip: float | None
    bias_neuron: bool

    @property
    def plastic(self) -> bool:
        return self.plasticity != "none"

    @property
    def decay_form(self) -> DecayForm:
        """The rule's :class:`~plastic_rl.core.rules.DecayForm` (the fused unroll only runs rules that have one)."""
        form = get_rule(self.rule).decay_form
        if form is None:
            raise ValueError(f"rule {self.rule!r} has no fused form")
        return form

    @property
    def modulated(self) -> bool:
        """A plastic unroll whose rule reads the network's neuromodulator ``M(t)``."""
        return self.plastic and self.decay_form.modulated

    @property
    def gated(self) -> bool:
        """A plastic unroll whose rule keeps an eligibility trace ``E``, gated into ``H`` by ``M(t)``."""
        return self.plastic and self.decay_form.gated


@dataclass
class CheckpointPlan:
    """Where the forward keeps the trace, and how the backward rebuilds it.

    ``every``: checkpoint spacing ``K`` (checkpoints hold the trace entering steps ``K, 2K, ... < T``; for a gated
    rule, its eligibility trace too, whose decay is then the one that bounds ``K``);
    ``reverse``: rebuild by inverting the decay (else recompute segments forward);
    ``pre_reset_index``: ``(T, B)`` slot of the trace saved just before a reset that the reverse
    rebuild must go through, ``-1`` elsewhere; ``pre_reset_slots``: how many such traces;
    ``flags_clipping``: a clipped trace rebuilt in reverse, the elements the clip touched flagged per segment
    (``(T - 1) // every + 1`` segments, a bit per element: ``(segments, B, N, ceil(N / 8))`` bytes).
    """

    every: int
    reverse: bool
    pre_reset_index: Tensor | None
    pre_reset_slots: int
    flags_clipping: bool = False

    @property
    def workspace_traces(self) -> int:
        """``B x N x N`` traces the backward needs besides the checkpoints: the one being rebuilt, or a segment."""
        return 1 if self.reverse else self.every - 1


def plan_checkpoints(
    steps: int,
    eta: float,
    options: UnrollOptions,
    dtype: torch.dtype,
    post_bound: float,
    starts: Tensor | None,
    flag_clipping: bool = False,
) -> CheckpointPlan:
    """Choose reverse rebuild or segment recomputation, whichever keeps fewer ``B x N x N`` traces.

    ``post_bound`` bounds ``|post|`` (1 for tanh; clamped inputs can be larger), which bounds the decay of a rule
    whose forgetting grows with ``|post|`` (Oja's). ``flag_clipping``: the backend can rebuild a clipped trace in
    reverse (the C++ one).
    """
    if not math.isfinite(eta):
        raise ValueError(f"eta must be finite; got {eta} (the layer's eta_raw holds a NaN or an infinity)")
    recompute_every = max(1, math.ceil(math.sqrt(steps)))
    recompute = CheckpointPlan(recompute_every, False, None, 0)
    if not options.plastic:
        return CheckpointPlan(steps, False, None, 0)
    clipped = options.trace_clip is not None
    if clipped and not flag_clipping:
        return recompute
    smallest_decay = 1.0 - max(eta, 0.0) * options.decay_form.largest_forgetting(post_bound)
    if smallest_decay <= 1e-3:
        return recompute
    growth = -math.log(min(smallest_decay, 1.0))
    budget = AMPLIFICATION_LOG_BUDGET.get(dtype, AMPLIFICATION_LOG_BUDGET[torch.float32])
    every = steps if growth == 0.0 else max(1, min(steps, int(budget / growth)))
    if clipped:  # the flagged elements are recomputed from their segment's checkpoint: segments of sqrt(T) at most
        every = min(every, recompute_every)
    index, slots = None, 0
    batch = 1
    if starts is not None:
        batch = starts.shape[1]
        needs_saving = starts.clone()
        needs_saving[0] = False
        needed_at = torch.arange(steps, device=starts.device)
        needs_saving &= ((needed_at - 1) % every != 0).unsqueeze(1)
        slots = int(needs_saving.sum())
        if slots:
            index = torch.full(starts.shape, -1, dtype=torch.int64, device=starts.device)
            index[needs_saving] = torch.arange(slots, device=starts.device)
    reverse_cost = (steps - 1) // every + 1 + slots / batch
    if clipped:  # a bit per element and segment
        reverse_cost += ((steps - 1) // every + 1) / (8 * dtype.itemsize)
    recompute_cost = (steps - 1) // recompute_every + recompute_every - 1
    if reverse_cost <= recompute_cost:
        return CheckpointPlan(every, True, index, slots, clipped)
    return recompute


def post_bound(drive: Tensor, options: UnrollOptions) -> float:
    """A bound on ``|post|``: 1 (tanh), or the largest clamped input where the rule's forgetting depends on it."""
    if options.input_mode == "clamp" and options.decay_form.forgetting_derivative is not None and drive.numel():
        return max(1.0, float(drive.abs().max()))
    return 1.0


@dataclass(frozen=True)
class StepRange:
    """The steps that one forward call of a backend runs, out of the ``T`` in its buffers.

    The plastic products of steps ``first .. last - 1``. Each step's trace update is done lazily, in the same pass
    over the trace as the next step's product; ``pending``: the update of step ``first - 1`` is still to be done (a
    rollout's previous call left it, so that it is fused with this call's product); ``settle``: do the update of
    step ``last - 1`` before returning (else leave it pending). A whole unroll is :meth:`whole`.
    """

    first: int
    last: int
    pending: bool
    settle: bool

    @classmethod
    def whole(cls, steps: int) -> StepRange:
        return cls(0, steps, False, True)


@dataclass(frozen=True)
class UnrollInputs:
    """The inputs of one fused unroll, detached, in one dtype and contiguous (see :func:`fused_unroll`)."""

    drive: Tensor
    initial_activation: Tensor
    initial_trace: Tensor | None
    weight: Tensor
    plasticity_coefficient: Tensor | None
    hebbian_learning_rate: float
    bias: Tensor | None
    episode_starts: Tensor | None
    reset_activation: Tensor
    initial_eligibility: Tensor | None = None
    modulator_weight: Tensor | None = None
    modulator_bias: Tensor | None = None


@dataclass
class UnrollBuffers:
    """Inputs, outputs and buffers of one unroll: the argument lists of both backends.

    ``presynaptic[t]`` is the activation entering step ``t`` (after any reset), ``outputs[t]`` the one it gives;
    ``trace_matvec[t]`` is ``x H`` of step ``t`` (shared plasticity only: the plasticity coefficient's gradient);
    ``trace`` is the running trace, the final one after the forward; ``checkpoints`` and ``pre_reset_traces`` are
    the traces kept as the plan says. A modulated rule's ``modulation[t]`` is ``M(t)``, ``(B, K)``, of ``outputs[t]``
    through the modulator head ``modulator_weight`` ``(N, K)`` and ``modulator_bias`` ``(K,)``; a gated rule's
    eligibility trace has the same four buffers as the Hebbian one (``initial_eligibility``, ``eligibility``,
    ``eligibility_checkpoints``, ``pre_reset_eligibility``). ``clip_flags``: see :class:`CheckpointPlan`.
    """

    drive: Tensor
    initial_activation: Tensor
    initial_trace: Tensor | None
    weight: Tensor
    plasticity_coefficient: Tensor | None
    hebbian_learning_rate: float
    bias: Tensor | None
    episode_starts: Tensor | None
    reset_activation: Tensor
    options: UnrollOptions
    plan: CheckpointPlan
    outputs: Tensor
    presynaptic: Tensor
    trace_matvec: Tensor | None
    trace: Tensor | None
    checkpoints: Tensor | None
    pre_reset_traces: Tensor | None
    initial_eligibility: Tensor | None = None
    modulator_weight: Tensor | None = None
    modulator_bias: Tensor | None = None
    modulation: Tensor | None = None
    eligibility: Tensor | None = None
    eligibility_checkpoints: Tensor | None = None
    pre_reset_eligibility: Tensor | None = None
    clip_flags: Tensor | None = None

    @property
    def clip(self) -> float:
        """The trace clip as the kernels take it: 0 for none."""
        return 0.0 if self.options.trace_clip is None else self.options.trace_clip

    @property
    def steps(self) -> int:
        return self.drive.shape[0]


def allocate_buffers(
    inputs: UnrollInputs, options: UnrollOptions, plan: CheckpointPlan, overwrite_trace: bool = False
) -> UnrollBuffers:
    """The buffers of an unroll of ``inputs`` under ``plan``, uninitialised; with ``overwrite_trace`` the final trace
    goes into the initial trace's own buffer (no gradient is kept: the initial trace is not needed again)."""
    drive = inputs.drive
    steps, batch, size = drive.shape
    trace_shape = (batch, size, size)
    checkpoint_count = (steps - 1) // plan.every if options.plastic else 0

    def traces_like_the_hebbian_ones(initial: Tensor | None) -> dict[str, Tensor | None]:
        return dict(
            trace=(initial if overwrite_trace else drive.new_empty(trace_shape)) if options.plastic else None,
            checkpoints=drive.new_empty((checkpoint_count, *trace_shape)) if checkpoint_count else None,
            pre_reset_traces=drive.new_empty((plan.pre_reset_slots, size, size)) if plan.pre_reset_slots else None,
        )

    hebbian = traces_like_the_hebbian_ones(inputs.initial_trace)
    eligibility = traces_like_the_hebbian_ones(inputs.initial_eligibility) if options.gated else {}
    clip_flags = None
    if plan.flags_clipping:
        clip_flags = torch.zeros(((steps - 1) // plan.every + 1, batch, size, (size + 7) // 8), dtype=torch.uint8)
    modulation = None
    if options.modulated:
        assert inputs.modulator_weight is not None, "a modulated rule's unroll needs the modulator head"
        modulation = drive.new_empty((steps, batch, inputs.modulator_weight.shape[1]))
    return UnrollBuffers(
        drive=drive,
        initial_activation=inputs.initial_activation,
        initial_trace=inputs.initial_trace,
        weight=inputs.weight,
        plasticity_coefficient=inputs.plasticity_coefficient,
        hebbian_learning_rate=inputs.hebbian_learning_rate,
        bias=inputs.bias,
        episode_starts=inputs.episode_starts,
        reset_activation=inputs.reset_activation,
        options=options,
        plan=plan,
        outputs=drive.new_empty(drive.shape),
        presynaptic=drive.new_empty(drive.shape),
        trace_matvec=drive.new_empty(drive.shape) if options.plasticity == "shared" else None,
        **hebbian,
        initial_eligibility=inputs.initial_eligibility if options.gated else None,
        modulator_weight=inputs.modulator_weight if options.modulated else None,
        modulator_bias=inputs.modulator_bias if options.modulated else None,
        modulation=modulation,
        eligibility=eligibility.get("trace"),
        eligibility_checkpoints=eligibility.get("checkpoints"),
        pre_reset_eligibility=eligibility.get("pre_reset_traces"),
        clip_flags=clip_flags,
    )


@dataclass
class UnrollGradients:
    """The gradients the backward fills (``grad_trace``: ``dL/dH_T`` on entry, ``dL/dH_0`` on return; the same for
    ``grad_eligibility`` and ``E``; ``grad_modulation[t]``: ``dL/dz_t`` of ``M(t) = tanh(z_t)``, ``(T, B, K)``, from
    which the caller sums the modulator head's gradients as it does the weight's)."""

    grad_outputs: Tensor | None
    grad_pre_activation: Tensor
    grad_drive: Tensor
    grad_initial_activation: Tensor
    grad_trace: Tensor | None
    grad_plasticity_coefficient: Tensor | None
    grad_hebbian_learning_rate: float = 0.0
    grad_eligibility: Tensor | None = None
    grad_modulation: Tensor | None = None
