"""Memory safety of the plastic core: every entry into the unroll checks the shapes it is handed.

The C++ kernel indexes raw pointers with the sizes of the drive, so a buffer of another shape used to be read or
written past its end (issue #11: a state of batch 1 with inputs of batch 3 gave changing rows, then `free(): invalid
next size`). The Python entries raise a ValueError naming the argument; the kernel itself raises (TORCH_CHECK) for any
caller that bypasses them.
"""

import dataclasses
import fcntl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer, PlasticState, fused
from plastic_rl.core.functional import recurrent_unroll
from plastic_rl.core.fused.cpp_backend import cpp_backward, cpp_forward
from plastic_rl.core.unroll_arguments import UnrollArguments

IMPLEMENTATIONS = ["autograd", "fused"]
CPP = "cpp" in fused.available_backends()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("state_batch, input_batch", [(1, 3), (3, 1), (2, 5)])
def test_a_state_of_another_batch_size_is_refused(implementation, state_batch, input_batch):
    layer = PlasticRecurrentLayer(8, 3, implementation=implementation)
    with pytest.raises(ValueError, match=rf"state's activation must have shape \(B={input_batch}"):
        outputs, _ = layer(torch.randn(5, input_batch, 3), layer.initial_state(state_batch))
        outputs.sum().backward()
    with pytest.raises(ValueError, match="state's activation"):
        layer.step(torch.randn(input_batch, 3), layer.initial_state(state_batch))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_trace_of_another_shape_is_refused(implementation):
    layer = PlasticRecurrentLayer(8, 3, implementation=implementation)
    state = layer.initial_state(2)
    for trace in (torch.zeros(2, 8, 7), torch.zeros(1, 8, 8), torch.zeros(2, 64)):
        with pytest.raises(ValueError, match="hebbian_trace must have shape"):
            layer(torch.randn(4, 2, 3), PlasticState(state.activation, trace))
    rnn = PlasticRecurrentLayer(8, 3, plasticity="none", implementation=implementation)
    with pytest.raises(ValueError, match="must be None for a non-plastic layer"):
        rnn(torch.randn(4, 2, 3), PlasticState(state.activation, torch.zeros(2, 8, 8)))


def test_plastic_linear_checks_its_state():
    layer = PlasticLinear(6, 4)
    with pytest.raises(ValueError, match="hebbian_trace must have shape"):
        layer(torch.randn(3, 2, 6), layer.initial_state(5))
    with pytest.raises(ValueError, match="features must have shape"):
        layer.step(torch.randn(2, 7), layer.initial_state(2))


def _unroll_arguments(batch=2, size=5, steps=4):
    layer = PlasticRecurrentLayer(size, input_mapping="identity")
    return dict(
        drive=torch.randn(steps, batch, size),
        activation=torch.zeros(batch, size),
        trace=torch.zeros(batch, size, size),
        weight=layer.weight.detach(),
        plasticity_coefficient=layer.plasticity_coefficient.detach(),
        hebbian_learning_rate=layer.hebbian_learning_rate.detach(),
        bias=layer.bias.detach(),
        episode_starts=torch.zeros(steps, batch, dtype=torch.bool),
        reset_activation=torch.zeros(size),
    )


BAD_ARGUMENTS = [
    ("weight", torch.zeros(5, 4), "weight must have shape"),
    ("drive", torch.zeros(4, 2, 6), "drive must have shape"),
    ("plasticity_coefficient", torch.zeros(5, 4), "plasticity_coefficient must have shape"),
    ("bias", torch.zeros(6), "bias must have shape"),
    ("reset_activation", torch.zeros(4), "reset_activation must have shape"),
    ("episode_starts", torch.zeros(4, 3, dtype=torch.bool), "episode_starts must have shape"),
    ("episode_starts", torch.zeros(4, 2), "episode_starts must be a bool tensor"),
    ("activation", torch.zeros(2, 5, dtype=torch.int64), "activation must be a floating-point tensor"),
    ("hebbian_learning_rate", None, "hebbian_learning_rate must be a one-element tensor"),
]


@pytest.mark.parametrize("entry", ["recurrent_unroll", "fused_unroll"])
@pytest.mark.parametrize("name, value, message", BAD_ARGUMENTS)
def test_unroll_entries_name_the_bad_argument(entry, name, value, message):
    arguments = _unroll_arguments()
    arguments[name] = value
    positional = list(arguments.values())
    options = dict(rule="hebb", input_mode="add", trace_clip=None, bias_neuron=False)
    unroll = recurrent_unroll if entry == "recurrent_unroll" else fused.fused_unroll
    with pytest.raises(ValueError, match=message):
        unroll(*positional, **options)


def _prepared_unroll(batch=3, size=6, steps=7, plasticity="full", **plan_overrides):
    """A valid set of kernel buffers (the forward has run once on them)."""
    arguments = _unroll_arguments(batch, size, steps)
    if plasticity == "shared":
        arguments["plasticity_coefficient"] = torch.full((1,), 0.1)
    arguments["episode_starts"][3, 1] = True
    options = fused.UnrollOptions(plasticity, "hebb", "add", None, False)
    inputs = fused.unroll_inputs(UnrollArguments(*arguments.values()))
    buffers = fused.prepare_unroll(inputs, options, "cpp", keep_for_backward=True)
    if plan_overrides:
        return dataclasses.replace(buffers, plan=dataclasses.replace(buffers.plan, **plan_overrides))
    return buffers


FORWARD_BUFFERS = [
    "initial_activation",
    "initial_trace",
    "weight",
    "plasticity_coefficient",
    "bias",
    "reset_activation",
    "outputs",
    "presynaptic",
    "trace",
]


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
@pytest.mark.parametrize("field", FORWARD_BUFFERS + ["checkpoints", "trace_matvec"])
def test_the_cpp_forward_checks_every_buffer(field):
    plasticity = "shared" if field == "trace_matvec" else "full"
    u = _prepared_unroll(plasticity=plasticity)
    original = getattr(u, field)
    if original is None:  # a buffer this plan does not use: hand one of the wrong shape anyway
        original = torch.zeros(1, 2)
    wrong = torch.zeros(*original.shape[:-1], original.shape[-1] + 1) if original.dim() else torch.zeros(2)
    with pytest.raises(RuntimeError, match="plastic unroll"):
        cpp_forward(dataclasses.replace(u, **{field: wrong}))


GRADIENT_BUFFERS = [
    "grad_pre_activation",
    "grad_drive",
    "grad_initial_activation",
    "grad_trace",
    "grad_plasticity_coefficient",
]


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
@pytest.mark.parametrize("field", GRADIENT_BUFFERS)
def test_the_cpp_backward_checks_every_gradient_buffer(field):
    u = _prepared_unroll()
    g = fused.UnrollGradients(
        grad_outputs=torch.ones_like(u.drive),
        grad_pre_activation=torch.empty_like(u.drive),
        grad_drive=torch.empty_like(u.drive),
        grad_initial_activation=torch.empty_like(u.initial_activation),
        grad_trace=torch.zeros_like(u.trace),
        grad_plasticity_coefficient=torch.zeros_like(u.weight),
    )
    workspace = u.drive.new_empty((max(u.plan.workspace_traces, 1), *u.trace.shape))
    workspace = workspace[0] if u.plan.reverse else workspace
    cpp_backward(u, g, workspace)  # the valid call runs
    original = getattr(g, field)
    setattr(g, field, torch.zeros(*original.shape[:-1], original.shape[-1] + 1))
    with pytest.raises(RuntimeError, match="plastic unroll"):
        cpp_backward(u, g, workspace)
    setattr(g, field, original)
    with pytest.raises(RuntimeError, match="workspace must have shape"):
        cpp_backward(u, g, torch.zeros(1))


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
def test_the_cpp_kernel_checks_reset_indices():
    u = _prepared_unroll()
    bad_index = torch.full(u.drive.shape[:2], 5, dtype=torch.int64)  # slot 5 of a buffer with no slots
    with pytest.raises(RuntimeError, match="pre_reset_index must lie in"):
        cpp_forward(dataclasses.replace(u, plan=dataclasses.replace(u.plan, pre_reset_index=bad_index)))
    short_starts = torch.zeros(u.drive.shape[0], 1, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="episode starts must have shape"):
        cpp_forward(dataclasses.replace(u, episode_starts=short_starts))
    with pytest.raises(RuntimeError, match="episode starts must be a contiguous CPU bool tensor"):
        cpp_forward(dataclasses.replace(u, episode_starts=torch.zeros(u.drive.shape[:2], dtype=torch.int64)))


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
def test_the_cpp_kernel_checks_the_clip_flags():
    u = _prepared_unroll()
    segments = (u.drive.shape[0] - 1) // u.plan.every + 1
    flags = torch.zeros(segments, *u.trace.shape[:2], (u.trace.shape[2] + 7) // 8, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="clip flags are for a clipped trace only"):
        cpp_forward(dataclasses.replace(u, clip_flags=flags))
    clipped = dataclasses.replace(u, options=dataclasses.replace(u.options, trace_clip=0.5))
    cpp_forward(dataclasses.replace(clipped, clip_flags=flags))  # the valid call runs
    with pytest.raises(RuntimeError, match="clip flags must have shape"):
        cpp_forward(
            dataclasses.replace(clipped, clip_flags=torch.zeros(segments + 1, *flags.shape[1:], dtype=torch.uint8))
        )
    with pytest.raises(RuntimeError, match="clip flags must be a contiguous CPU uint8 tensor"):
        cpp_forward(dataclasses.replace(clipped, clip_flags=flags.float()))


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
def test_the_cpp_forward_checks_its_step_range():
    u = _prepared_unroll()
    steps = u.drive.shape[0]
    cpp_forward(u, fused.StepRange(1, 2, True, False))  # a valid middle step runs
    for bad in [fused.StepRange(0, steps + 1, False, True), fused.StepRange(2, 1, False, True)]:
        with pytest.raises(RuntimeError, match=rf"steps \[{bad.first}, {bad.last}\) must lie in \[0, {steps}\]"):
            cpp_forward(u, bad)
    with pytest.raises(RuntimeError, match="no update can be pending before step 0"):
        cpp_forward(u, fused.StepRange(0, 1, True, False))


def _build_in_a_subprocess() -> subprocess.Popen:
    script = "from plastic_rl.core.fused.cpp_backend import cpp_available\nassert cpp_available()\nprint('ready')"
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_build_lock_left_by_a_killed_build_is_removed_and_a_live_build_is_waited_for_out_loud():
    from plastic_rl.core.fused.cpp_backend import BUILD_LOCK_FILE, TORCH_BUILD_LOCK_FILE, cpp_extension_module

    module = cpp_extension_module()
    if module is None:
        pytest.skip("no C++ kernel on this machine")
    folder = Path(module.__file__).parent
    # A killed build leaves torch's lock file, on which torch waits forever.
    (folder / TORCH_BUILD_LOCK_FILE).write_text("")
    out, errors = _build_in_a_subprocess().communicate(timeout=120)
    assert out.strip() == "ready" and "left by a build that was killed" in errors
    assert not (folder / TORCH_BUILD_LOCK_FILE).exists()
    # While another process builds (holds the lock), a second one says it waits, then goes on.
    with open(folder / BUILD_LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = _build_in_a_subprocess()
        deadline = time.monotonic() + 60
        errors = ""
        while "waiting for another process" not in errors and time.monotonic() < deadline:
            errors += waiting.stderr.readline()
        assert waiting.poll() is None and "waiting for another process to finish building" in errors
    out, _ = waiting.communicate(timeout=120)
    assert out.strip() == "ready"
