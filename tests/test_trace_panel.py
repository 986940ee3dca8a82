"""The agents' trace panel: the neuron order and the three matrices it can show."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plastic_rl.agents import PlasticRecurrentPolicy
from plastic_rl.agents.trace_panel import TracePanel, activity_order, neuron_order


def test_neuron_order_puts_neurons_with_shared_plastic_connections_together():
    rng = np.random.default_rng(0)
    groups = np.array([0, 1] * 6)  # interleaved: two groups of 6 neurons
    alpha = 0.01 * rng.standard_normal((12, 12))
    alpha[np.ix_(groups == 0, groups == 0)] += 1.0
    alpha[np.ix_(groups == 1, groups == 1)] -= 1.0
    order = neuron_order(np.zeros((12, 12)), alpha)
    assert sorted(order.tolist()) == list(range(12))
    # In the order, each group is one contiguous block.
    assert np.count_nonzero(np.diff(groups[order])) == 1


def test_activity_order_puts_neurons_that_fire_together_together():
    rng = np.random.default_rng(1)
    groups = np.array([0, 1, 2] * 4)
    signals = rng.standard_normal((3, 50))
    activations = (signals[groups] + 0.05 * rng.standard_normal((12, 50))).T  # (T, N)
    order = activity_order(activations)
    assert sorted(order.tolist()) == list(range(12)) and np.count_nonzero(np.diff(groups[order])) == 2


def make_policy(plasticity: str) -> PlasticRecurrentPolicy:
    import gymnasium as gym

    space = gym.spaces.Box(-1, 1, (3,), dtype=np.float32)
    return PlasticRecurrentPolicy(space, gym.spaces.Discrete(2), lambda _: 1e-3, hidden_size=6, plasticity=plasticity)


@pytest.mark.parametrize("plasticity", ["full", "shared"])
def test_panel_matrices_are_the_reordered_trace_plastic_and_effective_weights(plasticity):
    policy = make_policy(plasticity)
    trace = torch.randn(1, 6, 6).numpy()
    state = (np.zeros((1, 6)), trace)
    w = policy.core.weight.detach().numpy()
    alpha = policy.core.plasticity_coefficient.detach().numpy()
    alpha = alpha if alpha.ndim == 2 else alpha.reshape(())
    expected = {"trace": trace[0], "plastic": alpha * trace[0], "effective": w + alpha * trace[0]}
    for content, matrix in expected.items():
        panel = TracePanel(policy, content, order="parameters")
        shown, value = panel.matrix_and_value(state)
        np.testing.assert_allclose(shown, matrix[np.ix_(panel.order, panel.order)], rtol=1e-5, atol=1e-7)
        changing = trace[0] if content == "trace" else alpha * trace[0]
        assert value == pytest.approx(np.linalg.norm(changing), rel=1e-5)
    assert TracePanel(policy, order="none").order.tolist() == list(range(6))
    by_activity = TracePanel(policy)
    assert by_activity.needs_activity and by_activity.order.tolist() == list(range(6))
    by_activity.fit_activity_order(np.random.default_rng(0).standard_normal((20, 6)))
    assert not by_activity.needs_activity and sorted(by_activity.order.tolist()) == list(range(6))
    with pytest.raises(ValueError, match="content"):
        TracePanel(policy, "weights")
    with pytest.raises(ValueError, match="plastic policy"):
        TracePanel(make_policy("none"))
