"""RL Baselines3 Zoo: its train and enjoy scripts run plastic_a2c through plastic_rl.agents.zoo, and read our runs."""

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
        [sys.executable, "-m", "plastic_rl.agents.zoo", *arguments],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_zoo_arguments_add_our_package_and_hyperparameters():
    arguments = zoo_arguments("train", ["--algo", "plastic_ppo", "--env", "PlasticMaze-v0"])
    assert arguments[-4:] == ["--gym-packages", "plastic_rl", "--conf-file", hyperparameter_file("plastic_ppo")]
    assert yaml.safe_load(Path(hyperparameter_file("plastic_ppo")).read_text())["PlasticMaze-v0"]["n_steps"] == 250
    given = ["--algo", "plastic_a2c", "--gym-packages", "plastic_rl", "-conf", "mine.yml"]
    assert zoo_arguments("train", given) == given


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
