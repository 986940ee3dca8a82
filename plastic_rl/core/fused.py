"""A memory-lean unroll of the plastic recurrent layer, with a hand-written backward pass.

Plain autograd keeps about three ``B x N x N`` tensors per step. :func:`fused_unroll` is one
:class:`torch.autograd.Function` over the whole sequence: the forward keeps the activations of every
step, ``O(T B N)``, and the trace only at checkpoints; the backward walks the sequence in reverse and
rebuilds the trace of each step on the way, either

* by inverting the decay, ``H(t) = (H(t+1) - eta pre post^T) / decay`` (``decay = 1 - eta`` for
  Hebb, ``1 - eta post_j^2`` for Oja), which is exact without clipping; each inverted step multiplies
  rounding errors by ``1 / decay``, so a checkpoint restarts it from the stored trace before the
  amplification exceeds ``exp(AMPLIFICATION_LOG_BUDGET)``; or
* by recomputing the traces of a segment forward from its checkpoint (``sqrt(T)`` steps apart), which
  is what clipping needs, and what very large ``eta`` falls back to.

The plan with the smaller memory is chosen per call (:func:`plan_checkpoints`).

Two backends run the same algorithm on the same buffers: a C++ kernel (``csrc/plastic_unroll.cpp``,
built with the machine's compiler on first use; one pass over the trace per step, the time loop in
C++; threads over slices of the batch (:func:`batch_slices`), or over the rows of each step for a
single episode) and a PyTorch one that runs on any device. ``PLASTIC_RL_NO_CPP=1``
forces the PyTorch backend.

Gradients are those of :func:`plastic_rl.core.functional.recurrent_unroll` (tests compare them in
float64 to about 1e-10). The episode-start reset at step 0 happens before the function, in plain
autograd, so the kernels only see resets at steps ``t >= 1``.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

IMPLEMENTATIONS = ("auto", "fused", "autograd")
BACKENDS = ("cpp", "torch")
NO_CPP_ENVIRONMENT_VARIABLE = "PLASTIC_RL_NO_CPP"
# exp(7) ~ 1e3 amplification keeps float64 at ~1e-13; float32 gets exp(1), about its own rounding.
AMPLIFICATION_LOG_BUDGET = {torch.float64: 7.0, torch.float32: 1.0}
_PLASTICITY_CODES = {"none": 0, "shared": 1, "full": 2}
_RULE_CODES = {"hebb": 0, "oja": 1}
MAX_BATCH_SLICES = 8


@functools.cache
def cpp_extension_module():
    """The compiled C++ kernel, built on first use; ``None`` (after a one-line warning) when unavailable."""
    if os.environ.get(NO_CPP_ENVIRONMENT_VARIABLE, "") not in ("", "0"):
        return None
    try:
        from torch.utils import cpp_extension

        _put_pip_ninja_on_path()
        try:
            return _build(cpp_extension, openmp=True)
        except Exception:  # a compiler without OpenMP (Apple's clang): the kernel runs on one thread
            return _build(cpp_extension, openmp=False)
    except Exception as error:  # no compiler, no ninja, a failed build: all mean the PyTorch path
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        warnings.warn(f"plastic_rl: C++ plastic kernel unavailable, using the PyTorch path ({reason})", stacklevel=2)
        return None


def _build(cpp_extension, openmp: bool):
    # Without -fopenmp, at::parallel_for compiles to a plain loop: the kernel's threads come from this flag, and at
    # run time from torch's own OpenMP library (same soname, already loaded), so torch.set_num_threads applies.
    threads = ["-fopenmp"] if openmp else ["-fopenmp-simd"]
    name = "plastic_rl_plastic_unroll" if openmp else "plastic_rl_plastic_unroll_serial"
    if not (Path(cpp_extension._get_build_directory(name, verbose=False)) / f"{name}.so").exists():
        print(f"plastic_rl: building the C++ plastic kernel {name} (first use, about a minute)", file=sys.stderr)
    return cpp_extension.load(
        name=name,
        sources=[str(Path(__file__).with_name("csrc") / "plastic_unroll.cpp")],
        extra_cflags=["-O3", "-march=native", "-ffp-contract=fast", *threads],
        extra_ldflags=threads if openmp else [],
        verbose=False,
    )


def _put_pip_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary is not on it when the venv is not activated."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def cpp_available() -> bool:
    """Whether the C++ kernel is (or can be) built on this machine."""
    return cpp_extension_module() is not None


def available_backends() -> tuple[str, ...]:
    return BACKENDS if cpp_available() else ("torch",)


@dataclass(frozen=True)
class UnrollOptions:
    """The static options of an unroll (those of :func:`plastic_rl.core.functional.recurrent_step`)."""

    plasticity: str
    rule: str
    input_mode: str
    trace_clip: float | None
    bias_neuron: bool


@dataclass
class CheckpointPlan:
    """Where the forward keeps the trace, and how the backward rebuilds it.

    ``every``: checkpoint spacing ``K`` (checkpoints hold the trace entering steps ``K, 2K, ... < T``);
    ``reverse``: rebuild by inverting the decay (else recompute segments forward);
    ``pre_reset_index``: ``(T, B)`` slot of the trace saved just before a reset that the reverse
    rebuild must go through, ``-1`` elsewhere.
    """

    every: int
    reverse: bool
    pre_reset_index: Tensor | None
    pre_reset_slots: int

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
) -> CheckpointPlan:
    """Choose reverse rebuild or segment recomputation, whichever keeps fewer ``B x N x N`` traces.

    ``post_bound`` bounds ``|post|`` (1 for tanh; clamped inputs can be larger), which bounds Oja's decay.
    """
    recompute_every = max(1, math.ceil(math.sqrt(steps)))
    recompute = CheckpointPlan(recompute_every, False, None, 0)
    if options.plasticity == "none":
        return CheckpointPlan(steps, False, None, 0)
    if options.trace_clip is not None:
        return recompute
    post_squared = post_bound**2 if options.rule == "oja" else 1.0
    smallest_decay = 1.0 - max(eta, 0.0) * post_squared
    if smallest_decay <= 1e-3:
        return recompute
    growth = -math.log(min(smallest_decay, 1.0))
    budget = AMPLIFICATION_LOG_BUDGET.get(dtype, AMPLIFICATION_LOG_BUDGET[torch.float32])
    every = steps if growth == 0.0 else max(1, min(steps, int(budget / growth)))
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
    recompute_cost = (steps - 1) // recompute_every + recompute_every - 1
    if reverse_cost <= recompute_cost:
        return CheckpointPlan(every, True, index, slots)
    return recompute


@dataclass
class _Unroll:
    """Inputs, outputs and buffers of one unroll: the argument lists of both backends."""

    drive: Tensor
    x0: Tensor
    h0: Tensor | None
    weight: Tensor
    alpha: Tensor | None
    eta: float
    bias: Tensor | None
    starts: Tensor | None
    reset_activation: Tensor
    options: UnrollOptions
    plan: CheckpointPlan
    outputs: Tensor
    pre: Tensor
    plastic_part: Tensor | None
    trace: Tensor | None
    checkpoints: Tensor | None
    pre_reset: Tensor | None

    @property
    def clip(self) -> float:
        return 0.0 if self.options.trace_clip is None else self.options.trace_clip


def _allocate(drive, x0, h0, weight, alpha, eta, bias, starts, reset_activation, options, plan) -> _Unroll:
    steps, batch, size = drive.shape
    plastic = options.plasticity != "none"
    trace_shape = (batch, size, size)
    n_checkpoints = (steps - 1) // plan.every if plastic else 0
    return _Unroll(
        drive=drive,
        x0=x0,
        h0=h0,
        weight=weight,
        alpha=alpha,
        eta=eta,
        bias=bias,
        starts=starts,
        reset_activation=reset_activation,
        options=options,
        plan=plan,
        outputs=drive.new_empty(drive.shape),
        pre=drive.new_empty(drive.shape),
        plastic_part=drive.new_empty(drive.shape) if options.plasticity == "shared" else None,
        trace=drive.new_empty(trace_shape) if plastic else None,
        checkpoints=drive.new_empty((n_checkpoints, *trace_shape)) if n_checkpoints else None,
        pre_reset=drive.new_empty((plan.pre_reset_slots, size, size)) if plan.pre_reset_slots else None,
    )


def _or_empty(tensor: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if tensor is None else tensor


def batch_slices(batch: int) -> int:
    """Into how many slices the C++ kernel cuts a batch, each unrolled whole by one thread (1: no cut; the threads
    share the rows of every step instead, which a single episode needs).

    Slices need no synchronisation between steps and keep each thread on its own traces; they re-read ``w``
    and ``alpha`` once per slice and step, which measured cheaper at every size from N = 200 to 1,001 on the
    development machine (RESULTS.md). The count depends on the batch size only, never on the number of
    threads, so that results do not either.
    """
    return min(batch, MAX_BATCH_SLICES)


def _kernel_options(u: _Unroll) -> tuple:
    """The non-buffer arguments that the C++ forward and backward kernels share, in their order."""
    return (
        torch.empty(0, dtype=torch.bool) if u.starts is None else u.starts,
        torch.empty(0, dtype=torch.int64) if u.plan.pre_reset_index is None else u.plan.pre_reset_index,
        u.eta,
        u.clip,
        _PLASTICITY_CODES[u.options.plasticity],
        _RULE_CODES[u.options.rule],
        u.options.input_mode == "clamp",
        u.options.bias_neuron,
        u.plan.every,
        batch_slices(u.drive.shape[1]),
    )


def _cpp_forward(u: _Unroll) -> None:
    module = cpp_extension_module()
    e = u.drive
    module.forward(
        [
            u.drive,
            u.x0,
            _or_empty(u.h0, e),
            u.weight,
            _or_empty(u.alpha, e),
            _or_empty(u.bias, e),
            u.reset_activation,
            u.outputs,
            u.pre,
            _or_empty(u.plastic_part, e),
            _or_empty(u.trace, e),
            _or_empty(u.checkpoints, e),
            _or_empty(u.pre_reset, e),
        ],
        *_kernel_options(u),
    )


def _activate(total: Tensor, drive: Tensor, options: UnrollOptions, out: Tensor) -> None:
    if options.input_mode == "add":
        torch.tanh(total + drive, out=out)
    else:
        torch.where(drive != 0, drive, torch.tanh(total), out=out)
    if options.bias_neuron:
        out[:, -1] = 1.0


def _decay(post: Tensor, eta: float, rule: str) -> Tensor | float:
    """``decay`` in ``H <- H * decay + eta pre post^T``: a float (Hebb) or ``(B, 1, N)`` (Oja)."""
    return 1.0 - eta if rule == "hebb" else (1.0 - eta * post.square()).unsqueeze(1)


def _update_trace_(trace: Tensor, pre: Tensor, post: Tensor, eta: float, options: UnrollOptions) -> None:
    trace.mul_(_decay(post, eta, options.rule)).baddbmm_(pre.unsqueeze(2), post.unsqueeze(1), alpha=eta)
    if options.trace_clip is not None:
        trace.clamp_(-options.trace_clip, options.trace_clip)


def _reset_rows(starts: Tensor | None, t: int) -> Tensor | None:
    return None if starts is None or t == 0 else starts[t]


def _torch_forward(u: _Unroll) -> None:
    options = u.options
    trace, plastic = u.trace, options.plasticity != "none"
    scaled = torch.empty_like(trace) if options.plasticity == "full" else None
    if plastic:
        trace.copy_(u.h0)
    resets = _pre_reset_slots(u)
    steps = u.drive.shape[0]
    for t in range(steps + 1):
        rows = _reset_rows(u.starts, t) if t < steps else None
        if plastic and t >= 1:
            _update_trace_(trace, u.pre[t - 1], u.outputs[t - 1], u.eta, options)
            for batch_index, slot in resets.get(t, ()):
                u.pre_reset[slot].copy_(trace[batch_index])
            if rows is not None:
                trace.masked_fill_(rows.view(-1, 1, 1), 0.0)
            if t < steps and t % u.plan.every == 0 and u.checkpoints is not None:
                u.checkpoints[t // u.plan.every - 1].copy_(trace)
        if t == steps:
            break
        if t == 0:
            u.pre[0].copy_(u.x0)
        elif rows is None:
            u.pre[t].copy_(u.outputs[t - 1])
        else:
            torch.where(rows.unsqueeze(1), u.reset_activation, u.outputs[t - 1], out=u.pre[t])
        x = u.pre[t]
        total = x @ u.weight
        if options.plasticity == "full":
            torch.mul(trace, u.alpha, out=scaled)
            total.add_(torch.bmm(x.unsqueeze(1), scaled).squeeze(1))
        elif options.plasticity == "shared":
            torch.bmm(x.unsqueeze(1), trace, out=u.plastic_part[t].unsqueeze(1))
            total.add_(u.plastic_part[t] * u.alpha)
        if u.bias is not None:
            total.add_(u.bias)
        _activate(total, u.drive[t], options, u.outputs[t])


def _pre_reset_slots(u: _Unroll) -> dict[int, list[tuple[int, int]]]:
    """``{t: [(batch index, slot), ...]}`` for the traces the forward saves just before a reset."""
    index = u.plan.pre_reset_index
    if index is None:
        return {}
    slots: dict[int, list[tuple[int, int]]] = {}
    for t, b in (index >= 0).nonzero().tolist():
        slots.setdefault(t, []).append((b, int(index[t, b])))
    return slots


@dataclass
class _Gradients:
    grad_outputs: Tensor | None
    grad_pre_activation: Tensor
    grad_drive: Tensor
    grad_x0: Tensor
    grad_trace: Tensor | None  # dL/dH_T on entry, dL/dH_0 on return
    grad_alpha: Tensor | None
    grad_eta: float = 0.0


def _cpp_backward(u: _Unroll, g: _Gradients, workspace: Tensor | None) -> None:
    module = cpp_extension_module()
    e = u.drive
    g.grad_eta = module.backward(
        [
            _or_empty(g.grad_outputs, e),
            e.new_empty(0),
            u.drive,
            u.outputs,
            u.pre,
            _or_empty(u.h0, e),
            _or_empty(u.trace, e),
            _or_empty(u.checkpoints, e),
            _or_empty(u.pre_reset, e),
            u.weight,
            _or_empty(u.alpha, e),
            g.grad_pre_activation,
            g.grad_drive,
            g.grad_x0,
            _or_empty(g.grad_trace, e),
            _or_empty(g.grad_alpha, e),
            _or_empty(workspace, e),
        ],
        *_kernel_options(u),
        u.plan.reverse,
    )


class _TraceStore:
    """The trace entering each step during the backward (torch backend): stored, rebuilt or recomputed."""

    def __init__(self, u: _Unroll, workspace: Tensor) -> None:
        self.u, self.workspace, self.segment = u, workspace, -1

    def stored(self, t: int) -> Tensor | None:
        u, every = self.u, self.u.plan.every
        if t == 0:
            return u.h0
        if t % every == 0:
            return u.checkpoints[t // every - 1]
        if u.plan.reverse:
            return None
        self._recompute(t // every)
        return self.workspace[t % every - 1]

    def _recompute(self, segment: int) -> None:
        if segment == self.segment:
            return
        u, every = self.u, self.u.plan.every
        first = segment * every
        previous = self.stored(first)
        for t in range(first + 1, min(first + every, u.drive.shape[0])):
            target = self.workspace[t - first - 1]
            target.copy_(previous)
            _update_trace_(target, u.pre[t - 1], u.outputs[t - 1], u.eta, u.options)
            rows = _reset_rows(u.starts, t)
            if rows is not None:
                target.masked_fill_(rows.view(-1, 1, 1), 0.0)
            previous = target
        self.segment = segment


def _torch_backward(u: _Unroll, g: _Gradients, workspace: Tensor | None) -> None:
    options, eta = u.options, u.eta
    steps = u.drive.shape[0]
    plastic = options.plasticity != "none"
    store = _TraceStore(u, workspace) if plastic else None
    pre_reset = {t: dict(pairs) for t, pairs in _pre_reset_slots(u).items()}
    grad_x = torch.zeros_like(u.x0)
    grad_eta = u.drive.new_zeros(())
    scratch = torch.empty_like(u.trace) if plastic else None
    for t in range(steps, -1, -1):
        has_b, has_a = t < steps, t >= 1 and plastic
        rows = _reset_rows(u.starts, t) if has_b else None
        if plastic:
            h_t = u.trace if t == steps else store.stored(t)
            h_t = workspace if h_t is None else h_t
            h_prev = store.stored(t - 1) if has_a else None
        if has_b:
            ga, x_t = g.grad_pre_activation[t], u.pre[t]
            grad_x += ga @ u.weight.T
            if options.plasticity != "none":
                if options.plasticity == "full":
                    torch.mul(h_t, u.alpha, out=scratch)
                    grad_x += torch.bmm(scratch, ga.unsqueeze(2)).squeeze(2)
                    torch.mul(h_t, ga.unsqueeze(1), out=scratch)
                    g.grad_alpha += torch.bmm(x_t.T.unsqueeze(1), scratch.transpose(0, 1)).squeeze(1)
                    torch.bmm(x_t.unsqueeze(2), ga.unsqueeze(1), out=scratch)
                    g.grad_trace.addcmul_(scratch, u.alpha)
                else:
                    grad_x += u.alpha * torch.bmm(h_t, ga.unsqueeze(2)).squeeze(2)
                    g.grad_trace.baddbmm_(x_t.unsqueeze(2), ga.unsqueeze(1), alpha=float(u.alpha))
                if rows is not None:
                    g.grad_trace.masked_fill_(rows.view(-1, 1, 1), 0.0)
        grad_y_col = None
        if has_a:
            x_prev, y_prev = u.pre[t - 1], u.outputs[t - 1]
            decay = _decay(y_prev, eta, options.rule)
            if h_prev is None:  # reverse rebuild of H_{t-1} into the workspace, through any reset at t
                if h_t is not workspace:
                    workspace.copy_(h_t)
                for batch_index, slot in pre_reset.get(t, {}).items():
                    workspace[batch_index].copy_(u.pre_reset[slot])
                workspace.baddbmm_(x_prev.unsqueeze(2), y_prev.unsqueeze(1), alpha=-eta).div_(decay)
                h_prev = workspace
            grad_u = g.grad_trace
            if options.trace_clip is not None:
                torch.mul(h_prev, decay, out=scratch).baddbmm_(x_prev.unsqueeze(2), y_prev.unsqueeze(1), alpha=eta)
                grad_u.mul_(scratch.abs_() <= options.trace_clip)
            grad_y_col = eta * torch.bmm(x_prev.unsqueeze(1), grad_u).squeeze(1)  # eta sum_i x_i gU_ij
            # dU/deta = pre post^T - q H, q = 1 (Hebb) or post_j^2 (Oja): summed per element, not as a difference
            # of two large sums, for float32's sake
            if options.rule == "hebb":
                torch.neg(h_prev, out=scratch)
            else:
                torch.mul(h_prev, y_prev.square().unsqueeze(1), out=scratch).neg_()
                grad_y_col -= 2 * eta * y_prev * (grad_u * h_prev).sum(1)
            scratch.baddbmm_(x_prev.unsqueeze(2), y_prev.unsqueeze(1)).mul_(grad_u)
            grad_eta += scratch.sum()
            grad_x_prev = eta * torch.bmm(grad_u, y_prev.unsqueeze(2)).squeeze(2)
            grad_u.mul_(decay)
        if t == 0:
            g.grad_x0.copy_(grad_x)
            break
        if rows is not None:
            grad_x.masked_fill_(rows.unsqueeze(1), 0.0)
        _finish_step(u, g, t - 1, grad_x if grad_y_col is None else grad_x + grad_y_col)
        grad_x = grad_x_prev if has_a else torch.zeros_like(grad_x)
    g.grad_eta = float(grad_eta)


def _finish_step(u: _Unroll, g: _Gradients, t: int, grad_y: Tensor) -> None:
    """Turn ``dL/dy_t`` (without the output gradient) into ``dL/da_t`` and ``dL/ddrive_t``."""
    if g.grad_outputs is not None:
        grad_y = grad_y + g.grad_outputs[t]
    if u.options.bias_neuron:
        grad_y[:, -1] = 0.0
    y, drive = u.outputs[t], u.drive[t]
    through_tanh = grad_y * (1 - y.square())
    if u.options.input_mode == "add":
        g.grad_pre_activation[t] = through_tanh
        g.grad_drive[t] = through_tanh
    else:
        clamped = drive != 0
        g.grad_pre_activation[t] = torch.where(clamped, 0.0, through_tanh)
        g.grad_drive[t] = torch.where(clamped, grad_y, 0.0)


def _backend_functions(backend: str):
    return (_cpp_forward, _cpp_backward) if backend == "cpp" else (_torch_forward, _torch_backward)


def _post_bound(drive: Tensor, options: UnrollOptions) -> float:
    if options.input_mode == "clamp" and options.rule == "oja" and drive.numel():
        return max(1.0, float(drive.abs().max()))
    return 1.0


def _prepare(drive, activation, trace, weight, alpha, eta, bias, starts, reset_activation, options, backend, keep):
    steps = drive.shape[0]
    eta_value = 0.0 if eta is None else float(eta)
    if keep:
        plan = plan_checkpoints(steps, eta_value, options, drive.dtype, _post_bound(drive, options), starts)
    else:
        plan = CheckpointPlan(max(steps, 1), False, None, 0)
    dtype = drive.dtype

    def prepared(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.detach().to(dtype).contiguous()

    u = _allocate(
        prepared(drive),
        prepared(activation),
        prepared(trace),
        prepared(weight),
        prepared(alpha),
        eta_value,
        prepared(bias),
        None if starts is None else starts.contiguous(),
        prepared(reset_activation),
        options,
        plan,
    )
    _backend_functions(backend)[0](u)
    return u


class _FusedUnrollFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, drive, activation, trace, weight, alpha, eta, bias, starts, reset_activation, options, backend):
        u = _prepare(
            drive, activation, trace, weight, alpha, eta, bias, starts, reset_activation, options, backend, True
        )
        ctx.backend = backend
        ctx.alpha_shape = None if alpha is None else alpha.shape
        ctx.eta_like = eta
        # The outputs go through save_for_backward: a plain reference from ctx to an output is a reference
        # cycle through the autograd graph that nothing frees; this way autograd also notices in-place changes.
        outputs, final_trace = u.outputs, u.trace
        ctx.save_for_backward(*((outputs,) if final_trace is None else (outputs, final_trace)))
        ctx.unroll = replace(u, outputs=None, trace=None)
        return outputs, final_trace

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_outputs, grad_final_trace):
        saved = ctx.saved_tensors
        u = replace(ctx.unroll, outputs=saved[0], trace=saved[1] if len(saved) > 1 else None)
        plastic = u.options.plasticity != "none"
        grad_trace = None
        if plastic:
            grad_trace = (
                torch.zeros_like(u.trace) if grad_final_trace is None else grad_final_trace.contiguous().clone()
            )
        g = _Gradients(
            grad_outputs=None if grad_outputs is None else grad_outputs.contiguous(),
            grad_pre_activation=torch.empty_like(u.drive),
            grad_drive=torch.empty_like(u.drive),
            grad_x0=torch.empty_like(u.x0),
            grad_trace=grad_trace,
            grad_alpha=torch.zeros_like(u.weight) if u.options.plasticity == "full" else None,
        )
        workspace = None
        if plastic:
            workspace = u.drive.new_empty((max(u.plan.workspace_traces, 1), *u.trace.shape))
            if u.plan.reverse:
                workspace = workspace[0]
        _backend_functions(ctx.backend)[1](u, g, workspace)
        flat_pre = u.pre.reshape(-1, u.pre.shape[-1])
        flat_grad = g.grad_pre_activation.reshape(-1, u.pre.shape[-1])
        needs = ctx.needs_input_grad
        grad_weight = flat_pre.T @ flat_grad if needs[3] else None
        grad_alpha = None
        if needs[4]:
            if u.options.plasticity == "full":
                grad_alpha = g.grad_alpha
            else:
                grad_alpha = (g.grad_pre_activation * u.plastic_part).sum().reshape(ctx.alpha_shape)
        grad_eta = torch.full_like(ctx.eta_like, g.grad_eta) if needs[5] else None
        grad_bias = g.grad_pre_activation.sum((0, 1)) if needs[6] else None
        return (
            g.grad_drive if needs[0] else None,
            g.grad_x0 if needs[1] else None,
            g.grad_trace if needs[2] else None,
            grad_weight,
            grad_alpha,
            grad_eta,
            grad_bias,
            None,
            None,
            None,
            None,
        )


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """``"cpp"`` where asked for (or ``"auto"``) on the CPU, in float32 or float64, with the kernel built; else
    ``"torch"``."""
    if backend == "torch":
        return "torch"
    if device.type == "cpu" and dtype in (torch.float32, torch.float64) and cpp_available():
        return "cpp"
    if backend == "cpp":
        raise RuntimeError("the C++ plastic kernel is not available (see the warning above)")
    return "torch"


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
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The fused equivalent of :func:`plastic_rl.core.functional.recurrent_unroll` (same arguments and results).

    ``backend``: ``"cpp"``, ``"torch"`` or ``"auto"`` (the C++ kernel on the CPU when it builds).
    """
    from plastic_rl.core.functional import reset_where

    if plasticity_coefficient is None:
        plasticity = "none"
    else:
        plasticity = "shared" if plasticity_coefficient.numel() == 1 else "full"
    options = UnrollOptions(plasticity, rule, input_mode, trace_clip, bias_neuron)
    backend = resolve_backend(backend, drive.device, drive.dtype)
    if episode_starts is not None:  # the reset at step 0, in autograd; the kernels handle t >= 1
        first = episode_starts[0]
        if bool(first.all()):
            activation = reset_activation.expand_as(activation)
            trace = None if trace is None else torch.zeros_like(trace, requires_grad=False)
        elif bool(first.any()):
            activation = reset_where(first, activation, reset_activation)
            trace = None if trace is None else reset_where(first, trace, 0.0)
    if plasticity == "none":
        trace = None
    elif trace is None:
        trace = weight.new_zeros(activation.shape[0], *weight.shape)
    inputs = (drive, activation, trace, weight, plasticity_coefficient, hebbian_learning_rate, bias)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        outputs, final_trace = _FusedUnrollFunction.apply(*inputs, episode_starts, reset_activation, options, backend)
    else:
        u = _prepare(*inputs, episode_starts, reset_activation, options, backend, False)
        outputs, final_trace = u.outputs, u.trace
    return outputs, outputs[-1], final_trace
