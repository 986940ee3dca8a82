"""Smoke tests of the RL commands: train, enjoy and bench a2c, at tiny budgets (experiments: test_experiments.py)."""

from __future__ import annotations

import pytest
import torch
import yaml

from plastic_rl.cli import main

TINY = ["--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    # The commands set torch's thread count for their process; give the rest of the suite its own back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(log_folder, *extra: str) -> int:
    return main(["train", "-f", str(log_folder), "--n-envs", "2", "--no-progress-bar", *TINY, *extra])


def test_train_writes_a_run_folder_and_compares_with_random(tmp_path, capsys):
    assert train(tmp_path, "-n", "40", "--eval-freq", "20", "--eval-episodes", "2", "--save-freq", "20",
                 "--compare-random", "--compare-episodes", "2") == 0  # fmt: skip
    folder = tmp_path / "plastic_a2c" / "PlasticMaze-v0_1"
    names = {path.name for path in folder.iterdir()}
    assert {"PlasticMaze-v0.zip", "best_model.zip", "config.yml", "0.monitor.csv", "1.monitor.csv"} <= names
    assert "rl_model_40_steps.zip" in names
    config = yaml.safe_load((folder / "config.yml").read_text())
    assert config["policy"] == "plastic" and config["hyperparameters"]["env_kwargs"]["size"] == 5
    assert config["hyperparameters"]["policy_kwargs"]["hidden_size"] == 8
    assert config["hyperparameters"]["gamma"] == 0.9  # the maze entry of plastic_a2c.yml
    output = capsys.readouterr().out
    assert "trained agent" in output and "random policy" in output
    assert train(tmp_path, "-n", "20") == 0
    assert (tmp_path / "plastic_a2c" / "PlasticMaze-v0_2").is_dir()


def test_enjoy_plays_the_latest_run_and_records_a_gif(tmp_path, capsys):
    assert train(tmp_path, "-n", "20", "--policy", "homogeneous") == 0
    assert main(["enjoy", "-f", str(tmp_path), "--no-render", "--n-episodes", "2"]) == 0
    assert capsys.readouterr().out.count("reward") == 2
    gif = tmp_path / "out.gif"
    assert main(["enjoy", "-f", str(tmp_path), "--record", str(gif), "--deterministic"]) == 0
    assert gif.stat().st_size > 0


@pytest.mark.parametrize("algo", ["plastic_ppo", "recurrent_ppo"])
def test_train_other_algorithms_with_lstm(tmp_path, algo):
    assert train(tmp_path, "-n", "40", "--algo", algo, "--policy", "lstm") == 0
    assert (tmp_path / algo / "PlasticMaze-v0_1" / "PlasticMaze-v0.zip").exists()


def test_bad_command_line_values_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="policy must be 'lstm' with algo 'recurrent_ppo'"):
        train(tmp_path, "-n", "20", "--algo", "recurrent_ppo", "--policy", "rnn")
    with pytest.raises(ValueError, match="key:value"):
        main(["train", "-f", str(tmp_path), "-params", "n_steps=10"])
    with pytest.raises(ValueError, match="no run of PlasticMaze-v0"):
        main(["enjoy", "-f", str(tmp_path / "empty"), "--no-render"])


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_bench_reports_throughput_and_memory(capsys):
    assert main(["bench", "a2c", "--n-envs", "2", "--n-steps", "10", "--hidden-size", "8", "--updates", "1"]) == 0
    output = capsys.readouterr().out
    assert "env steps/s" in output and "peak memory" in output
