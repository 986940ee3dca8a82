"""A memory-lean unroll of the plastic recurrent layer, with a hand-written backward pass.

Plain autograd keeps about three ``B x N x N`` tensors per step. :func:`fused_unroll` is one
:class:`torch.autograd.Function` over the whole sequence: the forward keeps the activations of every
step and the trace only at checkpoints, and the backward rebuilds the trace of each step on the way back
(:mod:`~plastic_rl.core.fused.plan`). Two backends run the same algorithm on the same buffers: a C++ kernel
(:mod:`~plastic_rl.core.fused.cpp_backend`) and a PyTorch one that runs on any device
(:mod:`~plastic_rl.core.fused.torch_backend`). Each runs the rules of :mod:`plastic_rl.core.rules` that have a
:class:`~plastic_rl.core.rules.DecayForm` (the C++ one those with a kernel code); any other rule is a
``ValueError`` here, and :func:`plastic_rl.core.functional.recurrent_unroll` with ``implementation="auto"`` runs it
on the autograd loop instead.

Gradients are those of :func:`plastic_rl.core.functional.recurrent_unroll` (tests compare them in
float64 to about 1e-10). The episode-start reset at step 0 happens before the function, in plain
autograd, so the kernels only see resets at steps ``t >= 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from plastic_rl.core.fused.cpp_backend import (
    NO_CPP_ENVIRONMENT_VARIABLE,
    batch_slices,
    cpp_available,
    cpp_backward,
    cpp_extension_module,
    cpp_forward,
    cpp_recorded_step,
    forward_arguments,
    forward_worker,
)
from plastic_rl.core.fused.plan import (
    CheckpointPlan,
    StepRange,
    UnrollBuffers,
    UnrollGradients,
    UnrollInputs,
    UnrollOptions,
    allocate_buffers,
    plan_checkpoints,
    post_bound,
)
from plastic_rl.core.fused.torch_backend import torch_backward, torch_forward
from plastic_rl.core.rules import Traces, get_rule
from plastic_rl.core.unroll_arguments import Modulator, UnrollArguments, check_unroll_arguments, reset_where

__all__ = [
    "BACKENDS",
    "NO_CPP_ENVIRONMENT_VARIABLE",
    "CheckpointPlan",
    "RecordedUnroll",
    "StepRange",
    "UnrollOptions",
    "available_backends",
    "batch_slices",
    "cpp_available",
    "cpp_extension_module",
    "fused_unroll",
    "plan_checkpoints",
    "prepare_unroll",
    "unroll",
    "unroll_inputs",
    "resolve_backend",
]

BACKENDS = ("cpp", "torch")

Forward = Callable[[UnrollBuffers, "StepRange | None"], None]
Backward = Callable[[UnrollBuffers, UnrollGradients, "Tensor | None", "Tensor | None"], None]
_BACKEND_FUNCTIONS: dict[str, tuple[Forward, Backward]] = {
    "cpp": (cpp_forward, cpp_backward),
    "torch": (torch_forward, torch_backward),
}


def available_backends() -> tuple[str, ...]:
    return BACKENDS if cpp_available() else ("torch",)


def resolve_backend(
    backend: str, device: torch.device, dtype: torch.dtype = torch.float32, rule: str | None = None
) -> str:
    """``"cpp"`` where asked for (or ``"auto"``) on the CPU, in float32 or float64, with the kernel built (and, for
    ``"auto"``, running ``rule``); else ``"torch"``."""
    if backend == "torch":
        return "torch"
    runs_rule = rule is None or get_rule(rule).supports("cpp")
    if (
        device.type == "cpu"
        and dtype in (torch.float32, torch.float64)
        and cpp_available()
        and (runs_rule or backend == "cpp")
    ):
        return "cpp"
    if backend == "cpp":
        raise RuntimeError("the C++ plastic kernel is not available (see the warning above)")
    return "torch"


def prepare_unroll(
    inputs: UnrollInputs, options: UnrollOptions, backend: str, keep_for_backward: bool, overwrite_trace: bool = False
) -> UnrollBuffers:
    """Plan (checkpoints only when ``keep_for_backward``), allocate and run the forward of ``backend``
    (``overwrite_trace``: see :func:`allocate_buffers`)."""
    steps = inputs.drive.shape[0]
    if keep_for_backward:
        bound = post_bound(inputs.drive, options)
        plan = plan_checkpoints(
            steps,
            inputs.hebbian_learning_rate,
            options,
            inputs.drive.dtype,
            bound,
            inputs.episode_starts,
            flag_clipping=backend == "cpp",
        )
    else:
        plan = CheckpointPlan(max(steps, 1), False, None, 0)
    buffers = allocate_buffers(inputs, options, plan, overwrite_trace and not keep_for_backward)
    _BACKEND_FUNCTIONS[backend][0](buffers, None)
    return buffers


def unroll_inputs(arguments: UnrollArguments) -> UnrollInputs:
    """The arguments of :func:`fused_unroll`, detached, in the drive's dtype and contiguous."""
    dtype = arguments.drive.dtype

    def prepared(tensor: Tensor) -> Tensor:
        return tensor.detach().to(dtype).contiguous()

    def optional(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else prepared(tensor)

    learning_rate, starts, modulator = arguments.hebbian_learning_rate, arguments.episode_starts, arguments.modulator
    return UnrollInputs(
        drive=prepared(arguments.drive),
        initial_activation=prepared(arguments.activation),
        initial_trace=optional(arguments.trace),
        weight=prepared(arguments.weight),
        plasticity_coefficient=optional(arguments.plasticity_coefficient),
        hebbian_learning_rate=0.0 if learning_rate is None else float(learning_rate),
        bias=optional(arguments.bias),
        episode_starts=None if starts is None else starts.contiguous(),
        reset_activation=prepared(arguments.reset_activation),
        initial_eligibility=optional(arguments.eligibility_trace),
        modulator_weight=None if modulator is None else prepared(modulator.weight),
        modulator_bias=None if modulator is None else prepared(modulator.bias),
    )


@dataclass(frozen=True)
class _StaticArguments:
    """The arguments of :class:`_FusedUnrollFunction` that take no gradient."""

    episode_starts: Tensor | None
    reset_activation: Tensor
    options: UnrollOptions
    backend: str
    recorded: RecordedUnroll | None = None


class _FusedUnrollFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        drive: Tensor,
        activation: Tensor,
        trace: Tensor | None,
        eligibility: Tensor | None,
        weight: Tensor,
        plasticity_coefficient: Tensor | None,
        hebbian_learning_rate: Tensor | None,
        bias: Tensor | None,
        modulator_weight: Tensor | None,
        modulator_bias: Tensor | None,
        static: _StaticArguments,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        modulator = None
        if modulator_weight is not None and modulator_bias is not None:
            modulator = Modulator(modulator_weight, modulator_bias)
        inputs = unroll_inputs(
            UnrollArguments(
                drive,
                activation,
                trace,
                weight,
                plasticity_coefficient,
                hebbian_learning_rate,
                bias,
                static.episode_starts,
                static.reset_activation,
                eligibility,
                modulator,
            )
        )
        if static.recorded is None:
            buffers = prepare_unroll(inputs, static.options, static.backend, keep_for_backward=True)
        else:  # the forward of this very sequence ran step by step in a rollout: differentiate what it kept
            buffers = static.recorded.buffers_for_backward(inputs)
        ctx.backend = static.backend
        ctx.plasticity_coefficient_shape = None if plasticity_coefficient is None else plasticity_coefficient.shape
        ctx.hebbian_learning_rate = hebbian_learning_rate
        # The outputs go through save_for_backward: a plain reference from ctx to an output is a reference
        # cycle through the autograd graph that nothing frees; this way autograd also notices in-place changes.
        returned = {"outputs": buffers.outputs, "trace": buffers.trace, "eligibility": buffers.eligibility}
        ctx.returned = [name for name, tensor in returned.items() if tensor is not None]
        ctx.save_for_backward(*(returned[name] for name in ctx.returned))
        ctx.buffer_fields = {field.name: getattr(buffers, field.name) for field in fields(buffers)
                             if field.name not in returned}  # fmt: skip
        return buffers.outputs, buffers.trace, buffers.eligibility

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad_outputs: Tensor | None, grad_final_trace: Tensor | None, grad_final_eligibility: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        saved = dict(zip(ctx.returned, ctx.saved_tensors, strict=True))
        buffers = UnrollBuffers(
            **ctx.buffer_fields,
            outputs=saved["outputs"],
            trace=saved.get("trace"),
            eligibility=saved.get("eligibility"),
        )
        options = buffers.options

        def gradient_of_final(final: Tensor | None, grad: Tensor | None) -> Tensor | None:
            if final is None:
                return None
            return torch.zeros_like(final) if grad is None else grad.contiguous().clone()

        gradients = UnrollGradients(
            grad_outputs=None if grad_outputs is None else grad_outputs.contiguous(),
            grad_pre_activation=torch.empty_like(buffers.drive),
            grad_drive=torch.empty_like(buffers.drive),
            grad_initial_activation=torch.empty_like(buffers.initial_activation),
            grad_trace=gradient_of_final(buffers.trace, grad_final_trace),
            grad_plasticity_coefficient=torch.zeros_like(buffers.weight) if options.plasticity == "full" else None,
            grad_eligibility=gradient_of_final(buffers.eligibility, grad_final_eligibility),
            grad_modulation=None if buffers.modulation is None else torch.empty_like(buffers.modulation),
        )
        workspaces: list[Tensor | None] = [None, None]
        if buffers.trace is not None:
            for index in range(2 if buffers.eligibility is not None else 1):
                workspace = buffers.drive.new_empty((max(buffers.plan.workspace_traces, 1), *buffers.trace.shape))
                workspaces[index] = workspace[0] if buffers.plan.reverse else workspace
        _BACKEND_FUNCTIONS[ctx.backend][1](buffers, gradients, *workspaces)
        size = buffers.presynaptic.shape[-1]
        flat_presynaptic = buffers.presynaptic.reshape(-1, size)
        flat_grad_pre_activation = gradients.grad_pre_activation.reshape(-1, size)
        (
            needs_drive,
            needs_activation,
            needs_trace,
            needs_eligibility,
            needs_weight,
            needs_plasticity_coefficient,
            needs_learning_rate,
            needs_bias,
            needs_modulator_weight,
            needs_modulator_bias,
            _,
        ) = ctx.needs_input_grad
        grad_plasticity_coefficient = None
        if needs_plasticity_coefficient:
            if options.plasticity == "full":
                grad_plasticity_coefficient = gradients.grad_plasticity_coefficient
            else:
                assert buffers.trace_matvec is not None, "shared plasticity keeps x H"
                grad_plasticity_coefficient = (
                    (gradients.grad_pre_activation * buffers.trace_matvec)
                    .sum()
                    .reshape(ctx.plasticity_coefficient_shape)
                )
        return (
            gradients.grad_drive if needs_drive else None,
            gradients.grad_initial_activation if needs_activation else None,
            gradients.grad_trace if needs_trace else None,
            gradients.grad_eligibility if needs_eligibility else None,
            flat_presynaptic.T @ flat_grad_pre_activation if needs_weight else None,
            grad_plasticity_coefficient,
            torch.full_like(ctx.hebbian_learning_rate, gradients.grad_hebbian_learning_rate)
            if needs_learning_rate
            else None,
            gradients.grad_pre_activation.sum((0, 1)) if needs_bias else None,
            _modulator_weight_gradient(buffers, gradients) if needs_modulator_weight else None,
            _modulator_bias_gradient(gradients) if needs_modulator_bias else None,
            None,
        )


def _modulator_bias_gradient(gradients: UnrollGradients) -> Tensor:
    assert gradients.grad_modulation is not None, "a modulated rule's backward fills grad_modulation"
    return gradients.grad_modulation.sum((0, 1))


def _modulator_weight_gradient(buffers: UnrollBuffers, gradients: UnrollGradients) -> Tensor:
    """``dL/dw_M = sum_t y_t^T dL/dz_t``, one product over the whole sequence (as the weight's)."""
    assert gradients.grad_modulation is not None, "a modulated rule's backward fills grad_modulation"
    size, outputs = buffers.outputs.shape[-1], gradients.grad_modulation.shape[-1]
    return buffers.outputs.reshape(-1, size).T @ gradients.grad_modulation.reshape(-1, outputs)


def fused_unroll(
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
    backend: str = "auto",
    overwrite_trace: bool = False,
    recorded: RecordedUnroll | None = None,
    eligibility_trace: Tensor | None = None,
    modulator: Modulator | None = None,
) -> tuple[Tensor, Tensor, Traces | None]:
    """The fused equivalent of :func:`plastic_rl.core.functional.recurrent_unroll` (same arguments and results),
    for the rules that the backend runs (a ``ValueError`` for any other).

    ``recorded``: the :class:`RecordedUnroll` of this very sequence (same drive, state and parameters), whose forward
    a rollout ran step by step: when a gradient is recorded, its outputs are returned and its buffers differentiated
    instead of unrolling the sequence again (the drive's values are then the recording's).

    ``backend``: ``"cpp"``, ``"torch"`` or ``"auto"`` (the C++ kernel on the CPU when it builds and runs the rule).
    ``overwrite_trace``: when no gradient is recorded, the final trace may be written into ``trace``'s own memory,
    which then no longer holds the initial trace. A rollout that steps its state forward one step at a time saves
    allocating (and page-faulting) a fresh ``B x N x N`` buffer and copying the trace into it at every step.
    ``eligibility_trace`` and ``modulator`` (:class:`~plastic_rl.core.unroll_arguments.Modulator`) are those of a
    rule that has them.
    """
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
    return unroll(
        arguments,
        rule=rule,
        input_mode=input_mode,
        trace_clip=trace_clip,
        bias_neuron=bias_neuron,
        backend=backend,
        overwrite_trace=overwrite_trace,
        recorded=recorded,
    )


def unroll(
    arguments: UnrollArguments,
    *,
    rule: str,
    input_mode: str,
    trace_clip: float | None,
    bias_neuron: bool,
    backend: str = "auto",
    overwrite_trace: bool = False,
    recorded: RecordedUnroll | None = None,
) -> tuple[Tensor, Tensor, Traces | None]:
    """:func:`fused_unroll` of the tensors ``arguments`` (checked here), as
    :func:`~plastic_rl.core.functional.recurrent_unroll` hands them on."""
    get_rule(rule)  # an unknown rule: the same ValueError as on every path
    (
        drive, activation, trace, weight, plasticity_coefficient, hebbian_learning_rate, bias, episode_starts,
        reset_activation, eligibility_trace, modulator,
    ) = arguments  # fmt: skip
    if plasticity_coefficient is None:
        plasticity = "none"
    else:
        plasticity = "shared" if plasticity_coefficient.numel() == 1 else "full"
    backend = resolve_backend(backend, drive.device, drive.dtype, rule if plasticity != "none" else None)
    if plasticity != "none":
        get_rule(rule, backend)  # a rule this backend does not run
    check_unroll_arguments(arguments, rule)
    options = UnrollOptions(plasticity, rule, input_mode, trace_clip, bias_neuron)
    if episode_starts is not None:  # the reset at step 0, in autograd; the kernels handle t >= 1
        first = episode_starts[0]
        if bool(first.all()):
            activation = reset_activation.expand_as(activation)
            trace = None if trace is None else torch.zeros_like(trace, requires_grad=False)
            eligibility_trace = None if eligibility_trace is None else torch.zeros_like(eligibility_trace)
        elif bool(first.any()):
            activation = reset_where(first, activation, reset_activation)
            trace = None if trace is None else reset_where(first, trace, 0.0)
            eligibility_trace = None if eligibility_trace is None else reset_where(first, eligibility_trace, 0.0)
    if plasticity == "none":
        trace = eligibility_trace = None
    elif trace is None:
        trace = weight.new_zeros(activation.shape[0], *weight.shape)
    if options.gated and eligibility_trace is None:
        eligibility_trace = weight.new_zeros(activation.shape[0], *weight.shape)
    modulator_weight, modulator_bias = modulator if options.modulated and modulator is not None else (None, None)
    differentiable = (
        drive, activation, trace, eligibility_trace, weight, plasticity_coefficient, hebbian_learning_rate, bias,
        modulator_weight, modulator_bias,
    )  # fmt: skip
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in differentiable):
        static = _StaticArguments(episode_starts, reset_activation, options, backend, recorded)
        outputs, final_trace, final_eligibility = _FusedUnrollFunction.apply(*differentiable, static)
    else:
        inputs = unroll_inputs(
            UnrollArguments(
                drive, activation, trace, weight, plasticity_coefficient, hebbian_learning_rate, bias, episode_starts,
                reset_activation, eligibility_trace, modulator if options.modulated else None,
            )
        )  # fmt: skip
        buffers = prepare_unroll(inputs, options, backend, False, overwrite_trace)
        outputs, final_trace, final_eligibility = buffers.outputs, buffers.trace, buffers.eligibility
    traces = None if final_trace is None else Traces(final_trace, final_eligibility)
    return outputs, outputs[-1], traces


class RecordedUnroll:
    """The fused forward of a ``steps``-long sequence run one step at a time, as a rollout runs it, keeping what the
    backward needs: the gradient step after the rollout then differentiates the recorded sequence
    (:func:`fused_unroll` with ``recorded=``) instead of unrolling it again.

    Each :meth:`step` does the previous step's trace update in the same pass over the trace as its own plastic
    product, as the whole-sequence unroll does between its steps: the update is left pending between calls. A
    rollout step then reads and writes the ``B x N x N`` trace once, where an unroll of one step reads it for the
    product and again for the update. The checkpoints (and traces before mid-sequence resets) are those of the
    whole sequence's plan.

    On the C++ kernel with more than one torch thread, that pass (which does not need the next step's drive) runs
    on the other threads as soon as a step returns, while the caller steps its envs; the next :meth:`step` waits
    for it, redoes it for the episodes that start there (it assumed none would), and adds the drive. The results
    are the same to the bit; the trace is then written between calls, so read it through :meth:`state`.

    Parameters
    ----------
    weight, plasticity_coefficient, hebbian_learning_rate, bias, reset_activation : as :func:`fused_unroll` takes them.
    activation, trace : the state before step 0 (before its resets); ``trace`` is then the running trace, written in
        place (the caller's state is stepped forward), as is ``eligibility``, a gated rule's eligibility trace.
    steps : the sequence length ``T``.
    rule, trace_clip, bias_neuron, modulator : as :func:`fused_unroll` (the input mode is ``"add"``).
    watched : parameters whose change in place (an optimizer step) makes the recording stale: differentiating it is
        then an error.
    backend : ``"cpp"``, ``"torch"`` or ``"auto"``.
    """

    def __init__(
        self,
        weight: Tensor,
        plasticity_coefficient: Tensor | None,
        hebbian_learning_rate: Tensor | None,
        bias: Tensor | None,
        reset_activation: Tensor,
        activation: Tensor,
        trace: Tensor | None,
        steps: int,
        *,
        rule: str,
        trace_clip: float | None,
        bias_neuron: bool,
        watched: tuple[Tensor, ...] = (),
        backend: str = "auto",
        eligibility: Tensor | None = None,
        modulator: Modulator | None = None,
    ) -> None:
        if plasticity_coefficient is None:
            plasticity = "none"
        else:
            plasticity = "shared" if plasticity_coefficient.numel() == 1 else "full"
        self.backend = resolve_backend(backend, weight.device, weight.dtype, rule if plasticity != "none" else None)
        if plasticity != "none":
            get_rule(rule, self.backend)
        batch, size = activation.shape
        drive = weight.new_zeros(steps, batch, size)
        starts = torch.zeros(steps, batch, dtype=torch.bool, device=weight.device)
        options = UnrollOptions(plasticity, rule, "add", trace_clip, bias_neuron)
        if plasticity != "none" and trace is None:
            trace = weight.new_zeros(batch, size, size)
        if options.gated and eligibility is None:
            eligibility = weight.new_zeros(batch, size, size)
        arguments = UnrollArguments(
            drive, activation, trace, weight, plasticity_coefficient, hebbian_learning_rate, bias, starts,
            reset_activation, eligibility, modulator,
        )  # fmt: skip
        check_unroll_arguments(arguments, rule)
        inputs = unroll_inputs(  # copies of the state: the recording steps its own
            arguments._replace(
                activation=activation.clone(),
                trace=None if plasticity == "none" or trace is None else trace.detach().clone(),
                eligibility_trace=None if not options.gated or eligibility is None else eligibility.detach().clone(),
                modulator=modulator if options.modulated else None,
            )
        )
        # Mid-sequence resets get their pre-reset trace slots as they come (the whole-sequence plan knows them ahead).
        plan = plan_checkpoints(
            steps, inputs.hebbian_learning_rate, options, drive.dtype, 1.0, None, flag_clipping=self.backend == "cpp"
        )
        buffers = allocate_buffers(inputs, options, plan)
        self.buffers = replace(
            buffers,
            trace=None if trace is None or plasticity == "none" else trace.detach(),
            eligibility=None if eligibility is None or not options.gated else eligibility.detach(),
        )
        self._starts = starts
        self.steps_done = 0
        self._pending = False
        # The worker runs the product of step steps_done once step steps_done - 1 has returned.
        self._worker = forward_worker(batch) if self.backend == "cpp" else None
        self._overlapped = self._worker is not None
        self._arguments: tuple[Any, ...] | None = None  # the kernel's, while the buffers stay the same tensors
        self._product_started = False
        self._watched = watched
        self._versions = [tensor._version for tensor in watched]

    def step(self, drive: Tensor, episode_starts: Tensor | None = None) -> Tensor:
        """Run the next step on ``drive`` ``(B, N)``, the episodes where ``episode_starts`` ``(B,)`` is true reset
        before it; returns its activation ``(B, N)`` (a view of the recording: do not write to it)."""
        t, buffers = self.steps_done, self.buffers
        if t == buffers.steps:
            raise RuntimeError(f"all {t} steps of the recorded unroll have run")
        batch, size = buffers.initial_activation.shape
        if tuple(drive.shape) != (batch, size):
            raise ValueError(f"drive must have shape (B={batch}, N={size}); got {tuple(drive.shape)}")
        if episode_starts is not None and tuple(episode_starts.shape) != (batch,):
            raise ValueError(f"episode_starts must have shape (B={batch},); got {tuple(episode_starts.shape)}")
        buffers.drive[t].copy_(drive)
        resets = episode_starts is not None and t > 0 and bool(episode_starts.any())
        if resets and self._product_started:
            assert self._worker is not None
            self._worker.wait()  # the background product reads the episode starts of its step
        if episode_starts is not None:
            if t == 0:  # the whole unroll resets step 0 before its kernels: so does the recording, in its snapshot
                starts = episode_starts.to(torch.bool)
                buffers.initial_activation[starts] = buffers.reset_activation
                if buffers.initial_trace is not None:
                    buffers.initial_trace[starts] = 0.0
                if buffers.initial_eligibility is not None:
                    buffers.initial_eligibility[starts] = 0.0
            elif resets:  # not otherwise: they are false already, and the background product may be reading them
                self._starts[t] = episode_starts
                if buffers.plan.reverse and buffers.options.plastic and (t - 1) % buffers.plan.every != 0:
                    self._add_pre_reset_slots(t)
        if self._worker is None:
            _BACKEND_FUNCTIONS[self.backend][0](buffers, StepRange(t, t + 1, self._pending, False))
            self._pending = buffers.options.plastic
        else:
            start_next = t + 1 < buffers.steps
            redo = resets and self._product_started
            if self._arguments is None:  # built once: a rollout step's Python is the critical path
                self._arguments = forward_arguments(buffers)
            cpp_recorded_step(self._arguments, t, self._pending, self._product_started, redo, start_next, self._worker)
            self._product_started = start_next
            self._pending = buffers.options.plastic and not start_next
            if not start_next:
                self._worker = None  # its threads end: the gradient step that follows has the cores to itself
        self.steps_done = t + 1
        return buffers.outputs[t]

    def _add_pre_reset_slots(self, t: int) -> None:
        """Slots for the traces just before the resets at step ``t``, which the reverse rebuild goes through."""
        buffers, plan = self.buffers, self.buffers.plan
        rows = self._starts[t].nonzero().flatten()
        if not len(rows):
            return
        self._arguments = None  # the index, and maybe the slots' tensor, change
        if plan.pre_reset_index is None:
            plan.pre_reset_index = torch.full(self._starts.shape, -1, dtype=torch.int64)
        first, needed = plan.pre_reset_slots, plan.pre_reset_slots + len(rows)
        plan.pre_reset_index[t, rows] = torch.arange(first, needed)
        buffers.pre_reset_traces = self._grown(buffers.pre_reset_traces, first, needed)
        if buffers.options.gated:
            buffers.pre_reset_eligibility = self._grown(buffers.pre_reset_eligibility, first, needed)
        plan.pre_reset_slots = needed

    def _grown(self, held: Tensor | None, kept: int, needed: int) -> Tensor:
        """``held`` (its first ``kept`` traces), or a copy with room for ``needed`` traces where it has less."""
        if held is not None and held.shape[0] >= needed:
            return held
        size = self.buffers.weight.shape[0]
        grown = self.buffers.weight.new_empty(max(needed, 2 * kept), size, size)
        if held is not None:
            grown[:kept] = held[:kept]
        return grown

    @property
    def overlapped(self) -> bool:
        """Whether each step's product runs on background threads between calls (see the class docstring)."""
        return self._overlapped

    @property
    def outputs(self) -> Tensor:
        """The activations ``(t, B, N)`` of the steps run so far."""
        return self.buffers.outputs[: self.steps_done]

    def state(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The activation ``(B, N)``, the Hebbian trace and a gated rule's eligibility trace after the steps run so
        far (with the last step's trace update)."""
        buffers, t = self.buffers, self.steps_done
        if self._product_started:  # the product of step t has done the update of step t - 1
            assert self._worker is not None
            self._worker.wait()
        if self._pending:
            _BACKEND_FUNCTIONS[self.backend][0](buffers, StepRange(t, t, True, True))
            self._pending = False
        return (buffers.initial_activation if t == 0 else buffers.outputs[t - 1]), buffers.trace, buffers.eligibility

    def buffers_for_backward(self, inputs: UnrollInputs) -> UnrollBuffers:
        """The recording's buffers, for the backward of :func:`fused_unroll` on ``inputs`` (checked to fit)."""
        buffers = self.buffers
        if self.steps_done != buffers.steps:
            raise ValueError(
                f"the recorded unroll ran {self.steps_done} of its {buffers.steps} steps: only a finished recording "
                "can be differentiated"
            )
        self.state()  # the last step's trace update, if still pending: the backward starts from the final trace
        if tuple(inputs.drive.shape) != tuple(buffers.drive.shape):
            raise ValueError(
                f"the recorded unroll is of a {tuple(buffers.drive.shape)} drive; got {tuple(inputs.drive.shape)}"
            )
        if [tensor._version for tensor in self._watched] != self._versions:
            raise ValueError("the parameters changed since the unroll was recorded: unroll the sequence again")
        return buffers
