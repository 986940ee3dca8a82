import itertools
import math

import numpy as np
import pytest
import torch

from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer, PlasticState

RULES = ("hebb", "oja")
PLASTICITY = ("full", "shared", "none")


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Give every parameter a sizeable random value, so that each term of the equations matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        if getattr(module, "eta_raw", None) is not None:
            module.set_hebbian_learning_rate(0.3)


def _reference_step(layer, inputs, activation, trace):
    """The paper's two equations evaluated element by element, in plain Python floats."""
    n = layer.hidden_size
    w = layer.weight.tolist()
    if layer.plasticity == "full":
        alpha = layer.plasticity_coefficient.tolist()
    elif layer.plasticity == "shared":
        alpha = [[layer.plasticity_coefficient.item()] * n for _ in range(n)]
    else:
        alpha = [[0.0] * n for _ in range(n)]
    eta = 0.0 if layer.hebbian_learning_rate is None else layer.hebbian_learning_rate.item()
    bias = [0.0] * n if layer.bias is None else layer.bias.tolist()
    drive = layer._drive(inputs.unsqueeze(0))[0].tolist()
    x = activation.tolist()
    hebb = trace.tolist() if trace is not None else [[0.0] * n for _ in range(n)]
    new_x = []
    for j in range(n):
        total = sum((w[i][j] + alpha[i][j] * hebb[i][j]) * x[i] for i in range(n)) + bias[j]
        if layer.input_mode == "add":
            value = math.tanh(total + drive[j])
        else:
            value = drive[j] if drive[j] != 0 else math.tanh(total)
        new_x.append(value)
    if layer.bias_neuron:
        new_x[-1] = 1.0
    new_hebb = [[0.0] * n for _ in range(n)]
    for i, j in itertools.product(range(n), range(n)):
        if layer.rule == "hebb":
            new_hebb[i][j] = (1 - eta) * hebb[i][j] + eta * x[i] * new_x[j]
        else:
            new_hebb[i][j] = hebb[i][j] + eta * new_x[j] * (x[i] - new_x[j] * hebb[i][j])
    return torch.tensor(new_x, dtype=torch.float64), torch.tensor(new_hebb, dtype=torch.float64)


@pytest.mark.parametrize(
    "rule,plasticity,input_mode,bias",
    [
        (rule, plasticity, mode, bias)
        for rule in RULES
        for plasticity in PLASTICITY
        for mode, bias in (("add", "vector"), ("clamp", "neuron"))
    ],
)
def test_step_matches_element_by_element_equations(rule, plasticity, input_mode, bias):
    torch.manual_seed(0)
    n = 5
    layer = PlasticRecurrentLayer(
        n, plasticity=plasticity, rule=rule, input_mapping="identity", input_mode=input_mode, bias=bias
    ).double()
    _randomise(layer)
    inputs = torch.randn(2, layer.input_size, dtype=torch.float64)
    inputs[:, 1] = 0.0  # with clamping, an unclamped neuron must follow its lateral input
    activation = torch.randn(2, n, dtype=torch.float64).tanh()
    trace = None if plasticity == "none" else 0.3 * torch.randn(2, n, n, dtype=torch.float64)
    new_activation, new_state = layer.step(inputs, PlasticState(activation, trace))
    for b in range(2):
        expected_x, expected_hebb = _reference_step(
            layer, inputs[b], activation[b], None if trace is None else trace[b]
        )
        torch.testing.assert_close(new_activation[b], expected_x, rtol=1e-12, atol=1e-12)
        if trace is None:
            assert new_state.hebbian_trace is None
        else:
            torch.testing.assert_close(new_state.hebbian_trace[b], expected_hebb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("plasticity", ("full", "shared"))
def test_gradcheck_unroll(rule, plasticity):
    torch.manual_seed(1)
    layer = PlasticRecurrentLayer(4, input_size=3, plasticity=plasticity, rule=rule, trace_clip=None).double()
    _randomise(layer, scale=0.6)
    inputs = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    parameters = [layer.weight, layer.plasticity_coefficient, layer.eta_raw]

    def unroll(inputs, weight, alpha, eta):
        outputs, state = torch.func.functional_call(
            layer,
            {"weight": weight, "plasticity_coefficient": alpha, "eta_raw": eta},
            (inputs,),
        )
        return outputs.sum(dim=-1), state.hebbian_trace.sum()

    assert torch.autograd.gradcheck(unroll, (inputs, *[p.detach().clone().requires_grad_() for p in parameters]))


def test_non_plastic_layer_is_a_vanilla_tanh_rnn():
    torch.manual_seed(2)
    layer = PlasticRecurrentLayer(6, input_size=3, plasticity="none").double()
    _randomise(layer)
    assert layer.plasticity_coefficient is None and layer.hebbian_learning_rate is None
    assert layer.initial_state(2).hebbian_trace is None
    inputs = torch.randn(7, 2, 3, dtype=torch.float64)
    outputs, _ = layer(inputs)
    x = torch.zeros(2, 6, dtype=torch.float64)
    for t in range(7):
        x = torch.tanh(x @ layer.weight + inputs[t] @ layer.input_projection.weight.T + layer.bias)
        torch.testing.assert_close(outputs[t], x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plasticity", ["full", "shared"])
def test_a_lesioned_plastic_layer_is_the_tanh_rnn_of_its_fixed_weights(plasticity):
    from plastic_rl.core.lesion import remove_plasticity

    torch.manual_seed(3)
    layer = PlasticRecurrentLayer(6, input_size=3, plasticity=plasticity).double()
    _randomise(layer)
    inputs = torch.randn(7, 2, 3, dtype=torch.float64)
    plastic, _ = layer(inputs)
    assert remove_plasticity(layer) == 1 and remove_plasticity(torch.nn.Linear(2, 2)) == 0
    lesioned, state = layer(inputs)
    assert state.hebbian_trace.abs().sum() > 0 and not torch.allclose(lesioned, plastic)  # traces form, unused
    x = torch.zeros(2, 6, dtype=torch.float64)
    for t in range(7):
        x = torch.tanh(x @ layer.weight + inputs[t] @ layer.input_projection.weight.T + layer.bias)
        torch.testing.assert_close(lesioned[t], x, rtol=1e-12, atol=1e-12)


def test_shared_plasticity_has_exactly_one_alpha():
    layer = PlasticRecurrentLayer(8, input_size=2, plasticity="shared")
    assert layer.plasticity_coefficient.numel() == 1
    full = PlasticRecurrentLayer(8, input_size=2, plasticity="full")
    assert full.plasticity_coefficient.shape == (8, 8)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("plasticity", PLASTICITY)
def test_reset_inside_unroll_equals_two_separate_unrolls(rule, plasticity):
    torch.manual_seed(3)
    layer = PlasticRecurrentLayer(5, plasticity=plasticity, rule=rule, input_mapping="identity", bias="neuron").double()
    _randomise(layer)
    inputs = torch.randn(9, 3, 4, dtype=torch.float64)
    starts = torch.zeros(9, 3, dtype=torch.bool)
    starts[0] = True
    starts[4, 1] = True  # only the second episode of the batch restarts at step 4
    outputs, final = layer(inputs, state=layer.initial_state(3), episode_starts=starts)
    first, _ = layer(inputs[:4, 1:2])
    second, second_final = layer(inputs[4:, 1:2])
    torch.testing.assert_close(outputs[:, 1:2], torch.cat([first, second]))
    torch.testing.assert_close(final.activation[1:2], second_final.activation)
    whole, _ = layer(inputs[:, 0:1])
    torch.testing.assert_close(outputs[:, 0:1], whole)


def test_step_and_unroll_agree_and_dtype_follows_parameters():
    layer = PlasticRecurrentLayer(6, input_size=3, trace_clip=0.5)
    inputs = torch.randn(4, 2, 3, dtype=torch.float64)  # inputs are cast to the parameters' dtype
    outputs, final = layer(inputs)
    state = layer.initial_state(2)
    for t in range(4):
        activation, state = layer.step(inputs[t], state)
        torch.testing.assert_close(activation, outputs[t])
    assert outputs.dtype == torch.float32
    torch.testing.assert_close(state.hebbian_trace, final.hebbian_trace)
    assert final.hebbian_trace.abs().max() <= 0.5


def test_trace_clip_bounds_the_trace():
    torch.manual_seed(4)
    layer = PlasticRecurrentLayer(5, input_size=5, hebbian_learning_rate=0.9, trace_clip=0.05)
    _, state = layer(3 * torch.randn(10, 2, 5))
    assert state.hebbian_trace.abs().max().item() == pytest.approx(0.05)


def test_bias_neuron_stays_at_one():
    layer = PlasticRecurrentLayer(4, input_mapping="identity", bias="neuron")
    assert layer.input_size == 3
    outputs, _ = layer(torch.randn(3, 2, 3))
    assert torch.all(outputs[..., -1] == 1)
    assert torch.all(layer.initial_state(2).activation[:, -1] == 1)


def test_plastic_linear_step_and_teacher():
    torch.manual_seed(5)
    layer = PlasticLinear(3, 4, rule="hebb").double()
    _randomise(layer)
    features = torch.randn(2, 3, dtype=torch.float64)
    trace = 0.2 * torch.randn(2, 3, 4, dtype=torch.float64)
    teacher = torch.zeros(2, 4, dtype=torch.float64)
    teacher[0, 2] = 1.0  # the first example is labelled, the second is not
    logits, state = layer.step(features, PlasticState(features.new_zeros(2, 0), trace), teacher)
    eta = layer.hebbian_learning_rate
    expected_logits = torch.stack(
        [features[b] @ (layer.weight + layer.plasticity_coefficient * trace[b]) + layer.bias for b in range(2)]
    )
    torch.testing.assert_close(logits, expected_logits)
    post = torch.stack([teacher[0], torch.softmax(logits[1], dim=-1)])
    expected_trace = (1 - eta) * trace + eta * features[:, :, None] * post[:, None, :]
    torch.testing.assert_close(state.hebbian_trace, expected_trace)


def test_plastic_linear_unroll_resets_at_episode_starts():
    layer = PlasticLinear(3, 2, hebbian_learning_rate=0.5)
    features = torch.randn(6, 2, 3)
    starts = torch.zeros(6, 2, dtype=torch.bool)
    starts[3] = True
    outputs, _ = layer(features, episode_starts=starts)
    second, _ = layer(features[3:])
    torch.testing.assert_close(outputs[3:], second)


@pytest.mark.parametrize(
    "kwargs,parameter",
    [
        (dict(hidden_size=4, input_size=2, rule="bcm"), "rule"),
        (dict(hidden_size=4, input_size=2, plasticity="partial"), "plasticity"),
        (dict(hidden_size=4, input_size=2, input_mode="multiply"), "input_mode"),
        (dict(hidden_size=4, input_size=2, input_mapping="conv"), "input_mapping"),
        (dict(hidden_size=4, input_size=2, bias="both"), "bias"),
        (dict(hidden_size=0, input_size=2), "hidden_size"),
        (dict(hidden_size=-3, input_size=2), "hidden_size"),
        (dict(hidden_size=4, input_size=0), "input_size"),
        (dict(hidden_size=4, input_size=2, trace_clip=0.0), "trace_clip"),
        (dict(hidden_size=4, input_size=2, trace_clip=-1.0), "trace_clip"),
        (dict(hidden_size=4, input_size=3, input_mapping="identity"), "input_size"),
        (dict(hidden_size=4), "input_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        PlasticRecurrentLayer(**kwargs)


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="'hebb', 'oja'"):
        PlasticRecurrentLayer(4, input_size=2, rule="bcm")
    with pytest.raises(ValueError, match="in_features"):
        PlasticLinear(0, 3)
    with pytest.raises(ValueError, match="output_activation"):
        PlasticLinear(2, 3, output_activation="relu")


def test_bad_input_shapes_raise_value_error():
    layer = PlasticRecurrentLayer(4, input_size=2)
    with pytest.raises(ValueError, match="inputs"):
        layer(torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match="episode_starts"):
        layer(torch.zeros(3, 2, 2), episode_starts=torch.zeros(3, 1, dtype=torch.bool))


@pytest.mark.parametrize("rule", ["hebb", "oja"])
def test_eta_stays_positive_and_keeps_its_gradient_near_zero(rule):
    # A clamp at 0 zeroed eta's gradient below 0, so a run whose eta crossed 0 lost its plasticity for good; a
    # negative eta would make the decay 1 - eta q exceed 1 and the trace grow without bound.
    torch.manual_seed(0)
    layer = PlasticRecurrentLayer(6, 3, rule=rule)
    with torch.no_grad():
        layer.eta_raw.fill_(-12.0)  # eta ~ 6e-6
    assert 0 < layer.hebbian_learning_rate.item() < 1e-5
    outputs, state = layer(torch.randn(40, 2, 3))
    assert torch.isfinite(state.hebbian_trace).all() and torch.isfinite(outputs).all()
    outputs.square().sum().backward()
    assert layer.eta_raw.grad != 0 and torch.isfinite(layer.eta_raw.grad)


def test_eta_is_set_and_loaded_as_eta():
    layer = PlasticRecurrentLayer(4, 2, rule="oja", hebbian_learning_rate=0.25)
    assert layer.hebbian_learning_rate.item() == pytest.approx(0.25)
    layer.set_hebbian_learning_rate(1e-3)
    assert layer.hebbian_learning_rate.item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="hebbian_learning_rate must be a finite number > 0"):
        layer.set_hebbian_learning_rate(0.0)
    with pytest.raises(ValueError, match="has no eta"):
        PlasticRecurrentLayer(4, 2, plasticity="none").set_hebbian_learning_rate(0.1)
    # A file written when eta was stored as itself loads with that eta (a value at or below 0 as a tiny one).
    legacy = {name: value for name, value in layer.state_dict().items() if name != "eta_raw"}
    for stored, expected in ((0.3, 0.3), (-0.2, 1e-6)):
        copy = PlasticRecurrentLayer(4, 2, rule="oja")
        copy.load_state_dict({**legacy, "hebbian_learning_rate": torch.tensor(stored)})
        assert copy.hebbian_learning_rate.item() == pytest.approx(expected)
        assert torch.equal(copy.plasticity_coefficient, layer.plasticity_coefficient)


def test_plain_data_round_trips_what_checkpoints_hold_and_refuses_object_arrays():
    import collections
    import json
    import random

    from plastic_rl.core.plain_data import from_plain, to_plain

    value = {
        "numpy": np.random.default_rng(0).bit_generator.state,
        "legacy": np.random.RandomState(1).get_state(),
        "python": random.Random(2).getstate(),
        "arrays": [np.arange(6, dtype=np.int16).reshape(2, 3), np.array([True, False]), np.float32(0.5)],
        "episodes": collections.deque([{"r": np.float64(1.5), "l": 3}], maxlen=100),
    }
    plain = to_plain(value)
    json.dumps(plain)  # JSON holds it as it is
    back = from_plain(plain)
    assert back["python"] == value["python"] and back["numpy"] == value["numpy"]
    assert back["legacy"][0] == "MT19937" and np.array_equal(back["legacy"][1], value["legacy"][1])
    assert back["arrays"][0].dtype == np.int16 and np.array_equal(back["arrays"][0], value["arrays"][0])
    assert back["arrays"][0].flags.writeable and back["arrays"][2] == 0.5
    assert back["episodes"] == collections.deque([{"r": 1.5, "l": 3}]) and back["episodes"].maxlen == 100
    np.random.RandomState().set_state(back["legacy"])
    random.Random().setstate(back["python"])
    with pytest.raises(ValueError, match="array of Python objects"):
        to_plain(np.array([object()]))
    with pytest.raises(ValueError, match="refusing an array of Python objects"):
        from_plain({"__ndarray__": "", "dtype": "|O", "shape": [0]})
