"""The authors' maze configuration (a named hyperparameter set) and the per-update stability diagnostics."""

from __future__ import annotations

import csv

import gymnasium as gym
import pytest
import yaml
from stable_baselines3.common.env_util import make_vec_env

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C
from plastic_rl.agents.hyperparameters import load_hyperparameters
from plastic_rl.cli import main


def test_maze_can_feed_the_raw_step_count_and_a_bias_input():
    env = gym.make("PlasticMaze-v0", observe_time=True, time_units="steps", observe_bias=True)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (12,) and observation[10] == 0 and observation[11] == 1
    for _ in range(3):
        observation, *_ = env.step(0)
    assert observation[10] == 3 and observation[11] == 1
    assert env.observation_space.high[10] == 250 and env.observation_space.contains(observation)
    with pytest.raises(ValueError, match="time_units must be one of 'fraction', 'steps'"):
        gym.make("PlasticMaze-v0", time_units="seconds")


def test_named_hyperparameter_sets_are_selected_by_name():
    authors = load_hyperparameters("plastic_a2c", "PlasticMaze-v0", "authors")
    assert authors["n_envs"] == 1 and authors["learning_rate"] == 1e-4 and authors["max_grad_norm"] is None
    assert authors["entropy_bonus"] == "sum_squares" and authors["policy_kwargs"]["rule"] == "oja"
    assert load_hyperparameters("plastic_a2c", "PlasticMaze-v0")["n_envs"] == 32  # the default entry is unchanged
    backpropamine = load_hyperparameters("plastic_a2c", "PlasticMaze-v0", "backpropamine")
    assert backpropamine["n_envs"] == 30 and backpropamine["max_grad_norm"] == 4.0
    assert backpropamine["env_kwargs"]["size"] == 11 and backpropamine["policy_kwargs"]["hidden_size"] == 100
    with pytest.raises(ValueError, match="hyperparams_set must be one of 'authors', 'backpropamine'"):
        load_hyperparameters("plastic_a2c", "PlasticMaze-v0", "nobody")


def test_the_authors_configuration_builds_and_trains(tmp_path):
    command = ["train", "-f", str(tmp_path), "--hyperparams-set", "authors", "-n", "500", "--no-progress-bar"]
    assert main([*command, "--threads", "1"]) == 0
    folder = tmp_path / "plastic_a2c" / "PlasticMaze-v0_1"
    config = yaml.safe_load((folder / "config.yml").read_text())
    assert config["hyperparameters"]["vf_coef"] == 0.03 and config["hyperparameters"]["n_envs"] == 1
    model = PlasticA2C.load(folder / "PlasticMaze-v0.zip", device="cpu")
    assert model.max_grad_norm is None and model.ent_coef == 0.1 and model.entropy_bonus == "sum_squares"
    assert model.observation_space.shape == (12,)  # neighbourhood, reward, raw step count, bias
    core = model.policy.core
    assert core.rule == "oja" and model.policy.init_distribution == "uniform"
    # Two updates (SB3 logs the losses of an update at the next one) of Adam at lr 1e-4 from a uniform [0, 0.01)
    # start: still about in that range.
    assert core.weight.min() > -1e-3 and core.plasticity_coefficient.max() < 0.011
    (row,) = list(csv.DictReader((folder / "progress.csv").open()))[-1:]
    # sum_a p_a^2 over 4 actions lies in [1/4, 1], unlike an (negated) entropy.
    assert 0.25 <= float(row["train/entropy_loss"]) <= 1.0
    for group in ("w", "alpha", "eta", "heads", "input", "total"):
        assert float(row[f"train/grad_norm_{group}"]) >= 0
    assert float(row["plasticity/eta"]) > 0 and float(row["plasticity/trace_norm"]) > 0


@pytest.mark.parametrize(
    ("plasticity_lr_scale", "eta_lr_scale", "expected"),
    [
        (0.1, 1.0, {"alpha": 1e-4, "eta": 1e-4}),
        (1.0, 0.1, {"alpha": 1e-3, "eta": 1e-4}),
        (0.5, 0.1, {"alpha": 5e-4, "eta": 5e-5}),
    ],
)
def test_plasticity_parameters_get_their_own_learning_rate(plasticity_lr_scale, eta_lr_scale, expected):
    env = make_vec_env("PlasticMaze-v0", n_envs=2, env_kwargs=dict(size=5, episode_length=10))
    model = PlasticA2C(
        "PlasticRecurrentPolicy", env, n_steps=10, learning_rate=1e-3, plasticity_lr_scale=plasticity_lr_scale,
        eta_lr_scale=eta_lr_scale, policy_kwargs=dict(hidden_size=8),
    )  # fmt: skip
    model.learn(20)
    core = model.policy.core
    learning_rate_of = {
        id(parameter): group["lr"] for group in model.policy.optimizer.param_groups for parameter in group["params"]
    }
    assert len(learning_rate_of) == len(list(model.policy.parameters()))
    assert learning_rate_of[id(core.plasticity_coefficient)] == pytest.approx(expected["alpha"])
    assert learning_rate_of[id(core.eta_raw)] == pytest.approx(expected["eta"])
    assert learning_rate_of[id(core.weight)] == pytest.approx(1e-3)
    assert learning_rate_of[id(model.policy.action_net.weight)] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="plasticity_lr_scale must be a finite number > 0"):
        PlasticA2C("PlasticRecurrentPolicy", env, plasticity_lr_scale=0)
    with pytest.raises(ValueError, match="eta_lr_scale must be a finite number > 0"):
        PlasticA2C("PlasticRecurrentPolicy", env, eta_lr_scale=-1.0)
    with pytest.raises(ValueError, match="entropy_bonus must be one of"):
        PlasticA2C("PlasticRecurrentPolicy", env, entropy_bonus="gini")
