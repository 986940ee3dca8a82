"""The fused unroll's PyTorch backend: the forward and the hand-written backward, on any device.

It runs the algorithm of :mod:`plastic_rl.core.fused.plan` on an :class:`UnrollBuffers`, step by step in Python; the
C++ backend (:mod:`plastic_rl.core.fused.cpp_backend`) runs the same on the same buffers.
"""

# The buffers of a plastic unroll (trace, checkpoints, plasticity coefficient, ...) are Optional in UnrollBuffers and
# used here under `if options.plastic` / the plasticity mode, a guard mypy cannot follow; other checks stay on.
# mypy: disable-error-code="union-attr, arg-type, index, operator"

from __future__ import annotations

import torch
from torch import Tensor

from plastic_rl.core.fused.plan import StepRange, UnrollBuffers, UnrollGradients, UnrollOptions


def _activate(total: Tensor, drive: Tensor, options: UnrollOptions, out: Tensor) -> None:
    if options.input_mode == "add":
        torch.tanh(total + drive, out=out)
    else:
        torch.where(drive != 0, drive, torch.tanh(total), out=out)
    if options.bias_neuron:
        out[:, -1] = 1.0


def update_trace_in_place(trace: Tensor, pre: Tensor, post: Tensor, eta: float, options: UnrollOptions) -> None:
    """``H <- clip(H * decay + eta pre post^T)`` by the rule's decay form."""
    trace.mul_(options.decay_form.decay(post, eta)).baddbmm_(pre.unsqueeze(2), post.unsqueeze(1), alpha=eta)
    if options.trace_clip is not None:
        trace.clamp_(-options.trace_clip, options.trace_clip)


def reset_rows(episode_starts: Tensor | None, t: int) -> Tensor | None:
    """The ``(B,)`` rows reset before step ``t >= 1`` (step 0's reset happens before the fused unroll)."""
    return None if episode_starts is None or t == 0 else episode_starts[t]


def pre_reset_slots(buffers: UnrollBuffers, t: int) -> list[tuple[int, int]]:
    """``[(batch index, slot), ...]`` of the traces the forward saves just before the resets at step ``t``."""
    index = buffers.plan.pre_reset_index
    if index is None or t >= index.shape[0]:
        return []
    row = index[t]
    return [(b, int(row[b])) for b in (row >= 0).nonzero().flatten().tolist()]


def torch_forward(buffers: UnrollBuffers, steps: StepRange | None = None) -> None:
    """Fill ``outputs``, ``presynaptic``, ``trace_matvec``, the checkpoints and the final trace, over ``steps``
    (the whole sequence by default)."""
    options, eta = buffers.options, buffers.hebbian_learning_rate
    steps = StepRange.whole(buffers.steps) if steps is None else steps
    trace = buffers.trace
    scaled_trace = torch.empty_like(trace) if options.plasticity == "full" else None
    if options.plastic and steps.first == 0 and steps.last > 0:
        trace.copy_(buffers.initial_trace)
    for t in range(steps.first, steps.last + 1):
        rows = reset_rows(buffers.episode_starts, t) if t < steps.last else None
        update = (t > steps.first or steps.pending) and (t < steps.last or steps.settle)
        if options.plastic and t >= 1 and update:  # the (lazy) trace update of step t - 1
            update_trace_in_place(trace, buffers.presynaptic[t - 1], buffers.outputs[t - 1], eta, options)
        if options.plastic and t >= 1 and (update or t < steps.last):
            if rows is not None:
                for batch_index, slot in pre_reset_slots(buffers, t):
                    buffers.pre_reset_traces[slot].copy_(trace[batch_index])
                trace.masked_fill_(rows.view(-1, 1, 1), 0.0)
            if t < steps.last and t % buffers.plan.every == 0 and buffers.checkpoints is not None:
                buffers.checkpoints[t // buffers.plan.every - 1].copy_(trace)
        if t == steps.last:
            break
        if t == 0:
            buffers.presynaptic[0].copy_(buffers.initial_activation)
        elif rows is None:
            buffers.presynaptic[t].copy_(buffers.outputs[t - 1])
        else:
            torch.where(rows.unsqueeze(1), buffers.reset_activation, buffers.outputs[t - 1], out=buffers.presynaptic[t])
        x = buffers.presynaptic[t]
        total = x @ buffers.weight
        if options.plasticity == "full":
            torch.mul(trace, buffers.plasticity_coefficient, out=scaled_trace)
            total.add_(torch.bmm(x.unsqueeze(1), scaled_trace).squeeze(1))
        elif options.plasticity == "shared":
            torch.bmm(x.unsqueeze(1), trace, out=buffers.trace_matvec[t].unsqueeze(1))
            total.add_(buffers.trace_matvec[t] * buffers.plasticity_coefficient)
        if buffers.bias is not None:
            total.add_(buffers.bias)
        _activate(total, buffers.drive[t], options, buffers.outputs[t])


class TraceStore:
    """The trace entering each step during the backward: stored, rebuilt (``None``: by the caller) or recomputed."""

    def __init__(self, buffers: UnrollBuffers, workspace: Tensor) -> None:
        self.buffers, self.workspace, self.segment = buffers, workspace, -1

    def stored(self, t: int) -> Tensor | None:
        buffers, every = self.buffers, self.buffers.plan.every
        if t == 0:
            return buffers.initial_trace
        if t % every == 0:
            return buffers.checkpoints[t // every - 1]
        if buffers.plan.reverse:
            return None
        self._recompute(t // every)
        return self.workspace[t % every - 1]

    def _recompute(self, segment: int) -> None:
        if segment == self.segment:
            return
        buffers, every = self.buffers, self.buffers.plan.every
        first = segment * every
        previous = self.stored(first)
        for t in range(first + 1, min(first + every, buffers.steps)):
            target = self.workspace[t - first - 1]
            target.copy_(previous)
            update_trace_in_place(
                target,
                buffers.presynaptic[t - 1],
                buffers.outputs[t - 1],
                buffers.hebbian_learning_rate,
                buffers.options,
            )
            rows = reset_rows(buffers.episode_starts, t)
            if rows is not None:
                target.masked_fill_(rows.view(-1, 1, 1), 0.0)
            previous = target
        self.segment = segment


def torch_backward(buffers: UnrollBuffers, gradients: UnrollGradients, workspace: Tensor | None) -> None:
    """Walk the sequence in reverse, filling ``gradients`` (see :class:`UnrollGradients`).

    At step ``t`` the gradient flows through the matvec of step ``t`` (``through_matvec``: ``t < T``) and through the
    trace update of step ``t - 1`` (``through_update``: ``t >= 1`` and plastic), whose input ``H_{t-1}`` is stored,
    recomputed or rebuilt from ``H_t`` by inverting the decay.
    """
    options, eta = buffers.options, buffers.hebbian_learning_rate
    steps = buffers.steps
    store = TraceStore(buffers, workspace) if options.plastic else None
    decay_form = options.decay_form if options.plastic else None
    alpha = buffers.plasticity_coefficient
    grad_x = torch.zeros_like(buffers.initial_activation)
    grad_eta = buffers.drive.new_zeros(())
    scratch = torch.empty_like(buffers.trace) if options.plastic else None
    grad_trace = gradients.grad_trace
    for t in range(steps, -1, -1):
        through_matvec, through_update = t < steps, t >= 1 and options.plastic
        rows = reset_rows(buffers.episode_starts, t) if through_matvec else None
        if options.plastic:
            trace_t = buffers.trace if t == steps else store.stored(t)
            trace_t = workspace if trace_t is None else trace_t
            trace_previous = store.stored(t - 1) if through_update else None
        if through_matvec:
            grad_pre_activation_t, x_t = gradients.grad_pre_activation[t], buffers.presynaptic[t]
            grad_x += grad_pre_activation_t @ buffers.weight.T
            if options.plasticity == "full":
                torch.mul(trace_t, alpha, out=scratch)
                grad_x += torch.bmm(scratch, grad_pre_activation_t.unsqueeze(2)).squeeze(2)
                torch.mul(trace_t, grad_pre_activation_t.unsqueeze(1), out=scratch)
                gradients.grad_plasticity_coefficient += torch.bmm(x_t.T.unsqueeze(1), scratch.transpose(0, 1)).squeeze(
                    1
                )
                torch.bmm(x_t.unsqueeze(2), grad_pre_activation_t.unsqueeze(1), out=scratch)
                grad_trace.addcmul_(scratch, alpha)
            elif options.plasticity == "shared":
                grad_x += alpha * torch.bmm(trace_t, grad_pre_activation_t.unsqueeze(2)).squeeze(2)
                grad_trace.baddbmm_(x_t.unsqueeze(2), grad_pre_activation_t.unsqueeze(1), alpha=float(alpha))
            if options.plastic and rows is not None:
                grad_trace.masked_fill_(rows.view(-1, 1, 1), 0.0)
        grad_post_from_update = None
        if through_update:
            x_previous, y_previous = buffers.presynaptic[t - 1], buffers.outputs[t - 1]
            decay = decay_form.decay(y_previous, eta)
            if trace_previous is None:  # reverse rebuild of H_{t-1} into the workspace, through any reset at t
                if trace_t is not workspace:
                    workspace.copy_(trace_t)
                for batch_index, slot in pre_reset_slots(buffers, t):
                    workspace[batch_index].copy_(buffers.pre_reset_traces[slot])
                workspace.baddbmm_(x_previous.unsqueeze(2), y_previous.unsqueeze(1), alpha=-eta).div_(decay)
                trace_previous = workspace
            grad_update = grad_trace  # dL/dU of the unclipped update U, in place of dL/dH_t
            if options.trace_clip is not None:
                torch.mul(trace_previous, decay, out=scratch).baddbmm_(
                    x_previous.unsqueeze(2), y_previous.unsqueeze(1), alpha=eta
                )
                grad_update.mul_(scratch.abs_() <= options.trace_clip)
            grad_post_from_update = eta * torch.bmm(x_previous.unsqueeze(1), grad_update).squeeze(1)
            # dU/deta = pre post^T - q H: summed per element, not as a difference of two large sums, for float32's sake
            forgetting = decay_form.forgetting(y_previous)
            if isinstance(forgetting, Tensor):
                torch.mul(trace_previous, forgetting.unsqueeze(1), out=scratch).neg_()
            else:
                torch.mul(trace_previous, -forgetting, out=scratch)
            if decay_form.forgetting_derivative is not None:  # dU_ij/dpost_j's -eta q'(post_j) H_ij
                grad_post_from_update -= (
                    eta * decay_form.forgetting_derivative(y_previous) * (grad_update * trace_previous).sum(1)
                )
            scratch.baddbmm_(x_previous.unsqueeze(2), y_previous.unsqueeze(1)).mul_(grad_update)
            grad_eta += scratch.sum()
            grad_x_previous = eta * torch.bmm(grad_update, y_previous.unsqueeze(2)).squeeze(2)
            grad_update.mul_(decay)
        if t == 0:
            gradients.grad_initial_activation.copy_(grad_x)
            break
        if rows is not None:
            grad_x.masked_fill_(rows.unsqueeze(1), 0.0)
        grad_post = grad_x if grad_post_from_update is None else grad_x + grad_post_from_update
        _finish_step(buffers, gradients, t - 1, grad_post)
        grad_x = grad_x_previous if through_update else torch.zeros_like(grad_x)
    gradients.grad_hebbian_learning_rate = float(grad_eta)


def _finish_step(buffers: UnrollBuffers, gradients: UnrollGradients, t: int, grad_y: Tensor) -> None:
    """Turn ``dL/dy_t`` (without the output gradient) into ``dL/da_t`` and ``dL/ddrive_t``."""
    if gradients.grad_outputs is not None:
        grad_y = grad_y + gradients.grad_outputs[t]
    if buffers.options.bias_neuron:
        grad_y[:, -1] = 0.0
    y, drive = buffers.outputs[t], buffers.drive[t]
    through_tanh = grad_y * (1 - y.square())
    if buffers.options.input_mode == "add":
        gradients.grad_pre_activation[t] = through_tanh
        gradients.grad_drive[t] = through_tanh
    else:
        clamped = drive != 0
        gradients.grad_pre_activation[t] = torch.where(clamped, 0.0, through_tanh)
        gradients.grad_drive[t] = torch.where(clamped, grad_y, 0.0)
