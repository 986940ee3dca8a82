"""RL Baselines3 Zoo: its train and enjoy scripts run plastic_a2c through plastic_rl.commands.zoo, and read our runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plastic_rl.agents.zoo import hyperparameter_file, zoo_arguments

pytest.importorskip("rl_zoo3")

ENV_KWARGS = ["--env-kwargs", "size:5", "episode_length:20", "observe_previous_action:True", "observe_time:True"]


def zoo(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    environment.update(SDL_VIDEODRIVER="dummy")
    return subprocess.run(
        [sys.executable, "-m", "plastic_rl.commands.zoo", *arguments],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_zoo_arguments_add_our_package_and_hyperparameters():
    arguments = zoo_arguments("train", ["--algo", "plastic_ppo", "--env", "PlasticMaze-v0"])
    assert arguments[4:8] == ["--gym-packages", "plastic_rl", "--conf-file", hyperparameter_file("plastic_ppo")]
    assert yaml.safe_load(Path(hyperparameter_file("plastic_ppo")).read_text())["PlasticMaze-v0"]["n_steps"] == 250
    given = ["--algo", "plastic_a2c", "--gym-packages", "plastic_rl", "-conf", "mine.yml"]
    assert zoo_arguments("train", given) == given
    # The file's env_kwargs, for the Zoo's evaluation env and its args.yml, unless the command line has its own.
    maze = zoo_arguments("train", ["--algo", "plastic_a2c", "--env", "PlasticMaze-v0"])
    assert maze[maze.index("--env-kwargs") + 1 :] == ["observe_previous_action:True", "observe_time:True"]
    own = ["--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "--env-kwargs", "size:5"]
    assert zoo_arguments("train", own).count("--env-kwargs") == 1
    # --gym-packages is left out for the scripts that do not take it.
    assert zoo_arguments("plot_train", ["-a", "plastic_a2c", "--gym-packages", "plastic_rl", "-f", "logs"]) == [
        "-a", "plastic_a2c", "-f", "logs"
    ]  # fmt: skip


def test_zoo_trains_and_enjoys_plastic_a2c(tmp_path):
    train = zoo("train", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "--gym-packages", "plastic_rl",
                "-n", "200", "-f", "logs", "--eval-freq", "-1", "--num-threads", "1", "--seed", "0", *ENV_KWARGS,
                "-params", "n_envs:2", "n_steps:20", "policy_kwargs:dict(hidden_size=8)", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    run = tmp_path / "logs" / "plastic_a2c" / "PlasticMaze-v0_1"
    assert (run / "PlasticMaze-v0.zip").is_file() and (run / "PlasticMaze-v0" / "config.yml").is_file()
    enjoy = zoo("enjoy", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "-f", "logs", "--no-render",
                "-n", "40", "--num-threads", "1", cwd=tmp_path)  # fmt: skip
    assert enjoy.returncode == 0, enjoy.stdout[-2000:] + enjoy.stderr[-2000:]
    assert "Episode Reward" in enjoy.stdout


def test_zoo_enjoy_and_record_video_read_a_plastic_rl_train_run(tmp_path):
    from plastic_rl.cli import main

    tiny = ["--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]
    assert main(["train", "-f", str(tmp_path / "logs"), "--n-envs", "2", "--no-progress-bar", "-n", "40", *tiny]) == 0
    run_files = tmp_path / "logs" / "plastic_a2c" / "PlasticMaze-v0_1" / "PlasticMaze-v0"
    config = yaml.safe_load((run_files / "config.yml").read_text())
    assert config["policy"] == "PlasticRecurrentPolicy" and config["policy_kwargs"]["plasticity"] == "full"
    assert yaml.safe_load((run_files / "args.yml").read_text())["env_kwargs"]["episode_length"] == 10
    enjoy = zoo("enjoy", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "-f", "logs", "--no-render",
                "-n", "25", "--num-threads", "1", cwd=tmp_path)  # fmt: skip
    assert enjoy.returncode == 0, enjoy.stdout[-2000:] + enjoy.stderr[-2000:]
    assert "Episode Length 10" in enjoy.stdout  # the run's env_kwargs reached the Zoo's env
    video = zoo("record_video", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "-f", "logs", "-n", "20",
                "-o", "videos", cwd=tmp_path)  # fmt: skip
    assert video.returncode == 0, video.stdout[-2000:] + video.stderr[-2000:]
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1


def test_the_readme_zoo_commands_run_as_written_with_the_yaml_env_kwargs(tmp_path):
    # No --env-kwargs: the maze entry's (previous action, time) reach the Zoo's training, evaluation and video envs.
    train = zoo("train", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "--gym-packages", "plastic_rl",
                "-n", "160", "-f", "logs", "--eval-freq", "80", "--eval-episodes", "1", "--num-threads", "1",
                "-params", "n_envs:2", "n_steps:20", "policy_kwargs:dict(hidden_size=8)", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    run = tmp_path / "logs" / "plastic_a2c" / "PlasticMaze-v0_1"
    assert "observe_time: true" in (run / "PlasticMaze-v0" / "args.yml").read_text()  # the Zoo's own YAML dialect
    assert (run / "evaluations.npz").is_file()
    video = zoo("record_video", "--algo", "plastic_a2c", "--env", "PlasticMaze-v0", "--gym-packages", "plastic_rl",
                "-f", "logs", "-n", "10", "-o", "videos", cwd=tmp_path)  # fmt: skip
    assert video.returncode == 0, video.stdout[-2000:] + video.stderr[-2000:]
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1
    environment_without_display = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    plot = subprocess.run(
        [sys.executable, "-m", "plastic_rl.commands.zoo", "plot_train", "--algo", "plastic_a2c", "--env",
         "PlasticMaze-v0", "--gym-packages", "plastic_rl", "-f", "logs"],
        cwd=tmp_path, env={**environment_without_display, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stdout[-2000:] + plot.stderr[-2000:]
    assert (tmp_path / "plot_train.png").stat().st_size > 0 and "Saved plot_train.png" in plot.stdout


def test_zoo_help_prints_the_scripts_and_exits_0_and_no_script_is_an_error(capsys):
    from plastic_rl.commands.zoo import main

    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m plastic_rl.commands.zoo {train,enjoy,")
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err
