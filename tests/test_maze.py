"""Tests of PlasticMaze-v0 (plastic_rl/envs/maze.py), its rendering and the ``plastic-rl play maze`` command."""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.envs import maze_rendering
from plastic_rl.envs.maze import PlasticMazeEnv

MOVES = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}  # the documented order: up, right, down, left


def shortest_actions(walls: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[int]:
    """Actions of a shortest path from start to goal (breadth-first search on the wall map)."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        square = queue.popleft()
        if square == goal:
            break
        for action, (row_move, col_move) in MOVES.items():
            neighbour = (square[0] + row_move, square[1] + col_move)
            if not walls[neighbour] and neighbour not in previous:
                previous[neighbour] = (square, action)
                queue.append(neighbour)
    actions = []
    while previous[goal] is not None:
        goal, action = previous[goal]
        actions.append(action)
    return actions[::-1]


# ---------------------------------------------------------------- API checkers


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"observe_previous_action": True, "observe_time": True}, {"show_trace_panel": True, "size": 5}],
)
def test_gymnasium_check_env_passes_with_render_modes(kwargs):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("PlasticMaze-v0", render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # check_env also makes the env anew in every declared render mode ("human" under the dummy video driver).
        check_env(env.unwrapped)
    env.close()


def test_sb3_check_env_passes():
    from stable_baselines3.common.env_checker import check_env

    for kwargs in ({}, {"observe_previous_action": True, "observe_time": True}):
        env = PlasticMazeEnv(render_mode="rgb_array", **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env, warn=True, skip_render_check=False)
        env.close()


def test_make_with_module_prefix_and_no_prior_import():
    code = 'import gymnasium as gym; env = gym.make("plastic_rl:PlasticMaze-v0"); env.reset(seed=0); env.step(0)'
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_and_stepping_do_not_import_pygame():
    code = (
        "import sys, plastic_rl, gymnasium as gym\n"
        "env = gym.make('PlasticMaze-v0'); env.reset(seed=0); env.step(1); env.close()\n"
        "assert 'pygame' not in sys.modules, 'pygame was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- layout


def test_default_layout_is_the_papers():
    walls = PlasticMazeEnv().walls
    assert walls.shape == (11, 11) and walls.dtype == bool
    assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    inside = {(int(r), int(c)) for r, c in np.argwhere(walls[1:-1, 1:-1])}
    assert len(inside) == 16
    assert inside == {(r - 1, c - 1) for r in (2, 4, 6, 8) for c in (2, 4, 6, 8)}
    assert not walls[5, 5]


@pytest.mark.parametrize(("size", "inner_walls"), [(5, 4), (7, 8), (9, 16), (11, 24)])
def test_layout_for_other_sizes(size, inner_walls):
    env = PlasticMazeEnv(size=size)
    walls = env.walls
    centre = size // 2 + 1
    assert walls.shape == (size + 2, size + 2)
    assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    assert int(walls[1:-1, 1:-1].sum()) == inner_walls
    assert env.start_position == (centre, centre) and not walls[centre, centre]
    # For sizes 7 and 11 the every-other-square rule would put a wall at the centre: it is cleared.
    rule_walls_centre = centre % 2 == 0
    assert rule_walls_centre == (size in (7, 11))
    for row in range(1, size + 1):
        for col in range(1, size + 1):
            expected = row % 2 == 0 and col % 2 == 0 and (row, col) != (centre, centre)
            assert walls[row, col] == expected


def test_walls_are_read_only():
    env = PlasticMazeEnv()
    with pytest.raises(ValueError):
        env.walls[1, 1] = True


# ---------------------------------------------------------------- dynamics


def test_reward_square_is_uniform_over_free_squares_but_the_centre():
    env = PlasticMazeEnv()
    positions = set()
    for seed in range(1500):
        _, info = env.reset(seed=seed)
        positions.add(info["reward_position"])
        assert info["agent_position"] == (5, 5)
    free_but_centre = {(int(r), int(c)) for r, c in np.argwhere(~env.walls)} - {(5, 5)}
    assert len(free_but_centre) == 81 - 16 - 1
    assert positions == free_but_centre


def test_transitions_follow_the_rules_under_random_actions():
    """Every step of random play checked against the documented rules, observation included."""
    env = PlasticMazeEnv(episode_length=400)
    rng = np.random.default_rng(0)
    for seed in range(3):
        observation, info = env.reset(seed=seed)
        position, reward_square = info["agent_position"], info["reward_position"]
        bumps = 0
        for _ in range(400):
            action = int(rng.integers(4))
            observation, reward, terminated, truncated, info = env.step(action)
            target = (position[0] + MOVES[action][0], position[1] + MOVES[action][1])
            if env.walls[target]:
                bumps += 1
                assert reward == pytest.approx(-0.1)
                assert info["agent_position"] == position
            elif target == reward_square:
                assert reward == 10.0
                assert info["agent_position"] != reward_square and not env.walls[info["agent_position"]]
            else:
                assert reward == 0.0
                assert info["agent_position"] == target
            position = info["agent_position"]
            row, col = position
            np.testing.assert_array_equal(observation[:9], env.walls[row - 1 : row + 2, col - 1 : col + 2].ravel())
            assert observation[9] == np.float32(reward)
            assert info["reward_position"] == reward_square
            assert not truncated
        assert bumps > 0
        assert terminated


def test_bump_gives_penalty_and_no_move():
    env = PlasticMazeEnv(wall_penalty=0.25)
    env.reset(seed=1)
    env.step(0)  # centre (5, 5) -> (4, 5), which has walls left and right
    _, info = env.reset(seed=1)
    assert info["reward_position"] != (4, 5)
    observation, _, _, _, info = env.step(0)
    assert info["agent_position"] == (4, 5)
    for action in (1, 3):
        observation, reward, _, _, info = env.step(action)
        assert reward == -0.25
        assert info["agent_position"] == (4, 5)
        assert observation[9] == np.float32(-0.25)


def test_reward_square_gives_reward_and_teleports():
    env = PlasticMazeEnv(episode_length=100_000)
    _, info = env.reset(seed=3)
    reward_square = info["reward_position"]
    landings = []
    for hit in range(1, 151):
        actions = shortest_actions(env.walls, info["agent_position"], reward_square)
        for action in actions[:-1]:
            observation, reward, _, _, info = env.step(action)
            assert reward == 0.0
        observation, reward, _, _, info = env.step(actions[-1])
        assert reward == 10.0 and observation[9] == 10.0
        assert info["reward_hits"] == hit
        assert info["reward_position"] == reward_square
        landing = info["agent_position"]
        assert landing != reward_square and not env.walls[landing]
        landings.append(landing)
    # Uniform over 64 squares: 150 draws reach far more than 30 distinct squares (and the start can be drawn).
    assert len(set(landings)) > 30


def test_terminates_exactly_at_episode_length_and_never_truncates():
    env = PlasticMazeEnv()
    env.reset(seed=0)
    for step in range(1, 251):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["step"] == step
        assert not truncated
        assert terminated == (step == 250)
    env.close()
    short = PlasticMazeEnv(episode_length=3)
    short.reset(seed=0)
    assert [short.step(1)[2] for _ in range(3)] == [False, False, True]


def test_invalid_action_raises():
    env = PlasticMazeEnv()
    env.reset(seed=0)
    for action in (4, -1, 1.5, "up"):
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    env.step(np.int64(2))  # numpy integers are fine


# ---------------------------------------------------------------- observations


@pytest.mark.parametrize(
    ("observe_previous_action", "observe_time", "shape"),
    [(False, False, 10), (True, False, 14), (False, True, 11), (True, True, 15)],
)
def test_observation_layout(observe_previous_action, observe_time, shape):
    env = PlasticMazeEnv(episode_length=50, observe_previous_action=observe_previous_action, observe_time=observe_time)
    assert env.observation_space.shape == (shape,)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (shape,) and observation.dtype == np.float32
    # At the centre (5, 5) of the default maze the four diagonal neighbours are walls.
    np.testing.assert_array_equal(observation[:9], [1, 0, 1, 0, 0, 0, 1, 0, 1])
    assert observation[9] == 0.0
    np.testing.assert_array_equal(observation[10:], np.zeros(shape - 10))

    observation, *_ = env.step(0)  # up to (4, 5): walls left and right, free above and below
    np.testing.assert_array_equal(observation[:9], [0, 0, 0, 1, 0, 1, 0, 0, 0])
    observation, reward, *_ = env.step(3)  # bump into the wall on the left
    assert reward == pytest.approx(-0.1) and observation[9] == np.float32(-0.1)
    extras = observation[10:]
    if observe_previous_action:
        np.testing.assert_array_equal(extras[:4], [0, 0, 0, 1])
        extras = extras[4:]
    if observe_time:
        assert extras[0] == np.float32(2 / 50)
        for _ in range(48):
            observation, *_ = env.step(1)
        assert observation[-1] == 1.0
    assert env.observation_space.contains(observation)


def test_seeded_determinism_and_fresh_observations():
    def rollout(env: PlasticMazeEnv, seed: int) -> list:
        observation, info = env.reset(seed=seed)
        trajectory = [(observation.copy(), info)]
        for action in np.random.default_rng(7).integers(4, size=250):
            observation, reward, terminated, truncated, info = env.step(action)
            trajectory.append((observation.copy(), reward, terminated, truncated, info))
            observation[:] = 123.0  # mutating a returned observation must not affect the env
        return trajectory

    env = PlasticMazeEnv(observe_previous_action=True, observe_time=True)
    first = rollout(env, seed=11)
    second = rollout(PlasticMazeEnv(observe_previous_action=True, observe_time=True), seed=11)
    again = rollout(env, seed=11)
    for a, b, c in zip(first, second, again, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            np.testing.assert_equal(x, y)
            np.testing.assert_equal(x, z)
    reward_squares = {PlasticMazeEnv().reset(seed=seed)[1]["reward_position"] for seed in range(10)}
    assert len(reward_squares) > 1

    observation, _ = env.reset(seed=0)
    assert env.step(1)[0] is not observation


# ---------------------------------------------------------------- rendering


def cell_centre_pixel(frame: np.ndarray, square: tuple[int, int]) -> tuple[int, ...]:
    size = maze_rendering.CELL_SIZE
    return tuple(int(v) for v in frame[square[0] * size + size // 2, square[1] * size + size // 2])


@pytest.mark.parametrize(("show_trace_panel", "shape"), [(False, (472, 440, 3)), (True, (544, 880, 3))])
def test_rgb_array_frame_shape_and_content(show_trace_panel, shape):
    env = PlasticMazeEnv(render_mode="rgb_array", show_trace_panel=show_trace_panel)
    assert env.frame_shape == shape
    _, info = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == shape and frame.dtype == np.uint8 and frame.flags.writeable
    assert cell_centre_pixel(frame, info["agent_position"]) == maze_rendering.AGENT_COLOUR
    assert cell_centre_pixel(frame, info["reward_position"]) == maze_rendering.REWARD_COLOUR
    assert cell_centre_pixel(frame, (2, 2)) == maze_rendering.WALL_COLOUR
    assert cell_centre_pixel(frame, (1, 1)) == maze_rendering.FREE_COLOUR
    _, _, _, _, info = env.step(0)
    moved = env.render()
    assert cell_centre_pixel(moved, info["agent_position"]) == maze_rendering.AGENT_COLOUR
    # The square just left is on the trail: between the free and the agent colour.
    trail = np.array(cell_centre_pixel(moved, (5, 5)))
    assert np.all(trail <= np.maximum(maze_rendering.FREE_COLOUR, maze_rendering.AGENT_COLOUR))
    assert trail.tolist() != list(maze_rendering.FREE_COLOUR) and trail.tolist() != list(maze_rendering.AGENT_COLOUR)
    if show_trace_panel:
        panel = np.s_[:, 440:]
        env.set_panel_matrix(np.array([[1.0, -1.0], [0.0, 0.5]]), title="trace")
        with_matrix = env.render()
        assert with_matrix.shape == shape
        assert not np.array_equal(with_matrix[panel], moved[panel])
        np.testing.assert_array_equal(with_matrix[:472, :440], moved[:472, :440])
        reds = np.all(with_matrix[panel] == maze_rendering.POSITIVE_COLOUR.astype(np.uint8), axis=-1)
        blues = np.all(with_matrix[panel] == maze_rendering.NEGATIVE_COLOUR.astype(np.uint8), axis=-1)
        assert reds.sum() > 1000 and blues.sum() > 1000  # the +1 and -1 entries at the ends of the scale
        env.set_panel_matrix(None)
        np.testing.assert_array_equal(env.render()[:472], moved[:472])
    env.close()
    env.close()


def test_frame_shape_for_small_maze():
    env = PlasticMazeEnv(render_mode="rgb_array", size=5, show_trace_panel=True)
    env.reset(seed=0)
    assert env.render().shape == env.frame_shape == (7 * 40 + 32 + maze_rendering.STRIP_HEIGHT, 2 * 7 * 40, 3)
    env.close()


def test_heat_map_colours_are_symmetric_around_zero():
    colours, scale = maze_rendering.heat_map_colours(np.array([[2.0, -2.0, 0.0, 1.0, -1.0]]))
    assert scale == 2.0
    assert tuple(colours[0, 0]) == tuple(maze_rendering.POSITIVE_COLOUR.astype(np.uint8))
    assert tuple(colours[0, 1]) == tuple(maze_rendering.NEGATIVE_COLOUR.astype(np.uint8))
    assert tuple(colours[0, 2]) == (255, 255, 255)
    # Half the scale is half way from white to the end colour, on either side.
    white = np.full(3, 255.0)
    np.testing.assert_allclose(colours[0, 3], (white + maze_rendering.POSITIVE_COLOUR) / 2, atol=1)
    np.testing.assert_allclose(colours[0, 4], (white + maze_rendering.NEGATIVE_COLOUR) / 2, atol=1)
    zeros, zero_scale = maze_rendering.heat_map_colours(np.zeros((3, 3)))
    assert zero_scale == 1.0 and (zeros == 255).all()


def test_fixed_panel_scale_saturates_and_keeps_small_values_faint():
    small = np.array([[0.1, -0.1], [2.0, 0.0]])
    colours, scale = maze_rendering.heat_map_colours(small, scale=1.0)
    assert scale == 1.0
    assert tuple(colours[1, 0]) == tuple(maze_rendering.POSITIVE_COLOUR.astype(np.uint8))  # saturated
    white = np.full(3, 255.0)
    np.testing.assert_allclose(colours[0, 0], white + 0.1 * (maze_rendering.POSITIVE_COLOUR - white), atol=1)
    assert [maze_rendering.nice_ceiling(v) for v in (0.0, 0.03, 0.1, 0.11, 3.0, 7.0)] == [1, 0.05, 0.1, 0.2, 5, 10]


def test_hit_flash_and_strip_ticks():
    env = PlasticMazeEnv(render_mode="rgb_array", show_trace_panel=True, size=5)
    env.reset(seed=0)
    row, col = env.unwrapped.agent_position
    # Put the reward square next to the agent and step onto it.
    target_action = next(
        action
        for action, (dr, dc) in enumerate(((-1, 0), (0, 1), (1, 0), (0, -1)))
        if not env.unwrapped.walls[row + dr, col + dc]
    )
    dr, dc = ((-1, 0), (0, 1), (1, 0), (0, -1))[target_action]
    env.unwrapped.reward_position = type(env.unwrapped.agent_position)(row + dr, col + dc)
    env.set_panel_matrix(np.eye(3), value=1.0)
    before = env.render()
    _, reward, _, _, info = env.step(target_action)
    assert reward == env.unwrapped.reward_value and info["reward_hits"] == 1
    env.set_panel_matrix(np.eye(3), value=2.0)
    after = env.render()
    hit = np.array(maze_rendering.HIT_COLOUR, dtype=np.uint8)
    strip = np.s_[-maze_rendering.STRIP_HEIGHT :, 120:]
    status = np.s_[7 * 40 : 7 * 40 + maze_rendering.STATUS_HEIGHT, :280]
    for region in (strip, status, np.s_[: 7 * 40, : 7 * 40]):  # the tick, the status line and the ring
        assert np.all(after[region] == hit, axis=-1).sum() > np.all(before[region] == hit, axis=-1).sum()
    # A new episode clears the history: no more ticks in the strip.
    env.reset(seed=1)
    env.set_panel_matrix(np.eye(3))
    assert not np.all(env.render()[strip] == hit, axis=-1).any()
    env.close()


def test_panel_matrix_validation():
    with pytest.raises(ValueError, match="show_trace_panel"):
        PlasticMazeEnv().set_panel_matrix(np.zeros((2, 2)))
    env = PlasticMazeEnv(show_trace_panel=True)
    for bad in (np.zeros(3), np.zeros((0, 2)), np.full((2, 2), np.nan), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="matrix"):
            env.set_panel_matrix(bad)
    for keyword in ({"scale": 0.0}, {"scale": -1.0}, {"value": float("nan")}, {"value_scale": 0.0}):
        with pytest.raises(ValueError, match=next(iter(keyword))):
            env.set_panel_matrix(np.ones((2, 2)), **keyword)
    matrix = np.ones((2, 2))
    env.set_panel_matrix(matrix)
    matrix[0, 0] = 5.0  # the env keeps its own copy
    assert env._panel_matrix[0, 0] == 1.0


def test_human_mode_under_dummy_video_driver():
    env = PlasticMazeEnv(render_mode="human", show_trace_panel=True)
    env.reset(seed=0)
    env.set_panel_matrix(np.eye(4))
    for action in (0, 1, 2):
        env.step(action)
    assert env.render() is None
    import pygame

    assert pygame.display.get_surface().get_size() == env.frame_shape[1::-1]
    env.close()
    env.close()


def test_close_is_safe_without_rendering_and_twice():
    env = PlasticMazeEnv(render_mode="rgb_array")
    env.close()
    env.reset(seed=0)
    env.render()
    env.close()
    env.close()


# ---------------------------------------------------------------- constructor validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 8}, "size"),
        ({"size": 3}, "size"),
        ({"size": 0}, "size"),
        ({"size": 9.0}, "size"),
        ({"episode_length": 0}, "episode_length"),
        ({"episode_length": -5}, "episode_length"),
        ({"episode_length": 2.5}, "episode_length"),
        ({"reward_value": 0.0}, "reward_value"),
        ({"reward_value": -1.0}, "reward_value"),
        ({"reward_value": float("inf")}, "reward_value"),
        ({"wall_penalty": -0.1}, "wall_penalty"),
        ({"wall_penalty": float("nan")}, "wall_penalty"),
        ({"wall_penalty": "0.1"}, "wall_penalty"),
        ({"render_mode": "rgb"}, "render_mode"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"observe_previous_action": 1}, "observe_previous_action"),
        ({"observe_time": "yes"}, "observe_time"),
        ({"show_trace_panel": None}, "show_trace_panel"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PlasticMazeEnv(**kwargs)


def test_zero_wall_penalty_is_allowed():
    env = PlasticMazeEnv(wall_penalty=0)
    env.reset(seed=0)
    env.step(0)
    assert env.step(3)[1] == 0.0


# ---------------------------------------------------------------- plastic-rl play maze


def test_play_key_mapping_walks_the_documented_directions():
    import pygame

    env = PlasticMazeEnv()
    keys_to_action = env.get_keys_to_action()
    assert keys_to_action == {(pygame.K_UP,): 0, (pygame.K_RIGHT,): 1, (pygame.K_DOWN,): 2, (pygame.K_LEFT,): 3}
    _, info = env.reset(seed=5)
    # From the centre (5, 5) along free squares: (6, 5), (7, 5), (7, 6), (7, 5), (6, 5).
    keys = [pygame.K_DOWN, pygame.K_DOWN, pygame.K_RIGHT, pygame.K_LEFT, pygame.K_UP]
    assert info["reward_position"] not in {(6, 5), (7, 5), (7, 6)}
    for key, (row_move, col_move) in zip(keys, [(1, 0), (1, 0), (0, 1), (0, -1), (-1, 0)], strict=True):
        before = env.agent_position
        assert env.step(keys_to_action[(key,)])[1] == 0.0
        assert env.agent_position == (before[0] + row_move, before[1] + col_move)


def test_play_arguments():
    from plastic_rl.commands import play

    parser = argparse.ArgumentParser()
    play.add_arguments(parser)
    args = parser.parse_args(["--seed", "3", "--size", "7", "--fps", "20"])
    assert (args.seed, args.size, args.episode_length, args.fps, args.zoom) == (3, 7, 250, 20, 1.0)


def _play_with_scripted_events(monkeypatch, argv: list[str], key_down_ms: int | None, quit_ms: int) -> None:
    """Run ``plastic-rl play maze`` under the dummy video driver, pressing (and holding) up, then quitting."""
    import pygame

    from plastic_rl.cli import main

    open_window = pygame.display.set_mode

    def open_window_then_script_events(*args, **kwargs):
        # Events queued before the window opens may be dropped, so the timers start with the window.
        window = open_window(*args, **kwargs)
        if key_down_ms is not None:
            pygame.time.set_timer(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_UP), key_down_ms, loops=1)
        pygame.time.set_timer(pygame.QUIT, quit_ms)
        return window

    monkeypatch.setattr(pygame.display, "set_mode", open_window_then_script_events)
    assert main(["play", "maze", *argv]) == 0


def test_play_command_steps_while_a_key_is_held(monkeypatch, capsys):
    argv = ["--seed", "0", "--fps", "60", "--episode-length", "3"]
    _play_with_scripted_events(monkeypatch, argv, key_down_ms=50, quit_ms=800)
    assert "episode over after 3 steps" in capsys.readouterr().out


def test_play_command_waits_for_the_player(monkeypatch, capsys):
    argv = ["--seed", "0", "--fps", "60", "--episode-length", "1"]
    _play_with_scripted_events(monkeypatch, argv, key_down_ms=None, quit_ms=300)
    assert "episode over" not in capsys.readouterr().out


def test_the_env_ends_its_own_episodes_without_a_registered_time_limit():
    assert gym.spec("PlasticMaze-v0").max_episode_steps is None and PlasticMazeEnv().episode_length == 250
    env = gym.make("PlasticMaze-v0")
    env.reset(seed=0)
    for _ in range(249):
        _, _, terminated, truncated, _ = env.step(0)
        assert not (terminated or truncated)
    _, _, terminated, _, _ = env.step(0)
    assert terminated  # the env's own end, which SB3 does not bootstrap
    assert isinstance(env.unwrapped, PlasticMazeEnv)
    env.close()


def test_an_episode_longer_than_the_default_is_not_cut():
    env = gym.make("PlasticMaze-v0", episode_length=300)
    env.reset(seed=0)
    for step in range(1, 301):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not truncated and terminated == (step == 300)
