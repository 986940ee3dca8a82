"""The rule registry (plastic_rl.core.rules) and the neuromodulated rules (Backpropamine) across the suite."""

from __future__ import annotations

import copy
import itertools
import math
import warnings

import pytest
import torch

from plastic_rl.cli import main
from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer, PlasticState, functional, fused, rules
from plastic_rl.core.functional import recurrent_unroll

CPP = "cpp" in fused.available_backends()
NEUROMODULATED = ("neuromod", "retroneuromod")
UNKNOWN_RULE = "rule must be one of 'hebb', 'oja', 'neuromod', 'retroneuromod'; got 'bcm'"


def _unroll_arguments(batch=2, size=4, steps=3):
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(steps, batch, size, generator=generator),  # drive
        torch.zeros(batch, size),  # activation
        torch.zeros(batch, size, size),  # trace
        0.3 * torch.randn(size, size, generator=generator),  # weight
        0.3 * torch.randn(size, size, generator=generator),  # plasticity coefficient
        torch.tensor(0.1),  # hebbian learning rate
        None,  # bias
        None,  # episode starts
        torch.zeros(size),  # reset activation
    ]


OPTIONS = dict(input_mode="add", trace_clip=None, bias_neuron=False)


@pytest.mark.parametrize(
    "path", ["autograd", "fused-auto", "fused-torch"] + (["fused-cpp"] if CPP else []) + ["layer", "linear", "policy"]
)
def test_every_path_rejects_an_unknown_rule_with_the_same_error(path):
    arguments = _unroll_arguments()
    with pytest.raises(ValueError) as error:
        if path == "autograd":
            recurrent_unroll(*arguments, rule="bcm", **OPTIONS)
        elif path.startswith("fused"):
            fused.fused_unroll(*arguments, rule="bcm", **OPTIONS, backend=path.split("-")[1])
        elif path == "layer":
            PlasticRecurrentLayer(4, input_size=2, rule="bcm")
        elif path == "linear":
            PlasticLinear(3, 2, rule="bcm")
        else:
            from plastic_rl.agents.policies import PlasticRecurrentPolicy

            PlasticRecurrentPolicy(None, None, lambda _: 1e-3, rule="bcm")
    assert str(error.value) == UNKNOWN_RULE


def _register_a_rule_without_a_fused_form(monkeypatch):
    """``plain_hebb``: decaying Hebb registered without its decay form, so that only the autograd loop runs it."""
    monkeypatch.setattr(rules, "_REGISTRY", dict(rules._REGISTRY))
    rules.plasticity_rule("plain_hebb", summary="decaying Hebb, autograd only")(rules.hebb)


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if CPP else []))
def test_the_fused_backends_reject_a_rule_they_do_not_run(backend, monkeypatch):
    """The defect this registry fixes: the fused PyTorch path used to run Oja for any rule but "hebb"."""
    _register_a_rule_without_a_fused_form(monkeypatch)
    allowed = "'hebb', 'oja', 'neuromod', 'retroneuromod'"
    with pytest.raises(ValueError, match=f"rule must be one of {allowed} with the fused '{backend}' backend"):
        fused.fused_unroll(*_unroll_arguments(), rule="plain_hebb", **OPTIONS, backend=backend)


def test_each_backends_rules_come_from_the_registry():
    every_rule = ("hebb", "oja", "neuromod", "retroneuromod")
    assert rules.rule_names() == rules.rule_names("torch") == rules.rule_names("cpp") == every_rule
    assert rules.kernel_rule_codes() == {"hebb": 0, "oja": 1, "neuromod": 2, "retroneuromod": 3}
    with pytest.raises(ValueError, match="backend must be one of"):
        rules.rule_names("triton")
    with pytest.raises(ValueError, match="already registered"):
        rules.plasticity_rule("hebb", summary="again")(rules.hebb)
    with pytest.raises(ValueError, match="gain and gate must match modulated and eligibility"):
        rules.plasticity_rule("gated_hebb", summary="", decay_form=rules.DecayForm(lambda post: 1.0, gated=True))(
            rules.hebb
        )
    with pytest.raises(ValueError, match="gain must be one of 'eta', 'modulation'; got 'dopamine'"):
        rules.DecayForm(lambda post: 1.0, gain="dopamine")


@pytest.mark.skipif(not CPP, reason="the C++ kernel is not built here")
def test_the_cpp_kernel_runs_the_registrys_codes():
    assert dict(fused.cpp_extension_module().rule_codes()) == rules.kernel_rule_codes()


def _layer(size=4, *, seed=0, **kwargs):
    layer = PlasticRecurrentLayer(size, input_mapping="identity", **kwargs).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        if layer.eta_raw is not None:
            layer.set_hebbian_learning_rate(0.3)
    return layer


def test_a_rule_without_a_fused_form_runs_on_autograd_under_auto_with_one_notice(monkeypatch):
    monkeypatch.setattr(functional, "_notice_autograd_fallback", functional._notice_autograd_fallback.__wrapped__)
    _register_a_rule_without_a_fused_form(monkeypatch)
    layer = _layer(rule="plain_hebb", implementation="auto")
    reference = copy.deepcopy(layer)
    reference.implementation = "autograd"
    inputs = torch.randn(11, 2, 4, dtype=torch.float64)
    starts = torch.zeros(11, 2, dtype=torch.bool)
    starts[5, 0] = True
    gradients = {}
    for name, candidate in (("auto", layer), ("autograd", reference)):
        # Under "auto" the loop is checkpointed (segments of 4 steps recomputed in the backward): same gradients.
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            outputs, state = candidate(inputs, None, starts)
        # Only the suite's own: a ResourceWarning of another test's unclosed file may be collected meanwhile.
        notices = [str(warning.message) for warning in record if not issubclass(warning.category, ResourceWarning)]
        if name == "auto":
            assert len(notices) == 1 and "\n" not in notices[0]
            assert "does not run rule 'plain_hebb'" in notices[0] and "using the autograd loop" in notices[0]
        else:
            assert notices == []
        loss = (outputs * torch.linspace(-1, 1, outputs.numel(), dtype=outputs.dtype).view(outputs.shape)).sum()
        loss = loss + state.hebbian_trace.square().sum()
        gradients[name] = [outputs, state.hebbian_trace, *torch.autograd.grad(loss, list(candidate.parameters()))]
    for checkpointed, plain in zip(gradients["auto"], gradients["autograd"], strict=True):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="implementation='fused' runs the rules 'hebb', 'oja', 'neuromod'"):
        PlasticRecurrentLayer(4, input_size=2, rule="plain_hebb", implementation="fused")


def test_a_new_rule_is_one_registered_function_and_its_decay_form_makes_it_fused(monkeypatch):
    """A rule registered from outside the package runs on every path, its fused backward derived from its form."""
    monkeypatch.setattr(rules, "_REGISTRY", dict(rules._REGISTRY))

    @rules.plasticity_rule(
        "slow_oja",
        summary="H <- H + eta post (pre - post^3 H)",
        decay_form=rules.DecayForm(forgetting=lambda post: post**4, forgetting_derivative=lambda post: 4 * post**3),
    )
    def slow_oja(traces, pre, post, eta, modulation):
        hebbian = traces.hebbian
        return rules.Traces(hebbian + eta * post.unsqueeze(1) * (pre.unsqueeze(2) - post.pow(3).unsqueeze(1) * hebbian))

    assert rules.rule_names("torch")[-1] == "slow_oja" and "slow_oja" not in rules.rule_names("cpp")
    layer = _layer(5, rule="slow_oja", bias="neuron", input_mode="clamp")
    inputs = torch.randn(12, 3, 4, dtype=torch.float64)
    inputs[inputs.abs() < 0.7] = 0.0
    starts = torch.zeros(12, 3, dtype=torch.bool)
    starts[6, 1] = True
    results = {}
    for implementation in ("autograd", "fused"):
        candidate = copy.deepcopy(layer)
        candidate.implementation = implementation
        monkeypatch.setattr(fused, "resolve_backend", lambda requested, device, dtype=None, rule=None: "torch")
        leaf = inputs.clone().requires_grad_()
        outputs, state = candidate(leaf, None, starts)
        loss = (outputs * torch.linspace(-1, 1, outputs.numel(), dtype=outputs.dtype).view(outputs.shape)).sum()
        loss = loss + state.hebbian_trace.square().sum()
        parameters = [leaf, *candidate.parameters()]
        results[implementation] = [outputs, *torch.autograd.grad(loss, parameters)]
    for fused_value, autograd_value in zip(results["fused"], results["autograd"], strict=True):
        torch.testing.assert_close(fused_value, autograd_value, rtol=1e-10, atol=1e-12)


def _reference_neuromodulated_step(layer, activation, drive, hebb, eligibility):
    """Backpropamine's equations element by element, in Python floats (one batch row)."""
    n = layer.hidden_size
    w, alpha, b = layer.weight.tolist(), layer.plasticity_coefficient.tolist(), layer.bias.tolist()
    modulator_weight, modulator_bias = layer.modulator.weight.tolist(), layer.modulator.bias.tolist()
    x = activation.tolist()
    new_x = [
        math.tanh(sum((w[i][j] + alpha[i][j] * hebb[i][j]) * x[i] for i in range(n)) + b[j] + drive[j])
        for j in range(n)
    ]
    modulation = [
        math.tanh(sum(row[i] * new_x[i] for i in range(n)) + bias)
        for row, bias in zip(modulator_weight, modulator_bias, strict=True)
    ]
    eta = 0.0 if layer.hebbian_learning_rate is None else layer.hebbian_learning_rate.item()
    new_hebb = [[0.0] * n for _ in range(n)]
    new_eligibility = [[0.0] * n for _ in range(n)]
    for i, j in itertools.product(range(n), range(n)):
        m = modulation[0] if len(modulation) == 1 else modulation[j]
        if layer.rule == "neuromod":
            new_hebb[i][j] = hebb[i][j] + m * x[i] * new_x[j]
        else:
            new_hebb[i][j] = hebb[i][j] + m * eligibility[i][j]
            new_eligibility[i][j] = (1 - eta) * eligibility[i][j] + eta * x[i] * new_x[j]
        new_hebb[i][j] = max(-layer.trace_clip, min(layer.trace_clip, new_hebb[i][j]))
    return new_x, new_hebb, new_eligibility


@pytest.mark.parametrize("rule, modulation", list(itertools.product(NEUROMODULATED, ("shared", "per_neuron"))))
def test_neuromodulated_step_matches_backpropamines_equations(rule, modulation):
    layer = _layer(4, rule=rule, modulation=modulation, trace_clip=0.4)
    assert layer.modulator.out_features == (1 if modulation == "shared" else 4)
    assert (layer.hebbian_learning_rate is None) == (rule == "neuromod")
    generator = torch.Generator().manual_seed(3)
    activation = torch.randn(2, 4, generator=generator, dtype=torch.float64).tanh()
    hebb = 0.3 * torch.randn(2, 4, 4, generator=generator, dtype=torch.float64)
    eligibility = 0.5 * torch.randn(2, 4, 4, generator=generator, dtype=torch.float64) if rule != "neuromod" else None
    inputs = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    new_activation, state = layer.step(inputs, PlasticState(activation, hebb, eligibility))
    assert (state.eligibility_trace is None) == (rule == "neuromod")
    for b in range(2):
        expected_x, expected_hebb, expected_eligibility = _reference_neuromodulated_step(
            layer, activation[b], inputs[b].tolist(), hebb[b].tolist(), None if eligibility is None else eligibility[b]
        )
        torch.testing.assert_close(new_activation[b], torch.tensor(expected_x, dtype=torch.float64))
        torch.testing.assert_close(state.hebbian_trace[b], torch.tensor(expected_hebb, dtype=torch.float64))
        if eligibility is not None:
            torch.testing.assert_close(
                state.eligibility_trace[b], torch.tensor(expected_eligibility, dtype=torch.float64)
            )


@pytest.mark.parametrize("rule, modulation", list(itertools.product(NEUROMODULATED, ("shared", "per_neuron"))))
def test_gradcheck_neuromodulated_unroll(rule, modulation):
    """float64 gradients of the recurrent unroll (through an episode start) against finite differences."""
    torch.manual_seed(4)
    layer = PlasticRecurrentLayer(4, input_size=3, rule=rule, modulation=modulation).double()
    names = [name for name, _ in layer.named_parameters()]
    starts = torch.zeros(6, 2, dtype=torch.bool)
    starts[3, 1] = True
    inputs = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)

    def unroll(inputs, *parameters):
        outputs, state = torch.func.functional_call(
            layer, dict(zip(names, parameters, strict=True)), (inputs,), {"episode_starts": starts}
        )
        eligibility = 0.0 if state.eligibility_trace is None else state.eligibility_trace.sum()
        return outputs.sum(dim=-1), state.hebbian_trace.sum() + eligibility

    parameters = [0.6 * torch.randn_like(p).requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(unroll, (inputs, *parameters))


@pytest.mark.parametrize("rule", NEUROMODULATED)
def test_gradcheck_neuromodulated_linear_layer(rule):
    torch.manual_seed(5)
    layer = PlasticLinear(3, 4, rule=rule, output_activation="tanh").double()
    names = [name for name, _ in layer.named_parameters()]
    features = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)

    def unroll(features, *parameters):
        logits, state = torch.func.functional_call(layer, dict(zip(names, parameters, strict=True)), (features,))
        return logits.sum(dim=-1), state.hebbian_trace.sum()

    parameters = [0.6 * torch.randn_like(p).requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(unroll, (features, *parameters))


def test_retroactive_state_resets_both_traces_at_episode_starts():
    layer = _layer(5, rule="retroneuromod", trace_clip=1.0)
    inputs = torch.randn(8, 2, 5, dtype=torch.float64)
    starts = torch.zeros(8, 2, dtype=torch.bool)
    starts[4] = True
    outputs, state = layer(inputs, None, starts)
    first, middle = layer(inputs[:4])
    second, last = layer(inputs[4:])
    torch.testing.assert_close(outputs, torch.cat([first, second]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.eligibility_trace, last.eligibility_trace, rtol=1e-12, atol=1e-12)
    assert middle.eligibility_trace.abs().sum() > 0 and state.hebbian_trace.abs().max() <= 1.0
    with pytest.raises(ValueError, match="eligibility_trace must have shape"):
        layer.step(inputs[0], PlasticState(state.activation, state.hebbian_trace, state.hebbian_trace[:1]))
    with pytest.raises(ValueError, match="eligibility_trace must be None unless"):
        _layer(5).step(inputs[0], state)


@pytest.mark.parametrize("policy", NEUROMODULATED)
def test_train_a_neuromodulated_policy_through_the_cli(tmp_path, policy):
    threads = torch.get_num_threads()  # the command sets its process's thread count: give the suite its own back
    arguments = ["train", "-f", str(tmp_path), "--env", "PlasticMaze-v0", "--policy", policy, "-n", "20"]
    arguments += ["--n-envs", "2", "--no-progress-bar", "--env-kwargs", "size:5", "episode_length:10"]
    arguments += ["-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one-line autograd notice
        assert main(arguments) == 0
    torch.set_num_threads(threads)
    assert (tmp_path / "plastic_a2c" / "PlasticMaze-v0_1").is_dir()
