"""SB3 parity of PlasticA2C / PlasticPPO (keywords, log keys) and the run reports: curves and TensorBoard videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C, PlasticPPO
from plastic_rl.agents.callbacks import TraceVideoCallback
from plastic_rl.agents.curves import monitor_episodes, rolling_mean, write_learning_curve

TINY_MAZE = dict(size=5, episode_length=10)


def tiny_maze():
    return make_vec_env("PlasticMaze-v0", n_envs=2, seed=0, env_kwargs=TINY_MAZE)


def test_a2c_takes_sb3_a2c_keywords():
    model = PlasticA2C(
        "PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8),
        use_sde=False, sde_sample_freq=-1, rollout_buffer_class=RolloutBuffer, rollout_buffer_kwargs={},
    )  # fmt: skip
    assert type(model.rollout_buffer) is RolloutBuffer and model.use_sde is False
    with pytest.raises(ValueError, match="use_sde"):
        PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), use_sde=True)
    with pytest.raises(ValueError, match="rollout_buffer_class"):
        PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), rollout_buffer_class=DictRolloutBuffer)


@pytest.mark.parametrize(
    ("algorithm", "policy_loss_key"), [(PlasticA2C, "policy_loss"), (PlasticPPO, "policy_gradient_loss")]
)
def test_log_keys_are_sb3s(tmp_path, algorithm, policy_loss_key):
    model = algorithm("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8))
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(40, log_interval=1)
    with open(tmp_path / "progress.csv", newline="") as file:
        keys = set(next(csv.reader(file)))
    assert {f"train/{policy_loss_key}", "train/value_loss", "train/entropy_loss", "train/explained_variance"} <= keys
    # approx_kl is PPO's: A2C's one step from the rollout's own policy would only log rounding.
    assert ("train/approx_kl" in keys) == (algorithm is PlasticPPO)


def test_logs_are_dumped_every_100_updates_for_a2c_and_every_update_for_ppo_unless_told(tmp_path):
    for algorithm, rows in ((PlasticA2C, 0), (PlasticPPO, 4)):
        model = algorithm("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8))
        folder = tmp_path / algorithm.__name__
        model.set_logger(configure(str(folder), ["csv"]))
        model.learn(80)  # 4 updates of 2 envs x 10 steps
        model.logger.close()
        assert len((folder / "progress.csv").read_text().splitlines()[1:]) == rows


def write_monitor(path, rows):
    with open(path, "w") as file:
        file.write("#" + json.dumps({"t_start": 0.0, "env_id": "PlasticMaze-v0"}) + "\n")
        file.write("r,l,t\n" + "".join(f"{r},{length},{t}\n" for r, length, t in rows))


def test_learning_curve_from_monitor_files(tmp_path):
    assert write_learning_curve(tmp_path) is None  # no episode yet
    write_monitor(tmp_path / "0.monitor.csv", [(1.0, 10, 0.5), (3.0, 10, 2.5)])
    write_monitor(tmp_path / "1.monitor.csv", [(2.0, 10, 1.5)])
    steps, rewards = monitor_episodes(tmp_path)
    assert steps.tolist() == [10, 20, 30] and rewards.tolist() == [1.0, 2.0, 3.0]  # in the order they ended
    png = write_learning_curve(tmp_path)
    assert png == tmp_path / "learning_curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    values = np.array([4.0, 2.0, 0.0, 6.0])
    np.testing.assert_allclose(rolling_mean(values, 2), [4.0, 3.0, 1.0, 3.0])


def test_trace_video_callback_logs_an_animation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = PlasticA2C("PlasticRecurrentPolicy", tiny_maze(), n_steps=10, policy_kwargs=dict(hidden_size=8))
    model.set_logger(configure(str(tmp_path), ["tensorboard"]))
    model.learn(40, callback=TraceVideoCallback("PlasticMaze-v0", 20, TINY_MAZE, pixel_stride=4))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    animations = events.Images("trace/episode")
    assert [image.step for image in animations] == [20, 40]
    assert animations[0].encoded_image_string[:6] == b"GIF89a"
    assert (animations[0].height, animations[0].width) == (96, 140)  # the 5 x 5 maze's (384, 560) frames / 4
    assert "trace/episode_reward" in events.Tags()["scalars"]


def _example(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_maze_stability_counts_spikes_collapses_and_reads_held_out_points(tmp_path):
    stability = _example("maze_stability")
    # Rises to 40, falls below 20 (a collapse), recovers, falls again (a second one).
    assert (
        stability.collapses(np.array([0, 10, 40, 40, 40, 40, 40, 5, 5, 5, 5, 5, 40, 40, 40, 40, 40, 2, 2, 2, 2, 2]))
        == 2
    )
    assert stability.collapses(np.array([0.0, 5, 10, 15, 10, 5, 1, 1, 1])) == 0  # the peak never passed 20
    columns = ["time/total_timesteps", "rollout/ep_len_mean", "rollout/ep_rew_mean", "train/grad_norm_total"]
    columns += ["train/entropy_loss", "plasticity/eta", "plasticity/mean_abs_alpha", "plasticity/trace_norm"]
    columns += ["heldout/total_timesteps", "heldout/reward_mean", "heldout/ratio_of_means"]
    lines = [",".join(columns)]
    for update in range(1, 21):
        grad = 50.0 if update == 7 else 1.0
        lines.append(f"{update * 100},10,{update},{grad},-1.2,0.01,0.02,3.0,,,")
        if update % 10 == 0:
            lines.append(f",,,,,,,,{update * 100},{update * 2},0.8")
    run_folder = tmp_path / "study" / "plastic" / "seed_100" / "train"
    run_folder.mkdir(parents=True)
    (run_folder / "progress.csv").write_text("\n".join(lines) + "\n")
    run = stability.read_run(run_folder / "progress.csv")
    assert run["x"][-1] == 200 and list(run["heldout_x"]) == [100, 200]
    row = stability.row_of("plastic/seed_100", run)
    assert row["spikes"] == "1" and row["grad_norm_max"] == "50" and row["entropy_min"] == "1.200"
    assert row["heldout_100"] == "20.0 / 0.80" and row["heldout_200"] == "40.0 / 0.80"


def test_maze_study_report_scores_runs_from_their_held_out_points(tmp_path):
    report = _example("maze_study_report")
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    header = "run,updates,heldout_100,heldout_200,heldout_300,heldout_150\n"
    first.write_text(
        header
        + "study/plastic/seed_0,9,10.0 / 0.90,20.0 / 0.50,30.0 / 0.40,\n"
        + "study/rnn/seed_0,9,5.0 / 1.00,6.0 / 0.90,7.0 / 0.80,\n"
        + "study/rnn/seed_1,4,5.0 / 1.00,,,99.0 / 0.10\n"  # unfinished when its folder was lost
    )
    second.write_text(header + "study/rnn/seed_1,9,4.0 / 1.00,8.0 / 0.70,9.0 / 0.60,\n")
    runs, replaced = report.read_points([first, second])
    assert replaced == [f"rnn 1 by {second}"]
    assert runs[("rnn", 1)] == {100: (4.0, 1.0), 200: (8.0, 0.7), 300: (9.0, 0.6)}
    rows, unfinished = report.endpoints(runs, [200, 300])
    assert [(row["condition"], row["seed"]) for row in rows] == [("plastic", 0), ("rnn", 0), ("rnn", 1)]
    assert rows[0]["reward"] == pytest.approx(25.0) and rows[0]["signature"] == pytest.approx(0.45)
    assert rows[2]["reward"] == pytest.approx(8.5) and unfinished == []
    rows, unfinished = report.endpoints(report.read_points([first])[0], [200, 300])
    assert unfinished == [("rnn", 1)] and len(rows) == 2
    second.write_text(second.read_text() + "study/rnn/seed_1,9,4.0 / 1.00,8.0 / 0.70,9.0 / 0.60,\n")
    with pytest.raises(ValueError, match="rnn seed 1 is in .* twice"):
        report.read_points([second])


def test_omniglot_summary_labels_a_studys_runs_by_their_path():
    labels = _example("omniglot_summary").run_labels
    assert labels([Path("a/run1"), Path("b/run2")]) == {Path("a/run1"): "run1", Path("b/run2"): "run2"}
    runs = [Path("runs/lake-5way/plastic/seed_0"), Path("runs/lake-5way/prototypical/seed_0")]
    runs.append(Path("runs/lake-20way/plastic/seed_0"))
    assert list(labels(runs).values()) == [
        "lake-5way/plastic/seed_0",
        "lake-5way/prototypical/seed_0",
        "lake-20way/plastic/seed_0",
    ]


def test_maze_study_report_tabulates_lesions_as_trained_to_lesioned(tmp_path):
    report = _example("maze_study_report")
    policy = {"episodes": 300, "first_hit_steps_mean": 50.0, "no_hit_episodes": 4}
    trained = {**policy, "reward_mean": 220.04, "later_gap_mean": 10.0, "ratio_of_means": 0.2}
    lesioned = {**policy, "reward_mean": 70.0, "later_gap_mean": 30.0, "ratio_of_means": 0.6}
    record = {
        "policy": "plastic",
        "training_seed": 8,
        "policies": {"trained agent": trained, "plasticity lesioned": lesioned},
    }
    (tmp_path / "plastic_seed_8.json").write_text(json.dumps(record))
    row = report.lesion_table([tmp_path / "plastic_seed_8.json"])[-1]
    assert row == "| plastic 8 | 300 | 220.0 → 70.0 | 50.0 → 50.0 | 10.0 → 30.0 | 0.20 → 0.60 | 4 → 4 |"
