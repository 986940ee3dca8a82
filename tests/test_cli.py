"""Smoke tests of the RL commands: train, enjoy and bench a2c, at tiny budgets (experiments: test_experiments.py)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from plastic_rl.agents.checkpoints import latest_checkpoint
from plastic_rl.agents.training import train_run
from plastic_rl.cli import main

TINY = ["--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]


def train(log_folder, *extra: str) -> int:
    return main(["train", "-f", str(log_folder), "--n-envs", "2", "--no-progress-bar", *TINY, *extra])


def test_train_writes_a_run_folder_and_compares_with_random(tmp_path, capsys):
    assert train(tmp_path, "-n", "40", "--eval-freq", "20", "--eval-episodes", "2", "--save-freq", "20",
                 "--compare-random", "--compare-episodes", "2") == 0  # fmt: skip
    folder = tmp_path / "plastic_a2c" / "PlasticMaze-v0_1"
    names = {path.name for path in folder.iterdir()}
    assert {"PlasticMaze-v0.zip", "best_model.zip", "config.yml", "0.monitor.csv", "1.monitor.csv"} <= names
    assert "rl_checkpoint_20_steps.pt" in names  # checkpoints fall between updates (of 20 steps here)
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


def test_the_pretrained_maze_agent_loads_plays_and_evaluates(tmp_path, capsys, monkeypatch):
    from plastic_rl.agents.pretrained import load_pretrained, pretrained_config

    model = load_pretrained("maze")
    config = pretrained_config("maze")
    assert model.policy.plasticity == "full" and model.policy.core.rule == "oja"
    assert {"commit", "episodes", "command", "heldout"} <= set(config["provenance"])
    # Packaged without Adam's moments: a starting point for train -i, re-made at its first step.
    assert not model.policy.optimizer.state
    assert main(["enjoy", "--pretrained", "maze", "--no-render", "--n-episodes", "1"]) == 0
    assert "episode 1: reward" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--pretrained", "maze", "--n-episodes", "4", "--no-random"]) == 0
    assert "trained agent" in capsys.readouterr().out
    assert (tmp_path / "pretrained_maze_evaluation.json").exists()
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "--pretrained", "maze", "--model", "x.zip"])
    assert stopped.value.code == 2
    assert "--model and --pretrained each name the model" in capsys.readouterr().err


def test_enjoy_records_an_mp4_through_record_video(tmp_path, capsys):
    pytest.importorskip("moviepy")
    assert train(tmp_path, "-n", "20", "--policy", "plastic") == 0
    video = tmp_path / "out.mp4"
    for panel, scale in (("effective", "0.5"), ("trace", "episode")):
        assert (
            main(["enjoy", "-f", str(tmp_path), "--record", str(video), "--panel", panel, "--panel-scale", scale]) == 0
        )
        assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    assert not any(path.name.startswith(".recording") for path in tmp_path.iterdir())  # the recorder's folder went
    with pytest.raises(SystemExit) as exit_info:
        main(["enjoy", "-f", str(tmp_path), "--record", str(video), "--panel-scale", "-1"])
    assert exit_info.value.code == 2
    assert "plastic-rl enjoy: error: --panel-scale must be" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["plastic_ppo", "recurrent_ppo"])
def test_train_other_algorithms_with_lstm(tmp_path, algo):
    assert train(tmp_path, "-n", "40", "--algo", algo, "--policy", "lstm") == 0
    assert (tmp_path / algo / "PlasticMaze-v0_1" / "PlasticMaze-v0.zip").exists()


def test_bad_command_line_values_give_clear_errors(tmp_path, capsys):
    # More cases in test_bad_inputs.py.
    for argv, message in [
        (["train", "-f", str(tmp_path), "--n-envs", "2", "--algo", "recurrent_ppo", "--policy", "rnn", *TINY],
         "plastic-rl train: error: policy must be 'lstm' with algo 'recurrent_ppo'"),
        (["train", "-f", str(tmp_path), "-params", "n_steps=10"], "plastic-rl train: error: -params takes key:value"),
        # The file's rule gives way to --policy neuromod (test_rules trains it); -params saying otherwise is an error.
        (["train", "-f", str(tmp_path), "--policy", "neuromod", *TINY, "policy_kwargs:{rule: oja}"],
         "policy_kwargs rule='oja' contradicts the policy 'neuromod'"),
        (["enjoy", "-f", str(tmp_path / "empty"), "--no-render"], "plastic-rl enjoy: error: no run of PlasticMaze-v0"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "recurrent_ppo").exists() or not any((tmp_path / "recurrent_ppo").iterdir())


def test_key_values_read_exponent_numbers_as_numbers():
    from plastic_rl.agents.hyperparameters import parse_key_values

    parsed = parse_key_values(["learning_rate:1e-4", "policy_kwargs:{hebbian_learning_rate: 2.5E+2, rule: e1}"], "-p")
    assert parsed == {"learning_rate": 1e-4, "policy_kwargs": {"hebbian_learning_rate": 250.0, "rule": "e1"}}
    assert parse_key_values(["names:[1e3, x1e3]"], "-p") == {"names": [1000.0, "x1e3"]}


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_bench_reports_throughput_and_memory(capsys):
    assert main(["bench", "a2c", "--n-envs", "2", "--n-steps", "10", "--hidden-size", "8", "--updates", "1"]) == 0
    output = capsys.readouterr().out
    assert "env steps/s" in output and "peak memory" in output and "previous path" in output
    assert "x outside env stepping" in output
    assert "; autograd core" not in output


@pytest.mark.parametrize("policy", ["neuromod", "retroneuromod"])
def test_bench_times_a_neuromodulated_core_beside_its_autograd_loop(capsys, policy):
    tiny = ["--n-envs", "2", "--n-steps", "10", "--hidden-size", "8", "--updates", "1", "--reference-updates", "0"]
    assert main(["bench", "a2c", "--policy", "plastic", policy, *tiny]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("n_envs")]
    assert [line.split(":")[0] for line in lines] == ["n_envs    2, plastic", f"n_envs    2, {policy}"]
    assert "x plastic's seconds per update" in lines[1] and "plastic's seconds" not in lines[0]
    assert main(["bench", "a2c", "--policy", policy, *tiny, "--autograd-updates", "1"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("n_envs"))
    assert "; autograd core" in line and "; previous path" not in line
    with pytest.raises(SystemExit) as error:
        main(["bench", "a2c", "--policy", "plastic", policy, *tiny, "--autograd-updates", "1"])
    assert error.value.code == 2 and "times one policy at a time" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["bench", "a2c", "--policy", "lstm", *tiny, "--autograd-updates", "1"])
    assert error.value.code == 2
    assert "--autograd-updates times a plastic core's autograd loop" in capsys.readouterr().err


def test_bench_core_has_a_row_per_rule_against_its_floor(capsys):
    arguments = ["--configs", "8,6,2", "--repeats", "1", "--threads", "1", "--rules", "hebb", "retroneuromod"]
    assert main(["bench", "core", *arguments]) == 0
    rows = capsys.readouterr().out.split("N=8 T=6 B=2 ")[1:]
    assert [row.split(":")[0] for row in rows] == ["rule=hebb", "rule=retroneuromod"]
    assert all("floor:" in row and "speed-up over autograd" in row for row in rows)


def final_parameters(model_path) -> torch.Tensor:
    from plastic_rl.agents import PlasticA2C

    model = PlasticA2C.load(model_path, device="cpu")
    return torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()


def monitor_rows(folder) -> list[list[tuple[str, str]]]:
    rows = []
    for rank in range(2):
        with open(folder / f"{rank}.monitor.csv") as file:
            next(file)
            rows.append([(row["r"], row["l"]) for row in csv.DictReader(file)])
    return rows


def test_ctrl_c_saves_the_model_says_how_to_resume_and_exits_130(tmp_path):
    folder = tmp_path / "logs"
    process = subprocess.Popen(
        [sys.executable, "-m", "plastic_rl.cli", "train", "-f", str(folder), "--n-envs", "2", "--threads", "1",
         "--no-progress-bar", "-n", "100000", "--save-freq", "40", *TINY],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PLASTIC_RL_TRACEBACK": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A process started in the background by a script inherits SIGINT ignored: Python then never raises
        # KeyboardInterrupt. Ctrl-C at a terminal reaches a foreground process, whose SIGINT is the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    run = folder / "plastic_a2c" / "PlasticMaze-v0_1"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and latest_checkpoint(run) is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, errors
    assert "Traceback" not in errors and errors.rstrip().endswith("plastic-rl train: interrupted")
    assert f"saved {run / 'PlasticMaze-v0_interrupted.zip'}; continue from its latest checkpoint" in errors
    assert f"plastic-rl train --resume {run}" in errors
    from plastic_rl.agents import PlasticA2C

    assert PlasticA2C.load(run / "PlasticMaze-v0_interrupted.zip").num_timesteps > 0
    assert not (run / "PlasticMaze-v0.zip").exists()  # not taken for a finished run


def test_a_corrupt_newest_checkpoint_is_named_and_the_older_one_resumes(tmp_path, capsys, train_config):
    from plastic_rl.agents.checkpoints import checkpoints_newest_first

    arguments = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "100", "--save-freq", "40", *TINY]
    run = tmp_path / "run"
    train_run(run, train_config(*arguments))
    (run / "PlasticMaze-v0.zip").unlink()  # as if killed after its last checkpoint
    newest, older = checkpoints_newest_first(run)
    payload = torch.load(newest, weights_only=True)
    model = bytearray(payload["model"])
    model[len(model) // 2] ^= 0x10  # one flipped bit inside the model's archive
    torch.save({**payload, "model": bytes(model)}, newest)
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--resume", str(newest), "--no-progress-bar"])
    assert stopped.value.code == 2
    assert f"--resume: {newest} is corrupt:" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress-bar"]) == 0
    captured = capsys.readouterr()
    assert f"skipping a checkpoint that does not read back: {newest} is corrupt" in captured.err
    assert f"Resuming {older}" in captured.out and (run / "PlasticMaze-v0.zip").is_file()


def test_a_run_killed_with_sigkill_resumes_exactly(tmp_path, capsys, train_config):
    arguments = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "800", "--save-freq", "40", *TINY]
    killed = tmp_path / "killed"
    script = "import sys; from plastic_rl.agents.config import TrainConfig; from plastic_rl.agents.training import "
    script += "train_run; train_run(sys.argv[1], eval(sys.argv[2]))"  # the config's repr builds it again
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(killed), repr(train_config(*arguments))],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            checkpoint = latest_checkpoint(killed)
            if checkpoint is not None and int(checkpoint.name.split("_")[2]) >= 200:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed: make it longer"
    assert not (killed / "PlasticMaze-v0.zip").exists()
    stopped_at = int(latest_checkpoint(killed).name.split("_")[2])
    # The last two checkpoints are kept; a kill between writing a new one and removing the oldest leaves three.
    assert len(list(killed.glob("*.pt"))) in (2, 3)
    with pytest.raises(ValueError, match=r"other options \(seed\)"):
        train_run(killed, train_config(*arguments, "--seed", "7"))
    assert main(["train", "--resume", str(killed), "--no-progress-bar"]) == 0
    assert f"(from step {stopped_at})" in capsys.readouterr().out  # continued, not started again

    uninterrupted = train_run(tmp_path / "uninterrupted", train_config(*arguments))
    torch.testing.assert_close(
        final_parameters(killed / "PlasticMaze-v0.zip"), final_parameters(uninterrupted), rtol=0, atol=0
    )
    assert monitor_rows(killed) == monitor_rows(uninterrupted.parent)
    # The per-update log continues from the checkpoint: the same updates, none lost or repeated.
    steps = [
        [row["time/total_timesteps"] for row in csv.DictReader(open(folder / "progress.csv", newline=""))]
        for folder in (killed, uninterrupted.parent)
    ]
    assert steps[0] == steps[1] and len(steps[0]) == 800 // 20
    assert len(monitor_rows(killed)[0]) == 800 // 2 // 10 and stopped_at < 800
    # Once finished, the function returns the final model without training again.
    assert train_run(killed, train_config(*arguments)) == killed / "PlasticMaze-v0.zip"


def test_trained_agent_continues_from_the_saved_parameters_and_bad_resume_paths(tmp_path, capsys):
    assert train(tmp_path, "-n", "20") == 0
    first = tmp_path / "plastic_a2c" / "PlasticMaze-v0_1" / "PlasticMaze-v0.zip"
    # A learning rate of 0 leaves the loaded parameters as they are: the new run started from them.
    assert train(tmp_path, "-n", "20", "-i", str(first), "-params", "learning_rate:0.0") == 0
    second = tmp_path / "plastic_a2c" / "PlasticMaze-v0_2" / "PlasticMaze-v0.zip"
    torch.testing.assert_close(final_parameters(second), final_parameters(first), rtol=0, atol=0)
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--resume", str(tmp_path / "nothing")])
    assert stopped.value.code == 2
    (tmp_path / "rl_checkpoint_5_steps.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--resume", str(tmp_path / "rl_checkpoint_5_steps.pt")])
    assert stopped.value.code == 2
    errors = capsys.readouterr().err
    assert "plastic-rl train: error: --resume: no checkpoint at" in errors and "not a readable" in errors


def test_held_out_signature_is_measured_during_training_without_changing_it(tmp_path, train_config):
    common = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "100", "--seed", "3", *TINY]
    measured = train_run(
        tmp_path / "measured", train_config(*common, "--heldout-freq", "40", "--heldout-episodes", "6")
    )
    plain = train_run(tmp_path / "plain", train_config(*common))
    torch.testing.assert_close(final_parameters(measured), final_parameters(plain), rtol=0, atol=0)
    with open(measured.parent / "progress.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("heldout/episodes")]
    # Rollouts of 2 x 10 steps: measured after the rollouts that pass 40 and 80 steps.
    assert [row["heldout/total_timesteps"] for row in rows] == ["40", "80"]
    assert all(float(row["heldout/episodes"]) == 6 and float(row["heldout/hits_mean"]) >= 0 for row in rows)
    # Resumed from its checkpoint at 80 steps, a run measures at the same points, not also after it resumed.
    resumed = train_run(tmp_path / "resumed", train_config(*common, "--heldout-freq", "80", "--heldout-episodes", "6",
                                                           "--save-freq", "20"))  # fmt: skip
    resumed.unlink()
    assert main(["train", "--resume", str(latest_checkpoint(resumed.parent)), "--no-progress-bar"]) == 0
    with open(resumed.parent / "progress.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("heldout/episodes")]
    assert [row["heldout/total_timesteps"] for row in rows] == ["80"]


def test_held_out_episodes_take_their_own_env_kwargs_and_greedy_answers(tmp_path, train_config, monkeypatch):
    # What Omniglot from reward needs: held-out episodes of the test classes (part:test), answered greedily.
    from plastic_rl.agents import evaluation

    calls, original = [], evaluation.evaluate

    def recording(model, env_id, env_kwargs=None, *args, **kwargs):
        calls.append((dict(env_kwargs), kwargs.get("deterministic")))
        return original(model, env_id, env_kwargs, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", recording)
    held_out = ["--heldout-freq", "20", "--heldout-episodes", "2", "--heldout-env-kwargs", "episode_length:6"]
    common = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "40", *TINY]
    train_run(tmp_path / "run", train_config(*common, *held_out, "--heldout-deterministic"))
    assert len(calls) == 2
    assert all((kwargs["size"], kwargs["episode_length"], greedy) == (5, 6, True) for kwargs, greedy in calls)


def test_checkpoints_of_older_versions_get_the_defaults_of_options_added_since():
    from plastic_rl.agents.training import stored_config

    config = stored_config({"arguments": {"policy": "rnn", "seed": 4}})
    assert config.policy == "rnn" and config.seed == 4 and config.heldout_freq is None


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path, train_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from plastic_rl.agents.checkpoints import checkpoints_newest_first

    run = tmp_path / "run"
    arguments = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "80", "--save-freq", "40", *TINY]
    train_run(run, train_config(*arguments, "-tb", str(tmp_path / "tb")))
    oldest = checkpoints_newest_first(run)[-1]  # at step 40: the stopped run had logged up to step 80
    (run / "PlasticMaze-v0.zip").unlink()
    assert main(["train", "--resume", str(oldest), "--no-progress-bar"]) == 0
    (folder,) = (tmp_path / "tb").iterdir()
    assert len(list(folder.iterdir())) == 1  # one event file: the stopped run's events carried into the resumed run's
    events = EventAccumulator(str(folder))
    events.Reload()
    steps = [event.step for event in events.Scalars("rollout/ep_rew_mean")]
    assert steps == [20, 40, 60, 80]  # each step once, as if the run had never stopped


def test_gif_bytes_keeps_every_frame_and_flat_colours_exactly():
    import io

    import numpy as np
    from PIL import Image, ImageSequence

    from plastic_rl.agents.recording import gif_bytes

    colours = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 30, 200]], dtype=np.uint8)
    frames = [colours[(np.indices((40, 60)).sum(axis=0) + shift) % 4] for shift in range(5)]
    gif = Image.open(io.BytesIO(gif_bytes(frames, 100)))
    decoded = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
    assert len(decoded) == 5 and all(np.array_equal(a, b) for a, b in zip(decoded, frames, strict=True))


def test_train_and_supervised_draw_the_same_progress_bar(tmp_path, capsys):
    assert main(["train", "-f", str(tmp_path), "--n-envs", "2", "-n", "40", *TINY]) == 0
    rl = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("100%|") and "40/40 [" in line and "step/s]" in line for line in rl)
    supervised = ["supervised", "patterns", "--steps", "2", "--pattern-count", "2", "--pattern-size", "10"]
    assert main([*supervised, "--run-dir", str(tmp_path / "s")]) == 0
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("100%|") and "2/2 [" in line and "step/s" in line for line in lines)


def test_the_supervised_summary_line_has_no_dangling_separator(tmp_path, capsys):
    tiny = ["--steps", "2", "--pattern-count", "2", "--pattern-size", "10", "--no-progress", "--eval-interval", "0"]
    assert main(["supervised", "patterns", *tiny, "--run-dir", str(tmp_path / "run")]) == 0
    summary = [line for line in capsys.readouterr().out.splitlines() if " s training" in line]
    assert summary and not summary[-1].rstrip().endswith(";")


def test_version(capsys):
    from plastic_rl import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"plastic-rl {__version__}"


def test_every_commands_help_imports_nothing_heavy():
    """``plastic-rl CMD --help`` answers at once: no command imports torch, SB3, scipy or pygame to declare its
    options (they cost seconds to import; the commands import them when they run)."""
    script = (
        "import contextlib, io, sys\n"
        "from plastic_rl.cli import COMMANDS, main\n"
        "for words in [(), *COMMANDS]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([*words, '--help'])\n"
        "print(sorted(name for name in ('torch', 'stable_baselines3', 'scipy', 'pygame') if name in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout == "[]\n"


def test_the_library_imports_no_command():
    """Imports flow core <- data <- envs <- agents / supervised <- experiments <- commands: below the commands and
    the benchmarks, no module names one."""
    package = Path(__file__).resolve().parents[1] / "plastic_rl"
    for path in package.rglob("*.py"):
        if path.parent.name in ("commands", "benchmarks") or path.name == "cli.py":
            continue
        text = path.read_text()
        assert "plastic_rl.commands" not in text and "plastic_rl.benchmarks" not in text, path
