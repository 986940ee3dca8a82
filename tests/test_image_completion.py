"""CIFAR-10 reader, PlasticImageCompletion-v0 and the 'images' supervised task, on tiny data written here."""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.cli import main
from plastic_rl.core.options import BadInputError
from plastic_rl.data import DataError
from plastic_rl.data.cifar import FOLDER, load_grayscale, read_batch, to_grayscale
from plastic_rl.envs.image_completion import ImageCompletionEnv, ImageCompletionProtocol, sample_image_episodes
from plastic_rl.envs.pattern_memory import make_rng
from plastic_rl.supervised import SupervisedTrainer, make_task
from plastic_rl.supervised import images as images_task
from plastic_rl.supervised.images_report import erasure_settings
from plastic_rl.supervised.model_files import cached_test_scores, load_model

SMALL = dict(image_count=3, steps_shown=2, gap_steps=1, repetitions=2, query_steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_batch(path, count: int, seed: int) -> np.ndarray:
    """A batch file in the official format (a protocol-2 pickle of a dict with bytes keys)."""
    data = np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)
    record = {
        b"batch_label": b"tiny batch",
        b"labels": [int(label) for label in np.arange(count) % 10],
        b"data": data,
        b"filenames": [f"image_{index}.png".encode() for index in range(count)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(record, protocol=2))
    return data


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    _write_batch(folder / FOLDER / "data_batch_1", 6, seed=1)
    _write_batch(folder / FOLDER / "data_batch_3", 4, seed=3)
    _write_batch(folder / FOLDER / "test_batch", 5, seed=9)
    return folder


def test_reader_and_grayscale(data_dir):
    images, labels = read_batch(data_dir / FOLDER / "test_batch")
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [0, 1, 2, 3, 4]
    raw = pickle.loads((data_dir / FOLDER / "test_batch").read_bytes())[b"data"]
    # Channel planes: the first 1,024 values of a row are red, row-major.
    assert images[2, 0, 1, 3] == raw[2, 32 + 3] and images[2, 2, 0, 0] == raw[2, 2048]
    gray = load_grayscale("test", data_dir)
    summed = raw.reshape(5, 3, 1024).astype(np.float64).sum(1)
    centred = summed - summed.mean(1, keepdims=True)
    np.testing.assert_allclose(gray, centred / np.abs(centred).max(1, keepdims=True), atol=1e-6)
    assert np.abs(gray).max(1) == pytest.approx(1.0) and np.abs(gray.mean(1)).max() < 1e-6
    # Whichever training batches exist (here 1 and 3), in order.
    assert load_grayscale("train", data_dir).shape == (10, 1024)
    flat = np.full((1, 3, 32, 32), 7, dtype=np.uint8)
    assert (to_grayscale(flat) == 0).all()


def test_missing_and_corrupt_files_say_which_where_and_how(tmp_path, data_dir):
    with pytest.raises(DataError, match=r"test_batch not found in .*cifar-10-batches-py.*plastic-rl download cifar"):
        load_grayscale("test", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no CIFAR-10 training batch .* found in .*nowhere"):
        load_grayscale("train", tmp_path / "nowhere")
    (data_dir / FOLDER / "test_batch").write_bytes(b"\x80\x02truncated")
    with pytest.raises(DataError, match=r"test_batch is corrupt"):
        load_grayscale("test", data_dir)
    (data_dir / FOLDER / "test_batch").write_bytes(pickle.dumps({b"data": [1, 2, 3]}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch has no \(N, 3072\) uint8"):
        load_grayscale("test", data_dir)
    with pytest.raises(ValueError, match="split must be one of"):
        load_grayscale("validation", data_dir)


def test_a_tampered_pickle_cannot_run_code(tmp_path, data_dir, code_carrier):
    marker = tmp_path / "pwned"
    path = data_dir / FOLDER / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": code_carrier(marker), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1 is corrupt .*refusing to load the global (posix|os|nt)\.system"):
        load_grayscale("train", data_dir)
    assert not marker.exists()


def test_download_is_registered():
    from plastic_rl.data import DATASETS

    assert DATASETS["cifar"] == "plastic_rl.data.cifar"


def test_protocol_lengths_and_degradations():
    assert ImageCompletionProtocol().episode_length == 3 * 23 * 3 + 3 == 210
    protocol = ImageCompletionProtocol(**SMALL)
    assert (protocol.query_start, protocol.episode_length) == (18, 20)
    rng = np.random.default_rng(0)
    halves = {tuple(ImageCompletionProtocol().hidden_pixels(rng)) for _ in range(20)}
    assert len(halves) == 2  # top and bottom both drawn
    for hidden in map(np.array, halves):
        rows = hidden.reshape(32, 32).all(1)
        assert hidden.sum() == 512 and (rows[:16].all() != rows[16:].all())
    columns = ImageCompletionProtocol(degradation="left_right").hidden_pixels(rng).reshape(32, 32).all(0)
    assert columns.sum() == 16 and (columns[:16].all() or columns[16:].all())
    scattered = ImageCompletionProtocol(degradation="random_pixels", degraded_fraction=0.25).hidden_pixels(rng)
    assert scattered.sum() == 256 and not scattered.reshape(32, 32).all(1).any()
    mixed = ImageCompletionProtocol(degradation="random_pixels", degraded_fraction=0.25, degraded_fraction_max=0.75)
    counts = np.array([mixed.hidden_pixels(rng).sum() for _ in range(200)])
    assert counts.min() >= 256 and counts.max() <= 768 and counts.min() < 400 < 600 < counts.max()
    for keyword, value in (("image_count", 0), ("gap_steps", -1), ("degradation", "blur"), ("degraded_fraction", 1)):
        with pytest.raises(ValueError, match=keyword):
            ImageCompletionProtocol(**{keyword: value})
    with pytest.raises(ValueError, match=r"degraded_fraction_max must be a number in \(0.5, 1\); got 0.25"):
        ImageCompletionProtocol(degradation="random_pixels", degraded_fraction_max=0.25)
    with pytest.raises(ValueError, match="degraded_fraction_max needs degradation 'random_pixels'"):
        ImageCompletionProtocol(degraded_fraction_max=0.75)
    for fraction in (0.0004, 0.9996):  # no pixel hidden (no error to score), or none shown
        with pytest.raises(ValueError, match="degraded_fraction must hide between 1 and 1023 of the 1024 pixels"):
            ImageCompletionProtocol(degradation="random_pixels", degraded_fraction=fraction)


def test_episode_layout_env_and_sampler_agree(data_dir):
    env = gym.make("PlasticImageCompletion-v0", **SMALL, data_dir=data_dir, split="test")
    assert isinstance(env.unwrapped, ImageCompletionEnv)
    check_env(env.unwrapped, skip_render_check=True)
    protocol, pool = env.unwrapped.protocol, env.unwrapped.images
    inputs, targets, hidden = sample_image_episodes(protocol, pool, make_rng(4), 2)
    for column in range(2):
        observation, info = env.reset(seed=4 if column == 0 else None)
        observations, rewards = [observation], []
        while True:
            action = info.get("target", np.zeros(1024, np.float32))
            observation, reward, terminated, _, info = env.step(action)
            rewards.append(reward)
            if terminated:
                break
            observations.append(observation)
        np.testing.assert_array_equal(np.stack(observations), inputs[:, column])
        np.testing.assert_array_equal(info["target"], targets[column])
        np.testing.assert_array_equal(info["hidden"], hidden[column])
        assert rewards == [0.0] * len(rewards)  # the perfect completion
    # Each repetition shows three distinct test images, then the query hides half of one of them.
    episode = inputs[:, 0]
    shown = {tuple(episode[step]) for step in range(0, 18, 3)}
    assert len(shown) == 3 and all(any((image == pool).all(1)) for image in map(np.array, shown))
    assert (episode[2::3][:6] == 0).all()  # the gaps
    query = episode[protocol.query_start]
    assert (query[hidden[0]] == 0).all() and (query[~hidden[0]] == targets[0][~hidden[0]]).all()
    env.reset(seed=1)
    for _ in range(protocol.episode_length - 1):
        env.step(np.zeros(1024, np.float32))
    _, reward, terminated, _, info = env.step(np.zeros(1024, np.float32))
    assert terminated and reward == pytest.approx(-np.mean(info["target"][info["hidden"]] ** 2))


def test_neighbour_fill_takes_the_mean_of_the_nearest_visible_pixels():
    images = torch.arange(16.0).reshape(1, 16)
    hidden = torch.zeros(1, 16, dtype=torch.bool)
    hidden[0, [0, 1, 4, 5, 6]] = True  # pixel 0's 3x3 square holds no visible pixel; pixel 5's holds 2, 8, 9, 10
    filled = images_task.neighbour_fill(images, hidden, 4)
    expected = {5: (2 + 8 + 9 + 10) / 4, 6: (2 + 3 + 7 + 9 + 10 + 11) / 6, 1: 2, 4: (8 + 9) / 2}
    expected[0] = (2 + 8 + 9 + 10) / 4  # its 5x5 square, cut at the image's edges
    assert filled[0, list(expected)].tolist() == pytest.approx(list(expected.values()))
    assert (filled[~hidden] == images[~hidden]).all()


def test_scores_and_references(data_dir):
    task = make_task("images", data_dir=str(data_dir), **SMALL)
    episodes = task.sample_part("test", 16, np.random.default_rng(0))
    truth = episodes.targets[-1]
    perfect = task.episode_scores(truth, episodes)
    assert (perfect["hidden_mse"] == 0).all() and perfect["closer"].all()
    references = {name: task.episode_scores(c, episodes) for name, c in task.reference_completions(episodes).items()}
    zero_mse = (truth.square() * episodes.mask[-1]).sum(-1) / episodes.mask[-1].sum(-1)
    torch.testing.assert_close(references["zero"]["hidden_mse"], zero_mse)
    assert (references["nearest"]["hidden_mse"] == 0).all()  # the visible half identifies the image
    assert references["mean"]["hidden_mse"].mean() < references["zero"]["hidden_mse"].mean()

    # Test episodes use test images only; training and validation episodes disjoint parts of the training batches.
    def drawn_from(pool, episodes):
        return all((image == pool).all(1).any() for image in episodes.targets[-1].numpy())

    train_file = task.images("train")
    validation_pool, train_pool = train_file[-3:], train_file[:-3]  # 10 images: 10% is fewer than image_count=3
    assert (task.pool("validation") == validation_pool).all() and (task.pool("train") == train_pool).all()
    assert drawn_from(task.images("test"), episodes)
    assert drawn_from(train_pool, task.sample(64, np.random.default_rng(1)))
    assert drawn_from(validation_pool, task.sample_validation(64, np.random.default_rng(2)))
    with pytest.raises(ValueError, match=r"validation_fraction must be a number in \(0, 1\)"):
        make_task("images", data_dir=str(data_dir), validation_fraction=1.0, **SMALL)
    with pytest.raises(ValueError, match="10 training images cannot be split"):
        make_task("images", data_dir=str(data_dir), validation_fraction=0.8, **SMALL).sample(1, np.random.default_rng())


def test_paper_models():
    task = make_task("images", images={"train": np.zeros((3, 1024)), "test": np.zeros((3, 1024))})
    plastic = task.build_model("plastic")
    assert plastic.recurrent.hidden_size == 1025 and plastic.recurrent.plasticity == "full"
    assert task.build_model("shared").recurrent.plasticity == "shared"
    assert task.build_model("rnn", extra_neurons=7).recurrent.hidden_size == 1032


def test_short_training_beats_zero_fill():
    # 8 x 8 images drawn from a smooth family: a few steps teach w the pixels' neighbourhood.
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 8)
    images = np.stack([np.cos(np.pi * (f * grid[:, None] + g * grid[None, :]) + p).ravel()
                       for f, g, p in rng.uniform(0, 1.5, size=(40, 3))]).astype(np.float32)  # fmt: skip
    protocol = dict(image_count=2, steps_shown=2, gap_steps=1, repetitions=1, query_steps=2, image_side=8)
    task = make_task("images", images={"train": images[:30], "test": images[30:]}, **protocol)
    torch.manual_seed(0)
    trainer = SupervisedTrainer(task, task.build_model("plastic"), batch_size=8, eval_interval=0, progress=False)
    held_out = task.sample_part("test", 64, np.random.default_rng(7))
    zero_fill = task.episode_scores(task.reference_completions(held_out)["zero"], held_out)["hidden_mse"].mean()
    for _ in range(40):
        trainer.train_step()
    with torch.no_grad():
        completion = trainer.model(held_out.inputs)[-1]
    assert task.episode_scores(completion, held_out)["hidden_mse"].mean() < 0.8 * zero_fill  # untrained: ~zero fill


def test_cli_trains_and_reports_missing_data(tmp_path, data_dir, capsys):
    args = ["supervised", "images", *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()], "--threads=1"]
    run_dir = tmp_path / "run"
    common = ["--steps=2", "--eval-interval=2", "--eval-episodes=2", "--no-progress", "--run-dir", str(run_dir)]
    assert main([*args, *common, "--data-dir", str(data_dir)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *common[:-1], str(tmp_path / "split"), "--data-dir", str(data_dir), "--validation-fraction=0.9"])
    assert exit_info.value.code == 2
    assert "10 training images cannot be split" in capsys.readouterr().err and not (tmp_path / "split").exists()
    assert (run_dir / "model.pt").exists() and "eval_hidden_mse" in (run_dir / "curve.csv").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *common[:-1], str(tmp_path / "run2"), "--data-dir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "plastic-rl supervised images: error: no CIFAR-10 training batch" in capsys.readouterr().err


def test_bench_builds_the_image_task(data_dir):
    # The timing loop itself is the one tested with `bench patterns`; here: its options reach the image task.
    import argparse

    from plastic_rl.benchmarks import images
    from plastic_rl.core.options import config_from
    from plastic_rl.supervised.task import get_task_class, registered_task

    parser = argparse.ArgumentParser()
    images.add_arguments(parser)
    args = parser.parse_args(["--model", "shared", "--image-count", "5", "--data-dir", str(data_dir)])
    registered = registered_task(args.task)
    task = get_task_class(args.task).from_options(config_from(registered.options, vars(args)), args.data_dir)
    options = config_from(registered.model_options, vars(args)).keywords()
    assert (task.name, task.protocol.image_count, task.data_dir, args.batch_sizes) == (
        "images",
        5,
        str(data_dir),
        [1, 8, 32],
    )
    assert task.build_model(args.model, **options).recurrent.plasticity == "shared"


def test_report_scores_models_and_references_and_draws_the_figures(tmp_path, data_dir):
    from plastic_rl.commands import report

    task = make_task("images", data_dir=str(data_dir), **SMALL)
    trainer = SupervisedTrainer(task, task.build_model("plastic"), eval_interval=0, progress=False)
    trainer.save_model(tmp_path / "model.pt")
    curve = tmp_path / "curve.csv"
    curve.write_text("step,episodes,eval_hidden_mse\n1,1,0.2\n2,2,0.1\n")
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    out = tmp_path / "report"
    arguments = ["--models", f"net={tmp_path / 'model.pt'}", "--curves", f"net={curve}", f"net={curve}"]
    arguments += ["--episodes", "6"]
    assert report.run(parser.parse_args([*arguments, "--image-counts", "2", "3", "--out", str(out)])) == 0
    rows = (out / "summary.csv").read_text().splitlines()
    old = [row.split(",") for row in rows[1:]]
    assert [row.split(",")[:4] for row in rows[1:6]] == [
        ["2", "top_bottom", name, "6"] for name in ("zero", "mean", "nearest", "neighbours", "net")
    ]
    assert len(rows) == 11 and all(
        (out / f"{name}.png").stat().st_size > 0 for name in ("fig4_completions", "fig5_matrices", "fig6_curves")
    )

    def fails(*arguments):
        try:
            report.run(parser.parse_args([*arguments, "--out", str(tmp_path / "bad")]))
        except BadInputError:
            return True
        return False

    model = f"net={tmp_path / 'model.pt'}"
    erased = tmp_path / "erased"
    assert report.run(parser.parse_args(["--models", model, "--episodes", "6", "--erasures", "top_bottom", "0.75",
                                         "--out", str(erased)])) == 0  # fmt: skip
    rows = [row.split(",") for row in (erased / "summary.csv").read_text().splitlines()[1:]]
    assert [row[1] for row in rows] == ["top_bottom"] * 5 + ["random_pixels 0.75"] * 5
    own_count = [row[4] for row in old if row[:3] == ["3", "top_bottom", "net"]]
    assert [row[4] for row in rows if row[2] == "net"][0] == own_count[0]
    assert fails("--models", model, "--erasures", "1") and fails("--models", model, "--erasures", "blur")
    assert fails("--models", model, "--erasures", "0.5", "0.50") and fails(
        "--models", model, "--image-counts", "3", "3"
    )
    assert len(list((erased / "tensorboard").iterdir())) == 1
    assert report.run(parser.parse_args(["--models", model, "--episodes", "6", "--out", str(erased)])) == 0
    assert len(list((erased / "tensorboard").iterdir())) == 1  # the earlier report's events are gone
    # A model trained on another erasure: refused without --erasures; with them, each model is scored on each.
    scattered = make_task(
        "images", data_dir=str(data_dir), **SMALL, degradation="random_pixels", degraded_fraction=0.75
    )
    other = SupervisedTrainer(scattered, scattered.build_model("plastic"), eval_interval=0, progress=False)
    other.save_model(tmp_path / "scattered.pt")
    both = ["--models", model, f"scattered={tmp_path / 'scattered.pt'}", "--episodes", "6"]
    assert fails(*both)
    mixed = tmp_path / "mixed"
    assert report.run(parser.parse_args([*both, "--erasures", "top_bottom", "0.75", "--out", str(mixed)])) == 0
    rows = [row.split(",") for row in (mixed / "summary.csv").read_text().splitlines()[1:]]
    assert [row[2] for row in rows] == ["zero", "mean", "nearest", "neighbours", "net", "scattered"] * 2
    scored = {(row[1], row[2]): float(row[4]) for row in rows}
    own = cached_test_scores(tmp_path / "scattered.pt", 6)["hidden_mse"].mean()
    assert scored["random_pixels 0.75", "scattered"] == pytest.approx(own, abs=1e-5)
    assert scored["top_bottom", "net"] == float(own_count[0])
    # Each model on the other's erasure: measured on those episodes, not read from its own file.
    for label, path, erasure_text in (("net", "model.pt", "0.75"), ("scattered", "scattered.pt", "top_bottom")):
        other_task = make_task("images", data_dir=str(data_dir), **{**SMALL, **erasure_settings(erasure_text)})
        fresh = images_task.score_test_episodes(other_task, {label: load_model(tmp_path / path)}, 6, 0)
        key = ("random_pixels 0.75" if erasure_text == "0.75" else "top_bottom", label)
        assert scored[key] == pytest.approx(fresh[label]["hidden_mse"].mean(), abs=1e-5)
    assert not (mixed / "fig7_erasures.png").exists()  # one scattered fraction: no curve to draw
    curve = tmp_path / "curve"
    assert report.run(parser.parse_args([*both, "--erasures", "0.25", "0.75", "--out", str(curve)])) == 0
    assert (curve / "fig7_erasures.png").stat().st_size > 0
    assert report.run(parser.parse_args([*both, "--erasures", "top_bottom", "--out", str(curve)])) == 0
    assert not (curve / "fig7_erasures.png").exists()  # the earlier report's figure, not drawn by this one
    assert fails("--models", "no-label") and fails("--models", model, model)
    assert fails("--models", model, "--episodes", "1") and fails("--models", model, "--image-counts", "1")
    assert fails("--models", model, "--curves", f"net={tmp_path / 'missing.csv'}")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def _archive(members: dict[str, bytes], link: str | None = None) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def test_download_checks_the_md5_and_unpacks_only_the_batch_folder(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    from plastic_rl.data import cifar

    served = {}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served["archive"]))
    served["archive"] = _archive({f"{FOLDER}/test_batch": b"t", f"{FOLDER}/data_batch_1": b"d"})
    with pytest.raises(DataError, match="not the published c58f30108f718f92721af3b95e74349a"):
        cifar.download(tmp_path / "a")
    assert not (tmp_path / "a" / FOLDER).exists()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(served["archive"]).hexdigest())
    cifar.download(tmp_path / "a")
    assert (tmp_path / "a" / FOLDER / "test_batch").read_bytes() == b"t"
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [FOLDER]  # the archive is gone
    for evil in (_archive({f"{FOLDER}/../escaped": b"x"}), _archive({}, link=f"{FOLDER}/test_batch")):
        served["archive"] = evil
        monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(evil).hexdigest())
        with pytest.raises(DataError, match="unexpected member"):
            cifar.download(tmp_path / "b")
        assert not (tmp_path / "escaped").exists() and not (tmp_path / "b" / FOLDER / "test_batch").exists()


def test_study_scores_final_models_on_test_images_once(tmp_path, data_dir, capsys, monkeypatch):
    from plastic_rl.supervised.images import ImageCompletionTask

    protocol = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    folder = tmp_path / "study"
    study = ["experiment", "images", "--conditions", "plastic", "shared", "--seeds", "1", "--steps", "2", "--jobs", "1"]
    study += [*protocol, "--eval-interval", "0", "--log-interval", "1", "--data-dir", str(data_dir), "-f", str(folder)]
    assert main([*study, "--score", "test", "--test-episodes", "6"]) == 0
    finals = {row.split(",")[0]: row.split(",") for row in (folder / "finals.csv").read_text().splitlines()}
    assert "test closer_fraction" in finals["condition"]
    record = json.loads((folder / "plastic" / "seed_0" / "model.test.json").read_text())
    assert len(record["value"]["hidden_mse"]) == 6 and record["key"]["episodes"] == 6
    assert float(finals["plastic"][2]) == pytest.approx(np.mean(record["value"]["hidden_mse"]), rel=1e-5)
    # A summary again, and a report on the same model, read the record instead of measuring again.
    monkeypatch.setattr(ImageCompletionTask, "test_scores", lambda *args: pytest.fail("measured again"))
    assert main([*study, "--score", "test", "--test-episodes", "6", "--summarize-only"]) == 0
    from plastic_rl.commands import report

    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    arguments = ["--models", f"net={folder / 'plastic' / 'seed_0' / 'model.pt'}", "--episodes", "6"]
    assert report.run(parser.parse_args([*arguments, "--out", str(tmp_path / "report")])) == 0
    net = [row.split(",") for row in (tmp_path / "report" / "summary.csv").read_text().splitlines() if ",net," in row]
    assert float(net[0][4]) == pytest.approx(np.mean(record["value"]["hidden_mse"]), abs=1e-5)
    capsys.readouterr()
    # Task settings and data are checked before any run folder is written.
    for bad in (["--validation-fraction", "1.5"], ["--validation-fraction", "0.9"], ["--data-dir", str(tmp_path)]):
        try:
            code = main([*study[:-1], str(tmp_path / "refused"), *bad])
        except SystemExit as exit_info:  # a data error goes through argparse's error
            code = exit_info.code
        assert code == 2
        assert not (tmp_path / "refused").exists()
    assert "cannot be split into training and validation images" in capsys.readouterr().err
    patterns = ["experiment", "patterns", "--score", "test", "-f", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as stopped:
        main(patterns)
    assert stopped.value.code == 2
    assert "--score test needs a task with test data; the 'patterns' task has none" in capsys.readouterr().err


def test_an_official_size_batch_must_have_its_published_md5(data_dir, monkeypatch):
    from plastic_rl.data import cifar

    monkeypatch.setattr(cifar, "OFFICIAL_BATCH_IMAGES", 6)  # data_batch_1 of the fixture holds 6 images
    with pytest.raises(DataError, match=r"data_batch_1 is corrupt: its MD5 is [0-9a-f]{32}, not the published c99c"):
        load_grayscale("train", data_dir)
    monkeypatch.setattr(
        cifar, "BATCH_MD5", {**cifar.BATCH_MD5, "data_batch_1": cifar._md5(data_dir / FOLDER / "data_batch_1")}
    )
    assert load_grayscale("train", data_dir).shape == (10, 1024)  # the file that has the expected MD5 loads


def test_render_shows_the_input_then_the_answer_and_the_full_image(data_dir):
    env = gym.make("PlasticImageCompletion-v0", **SMALL, data_dir=data_dir, split="test", render_mode="rgb_array")
    check_env(env.unwrapped)
    env.reset(seed=0)
    assert env.render().shape == (128, 128, 3)  # 32 x 32 pixels, 4 screen pixels each
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(np.full(1024, -1.0, dtype=np.float32))
    frame = env.render()
    assert frame.shape == (128, 3 * 128 + 2 * 8, 3) and (frame[:, 136:264] == 0).all()  # the all-black answer


def test_the_completion_diagnosis_example_scores_a_saved_model_beside_the_references(tmp_path, data_dir):
    task = make_task("images", data_dir=str(data_dir), **SMALL)
    model = task.build_model("plastic")
    with torch.no_grad():  # no weights: a hidden pixel gets no drive and the network answers zero
        model.recurrent.weight.zero_()
        model.recurrent.plasticity_coefficient.zero_()
    SupervisedTrainer(task, model, eval_interval=0, progress=False).save_model(tmp_path / "model.pt")
    example = Path(__file__).resolve().parents[1] / "examples" / "completion_diagnosis.py"
    command = [sys.executable, str(example), str(tmp_path / "model.pt"), "--episodes", "4", "--part", "test"]
    result = subprocess.run(
        [*command, "--erasures", "0.5", "top_bottom", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    header, *rows = result.stdout.splitlines()[1:]
    assert header.split()[:3] == ["erasure", "model", "free"]
    assert [row.split()[0] for row in rows] == ["0.5", "top_bottom"]
    for row in rows:
        model_mse, zeroed, no_autapses, _, _, zero, _, from_cue, from_free = map(float, row.split()[1:])
        assert model_mse == zeroed == no_autapses == zero and from_cue == from_free == 0
