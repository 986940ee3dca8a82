"""The experiment runner: grids of runs of the maze and the supervised tasks, resume, statistics, Ray."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plastic_rl.cli import main
from plastic_rl.commands import experiment
from plastic_rl.experiments import statistics, study, tasks

MAZE = ["experiment", "maze", "--timesteps", "40", "--n-envs", "2", "--bin-episodes", "2", "--save-freq", "20"]
MAZE += ["--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]
PATTERNS = ["experiment", "patterns", "--conditions", "plastic", "--seeds", "2", "--jobs", "1", "--steps", "200"]
PATTERNS += ["--checkpoint-interval", "5", "--eval-interval", "100", "--eval-episodes", "4", "--log-interval", "5"]
PATTERNS += ["--pattern-count", "2", "--pattern-size", "8", "--steps-shown", "2", "--gap-steps", "1"]
PATTERNS += ["--repetitions", "1"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _scores(folder: Path) -> dict[str, str]:
    return {row["condition"] + "/" + row["seed"]: row["final_score"] for row in _read_csv(folder / "finals.csv")}


def _training_rows(run: Path) -> list[dict[str, str]]:
    """A run's curve without its timings (which differ between sittings)."""
    return [{k: v for k, v in row.items() if k not in ("train_s", "wall_s")} for row in _read_csv(run / "curve.csv")]


@pytest.fixture(scope="module")
def patterns_study(tmp_path_factory) -> Path:
    """A finished, uninterrupted two-seed pattern study: the reference for resumed ones."""
    folder = tmp_path_factory.mktemp("reference")
    assert main([*PATTERNS, "-f", str(folder)]) == 0
    return folder


def test_statistics_follow_rliable_definitions():
    scores = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0]
    assert statistics.iqm(np.array(scores)) == pytest.approx(4.5)  # mean of the middle 50%: 3, 4, 5, 6
    described = statistics.condition_statistics(scores)
    assert described.median.value == 4.5 and described.mean == pytest.approx(16.0)
    assert described.iqm.low < 4.5 < described.iqm.high and described.iqm.high < 100
    assert statistics.condition_statistics([2.0, 2.0, 2.0]).iqm == (2.0, 2.0, 2.0)
    assert np.isnan(statistics.condition_statistics([5.0]).median.low)
    # Exact two-sided rank-sum: 3 vs 3 runs can never give p < 0.1; 4 vs 4 can reach 2 / 70.
    assert statistics.smallest_p_value(3, 3) == pytest.approx(0.1)
    assert statistics.smallest_p_value(4, 4) == pytest.approx(2 / 70)
    assert statistics.seeds_needed() == 4
    (test,) = statistics.rank_sum_tests({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 6.0, 7.0, 8.0]})
    assert test.p_value == pytest.approx(2 / 70) and test.statistic == 0
    # Tied scores: the permutations of 2 + 2 runs allow nothing below 1/3, which the normal approximation undercuts.
    (tied,) = statistics.rank_sum_tests({"a": [100.0, 100.0], "b": [200.0, math.inf]})
    assert tied.p_value == pytest.approx(1 / 3) == tied.smallest_p_value
    (single,) = statistics.rank_sum_tests({"a": [0.5], "b": [0.5]})
    assert single.smallest_p_value == 1


def test_maze_study_runs_skips_checks_its_configuration_and_reports(tmp_path, capsys):
    folder = tmp_path / "maze"
    arguments = [*MAZE, "--seeds", "1", "--jobs", "2", "--conditions", "plastic", "rnn", "-f", str(folder)]
    assert main(arguments) == 0
    assert {row["condition"] for row in _read_csv(folder / "finals.csv")} == {"plastic", "rnn"}
    assert [row["episodes"] for row in _read_csv(folder / "curves.csv") if row["condition"] == "rnn"] == ["2", "4"]
    summary = (folder / "summary.md").read_text()
    assert summary.startswith("# PlasticMaze-v0 (plastic_a2c") and "plastic vs rnn" in summary
    assert "cannot reach p < 0.05" in summary and (folder / "curves.png").stat().st_size > 0
    record = json.loads((folder / "plastic" / "seed_0" / "run.json").read_text())
    assert record["command"].startswith("plastic-rl train --algo plastic_a2c --env PlasticMaze-v0 --policy plastic")
    assert record["options"]["n_timesteps"] == 40 and record["options"]["threads"] == 1
    assert (folder / "plastic" / "seed_0" / "train" / "PlasticMaze-v0.zip").exists()
    assert list((folder / "plastic" / "seed_0" / "train").glob("rl_checkpoint_*_steps.pt"))
    capsys.readouterr()
    # The same command again: nothing left to run, same summary.
    assert main(arguments) == 0
    assert "2 of 2 runs finished or running elsewhere; 0 to run" in capsys.readouterr().out
    assert main([*arguments, "--status"]) == 0
    assert capsys.readouterr().out.startswith("2 finished, 0 running, 0 left")
    # Other settings in the same folder: an error that says what differs.
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, "--timesteps", "60"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "plastic-rl experiment: error: runs in the study folder were made with other settings" in error
    assert "n_timesteps is 40 there, 60 now" in error


def test_held_out_scores_tabulate_the_signature_and_each_model_is_evaluated_once(tmp_path, capsys, monkeypatch):
    from plastic_rl.agents import evaluation

    folder = tmp_path / "maze"
    arguments = [*MAZE, "--seeds", "2", "--jobs", "1", "--conditions", "plastic", "rnn", "--score", "heldout"]
    arguments += ["--heldout-freq", "20", "--heldout-episodes", "3"]
    assert main([*arguments, "-f", str(folder)]) == 0
    summary = (folder / "summary.md").read_text()
    assert "| condition | later gap / first hit | steps to first hit |" in summary
    assert "Their two-sided rank-sum p-values:" in summary and "| plastic vs rnn |" in summary
    rows = _read_csv(folder / "finals.csv")
    record = json.loads((folder / "plastic" / "seed_0" / "train" / "heldout.json").read_text())
    plastic_0 = next(row for row in rows if row["condition"] == "plastic" and row["seed"] == "0")
    assert float(plastic_0["final_score"]) == pytest.approx(record["value"]["reward_mean"], rel=1e-5)
    assert float(plastic_0["hits"]) == pytest.approx(record["value"]["hits_mean"], rel=1e-5)
    progress = _read_csv(folder / "rnn" / "seed_1" / "train" / "progress.csv")
    assert [row["heldout/total_timesteps"] for row in progress if row.get("heldout/total_timesteps")] == ["20", "40"]
    assert {row["heldout/episodes"] for row in progress if row.get("heldout/total_timesteps")} == {"3"}
    # Summarizing again reads the kept evaluations: no model is evaluated a second time.
    monkeypatch.setattr(evaluation, "evaluate", lambda *args, **kwargs: pytest.fail("evaluated again"))
    assert main([*arguments, "-f", str(folder), "--summarize-only"]) == 0
    assert _read_csv(folder / "finals.csv") == rows


def test_the_held_out_curve_is_scored_by_its_last_points_and_drawn_per_condition(tmp_path):
    folder = tmp_path / "maze"
    arguments = [*MAZE, "--seeds", "2", "--jobs", "1", "--conditions", "plastic", "rnn", "--timesteps", "80"]
    arguments += ["--score", "heldout_curve", "--heldout-freq", "20", "--heldout-episodes", "4", "-f", str(folder)]
    assert main(arguments) == 0
    for row in _read_csv(folder / "finals.csv"):
        progress = _read_csv(folder / row["condition"] / f"seed_{row['seed']}" / "train" / "progress.csv")
        rewards = [float(r["heldout/reward_mean"]) for r in progress if r.get("heldout/total_timesteps")]
        assert len(rewards) == 4
        assert float(row["final_score"]) == pytest.approx(np.mean(rewards[-3:]), rel=1e-5)
    curve = _read_csv(folder / "curves_held_out_reward_per_episode.csv")
    # Measured every 20 env steps of 10-step episodes: at 2, 4, 6 and 8 episodes, median over both seeds.
    assert [row["episodes"] for row in curve if row["condition"] == "rnn"] == ["2", "4", "6", "8"]
    assert {row["runs"] for row in curve} == {"2"}
    assert (folder / "curves_held_out_later_gap_first_hit.png").stat().st_size > 0
    summary = (folder / "summary.md").read_text()
    assert "mean held-out reward (4 episodes) of the last 3 measurements" in summary
    # The signature and the other held-out statistics per condition, from the same last 3 points.
    assert "| condition | later gap / first hit | steps to first hit |" in summary
    assert "episodes with no hit (of 4)" in summary
    for row in _read_csv(folder / "finals.csv"):
        progress = _read_csv(folder / row["condition"] / f"seed_{row['seed']}" / "train" / "progress.csv")
        hits = [float(r["heldout/hits_mean"]) for r in progress if r.get("heldout/total_timesteps")]
        assert float(row["hits"]) == pytest.approx(np.mean(hits[-3:]), rel=1e-5)


def test_a_held_out_curve_score_needs_the_measurements(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*MAZE, "-f", str(tmp_path), "--score", "heldout_curve"])
    assert stopped.value.code == 2
    assert "--score heldout_curve needs --heldout-freq" in capsys.readouterr().err


def test_a_second_command_on_a_study_in_use_exits_2_naming_the_holder(tmp_path, capsys):
    # Another process holds the folder's lock (as a running study does) until it is killed.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from plastic_rl.experiments.lock import study_lock\n"
         "with study_lock(Path(sys.argv[1]), 'plastic-rl experiment maze (the first)'):\n"
         "    print('locked', flush=True)\n    time.sleep(60)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SystemExit) as stopped:
            main([*MAZE, "--seeds", "1", "--conditions", "rnn", "-f", str(tmp_path)])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert f"plastic-rl experiment: error: {tmp_path} is in use by another plastic-rl experiment" in error
        assert f"pid {holder.pid} on " in error and "plastic-rl experiment maze (the first)" in error
        assert not (tmp_path / "rnn").exists()
        assert main([*MAZE, "--seeds", "1", "--conditions", "rnn", "-f", str(tmp_path), "--status"]) == 0
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves no stale lock.
    assert main([*MAZE, "--seeds", "1", "--conditions", "rnn", "-f", str(tmp_path)]) == 0


def test_a_supervised_study_whose_runs_would_log_nothing_is_refused_before_it_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*PATTERNS, "--steps", "3", "-f", str(tmp_path)])
    assert stopped.value.code == 2
    assert "--steps (3) must be at least --log-interval (5)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_condition_that_cannot_run_on_the_task_is_refused_before_any_run_starts(tmp_path, capsys):
    maze, patterns = [*MAZE, "--seeds", "1", "-f", str(tmp_path)], [*PATTERNS, "--seeds", "1", "-f", str(tmp_path)]
    for command, message in [
        ([*maze, "--conditions", "rnn", "readout"], "readout cannot run: PlasticReadoutPolicy needs a labelled task"),
        (
            [*maze, "--conditions", "rnn", "--condition-set", "rnn", "n_steps", "0"],
            "rnn [n_steps=0] cannot run: n_steps",
        ),
        (
            [*patterns, "--conditions", "plastic", "rnn", "--condition-set", "rnn", "input_gain", "2"],
            "rnn [input_gain=2] cannot run: input_gain must be 1",
        ),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(command)
        assert stopped.value.code == 2
        assert f"plastic-rl experiment: error: {message}" in capsys.readouterr().err
        assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seeds", "0", "--seeds must be"),
        ("--jobs", "0", "--jobs must be"),
        ("--timesteps", "0", "--timesteps must"),
        ("--heldout-freq", "0", "--heldout-freq must be a positive integer"),
        ("--heldout-episodes", "0", "--heldout-episodes must be a positive integer"),
    ],
)
def test_bad_study_options_exit_2_with_a_clear_error(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as stopped:
        main([*MAZE, "-f", str(tmp_path), option, value])
    assert stopped.value.code == 2
    assert f"plastic-rl experiment: error: {message}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_sweeps_make_a_run_folder_per_value_and_reach_the_run_command(tmp_path, capsys):
    arguments = [*MAZE, "-f", str(tmp_path), "--seeds", "2", "--conditions", "rnn", "--sweep", "gamma", "0.5", "0.8"]
    assert main([*arguments, "--status"]) == 0
    assert capsys.readouterr().out.startswith("0 finished, 0 running, 4 left")
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    runs = study.plan(*experiment.parsed_study(parser.parse_args(arguments[1:])))
    assert [run.folder.relative_to(tmp_path).as_posix() for run in runs] == [
        "rnn__gamma=0.5/seed_0", "rnn__gamma=0.8/seed_0", "rnn__gamma=0.5/seed_1", "rnn__gamma=0.8/seed_1"
    ]  # fmt: skip
    assert "gamma:0.8" in runs[1].argv and runs[1].group == "rnn [gamma=0.8]"
    with pytest.raises(SystemExit) as stopped:
        main([*PATTERNS, "-f", str(tmp_path / "p"), "--sweep", "momentum", "0.9"])
    assert stopped.value.code == 2
    message = "--sweep and --condition-set keys must be options of plastic-rl supervised patterns"
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main([*PATTERNS, "-f", str(tmp_path / "q"), "--conditions", "plastic", "rnn", "--sweep", "rule", "hebb", "oja"])
    assert stopped.value.code == 2
    assert "--sweep rule: rnn runs do not use rule, so each of its values would repeat" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:  # -params values are compared as the run reads them
        main([*arguments[:-3], "learning_rate", "3e-3", "0.003"])
    assert "rnn [learning_rate=3e-3] and rnn [learning_rate=0.003] are the same runs" in capsys.readouterr().err


def test_the_runner_builds_the_config_that_its_runs_command_line_builds(tmp_path, monkeypatch):
    # The configuration each run trains is the one `plastic-rl` builds from the run's recorded command line.
    from plastic_rl.agents import training
    from plastic_rl.supervised import runs as supervised_runs

    built = []
    monkeypatch.setattr(training, "train_new_run", built.append)
    monkeypatch.setattr(supervised_runs, "train_run", built.append)
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    maze = [*MAZE, "--conditions", "rnn", "--heldout-freq", "20", "--heldout-episodes", "3"]
    maze += ["--sweep", "gamma", "0.5", "0.8"]
    patterns = [*PATTERNS, "--gradient-clip", "2", "--protocol", "fast", "--sweep", "eta", "0.1", "1e-2"]
    for arguments in (maze, patterns):
        args = parser.parse_args([*arguments[1:], "--seeds", "1", "-f", str(tmp_path / arguments[1])])
        runs = study.plan(*experiment.parsed_study(args))
        assert len(runs) == 2
        for run in runs:
            assert main(list(run.argv)) == 0
            assert built.pop() == run.config


def test_a_study_folder_of_an_earlier_version_is_taken_as_it_is(tmp_path, capsys):
    # A run's record as the runner wrote it before its runs were configuration objects: the same study goes on.
    options = {
        "algo": "plastic_a2c", "env": "PlasticMaze-v0", "policy": "rnn", "n_timesteps": 40, "device": "cpu",
        "seed": 0, "n_envs": 2, "threads": 1, "vec_env": "dummy", "tensorboard_log": None, "eval_freq": None,
        "eval_episodes": 10, "heldout_freq": None, "heldout_episodes": 100, "save_freq": 20, "resume": None,
        "trained_agent": None, "video_freq": None, "hyperparams": ["n_steps:10", "policy_kwargs:{hidden_size: 8}"],
        "hyperparams_set": None, "env_kwargs": ["size:5", "episode_length:10"], "compare_random": False,
        "compare_episodes": 300, "verbose": 0,
    }  # fmt: skip
    (tmp_path / "rnn" / "seed_0").mkdir(parents=True)
    (tmp_path / "rnn" / "seed_0" / "run.json").write_text(json.dumps({"options": options}))
    assert main([*MAZE, "--seeds", "1", "--conditions", "rnn", "-f", str(tmp_path), "--status"]) == 0
    assert capsys.readouterr().out.startswith("0 finished, 0 running, 1 left (1 of them partly done)")


def test_any_registered_supervised_task_gets_a_study(tmp_path, capsys, monkeypatch):
    from plastic_rl.supervised import task

    monkeypatch.setitem(task.TASKS, "copied_patterns", task.TASKS["patterns"])
    assert main(["experiment", "copied_patterns", "--seeds", "4", "-f", str(tmp_path), "--status"]) == 0
    assert capsys.readouterr().out.startswith("0 finished, 0 running, 12 left")


def test_a_killed_study_resumes_with_the_same_results(tmp_path, patterns_study, capsys):
    folder = tmp_path / "killed"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    driver = subprocess.Popen(
        [sys.executable, "-m", "plastic_rl.cli", *PATTERNS, "-f", str(folder)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_checkpoint = folder / "plastic" / "seed_0" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # The driver and its workers at once, as a session's end kills them: killing the driver alone left its worker
    # a moment to finish the run on a fast machine.
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not (folder / "plastic" / "seed_0" / "result.json").exists(), "the run finished before the kill"
    capsys.readouterr()
    assert main([*PATTERNS, "-f", str(folder), "--status"]) == 0
    assert "0 finished, 0 running, 2 left (1 of them partly done)" in capsys.readouterr().out
    assert main([*PATTERNS, "-f", str(folder)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert _scores(folder) == _scores(patterns_study)
    for seed in ("seed_0", "seed_1"):
        assert _training_rows(folder / "plastic" / seed) == _training_rows(patterns_study / "plastic" / seed)


def test_ray_launcher_ships_run_folders_and_resumes_them(tmp_path, patterns_study):
    ray = pytest.importorskip("ray")
    folder = tmp_path / "ray"
    shutil.copytree(patterns_study, folder)
    shutil.rmtree(folder / "plastic" / "seed_1")  # a new run; seed 0 is finished at 200 steps
    arguments = [*PATTERNS, "-f", str(folder), "--launcher", "ray", "--jobs", "2"]
    arguments[arguments.index("--steps") + 1] = "210"  # a larger budget extends seed 0 from its checkpoint
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(arguments) == 0
    finally:
        ray.shutdown()
    for seed in ("seed_0", "seed_1"):
        rows, reference = _training_rows(folder / "plastic" / seed), _training_rows(patterns_study / "plastic" / seed)
        assert rows[: len(reference)] == reference and rows[-1]["step"] == "210"
        assert json.loads((folder / "plastic" / seed / "run.json").read_text())["options"]["steps"] == 210
    assert set(_scores(folder)) == {"plastic/0", "plastic/1"}


def test_held_out_curves_keep_only_the_measurements_on_the_shared_grid(tmp_path, monkeypatch):
    from plastic_rl.experiments import rl

    # A run resumed by an older plastic-rl measured once more, at 130 steps, where it resumed.
    rows = ["heldout/total_timesteps,heldout/reward_mean", "100,1.0", "130,9.0", "200,2.0", "300,3.0"]
    (tmp_path / "progress.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(rl, "episode_rewards", lambda folder: (np.zeros(30), 300))  # 10 steps per episode
    curve = rl.held_out_curves(tmp_path, ["reward_mean"], every=100)["reward_mean"]
    assert curve.x.tolist() == [10, 20, 30] and curve.y.tolist() == [1.0, 2.0, 3.0]


def test_a_run_recorded_before_an_option_existed_is_the_same_run_with_that_option_at_its_default(tmp_path):
    # A study outlives releases: an option added since a run was recorded must neither make the run a mismatch nor
    # make a finished run look unfinished (which would train it again).
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    arguments = [*MAZE[1:], "--conditions", "rnn", "--seeds", "1", "-f", str(tmp_path)]
    (run,) = study.plan(*experiment.parsed_study(parser.parse_args(arguments)))
    run.folder.mkdir(parents=True)
    study._record(tasks.adapter_for("maze"), run, "maze")
    (run.folder / "result.json").write_text("{}")
    record = json.loads((run.folder / "run.json").read_text())
    del record["options"]["heldout_deterministic"]  # as a run recorded before --heldout-deterministic existed
    (run.folder / "run.json").write_text(json.dumps(record))
    (again,) = study.plan(*experiment.parsed_study(parser.parse_args(arguments)))
    assert again.state() == "finished"
    with pytest.raises(ValueError, match="heldout_deterministic is True there, False now"):
        record["options"]["heldout_deterministic"] = True
        (run.folder / "run.json").write_text(json.dumps(record))
        study.plan(*experiment.parsed_study(parser.parse_args(arguments)))


def test_a_condition_set_reaches_that_conditions_runs_only_and_names_them(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    arguments = [*MAZE[1:], "-f", str(tmp_path), "--seeds", "1", "--conditions", "plastic", "rnn"]
    parsed = parser.parse_args([*arguments, "--condition-set", "rnn", "gamma", "0.5"])
    runs = study.plan(*experiment.parsed_study(parsed))
    assert [run.folder.relative_to(tmp_path).as_posix() for run in runs] == ["plastic/seed_0", "rnn__gamma=0.5/seed_0"]
    assert "gamma:0.5" in runs[1].argv and "gamma:0.5" not in runs[0].argv
    assert [run.group for run in runs] == ["plastic", "rnn [gamma=0.5]"]
    patterns = [*PATTERNS[1:], "--seeds", "1", "-f", str(tmp_path / "p"), "--condition-set", "plastic", "eta", "0.5"]
    (run,) = study.plan(*experiment.parsed_study(parser.parse_args(patterns)))
    assert run.config.as_options()["eta"] == 0.5 and run.group == "plastic [eta=0.5]"
    for extra, message in [
        (["--condition-set", "lstm", "gamma", "0.5"], "--condition-set CONDITION must be one of the study's"),
        (["--condition-set", "rnn", "gamma", "0.5", "--sweep", "gamma", "0.8"], "gamma is also swept"),
        (["--condition-set", "rnn", "gamma", "0.5", "--condition-set", "rnn", "gamma", "0.8"], "is given twice"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(["experiment", *arguments, *extra])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", *patterns[:-2], "momentum", "0.9"])
    assert "--sweep and --condition-set keys must be options" in capsys.readouterr().err
    for scoring in (["--condition-set", "plastic", "eval_interval", "0"], ["--sweep", "eval_episodes", "8", "16"]):
        with pytest.raises(SystemExit):
            main(["experiment", *patterns[:-4], *scoring])
        assert "it decides how runs are scored, so it is one value for the study" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", *patterns[:-2], "extra_neurons", "2000"])
    assert "--condition-set plastic extra_neurons: plastic runs do not use extra_neurons" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", *patterns, "--sweep", "learning_rate", "3e-3", "0.003"])
    same = "plastic [eta=0.5, learning_rate=3e-3] and plastic [eta=0.5, learning_rate=0.003] are the same runs"
    assert same in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_reach_tabulates_the_episodes_until_the_evaluations_first_reach_each_value(tmp_path, patterns_study, capsys):
    folder = tmp_path / "study"
    shutil.copytree(patterns_study, folder)
    assert main([*PATTERNS, "-f", str(folder), "--summarize-only", "--reach", "1", "-1"]) == 0
    metric = "wrong_bits"
    for run in _read_csv(folder / "finals.csv"):
        evaluations = [row for row in _read_csv(Path(run["folder"]) / "curve.csv") if row[f"eval_{metric}"]]
        assert float(run[f"episodes to eval {metric} <= 1"]) == float(evaluations[0]["episodes"])
        assert run[f"episodes to eval {metric} <= -1"] == "inf"
    assert (folder / f"curves_eval_{metric}_validation_data.csv").exists()
    assert f"episodes to eval {metric} <= 1" in (folder / "summary.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*PATTERNS, "-f", str(folder), "--summarize-only", "--reach", "0.1", "--eval-interval", "0"])
    assert "--reach needs evaluations during training: --eval-interval must be between 1" in capsys.readouterr().err


def test_runs_that_train_fewer_steps_than_the_evaluation_interval_are_not_scored_as_evaluated(tmp_path, capsys):
    assert main([*PATTERNS, "--seeds", "1", "--eval-interval", "500", "-f", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "the runs never evaluated: --eval-interval 500, --steps 200" in summary and "validation data" not in summary
