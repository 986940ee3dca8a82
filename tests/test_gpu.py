"""What must hold on a CUDA device: the fused unroll against autograd there, a PlasticA2C update, the supervised
trainer. Skipped without one (CI has none); `make gpu-check` runs these and the benchmarks on a GPU machine."""

import copy

import numpy as np
import pytest
import torch

from plastic_rl.core import PlasticRecurrentLayer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _layer(rule: str) -> PlasticRecurrentLayer:
    torch.manual_seed(0)
    layer = PlasticRecurrentLayer(12, input_mapping="identity", rule=rule, modulation="per_neuron").to(torch.float64)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(0, 0.5)
        if layer.eta_raw is not None:
            layer.set_hebbian_learning_rate(0.3)
    return layer


@pytest.mark.parametrize("rule", ("hebb", "oja", "neuromod", "retroneuromod"))
def test_fused_unroll_on_cuda_equals_autograd_on_cuda_and_on_the_cpu(rule):
    inputs = torch.randn(9, 3, 12, dtype=torch.float64)
    starts = torch.zeros(9, 3, dtype=torch.bool)
    starts[4, 1] = True
    results = {}
    for device, implementation in (("cuda", "fused"), ("cuda", "autograd"), ("cpu", "autograd")):
        layer = copy.deepcopy(_layer(rule)).to(device)
        layer.implementation = implementation
        outputs, state = layer(inputs.to(device), None, starts.to(device))
        loss = outputs * torch.linspace(-1, 1, outputs.numel(), device=device, dtype=outputs.dtype).view_as(outputs)
        traces = sum(trace.square().sum() for trace in state[1:] if trace is not None)
        gradients = torch.autograd.grad(loss.sum() + traces, list(layer.parameters()))
        results[(device, implementation)] = [outputs.cpu(), *(gradient.cpu() for gradient in gradients)]
    for reference in (("cuda", "autograd"), ("cpu", "autograd")):
        for expected, actual in zip(results[reference], results[("cuda", "fused")], strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_a_plastic_a2c_update_on_cuda():
    import gymnasium as gym

    import plastic_rl  # noqa: F401  (registers the envs)
    from plastic_rl.agents import PlasticA2C

    env = gym.make("PlasticMaze-v0", size=5, episode_length=10)
    model = PlasticA2C("PlasticRecurrentPolicy", env, n_steps=10, policy_kwargs={"hidden_size": 16}, device="cuda")
    before = {name: parameter.detach().clone() for name, parameter in model.policy.named_parameters()}
    model.learn(20)
    assert model.device.type == "cuda" and all(p.is_cuda for p in model.policy.parameters())
    assert any(not torch.equal(before[name], p) for name, p in model.policy.named_parameters())
    action, _ = model.predict(env.reset(seed=0)[0])
    assert np.isscalar(action.item())


def test_the_supervised_trainer_on_cuda(tmp_path):
    from plastic_rl.cli import main

    tiny = ["--steps", "2", "--pattern-count", "2", "--pattern-size", "10", "--no-progress", "--device", "cuda"]
    assert main(["supervised", "patterns", *tiny, "--run-dir", str(tmp_path / "run")]) == 0
