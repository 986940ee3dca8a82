"""PlasticReadoutPolicy: the plastic read-out that the observation's label writes, under PlasticA2C."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from plastic_rl.agents import PlasticA2C, PlasticReadoutPolicy

WAYS, SIZE = 3, 6


class _PairingEnv(gym.Env):
    """A tiny Omniglot: three random vectors shown with their labels, then a noisy copy of one, to be named."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "x": gym.spaces.Box(-10.0, 10.0, (SIZE,), np.float32),
                "label": gym.spaces.Box(0.0, 1.0, (WAYS,), np.float32),
            }
        )
        self.action_space = gym.spaces.Discrete(WAYS)

    def _observation(self) -> dict:
        if self._step < WAYS:
            label = self._order[self._step]
            return {"x": self._items[label], "label": np.eye(WAYS, dtype=np.float32)[label]}
        query = self._items[self._target] + 0.1 * self.np_random.normal(size=SIZE).astype(np.float32)
        return {"x": query, "label": np.zeros(WAYS, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._items = self.np_random.normal(size=(WAYS, SIZE)).astype(np.float32)
        self._order, self._target, self._step = self.np_random.permutation(WAYS), int(self.np_random.integers(WAYS)), 0
        return self._observation(), {}

    def step(self, action):
        self._step += 1
        done = self._step == WAYS + 1
        reward = float(done and int(action) == self._target)
        return self._observation(), reward, done, False, {}


def _policy(**kwargs) -> PlasticReadoutPolicy:
    env = _PairingEnv()
    return PlasticReadoutPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)


def _episode(items: torch.Tensor, query: torch.Tensor) -> dict[str, torch.Tensor]:
    """Observations (WAYS + 1, B, ...): item ``c`` of each batch row shown with label ``c``, then ``query``."""
    labels = torch.cat([torch.eye(WAYS), torch.zeros(1, WAYS)])[:, None].expand(-1, items.shape[0], -1)
    return {"x": torch.cat([items.transpose(0, 1), query[None]]), "label": labels}


def test_the_readout_scores_each_label_by_the_cosine_of_its_shown_item_and_queries_do_not_write():
    policy = _policy()
    with torch.no_grad():
        policy.core.weight.zero_()
        policy.core.plasticity_coefficient.fill_(1.0)
    items, query = torch.randn(2, WAYS, SIZE), torch.randn(2, SIZE)
    observations = _episode(items, query)
    starts = torch.zeros(WAYS + 1, 2, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        logits, state = policy.unroll(observations, policy.initial_state(2), starts)
        shown_only = {key: value[:WAYS] for key, value in observations.items()}
        _, state_before_query = policy.unroll(shown_only, policy.initial_state(2), starts[:WAYS])
    cosine = torch.nn.functional.cosine_similarity(query[:, None], items, dim=-1)  # (B, WAYS)
    torch.testing.assert_close(logits[WAYS], cosine)  # Oja at eta 1: each label's column is its item, unit length
    torch.testing.assert_close(
        logits[:WAYS], torch.zeros(WAYS, 2, WAYS), rtol=0, atol=0
    )  # a labelled step asks nothing
    torch.testing.assert_close(state[0], state_before_query[0], rtol=0, atol=0)
    with torch.no_grad():  # an episode start clears what an earlier episode wrote
        restarted, _ = policy.unroll(observations, state, starts)
    torch.testing.assert_close(restarted, logits, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_plastic_a2c_trains_saves_loads_and_predicts_with_the_readout(tmp_path):
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.evaluation import evaluate_policy

    check_env(_PairingEnv())
    env = DummyVecEnv([_PairingEnv] * 4)
    model = PlasticA2C("PlasticReadoutPolicy", env, n_steps=WAYS + 1, seed=0)
    alpha = model.policy.core.plasticity_coefficient.detach().clone()
    model.learn(64)
    assert not torch.equal(model.policy.core.plasticity_coefficient, alpha)
    model.save(tmp_path / "readout")
    loaded = PlasticA2C.load(tmp_path / "readout")
    assert isinstance(loaded.policy, PlasticReadoutPolicy) and loaded.policy.alpha_init == 10.0
    observation, state, starts = env.reset(), None, np.ones(4, dtype=bool)
    for _ in range(WAYS + 1):
        actions, state = loaded.predict(observation, state=state, episode_start=starts)
        observation, _, starts, _ = env.step(actions)
    assert actions.shape == (4,) and [part.shape for part in state] == [(4, SIZE, WAYS)]
    mean, _ = evaluate_policy(loaded, env, n_eval_episodes=8)
    assert 0.0 <= mean <= 1.0


def test_the_readout_refuses_what_it_cannot_read_naming_the_parameter():
    env = _PairingEnv()
    schedule = lambda _: 1e-3  # noqa: E731
    with pytest.raises(ValueError, match="action_space must be Discrete"):
        PlasticReadoutPolicy(env.observation_space, gym.spaces.Box(-1, 1, (WAYS,)), schedule)
    with pytest.raises(ValueError, match=r"'cue' key \(label_key\) is a Box of shape \(3,\)"):
        PlasticReadoutPolicy(env.observation_space, env.action_space, schedule, label_key="cue")
    with pytest.raises(ValueError, match=r"'label' key \(label_key\) is a Box of shape \(4,\)"):
        PlasticReadoutPolicy(env.observation_space, gym.spaces.Discrete(4), schedule)
    with pytest.raises(ValueError, match="hidden_size is not an option of PlasticReadoutPolicy"):
        PlasticReadoutPolicy(env.observation_space, env.action_space, schedule, hidden_size=8)
    with pytest.raises(ValueError, match="rule must be one of"):
        PlasticReadoutPolicy(env.observation_space, env.action_space, schedule, rule="bogus")
