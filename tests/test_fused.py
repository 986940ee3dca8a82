"""The fused unroll (plastic_rl.core.fused) against the plain autograd reference.

Every available backend is tested: the PyTorch one always, the C++ one where it builds (it is built
once per session, on first use). ``PLASTIC_RL_NO_CPP=1`` and a failing build are tested explicitly.
"""

import copy
import functools
import gc
import itertools
import os
import sys
import time
import warnings
import weakref
from pathlib import Path

import pytest
import torch

from plastic_rl.core import PlasticRecurrentLayer, PlasticState, fused, rules

BACKENDS = fused.available_backends()
# The C++ kernel has two schedules: the threads share the rows of every step ("rows"), or each unrolls slices
# of the batch ("sliced"; two slices, so that the tests' batches of 2 and 3 make slices of one and of two).
SLICES = {"rows": 1, "sliced": 2}
VARIANTS = ["torch"] + ([f"cpp-{schedule}" for schedule in SLICES] if "cpp" in BACKENDS else [])


@pytest.fixture
def backend(request, monkeypatch):
    """Route the layer's fused unroll to one backend (and the C++ kernel to one schedule)."""
    backend, _, schedule = request.param.partition("-")
    monkeypatch.setattr(fused, "resolve_backend", lambda requested, device, dtype=None, rule=None: backend)
    if schedule:
        monkeypatch.setattr(fused.cpp_backend, "batch_slices", lambda batch: min(batch, SLICES[schedule]))
    return backend


def _layer(hidden_size, *, scale=0.5, eta=0.3, seed=0, dtype=torch.float64, **kwargs):
    layer = PlasticRecurrentLayer(hidden_size, input_mapping="identity", **kwargs).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=dtype))
        if layer.eta_raw is not None:
            layer.set_hebbian_learning_rate(eta)
    return layer


def _gradients(layer, implementation, inputs, state, starts, final_trace_weight=0.7, recorded=None):
    """Outputs and the gradients of a loss on every output and on the final state, w.r.t. everything (of the layer
    itself when differentiating its ``recorded`` unroll, which watches its parameters)."""
    if recorded is None:
        layer = copy.deepcopy(layer)
        layer.implementation = implementation
    inputs = inputs.detach().clone().requires_grad_()
    leaves = [inputs]
    if state is not None:
        state = PlasticState(*(None if x is None else x.detach().clone().requires_grad_() for x in state))
        leaves += [x for x in state if x is not None]
    outputs, final = layer(inputs, state, starts, recorded=recorded)
    weights = torch.linspace(-1, 1, outputs.numel(), dtype=outputs.dtype).reshape(outputs.shape)
    loss = (outputs * weights).sum() + final.activation.square().sum()
    if final.hebbian_trace is not None:
        loss = loss + final_trace_weight * final.hebbian_trace.sin().sum()
    if final.eligibility_trace is not None:
        loss = loss + final.eligibility_trace.cos().sum()
    parameters = list(layer.parameters())
    gradients = torch.autograd.grad(loss, parameters + leaves, allow_unused=True)
    return outputs.detach(), final, gradients


def _assert_same_gradients(expected, actual, rtol):
    for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
        if e is None:
            assert a is None or torch.all(a == 0), f"gradient {index}: expected none"
            continue
        scale = e.abs().max().clamp_min(1e-30)
        assert (a - e).abs().max() <= rtol * scale, f"gradient {index}: {((a - e).abs().max() / scale).item():.2e}"


def _random_state(layer, batch, generator):
    state = layer.initial_state(batch)
    activation = state.activation + 0.3 * torch.randn(state.activation.shape, generator=generator, dtype=torch.float64)
    traces = [
        None if trace is None else 0.2 * torch.randn(trace.shape, generator=generator, dtype=torch.float64)
        for trace in (state.hebbian_trace, state.eligibility_trace)
    ]
    return PlasticState(activation, *traces)


CASES = [
    (rule, plasticity, mode, bias, clip)
    for rule, plasticity, (mode, bias), clip in itertools.product(
        ("hebb", "oja"), ("full", "shared", "none"), (("add", "vector"), ("clamp", "neuron")), (None, 0.3)
    )
    if not (plasticity == "none" and (rule == "oja" or clip is not None))
]


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("rule,plasticity,input_mode,bias,clip", CASES)
def test_float64_gradients_equal_autograd(backend, rule, plasticity, input_mode, bias, clip):
    n, steps, batch = 6, 12, 3
    layer = _layer(n, rule=rule, plasticity=plasticity, input_mode=input_mode, bias=bias, trace_clip=clip)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(steps, batch, layer.input_size, generator=generator, dtype=torch.float64)
    if input_mode == "clamp":
        inputs[inputs.abs() < 0.7] = 0.0  # some neurons clamped, some free
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0, 0] = True  # a partial reset at step 0 (done in autograd, before the fused function)
    starts[5, 1] = True
    starts[7] = True
    state = _random_state(layer, batch, generator)
    expected_outputs, expected_final, expected = _gradients(layer, "autograd", inputs, state, starts)
    outputs, final, actual = _gradients(layer, "fused", inputs, state, starts)
    torch.testing.assert_close(outputs, expected_outputs, rtol=1e-12, atol=1e-12)
    if expected_final.hebbian_trace is not None:
        torch.testing.assert_close(final.hebbian_trace, expected_final.hebbian_trace, rtol=1e-12, atol=1e-12)
    _assert_same_gradients(expected, actual, rtol=1e-10)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize(
    "rule,eta,clip,expected_plan",
    [
        ("hebb", 0.05, None, "reverse"),  # one inverted run over the whole sequence
        ("hebb", 0.5, None, "reverse"),  # inverted runs of 10 steps between checkpoints
        ("hebb", 0.9, None, "recompute"),  # inverting 0.1 per step is too unstable: recompute from checkpoints
        ("oja", 0.7, None, "recompute"),
        ("hebb", 0.5, 0.2, "recompute"),  # clipping is not invertible (on the C++ kernel: see _expected_plan)
    ],
)
def test_long_sequences_with_large_eta(backend, rule, eta, clip, expected_plan):
    n, steps, batch = 5, 150, 2
    layer = _layer(n, rule=rule, eta=eta, trace_clip=clip, bias="neuron", input_mode="clamp", scale=0.8)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(steps, batch, layer.input_size, generator=generator, dtype=torch.float64)
    inputs[inputs.abs() < 1.0] = 0.0
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[[0, 41, 97], 0] = True  # resets inside the sequence, between checkpoints
    plan = fused.plan_checkpoints(steps, eta, _options(layer), torch.float64, 2.0, starts, backend == "cpp")
    assert ("reverse" if plan.reverse else "recompute") == _expected_plan(backend, clip, expected_plan)
    _, _, expected = _gradients(layer, "autograd", inputs, None, starts)
    _, _, actual = _gradients(layer, "fused", inputs, None, starts)
    _assert_same_gradients(expected, actual, rtol=1e-10)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("rule", ("hebb", "oja"))
def test_gradients_without_episode_starts(backend, rule):
    layer = _layer(6, rule=rule, input_mode="add", bias="vector")
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(20, 3, 6, generator=generator, dtype=torch.float64)
    state = _random_state(layer, 3, generator)
    _, _, expected = _gradients(layer, "autograd", inputs, state, None)
    _, _, actual = _gradients(layer, "fused", inputs, state, None)
    _assert_same_gradients(expected, actual, rtol=1e-10)


# The neuromodulated rules (Backpropamine) on the backends that run them.
MODULATED_VARIANTS = [v for v in VARIANTS if rules.get_rule("neuromod").supports(v.partition("-")[0])]
MODULATED_CASES = [
    (rule, modulation, plasticity, mode, bias, clip)
    for rule, modulation, (plasticity, (mode, bias)), clip in itertools.product(
        ("neuromod", "retroneuromod"),
        ("shared", "per_neuron"),
        (("full", ("add", "vector")), ("full", ("clamp", "neuron")), ("shared", ("add", "vector"))),
        (None, 0.3),
    )
]


@pytest.mark.parametrize("backend", MODULATED_VARIANTS, indirect=True)
@pytest.mark.parametrize("rule,modulation,plasticity,input_mode,bias,clip", MODULATED_CASES)
def test_modulated_rules_float64_gradients_equal_autograd(
    backend, rule, modulation, plasticity, input_mode, bias, clip
):  # noqa: E501
    """M(t)'s head, the eligibility trace's state and both modulation shapes, with resets inside the sequence."""
    n, steps, batch = 6, 12, 3
    layer = _layer(
        n, rule=rule, modulation=modulation, plasticity=plasticity, input_mode=input_mode, bias=bias, trace_clip=clip
    )
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(steps, batch, layer.input_size, generator=generator, dtype=torch.float64)
    if input_mode == "clamp":
        inputs[inputs.abs() < 0.7] = 0.0
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0, 0] = starts[5, 1] = True
    starts[7] = True
    state = _random_state(layer, batch, generator)
    expected_outputs, expected_final, expected = _gradients(layer, "autograd", inputs, state, starts)
    outputs, final, actual = _gradients(layer, "fused", inputs, state, starts)
    torch.testing.assert_close(outputs, expected_outputs, rtol=1e-12, atol=1e-12)
    for name in ("hebbian_trace", "eligibility_trace"):
        if getattr(expected_final, name) is not None:
            torch.testing.assert_close(getattr(final, name), getattr(expected_final, name), rtol=1e-12, atol=1e-12)
    _assert_same_gradients(expected, actual, rtol=1e-10)


@pytest.mark.parametrize("backend", MODULATED_VARIANTS, indirect=True)
@pytest.mark.parametrize(
    "rule,eta,clip,expected_plan,every",
    [
        ("neuromod", 0.3, None, "reverse", 150),  # M(t) adds without decay: one inverted run, nothing to amplify
        ("retroneuromod", 0.5, None, "reverse", 10),  # E decays as Hebb's trace: inverted runs between checkpoints
        ("retroneuromod", 0.9, None, "recompute", 13),
        # Clipping is not invertible: segments recomputed; the C++ kernel inverts all that the clip did not touch,
        # between checkpoints sqrt(T) = 13 steps apart at most (every: PyTorch's, then the C++ kernel's)
        ("neuromod", 0.3, 0.2, "recompute", (13, 13)),
        ("neuromod", 0.3, 1.0, "recompute", (13, 13)),  # the clip touches some of the trace's elements, not all
        ("retroneuromod", 0.5, 0.2, "recompute", (13, 10)),
    ],
)
def test_modulated_rules_over_long_sequences(backend, rule, eta, clip, expected_plan, every):
    n, steps, batch = 5, 150, 2
    # At scale 0.8 these dynamics are chaotic over 150 steps: rounding differences of the forward alone (the C++
    # kernel's fused multiply-adds) grow to 1e-10 in the gradients. At 0.5 every path agrees to 1e-13.
    layer = _layer(n, rule=rule, eta=eta, trace_clip=clip, modulation="per_neuron", scale=0.5)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(steps, batch, layer.input_size, generator=generator, dtype=torch.float64)
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[[0, 41, 97], 0] = True  # resets inside the sequence, between checkpoints
    plan = fused.plan_checkpoints(steps, eta, _options(layer), torch.float64, 1.0, starts, backend == "cpp")
    assert ("reverse" if plan.reverse else "recompute") == _expected_plan(backend, clip, expected_plan)
    assert plan.every == (every if clip is None else every[backend == "cpp"])
    _, _, expected = _gradients(layer, "autograd", inputs, None, starts)
    _, _, actual = _gradients(layer, "fused", inputs, None, starts)
    _assert_same_gradients(expected, actual, rtol=1e-10)


def _expected_plan(backend, clip, plan):
    """The C++ kernel rebuilds a clipped trace in reverse (it flags the elements that the clip touched)."""
    return "reverse" if backend == "cpp" and clip is not None else plan


def _options(layer):
    return fused.UnrollOptions(layer.plasticity, layer.rule, layer.input_mode, layer.trace_clip, layer.bias_neuron)


def test_checkpoint_plan_keeps_memory_small():
    options = fused.UnrollOptions("full", "hebb", "add", None, False)
    plan = fused.plan_checkpoints(200, 0.01, options, torch.float32, 1.0, None)
    assert plan.reverse and plan.every == 99  # two checkpoints over 200 steps at eta = 0.01
    clipped_options = fused.UnrollOptions("full", "hebb", "add", 1.0, False)
    clipped = fused.plan_checkpoints(200, 0.01, clipped_options, torch.float32, 1.0, None)
    assert not clipped.reverse and clipped.every == 15  # sqrt(T) spacing: 13 checkpoints + 14 recomputed traces
    assert not clipped.flags_clipping
    # 13 checkpoints + the trace being rebuilt + 14 segments' flags (a bit per element: under half a trace)
    flagged = fused.plan_checkpoints(200, 0.01, clipped_options, torch.float32, 1.0, None, flag_clipping=True)
    assert flagged.reverse and flagged.flags_clipping and flagged.every == 15
    starts = torch.zeros(200, 4, dtype=torch.bool)
    starts[50, 1] = starts[120, 3] = True
    with_resets = fused.plan_checkpoints(200, 0.01, options, torch.float32, 1.0, starts)
    assert with_resets.pre_reset_slots == 2
    assert with_resets.pre_reset_index[50, 1] == 0 and with_resets.pre_reset_index[120, 3] == 1


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernel did not build")
def test_cpp_forward_flags_the_elements_that_the_clip_touched_in_each_segment(monkeypatch):
    """Exactly those (the backward inverts the update of all others), against the traces of the autograd path
    stepped one step at a time; some elements and not others, so that the gradient tests cover both."""
    monkeypatch.setattr(fused, "resolve_backend", lambda requested, device, dtype=None, rule=None: "cpp")
    kept, allocate = [], fused.allocate_buffers

    def keeping(*args, **kwargs):
        kept.append(allocate(*args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(fused, "allocate_buffers", keeping)
    clip, steps, batch = 1.0, 30, 2
    layer = _layer(5, rule="neuromod", eta=0.3, trace_clip=clip, modulation="per_neuron", scale=0.5)
    inputs = torch.randn(steps, batch, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fused_layer = copy.deepcopy(layer)
    fused_layer.implementation = "fused"
    fused_layer(inputs)[0].sum().backward()
    buffers = kept[-1]
    assert buffers.plan.reverse and buffers.plan.flags_clipping
    layer.implementation = "autograd"
    state, touched = layer.initial_state(batch), []
    with torch.no_grad():
        for t in range(steps):  # the trace after the update of step t
            _, state = layer(inputs[t : t + 1], state)
            touched.append(state.hebbian_trace.abs() >= clip)
    every = buffers.plan.every
    expected = torch.stack([torch.stack(touched[s : s + every]).any(0) for s in range(0, steps, every)])
    bits = (buffers.clip_flags.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1  # a bit per element
    assert torch.equal(bits.flatten(-2)[..., :5].bool(), expected)
    assert 0.1 < expected.double().mean() < 0.9


@functools.cache
def _float32_problem(rule):
    n, steps, batch = 200, 100, 2
    layer = _layer(n, rule=rule, eta=0.03, scale=0.05, bias="neuron", input_mode="clamp", dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.sign(torch.randn(steps, batch, n - 1, generator=generator))
    inputs[torch.rand(inputs.shape, generator=generator) < 0.5] = 0.0
    inputs[steps // 2 :] = 0.0
    truth = _float32_gradients(layer, inputs, "autograd", torch.float64)
    reference = _float32_gradients(layer, inputs, "autograd", torch.float32)
    return layer, inputs, truth, reference


def _float32_gradients(layer, inputs, implementation, dtype):
    model = copy.deepcopy(layer).to(dtype)
    model.implementation = implementation
    outputs, _ = model(inputs.to(dtype))
    (outputs[-1] - 1).square().sum().backward()
    return [p.grad.double() for p in model.parameters()]


@pytest.mark.parametrize(
    "backend, rule",
    [(v, rule) for v in VARIANTS for rule in ("hebb", "oja")] + [(v, "neuromod") for v in MODULATED_VARIANTS],
    indirect=["backend"],
)
def test_float32_gradients_at_a_real_size(backend, rule):
    """float32 at the maze's N = 200, T = 100: about as close to the float64 truth as plain autograd in float32.

    Both float32 unrolls differ from float64 by rounding (each about 1e-7 to 1e-6 relative here), in
    different orders of summation; the fused one also rebuilds the trace by inverting the decay (runs of
    32 steps between checkpoints at eta = 0.03), which the checkpoint plan lets amplify rounding at most
    e-fold; and the eta gradient is a sum over T B N^2 terms with some cancellation, summed in another
    order. So the tolerance is ten times autograd's own float32 error plus 1e-5: far below anything that
    matters to SGD (and a wrong term in the backward pass is off by far more), above float32 noise.
    (Near a stationary point of the loss in eta, that sum cancels almost entirely and both float32
    unrolls are 1e-5 to 1e-4 off in eta: not tested here.)
    """
    layer, inputs, truth, reference = _float32_problem(rule)
    actual = _float32_gradients(layer, inputs, "fused", torch.float32)
    for t, r, a in zip(truth, reference, actual, strict=True):
        reference_error = ((r - t).norm() / t.norm()).item()
        error = ((a - t).norm() / t.norm()).item()
        assert error <= 10 * reference_error + 1e-5, (error, reference_error)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
def test_no_grad_unroll_and_step_agree(backend):
    layer = _layer(7, input_mode="add", bias="vector", dtype=torch.float32, scale=0.3)
    layer.implementation = "fused"
    inputs = torch.randn(9, 3, 7)
    starts = torch.zeros(9, 3, dtype=torch.bool)
    starts[4, 2] = True
    with torch.no_grad():
        outputs, final = layer(inputs, episode_starts=starts)
        state = layer.initial_state(3)
        for t in range(9):
            if t == 4:
                state = PlasticState(state.activation.clone(), state.hebbian_trace.clone())
                state.activation[2], state.hebbian_trace[2] = 0.0, 0.0
            activation, state = layer.step(inputs[t], state)
            torch.testing.assert_close(outputs[t], activation)
    torch.testing.assert_close(final.hebbian_trace, state.hebbian_trace)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
def test_gradient_to_a_detached_initial_state_is_optional(backend):
    """The RL policy unrolls from a detached state snapshot: parameters get gradients, the state none."""
    layer = _layer(5, dtype=torch.float32)
    layer.implementation = "fused"
    state = layer.initial_state(2)
    state = PlasticState(state.activation + 0.1, state.hebbian_trace + 0.1)
    outputs, _ = layer(torch.randn(6, 2, 5), state)
    outputs.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
def test_unroll_frees_its_graph_and_buffers(backend):
    """The function must not keep its outputs alive through ctx (a cycle autograd cannot free)."""
    layer = _layer(5, dtype=torch.float32)
    layer.implementation = "fused"
    outputs, state = layer(torch.randn(6, 2, 5))
    outputs.sum().backward()
    outputs_alive, trace_alive = weakref.ref(outputs), weakref.ref(state.hebbian_trace)
    del outputs, state
    gc.collect()
    assert outputs_alive() is None and trace_alive() is None


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernel did not build")
@pytest.mark.parametrize("slices", (1, 3))
@pytest.mark.parametrize(
    "options",
    [{}, {"rule": "oja", "plasticity": "shared", "trace_clip": 0.5}],  # reverse rebuild; segments recomputed
    ids=["hebb-full", "oja-shared-clipped"],
)
def test_cpp_results_do_not_depend_on_the_thread_count(monkeypatch, slices, options):
    """One thread against two and seven: slices of the batch, or a team sharing the rows of every step (slices = 1).

    Seven threads on a small machine are more than its cores: team members then miss sections or join them late, and
    member 0 runs sections alone, none of which may change a result.
    """
    monkeypatch.setattr(fused, "resolve_backend", lambda requested, device, dtype=None, rule=None: "cpp")
    monkeypatch.setattr(fused.cpp_backend, "batch_slices", lambda batch: slices)
    layer = _layer(300, dtype=torch.float32, scale=0.05, bias="neuron", input_mode="clamp", **options)
    layer.implementation = "fused"
    inputs = torch.sign(torch.randn(30, 4, 299, generator=torch.Generator().manual_seed(5)))
    starts = torch.zeros(30, 4, dtype=torch.bool)
    starts[[11, 23], 1] = True
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 7):
            torch.set_num_threads(count)
            layer.zero_grad()
            outputs, _ = layer(inputs, episode_starts=starts)
            outputs[-1].square().sum().backward()
            results.append([outputs.detach()] + [p.grad.clone() for p in layer.parameters()])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_implementation_is_validated():
    with pytest.raises(ValueError, match="implementation"):
        PlasticRecurrentLayer(4, input_size=2, implementation="triton")


def test_no_cpp_environment_variable_forces_the_pytorch_backend(monkeypatch):
    monkeypatch.setenv(fused.NO_CPP_ENVIRONMENT_VARIABLE, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forcing the fallback is not worth a warning
        assert fused.cpp_extension_module.__wrapped__() is None
    monkeypatch.setattr(fused.cpp_backend, "cpp_extension_module", lambda: None)
    assert fused.available_backends() == ("torch",)
    assert fused.resolve_backend("auto", torch.device("cpu")) == "torch"
    layer = _layer(5, dtype=torch.float32)
    layer.implementation = "fused"
    outputs, _ = layer(torch.randn(4, 2, 5))
    outputs.sum().backward()
    assert layer.weight.grad is not None


def test_failed_build_falls_back_with_a_one_line_warning(monkeypatch):
    from torch.utils import cpp_extension

    def failing_load(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\n(and a second line)")

    monkeypatch.delenv(fused.NO_CPP_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(cpp_extension, "load", failing_load)
    with pytest.warns(UserWarning, match="using the PyTorch path") as record:
        assert fused.cpp_extension_module.__wrapped__() is None
    message = str(record[0].message)
    assert "\n" not in message and "Ninja is required" in message


@pytest.mark.skipif("cpp" not in BACKENDS or sys.platform != "linux", reason="needs the C++ kernel, on Linux")
def test_cpp_kernel_runs_on_torchs_threads_on_linux():
    """Without -fopenmp, at::parallel_for compiles to a plain loop and the kernel silently runs on one thread."""
    assert fused.cpp_extension_module().multithreaded()


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernel did not build")
@pytest.mark.parametrize("clip", (None, 0.3))
def test_cpp_team_of_threads_equals_autograd_in_float64(monkeypatch, clip):
    """A single episode big enough (N^2 >= 2^14) for two threads to share each step's rows."""
    monkeypatch.setattr(fused, "resolve_backend", lambda requested, device, dtype=None, rule=None: "cpp")
    layer = _layer(140, scale=0.1, eta=0.4, trace_clip=clip, bias="neuron", input_mode="clamp")
    generator = torch.Generator().manual_seed(6)
    inputs = torch.randn(24, 1, layer.input_size, generator=generator, dtype=torch.float64)
    inputs[inputs.abs() < 0.8] = 0.0
    starts = torch.zeros(24, 1, dtype=torch.bool)
    starts[9] = True
    _, _, expected = _gradients(layer, "autograd", inputs, None, starts)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, _, actual = _gradients(layer, "fused", inputs, None, starts)
    finally:
        torch.set_num_threads(threads)
    _assert_same_gradients(expected, actual, rtol=1e-10)


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize("rule, plasticity", [("hebb", "full"), ("oja", "full"), ("hebb", "shared")])
def test_overwriting_the_state_steps_as_a_fresh_unroll_does(backend, rule, plasticity):
    """A rollout's one-step calls may write the new trace into the old state's memory: same results, no new buffer."""
    layer = _layer(5, rule=rule, plasticity=plasticity, scale=0.3, implementation="fused", dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(12, 3, 5, generator=generator)
    starts = torch.rand(12, 3, generator=generator) < 0.2
    starts[4] = True  # a step where every episode starts: the reset at step 0 of that call
    fresh, overwritten = layer.initial_state(3), layer.initial_state(3)
    with torch.no_grad():
        for t in range(inputs.shape[0]):
            fresh_output, fresh = layer(inputs[t : t + 1], fresh, starts[t : t + 1])
            memory = overwritten.hebbian_trace.data_ptr()
            output, overwritten = layer(inputs[t : t + 1], overwritten, starts[t : t + 1], overwrite_state=True)
            torch.testing.assert_close(output, fresh_output, rtol=0, atol=0)
            torch.testing.assert_close(overwritten.hebbian_trace, fresh.hebbian_trace, rtol=0, atol=0)
            if not bool(starts[t].any()):  # no reset at this call's step 0: the trace was stepped in place
                assert overwritten.hebbian_trace.data_ptr() == memory


@pytest.mark.parametrize("backend", VARIANTS, indirect=True)
@pytest.mark.parametrize(
    "rule, plasticity, clip", [("hebb", "full", None), ("oja", "full", None), ("hebb", "shared", None),
                               ("hebb", "none", None), ("oja", "full", 0.3)]
)  # fmt: skip
@pytest.mark.parametrize("threads", (1, 2))
def test_a_recorded_rollout_steps_and_differentiates_as_the_whole_unroll(backend, rule, plasticity, clip, threads):
    _check_recorded_rollout(backend, threads, rule=rule, plasticity=plasticity, trace_clip=clip)


@pytest.mark.parametrize("backend", MODULATED_VARIANTS, indirect=True)
@pytest.mark.parametrize("rule, modulation, clip", [("neuromod", "per_neuron", None), ("retroneuromod", "shared", 0.3)])
@pytest.mark.parametrize("threads", (1, 2))
def test_a_recorded_rollout_of_a_modulated_rule_differentiates_as_the_whole_unroll(
    backend, rule, modulation, clip, threads
):
    _check_recorded_rollout(backend, threads, rule=rule, modulation=modulation, trace_clip=clip)


def _check_recorded_rollout(backend, threads, **layer_options):
    """Stepped one call at a time (settled once midway, episodes starting inside it), a recording gives the whole
    unroll's activations and final state to the bit, steps the caller's trace in place, and its gradients are the
    whole unroll's; on the C++ kernel with two threads, each step's product runs in the background between calls."""
    layer = _layer(5, eta=0.6, implementation="fused", **layer_options)
    generator = torch.Generator().manual_seed(4)
    steps, batch = 12, 3
    inputs = torch.randn(steps, batch, 5, generator=generator, dtype=torch.float64)
    starts = torch.rand(steps, batch, generator=generator) < 0.2
    starts[0] = torch.tensor([True, False, True])
    starts[5, 1] = starts[9, 0] = True
    state = _random_state(layer, batch, generator)
    expected_outputs, expected_final, expected_gradients = _gradients(layer, "fused", inputs, state, starts)
    live = PlasticState(*(None if part is None else part.clone() for part in state))
    default_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        recording = layer.record(steps, live)
    finally:
        torch.set_num_threads(default_threads)
    sliced = fused.cpp_backend.batch_slices(batch) > 1  # a single slice's threads share each step's rows instead
    assert recording.overlapped == (backend == "cpp" and threads == 2 and sliced)
    for t in range(steps):
        output = layer.recorded_step(inputs[t], recording, starts[t] if bool(starts[t].any()) else None)
        torch.testing.assert_close(output, expected_outputs[t], rtol=0, atol=0)
        if t == 6:
            recording.state()  # the trace update of step 6 done now (a bootstrap's need), not with step 7's product
    activation, trace, eligibility = recording.state()
    torch.testing.assert_close(activation, expected_final.activation.detach(), rtol=0, atol=0)
    for name, stepped in (("hebbian_trace", trace), ("eligibility_trace", eligibility)):
        if getattr(expected_final, name) is None:
            assert stepped is None
        else:
            torch.testing.assert_close(stepped, getattr(expected_final, name).detach(), rtol=0, atol=0)
            assert stepped.data_ptr() == getattr(live, name).data_ptr()
    outputs, _, gradients = _gradients(layer, "fused", inputs, state, starts, recorded=recording)
    torch.testing.assert_close(outputs, expected_outputs, rtol=0, atol=0)
    _assert_same_gradients(expected_gradients, gradients, rtol=1e-12)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernel did not build")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc")
def test_a_recordings_background_threads_end_with_its_last_step_or_with_it():
    """The worker's threads run from the recording's creation to its last step; a recording dropped midway (a rollout
    stopped by a callback) ends them too, after the product it had started."""
    layer = _layer(6, eta=0.2, dtype=torch.float32, implementation="fused")
    inputs = torch.randn(4, 4, 6)

    def threads() -> int:
        return len(list(Path("/proc/self/task").iterdir()))

    def threads_come_to(count: int) -> bool:  # a joined thread leaves /proc a moment after its join returns
        for _ in range(200):
            if threads() == count:
                return True
            time.sleep(0.005)
        return False

    default_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            layer(inputs, layer.initial_state(4))  # torch's own threads start now, not while counting
        before = threads()
        # Repeated: ending the threads once raced with a thread's letting go of its last job (a deadlock, sometimes).
        for _ in range(30):
            finished = layer.record(4, layer.initial_state(4))
            dropped = layer.record(4, layer.initial_state(4))
            assert finished.overlapped and dropped.overlapped and threads_come_to(before + 2)
            for t in range(4):
                layer.recorded_step(inputs[t], finished)
            layer.recorded_step(inputs[0], dropped)  # starts step 1's product in the background
            assert threads_come_to(before + 1)
            del dropped  # no reference cycle keeps a recording (and its threads) for the garbage collector
            assert threads_come_to(before)
    finally:
        torch.set_num_threads(default_threads)
    assert finished.overlapped  # it was; the threads were its own


def test_a_recording_is_differentiated_only_finished_and_with_its_parameters():
    layer = _layer(4, eta=0.2, implementation="fused")
    inputs = torch.randn(3, 2, 4, dtype=torch.float64)
    recording = layer.record(3, layer.initial_state(2))
    for t in range(2):
        layer.recorded_step(inputs[t], recording)
    with pytest.raises(ValueError, match="ran 2 of its 3 steps: only a finished recording can be differentiated"):
        layer(inputs.requires_grad_(), layer.initial_state(2), recorded=recording)
    with pytest.raises(ValueError, match=r"inputs must have shape \(B, input_size=4\); got \(2, 3\)"):
        layer.recorded_step(inputs[2, :, :3], recording)
    with pytest.raises(ValueError, match=r"drive must have shape \(B=2, N=4\); got \(1, 4\)"):
        layer.recorded_step(inputs[2, :1], recording)
    with pytest.raises(ValueError, match=r"episode_starts must have shape \(B=2,\); got \(3,\)"):
        layer.recorded_step(inputs[2], recording, torch.ones(3, dtype=torch.bool))
    layer.recorded_step(inputs[2], recording)
    with pytest.raises(RuntimeError, match="all 3 steps of the recorded unroll have run"):
        layer.recorded_step(inputs[2], recording)
    with pytest.raises(ValueError, match=r"recorded unroll is of a \(3, 2, 4\) drive; got \(2, 2, 4\)"):
        layer(inputs[:2], layer.initial_state(2), recorded=recording)
    with torch.no_grad():
        layer.weight.add_(1.0)  # an optimizer step
    with pytest.raises(ValueError, match="the parameters changed since the unroll was recorded"):
        layer(inputs, layer.initial_state(2), recorded=recording)
    fresh = layer.record(3, layer.initial_state(2))
    stepped = torch.stack([layer.recorded_step(inputs[t].detach(), fresh).clone() for t in range(3)])
    outputs, final = layer(inputs, layer.initial_state(2), recorded=fresh)  # no state() call needed first
    torch.testing.assert_close(outputs, stepped, rtol=0, atol=0)
    torch.testing.assert_close(final.hebbian_trace, fresh.state()[1], rtol=0, atol=0)
    assert PlasticRecurrentLayer(4, 4, implementation="autograd").record(3, layer.initial_state(2)) is None
    assert PlasticRecurrentLayer(4, 4, input_mode="clamp").record(3, layer.initial_state(2)) is None


def test_the_kernel_build_is_named_by_its_source_text_not_its_path(tmp_path, monkeypatch):
    # Two checkouts of the same kernel (a clone, a worktree) must share one build rather than take turns rebuilding;
    # other flags (another vector width) are another build.
    import hashlib
    import types

    from plastic_rl.core.fused import cpp_backend

    loads = []
    fake = types.SimpleNamespace(
        _get_build_directory=lambda name, verbose: str(tmp_path / name),
        load=lambda **options: loads.append(options) or "module",
    )
    for checkout in ("a", "b"):
        copy = tmp_path / checkout / "plastic_unroll.cpp"
        copy.parent.mkdir()
        copy.write_bytes(cpp_backend.KERNEL_SOURCE.read_bytes())
        monkeypatch.setattr(cpp_backend, "KERNEL_SOURCE", copy)
        assert cpp_backend._build(fake, openmp=True) == "module"
    digest = hashlib.sha256(copy.read_bytes() + " ".join(loads[0]["extra_cflags"]).encode()).hexdigest()[:12]
    assert loads[0]["name"] == loads[1]["name"] == f"plastic_rl_plastic_unroll_{digest}"
    assert loads[0]["sources"] == loads[1]["sources"] == [str(tmp_path / loads[0]["name"] / "plastic_unroll.cpp")]
    assert (tmp_path / loads[0]["name"] / "plastic_unroll.cpp").read_bytes() == copy.read_bytes()
    copy.write_bytes(copy.read_bytes() + b"\n// changed\n")  # another kernel: its own build
    cpp_backend._build(fake, openmp=True)
    assert loads[2]["name"] != loads[0]["name"]
    monkeypatch.setattr(cpp_backend, "_vector_width", lambda: ["-mprefer-vector-width=128"])
    cpp_backend._build(fake, openmp=True)
    assert loads[3]["name"] != loads[2]["name"] and "-mprefer-vector-width=128" in loads[3]["extra_cflags"]


def test_the_build_uses_the_pip_ninja_even_with_another_first_on_path(tmp_path, monkeypatch):
    # ninja 1.11 and 1.12+ hash build-log commands differently: a system ninja and the pip one rebuilt in turns.
    import shutil

    ninja = pytest.importorskip("ninja")
    from plastic_rl.core.fused import cpp_backend

    other = tmp_path / "ninja"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    cpp_backend._put_pip_ninja_on_path()
    cpp_backend._put_pip_ninja_on_path()  # idempotent: PATH does not grow
    assert os.environ["PATH"].split(os.pathsep)[:2] == [ninja.BIN_DIR, str(tmp_path)]
    assert Path(shutil.which("ninja")).parent == Path(ninja.BIN_DIR)
