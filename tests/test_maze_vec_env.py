"""Tests of the batched maze (plastic_rl/envs/batched_maze.py), its SB3 VecEnv (plastic_rl/agents/batched_vec_env.py)
and make_training_env."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents.batched_vec_env import BatchedVecEnv
from plastic_rl.agents.make_env import make_training_env
from plastic_rl.envs.batched_maze import BatchedMaze


def play(env, actions: np.ndarray) -> list:
    """Every (obs, reward, done, info) of ``actions`` (steps, n_envs) from a reset."""
    transitions = [(env.reset(), None, None, [dict(info) for info in env.reset_infos])]
    for step_actions in actions:
        transitions.append(env.step(step_actions))
    return transitions


def assert_same_transitions(batched: list, reference: list) -> None:
    for step, ((obs, rewards, dones, infos), (ref_obs, ref_rewards, ref_dones, ref_infos)) in enumerate(
        zip(batched, reference, strict=True)
    ):
        np.testing.assert_array_equal(obs, ref_obs, err_msg=f"step {step}")
        assert obs.dtype == ref_obs.dtype
        if rewards is not None:
            np.testing.assert_array_equal(rewards, ref_rewards, err_msg=f"step {step}")
            assert rewards.dtype == ref_rewards.dtype and dones.dtype == ref_dones.dtype
            np.testing.assert_array_equal(dones, ref_dones, err_msg=f"step {step}")
        for info, ref_info in zip(infos, ref_infos, strict=True):
            assert set(info) == set(ref_info), f"step {step}"
            for key, value in ref_info.items():
                if key == "terminal_observation":
                    np.testing.assert_array_equal(info[key], value)
                elif key == "episode":
                    assert (info[key]["r"], info[key]["l"]) == (value["r"], value["l"])
                    assert info[key]["t"] == pytest.approx(value["t"], abs=5.0)
                else:
                    assert info[key] == value and type(info[key]) is type(value), f"step {step}, {key}"


@pytest.mark.parametrize(
    "env_kwargs",
    [
        {"size": 5, "episode_length": 30},  # small: many reward hits and teleports
        {"observe_previous_action": True, "observe_time": True, "episode_length": 40},
        {"size": 11, "episode_length": 25, "reward_value": 3.0, "wall_penalty": 0.0},  # the 13 x 13 variant
        # the authors' observation: the raw step count and a bias input
        {
            "observe_previous_action": True,
            "observe_time": True,
            "time_units": "steps",
            "observe_bias": True,
            "episode_length": 40,
        },
        {"observe_bias": True, "episode_length": 20},
    ],
)
def test_same_transitions_as_single_envs_with_the_same_seeds(env_kwargs):
    n_envs, seed = 6, 3
    rng = np.random.default_rng(0)
    actions = rng.integers(4, size=(300, n_envs))
    batched = make_training_env("PlasticMaze-v0", n_envs, seed=seed, env_kwargs=env_kwargs)
    assert isinstance(batched, BatchedVecEnv) and isinstance(batched.batch, BatchedMaze)
    reference = make_vec_env("PlasticMaze-v0", n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    batched_transitions, reference_transitions = play(batched, actions), play(reference, actions)
    assert_same_transitions(batched_transitions, reference_transitions)
    hits = sum(int((rewards > 0).sum()) for _, rewards, _, _ in batched_transitions[1:])
    episodes = sum(int(dones.sum()) for _, _, dones, _ in batched_transitions[1:])
    assert hits > 0 and episodes >= n_envs * 2


def test_draws_are_uniform_and_distinct_per_env():
    """Reward squares: every free square but the centre, equally often; teleports: never onto the reward square."""
    env = BatchedVecEnv(BatchedMaze(50, size=5, episode_length=1))
    env.seed(0)
    env.reset()
    counts: dict[tuple[int, int], int] = {}
    for _ in range(60):
        _, _, dones, infos = env.step(np.zeros(50, dtype=np.int64))
        assert dones.all()
        for info in env.reset_infos:
            counts[info["reward_position"]] = counts.get(info["reward_position"], 0) + 1
    free = {(int(r), int(c)) for r, c in np.argwhere(~env.get_attr("walls", 0)[0])} - {(3, 3)}
    assert set(counts) == free
    expected = 3000 / len(free)
    chi_square = sum((count - expected) ** 2 / expected for count in counts.values())
    assert chi_square < 60  # 15 degrees of freedom: p < 1e-6 beyond 60
    # Different envs of one seed draw different reward squares.
    assert len({info["reward_position"] for info in env.reset_infos}) > 5


def test_monitor_files_and_evaluation_contract(tmp_path):
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_training_env("PlasticMaze-v0", 3, seed=1, env_kwargs={"episode_length": 10}, monitor_dir=tmp_path)
    env.reset()
    for _ in range(20):
        env.step(np.ones(3, dtype=np.int64))
    env.close()
    for rank in range(3):
        with open(tmp_path / f"{rank}.monitor.csv") as file:
            assert file.readline().startswith('#{"t_start"')
            rows = list(csv.DictReader(file))
        assert [int(row["l"]) for row in rows] == [10, 10]
    assert env.env_is_wrapped(Monitor) == [True] * 3

    class FixedAgent:
        def predict(self, observation, state=None, episode_start=None, deterministic=False):
            return np.zeros(len(observation), dtype=np.int64), state

    env = make_training_env("PlasticMaze-v0", 2, seed=1, env_kwargs={"episode_length": 10})
    rewards, lengths = evaluate_policy(FixedAgent(), env, n_eval_episodes=4, return_episode_rewards=True)
    assert lengths == [10] * 4 and len(rewards) == 4  # lengths come from the Monitor-style "episode" entries
    env.close()


def test_views_render_and_take_the_panel_matrix():
    env = BatchedVecEnv(BatchedMaze(2, render_mode="rgb_array", show_trace_panel=True, size=5))
    env.seed(0)
    env.reset()
    infos = env.step(np.array([1, 2]))[3]
    assert env.get_attr("agent_position") == [info["agent_position"] for info in infos]
    assert env.get_attr("step_count") == [1, 1]
    env.env_method("set_panel_matrix", np.eye(3), indices=[0])
    frames = env.get_images()
    assert len(frames) == 2 and frames[0].shape == env.get_attr("frame_shape", 0)[0]
    assert not np.array_equal(frames[0], frames[1])
    with pytest.raises(ValueError, match="reset"):
        env.env_method("reset")
    env.close()


@pytest.mark.parametrize(
    "actions, match",
    [(np.array([0, 4]), "actions must be one of"), (np.array([0.0, 1.0]), "integers"), (np.array([0]), "integers")],
)
def test_bad_actions_and_kwargs_raise(actions, match):
    env = BatchedVecEnv(BatchedMaze(2))
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(actions)
    with pytest.raises(ValueError, match="size"):
        BatchedMaze(2, size=4)
    with pytest.raises(ValueError, match="n_envs"):
        BatchedMaze(0)
    with pytest.raises(ValueError, match="max_episode_steps must be at least episode_length = 20"):
        BatchedMaze(2, episode_length=20, max_episode_steps=19)


def test_gym_makes_time_limit_is_accepted_where_it_never_acts():
    # The same env_kwargs serve the training env and gym.make (the evaluation): Backpropamine's variant.
    env_kwargs = dict(size=7, episode_length=20, max_episode_steps=20)
    batched = make_training_env("PlasticMaze-v0", 2, seed=3, env_kwargs=env_kwargs)
    single = make_vec_env("PlasticMaze-v0", n_envs=2, seed=3, env_kwargs=env_kwargs)
    np.testing.assert_array_equal(batched.reset(), single.reset())
    for step in range(25):
        actions = np.array([step % 4, (step + 1) % 4])
        for got, expected in zip(batched.step(actions)[:3], single.step(actions)[:3], strict=True):
            np.testing.assert_array_equal(got, expected)


def test_other_envs_go_through_make_vec_env():
    env = make_training_env("PlasticPatternMemory-v0", 2, seed=0)
    assert isinstance(env, DummyVecEnv)
    env.close()
