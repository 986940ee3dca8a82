import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.envs.pattern_memory import (
    FAST_PROTOCOL,
    PatternMemoryEnv,
    PatternMemoryProtocol,
    make_rng,
    sample_pattern_episodes,
)

SMALL = dict(pattern_count=3, pattern_size=12, steps_shown=2, gap_steps=1, repetitions=2)


def _play(env: gym.Env, seed: int | None, action=None) -> tuple[np.ndarray, list[float], list[dict], np.ndarray]:
    """Run one episode; returns the observations, rewards, infos and the target."""
    observation, info = env.reset(seed=seed)
    observations, rewards, infos = [observation], [], [info]
    while True:
        chosen = np.zeros(env.action_space.shape, np.float32) if action is None else action(infos[-1])
        observation, reward, terminated, truncated, info = env.step(chosen)
        rewards.append(reward)
        assert not truncated
        if terminated:
            return np.stack(observations), rewards, infos, info["target"]
        observations.append(observation)
        infos.append(info)


def test_env_checker_and_registration():
    env = gym.make("PlasticPatternMemory-v0", **SMALL)
    assert isinstance(env.unwrapped, PatternMemoryEnv)
    check_env(env.unwrapped, skip_render_check=True)


def test_protocol_lengths():
    assert PatternMemoryProtocol().episode_length == 5 * 13 * 3 + 10 == 205
    assert FAST_PROTOCOL.episode_length == 5 * 10 * 2 + 6 == 106
    protocol = PatternMemoryProtocol(**SMALL, query_steps=4)
    assert (protocol.query_start, protocol.episode_length) == (18, 22)


def test_episode_layout():
    protocol = PatternMemoryProtocol(**SMALL, degraded_fraction=0.25)
    inputs, target = protocol.draw_episode(make_rng(5))
    assert inputs.shape == (protocol.episode_length, 12) and set(np.unique(inputs)) <= {-1.0, 0.0, 1.0}
    shown = []
    for repetition in range(2):
        order = []
        for slot in range(3):
            start = (repetition * 3 + slot) * 3
            block = inputs[start : start + 2]
            assert (block == block[0]).all() and (np.abs(block) == 1).all()
            assert (inputs[start + 2] == 0).all()  # the gap
            order.append(tuple(block[0]))
        assert len(set(order)) == 3  # each repetition shows every pattern once
        shown.append(set(order))
    assert shown[0] == shown[1]
    assert tuple(target) in shown[0]
    query = inputs[protocol.query_start :]
    assert len(query) == 2 and (query == query[0]).all()
    assert (query[0] == 0).sum() == 3  # round(0.25 * 12) degraded elements
    kept = query[0] != 0
    assert (query[0][kept] == target[kept]).all()


def test_env_and_sampler_agree():
    env = gym.make("PlasticPatternMemory-v0", **SMALL)
    inputs, targets = sample_pattern_episodes(env.unwrapped.protocol, make_rng(11), 3)
    for column in range(3):
        observations, _, infos, target = _play(env, 11 if column == 0 else None)
        np.testing.assert_array_equal(observations, inputs[:, column])
        np.testing.assert_array_equal(target, targets[column])
        query_start = env.unwrapped.protocol.query_start
        assert all("target" not in info for info in infos[:query_start])
        assert all((info["target"] == target).all() for info in infos[query_start:])
        assert [info["scored"] for info in infos].count(True) == 1 and infos[-1]["scored"]


def test_reward_is_the_query_error():
    env = gym.make("PlasticPatternMemory-v0", **SMALL)
    _, rewards, _, _ = _play(env, 0)
    assert rewards[:-1] == [0.0] * (len(rewards) - 1) and rewards[-1] == pytest.approx(-1.0)
    _, rewards, _, _ = _play(env, 0, action=lambda info: info.get("target", np.zeros(12, np.float32)))
    assert rewards == [0.0] * len(rewards)
    _, rewards, _, target = _play(env, 0, action=lambda info: -info.get("target", np.zeros(12, np.float32)))
    assert rewards[-1] == pytest.approx(-4.0)


def test_seeded_episodes_repeat_and_differ():
    env = gym.make("PlasticPatternMemory-v0", **SMALL)
    first = _play(env, 3)[0]
    np.testing.assert_array_equal(first, _play(env, 3)[0])
    assert not np.array_equal(first, _play(env, 4)[0])


@pytest.mark.parametrize(
    "keyword,value",
    [("pattern_count", 0), ("pattern_size", 2.5), ("gap_steps", -1), ("degraded_fraction", 1.0), ("query_steps", 0)],
)
def test_bad_protocol_values_name_the_parameter(keyword, value):
    with pytest.raises(ValueError, match=keyword):
        PatternMemoryEnv(**{**SMALL, keyword: value})


def test_render_mode_renders_the_current_input_then_the_answer_and_target_or_is_refused():
    import gymnasium as gym

    env = gym.make("PlasticPatternMemory-v0", render_mode="rgb_array", pattern_size=50)
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (2 * 8, 40 * 8, 3) and frame.dtype == np.uint8
    # The first element's cell: black for +1, white for -1.
    assert frame[0, 0, 0] == (0 if obs[0] > 0 else 255)
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(np.ones(50, dtype=np.float32))
    input_, output, target = np.split(env.render(), [40 * 8 + 8, 2 * (40 * 8 + 8)], axis=1)  # 8-pixel gaps
    assert (output[:8, :320] == 0).all() and (output[8:16, :80] == 0).all()  # the all-+1 answer: 50 black cells
    assert frame.shape[1] * 3 + 16 == env.render().shape[1] and target[0, 0, 0] in (0, 255)
    assert gym.spec("PlasticPatternMemory-v0").max_episode_steps is None  # the env ends its own episodes
    with pytest.raises(ValueError, match="render_mode"):
        PatternMemoryEnv(render_mode="human")


def test_the_authors_comparison_protocol_runs_a_batched_step_for_each_model():
    from plastic_rl.supervised import SupervisedTrainer, make_task
    from plastic_rl.supervised.patterns import PROTOCOLS

    protocol = PROTOCOLS["comparison"]
    # 2 patterns x (3 shown + 1 empty) x 1 cycle, then the query for 3 steps
    assert protocol.episode_length == 2 * (3 + 1) * 1 + 3 == 11 and protocol.pattern_size == 50
    task = make_task("patterns", **protocol.as_dict())
    models = {
        "plastic": {},
        "rnn": {"extra_neurons": 2000},
        "lstm": {"lstm_hidden_size": 2050, "lstm_output": "clamped"},
    }
    for model_name, options in models.items():
        model = task.build_model(model_name, **options)
        trainer = SupervisedTrainer(task, model, batch_size=4, log_interval=1, eval_interval=0, progress=False)
        trainer.train(1)
        assert trainer.step == 1 and np.isfinite(trainer.history[-1]["loss"])


def test_the_clamped_lstm_outputs_its_first_cells_clamped_to_the_shown_input():
    from plastic_rl.supervised.models import SequenceLSTM

    torch.manual_seed(0)
    model = SequenceLSTM(3, 3, 8, output="clamped")
    inputs = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]).unsqueeze(1)  # (T=3, B=1, 3)
    outputs = model(inputs)
    shown = inputs != 0
    # Shown elements: tanh of the input, whatever the weights; hidden ones: tanh(tanh(the cell candidate)).
    assert torch.allclose(outputs[shown], inputs[shown].tanh())
    lstm = model.lstm
    gates = inputs[0, 0] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0  # the first step: no recurrence
    candidate = gates.chunk(4)[2].tanh()
    assert torch.allclose(outputs[0, 0, 2], candidate[2].tanh())
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(3)  # the recurrence reaches the hidden elements only
    again = model(inputs)
    assert torch.equal(again[shown], outputs[shown]) and not torch.allclose(again[~shown][1:], outputs[~shown][1:])
    again.sum().backward()
    assert lstm.weight_hh_l0.grad.abs().sum() > 0 and model.readout is None
    for bad in (dict(output_size=2), dict(hidden_size=2), dict(output="relu")):
        with pytest.raises(ValueError, match="output"):
            SequenceLSTM(**{"input_size": 3, "output_size": 3, "hidden_size": 8, "output": "clamped", **bad})
