"""The fused unroll's PyTorch backend: the forward and the hand-written backward, on any device.

It runs the algorithm of :mod:`plastic_rl.core.fused.plan` on an :class:`UnrollBuffers`, step by step in Python; the
C++ backend (:mod:`plastic_rl.core.fused.cpp_backend`) runs the same on the same buffers.
"""

# The buffers of a plastic unroll (trace, checkpoints, plasticity coefficient, ...) are Optional in UnrollBuffers and
# used here under `if options.plastic` / the plasticity mode, a guard mypy cannot follow; other checks stay on.
# mypy: disable-error-code="union-attr, arg-type, index, operator"

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from plastic_rl.core.fused.plan import StepRange, UnrollBuffers, UnrollGradients, UnrollOptions
from plastic_rl.core.rules import DecayForm, Traces


def _activate(total: Tensor, drive: Tensor, options: UnrollOptions, out: Tensor) -> None:
    if options.input_mode == "add":
        torch.tanh(total + drive, out=out)
    else:
        torch.where(drive != 0, drive, torch.tanh(total), out=out)
    if options.bias_neuron:
        out[:, -1] = 1.0


def _unclipped_hebbian_update(trace: Tensor, eligibility: Tensor | None, buffers: UnrollBuffers, t: int) -> None:
    """The Hebbian trace's update of step ``t``, before clipping: ``H <- H decay + eta x y^T``, ``H + x (M y)^T``
    (gain ``M(t)``) or ``H + M E`` (gated, ``E`` as it was before this step)."""
    pre, post, eta = buffers.presynaptic[t], buffers.outputs[t], buffers.hebbian_learning_rate
    form = buffers.options.decay_form
    if form.gated:
        assert eligibility is not None and buffers.modulation is not None, "a gated rule keeps E and M(t)"
        trace.addcmul_(buffers.modulation[t].unsqueeze(1), eligibility)
    elif form.gain == "modulation":
        assert buffers.modulation is not None, "a modulated rule keeps M(t)"
        trace.baddbmm_(pre.unsqueeze(2), (buffers.modulation[t] * post).unsqueeze(1))
    else:
        trace.mul_(form.decay(post, eta)).baddbmm_(pre.unsqueeze(2), post.unsqueeze(1), alpha=eta)


def update_traces_in_place(trace: Tensor, eligibility: Tensor | None, buffers: UnrollBuffers, t: int) -> None:
    """The trace update of step ``t`` by the rule's decay form (see :class:`~plastic_rl.core.rules.DecayForm`): the
    Hebbian trace, then a gated rule's eligibility trace, then the Hebbian trace clipped."""
    _unclipped_hebbian_update(trace, eligibility, buffers, t)
    form = buffers.options.decay_form
    if form.gated:
        assert eligibility is not None, "a gated rule keeps E"
        pre, post, eta = buffers.presynaptic[t], buffers.outputs[t], buffers.hebbian_learning_rate
        eligibility.mul_(form.decay(post, eta)).baddbmm_(pre.unsqueeze(2), post.unsqueeze(1), alpha=eta)
    clip = buffers.options.trace_clip
    if clip is not None:
        trace.clamp_(-clip, clip)


def modulation_of(buffers: UnrollBuffers, t: int) -> None:
    """``M(t) = tanh(y_t w_M + b_M)`` into ``modulation[t]``."""
    assert buffers.modulation is not None and buffers.modulator_weight is not None, "a modulated rule keeps M(t)"
    torch.addmm(buffers.modulator_bias, buffers.outputs[t], buffers.modulator_weight, out=buffers.modulation[t])
    buffers.modulation[t].tanh_()


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
    """Fill ``outputs``, ``presynaptic``, ``trace_matvec``, ``modulation``, the checkpoints and the final traces,
    over ``steps`` (the whole sequence by default)."""
    options = buffers.options
    steps = StepRange.whole(buffers.steps) if steps is None else steps
    trace, eligibility = buffers.trace, buffers.eligibility
    scaled_trace = torch.empty_like(trace) if options.plasticity == "full" else None
    if options.plastic and steps.first == 0 and steps.last > 0:
        trace.copy_(buffers.initial_trace)
        if eligibility is not None:
            eligibility.copy_(buffers.initial_eligibility)
    for t in range(steps.first, steps.last + 1):
        rows = reset_rows(buffers.episode_starts, t) if t < steps.last else None
        update = (t > steps.first or steps.pending) and (t < steps.last or steps.settle)
        if options.plastic and t >= 1 and update:  # the (lazy) trace update of step t - 1
            update_traces_in_place(trace, eligibility, buffers, t - 1)
        if options.plastic and t >= 1 and (update or t < steps.last):
            if rows is not None:
                for batch_index, slot in pre_reset_slots(buffers, t):
                    buffers.pre_reset_traces[slot].copy_(trace[batch_index])
                    if eligibility is not None:
                        buffers.pre_reset_eligibility[slot].copy_(eligibility[batch_index])
                trace.masked_fill_(rows.view(-1, 1, 1), 0.0)
                if eligibility is not None:
                    eligibility.masked_fill_(rows.view(-1, 1, 1), 0.0)
            if t < steps.last and t % buffers.plan.every == 0 and buffers.checkpoints is not None:
                buffers.checkpoints[t // buffers.plan.every - 1].copy_(trace)
                if eligibility is not None:
                    buffers.eligibility_checkpoints[t // buffers.plan.every - 1].copy_(eligibility)
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
        if options.modulated:
            modulation_of(buffers, t)


class TraceStore:
    """The traces entering each step during the backward: stored, rebuilt (``None``: by the caller, into the
    workspace) or recomputed. A gated rule's eligibility trace follows the Hebbian one, in its own workspace."""

    def __init__(self, buffers: UnrollBuffers, workspace: Tensor, eligibility_workspace: Tensor | None) -> None:
        self.buffers, self.workspace, self.eligibility_workspace = buffers, workspace, eligibility_workspace
        self.segment = -1

    def stored(self, t: int) -> Traces | None:
        buffers, every = self.buffers, self.buffers.plan.every
        if t == 0:
            return Traces(buffers.initial_trace, buffers.initial_eligibility)
        if t % every == 0:
            slot, eligibility = t // every - 1, buffers.eligibility_checkpoints
            return Traces(buffers.checkpoints[slot], None if eligibility is None else eligibility[slot])
        if buffers.plan.reverse:
            return None
        self._recompute(t // every)
        eligibility = self.eligibility_workspace
        return Traces(self.workspace[t % every - 1], None if eligibility is None else eligibility[t % every - 1])

    def _recompute(self, segment: int) -> None:
        if segment == self.segment:
            return
        buffers, every = self.buffers, self.buffers.plan.every
        first = segment * every
        previous = self.stored(first)
        assert previous is not None, "a segment starts at a stored trace"
        for t in range(first + 1, min(first + every, buffers.steps)):
            hebbian = self.workspace[t - first - 1]
            hebbian.copy_(previous.hebbian)
            eligibility = None
            if self.eligibility_workspace is not None:
                eligibility = self.eligibility_workspace[t - first - 1]
                eligibility.copy_(previous.eligibility)
            update_traces_in_place(hebbian, eligibility, buffers, t - 1)
            rows = reset_rows(buffers.episode_starts, t)
            if rows is not None:
                hebbian.masked_fill_(rows.view(-1, 1, 1), 0.0)
                if eligibility is not None:
                    eligibility.masked_fill_(rows.view(-1, 1, 1), 0.0)
            previous = Traces(hebbian, eligibility)
        self.segment = segment


def _rebuild_previous(
    buffers: UnrollBuffers, t: int, current: Traces, workspace: Tensor, eligibility_workspace: Tensor | None
) -> Traces:
    """The traces entering step ``t - 1``, rebuilt into the workspaces from ``current`` (those entering step ``t``,
    which may be the workspaces themselves) by inverting the update of step ``t - 1``, through any reset at ``t``."""
    x, y, eta = buffers.presynaptic[t - 1], buffers.outputs[t - 1], buffers.hebbian_learning_rate
    form = buffers.options.decay_form
    if current.hebbian is not workspace:
        workspace.copy_(current.hebbian)
    if eligibility_workspace is not None and current.eligibility is not eligibility_workspace:
        eligibility_workspace.copy_(current.eligibility)
    for batch_index, slot in pre_reset_slots(buffers, t):
        workspace[batch_index].copy_(buffers.pre_reset_traces[slot])
        if eligibility_workspace is not None:
            eligibility_workspace[batch_index].copy_(buffers.pre_reset_eligibility[slot])
    if form.gated:
        assert eligibility_workspace is not None and buffers.modulation is not None, "a gated rule keeps E and M(t)"
        eligibility_workspace.baddbmm_(x.unsqueeze(2), y.unsqueeze(1), alpha=-eta).div_(form.decay(y, eta))
        workspace.addcmul_(buffers.modulation[t - 1].unsqueeze(1), eligibility_workspace, value=-1.0)
    elif form.gain == "modulation":
        assert buffers.modulation is not None, "a modulated rule keeps M(t)"
        workspace.baddbmm_(x.unsqueeze(2), (buffers.modulation[t - 1] * y).unsqueeze(1), alpha=-1.0)
    else:
        workspace.baddbmm_(x.unsqueeze(2), y.unsqueeze(1), alpha=-eta).div_(form.decay(y, eta))
    return Traces(workspace, eligibility_workspace)


class _DecayGradients(NamedTuple):
    """What the update ``T <- T decay + eta x y^T`` sends back: to ``y``, to ``x``, and to ``eta``."""

    post: Tensor
    pre: Tensor
    eta: Tensor


def _decay_form_gradients(
    grad: Tensor, previous: Tensor, x: Tensor, y: Tensor, eta: float, form: DecayForm, scratch: Tensor
) -> _DecayGradients:
    """The gradients of the decaying update of ``previous`` (``grad`` = ``dL/dU``), which then becomes ``dL/dT``
    in place."""
    grad_post = eta * torch.bmm(x.unsqueeze(1), grad).squeeze(1)
    # dU/deta = pre post^T - q T: summed per element, not as a difference of two large sums, for float32's sake
    forgetting = form.forgetting(y)
    if isinstance(forgetting, Tensor):
        torch.mul(previous, forgetting.unsqueeze(1), out=scratch).neg_()
    else:
        torch.mul(previous, -forgetting, out=scratch)
    if form.forgetting_derivative is not None:  # dU_ij/dpost_j's -eta q'(post_j) T_ij
        grad_post -= eta * form.forgetting_derivative(y) * (grad * previous).sum(1)
    scratch.baddbmm_(x.unsqueeze(2), y.unsqueeze(1)).mul_(grad)
    grad_eta = scratch.sum()
    grad_pre = eta * torch.bmm(grad, y.unsqueeze(2)).squeeze(2)
    grad.mul_(form.decay(y, eta))
    return _DecayGradients(grad_post, grad_pre, grad_eta)


def _modulated_update_gradients(
    buffers: UnrollBuffers,
    gradients: UnrollGradients,
    t: int,
    grad_update: Tensor,
    previous: Traces,
    scratch: Tensor,
) -> _DecayGradients:
    """The gradients of a modulated rule's update of step ``t`` (``grad_update`` = ``dL/dU`` of the Hebbian
    trace; a gated rule's ``dL/dE`` becomes that of the previous step in place), through ``M(t)``'s head, whose
    pre-activation gradient goes to ``grad_modulation[t]``."""
    x, y, eta = buffers.presynaptic[t], buffers.outputs[t], buffers.hebbian_learning_rate
    modulation = buffers.modulation[t]
    form = buffers.options.decay_form
    if form.gated:  # H <- H + M E, E <- E decay + eta x y^T
        grad_eligibility = gradients.grad_eligibility
        grad_modulation = (grad_update * previous.eligibility).sum(1)
        update = _decay_form_gradients(grad_eligibility, previous.eligibility, x, y, eta, form, scratch)
        grad_eligibility.addcmul_(modulation.unsqueeze(1), grad_update)
        grad_post, grad_pre, grad_eta = update
    else:  # H <- H + x (M y)^T
        through_pre = torch.bmm(x.unsqueeze(1), grad_update).squeeze(1)
        grad_modulation = y * through_pre
        grad_post = modulation * through_pre
        grad_pre = torch.bmm(grad_update, (modulation * y).unsqueeze(2)).squeeze(2)
        grad_eta = grad_post.new_zeros(())
    if modulation.shape[1] == 1:
        grad_modulation = grad_modulation.sum(1, keepdim=True)
    grad_head = torch.mul(grad_modulation, 1 - modulation.square(), out=gradients.grad_modulation[t])
    return _DecayGradients(grad_post + grad_head @ buffers.modulator_weight.T, grad_pre, grad_eta)


def torch_backward(
    buffers: UnrollBuffers,
    gradients: UnrollGradients,
    workspace: Tensor | None,
    eligibility_workspace: Tensor | None = None,
) -> None:
    """Walk the sequence in reverse, filling ``gradients`` (see :class:`UnrollGradients`).

    At step ``t`` the gradient flows through the matvec of step ``t`` (``through_matvec``: ``t < T``) and through the
    trace update of step ``t - 1`` (``through_update``: ``t >= 1`` and plastic), whose input ``H_{t-1}`` is stored,
    recomputed or rebuilt from ``H_t`` by inverting the update (and ``E_{t-1}`` likewise, for a gated rule).
    """
    assert not buffers.plan.flags_clipping, "the PyTorch backend recomputes a clipped trace: plan it so"
    options, eta = buffers.options, buffers.hebbian_learning_rate
    steps = buffers.steps
    store = TraceStore(buffers, workspace, eligibility_workspace) if options.plastic else None
    decay_form = options.decay_form if options.plastic else None
    alpha = buffers.plasticity_coefficient
    grad_x = torch.zeros_like(buffers.initial_activation)
    grad_eta = buffers.drive.new_zeros(())
    scratch = torch.empty_like(buffers.trace) if options.plastic else None
    grad_trace, grad_eligibility = gradients.grad_trace, gradients.grad_eligibility
    for t in range(steps, -1, -1):
        through_matvec, through_update = t < steps, t >= 1 and options.plastic
        rows = reset_rows(buffers.episode_starts, t) if through_matvec else None
        if options.plastic:
            current = Traces(buffers.trace, buffers.eligibility) if t == steps else store.stored(t)
            current = Traces(workspace, eligibility_workspace) if current is None else current
            trace_t = current.hebbian
            previous = store.stored(t - 1) if through_update else None
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
                if grad_eligibility is not None:
                    grad_eligibility.masked_fill_(rows.view(-1, 1, 1), 0.0)
        grad_post_from_update = None
        if through_update:
            x_previous, y_previous = buffers.presynaptic[t - 1], buffers.outputs[t - 1]
            if previous is None:
                previous = _rebuild_previous(buffers, t, current, workspace, eligibility_workspace)
            grad_update = grad_trace  # dL/dU of the unclipped update U, in place of dL/dH_t
            if options.trace_clip is not None:
                _unclipped_hebbian_update(scratch.copy_(previous.hebbian), previous.eligibility, buffers, t - 1)
                grad_update.mul_(scratch.abs_() <= options.trace_clip)
            if decay_form.modulated:
                update = _modulated_update_gradients(buffers, gradients, t - 1, grad_update, previous, scratch)
            else:
                update = _decay_form_gradients(
                    grad_update, previous.hebbian, x_previous, y_previous, eta, decay_form, scratch
                )
            grad_post_from_update, grad_x_previous = update.post, update.pre
            grad_eta += update.eta
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
