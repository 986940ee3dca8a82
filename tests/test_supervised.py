import csv

import numpy as np
import pytest
import torch

from plastic_rl.cli import main
from plastic_rl.supervised import SupervisedTrainer, load_model, load_task, make_task
from plastic_rl.supervised.models import PlasticRecurrentNetwork, count_parameters

TINY = dict(pattern_count=2, pattern_size=10, steps_shown=2, gap_steps=1, repetitions=1)
TINY_PROTOCOL_ARGS = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
TINY_ARGS = TINY_PROTOCOL_ARGS + ["--log-interval=1", "--extra-neurons=6", "--lstm-hidden-size=8", "--threads=1"]


@pytest.fixture(autouse=True)
def one_thread():
    # Two threads on two shared cores thrash; these small unrolls are fastest on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trainer(tmp_path=None, seed=0, **options) -> SupervisedTrainer:
    torch.manual_seed(seed)
    task = make_task("patterns", **TINY)
    return SupervisedTrainer(
        task,
        task.build_model("plastic"),
        model_name="plastic",
        batch_size=2,
        seed=seed,
        log_interval=2,
        eval_interval=3,
        eval_episodes=4,
        progress=False,
        checkpoint_path=None if tmp_path is None else tmp_path / "checkpoint.pt",
        **options,
    )


def test_paper_model_sizes():
    task = make_task("patterns")
    plastic = task.build_model("plastic")
    # w and alpha of 1001 x 1001, plus the learned eta.
    assert count_parameters(plastic) == 2 * 1001 * 1001 + 1 == 2_004_003
    assert plastic.recurrent.hidden_size == 1001 and plastic.recurrent.bias_neuron
    rnn = task.build_model("rnn")
    assert rnn.recurrent.hidden_size == 3001 and count_parameters(rnn) == 3001 * 3001


def test_inputs_drive_the_first_neurons_and_outputs_read_them():
    torch.manual_seed(0)
    model = PlasticRecurrentNetwork(4, 4, 8, plasticity="none")
    inputs = torch.tensor([1.0, 0.0, -1.0, 0.0]).expand(3, 2, 4)
    outputs = model(inputs)
    assert outputs.shape == (3, 2, 4)
    assert (outputs[..., 0] == 1).all() and (outputs[..., 2] == -1).all()  # clamped
    assert (outputs[..., 1].abs() < 1).all()
    with pytest.raises(ValueError, match="input_gain"):
        PlasticRecurrentNetwork(4, 4, 8, input_mode="clamp", input_gain=20.0)
    with pytest.raises(ValueError, match="hidden_size"):
        PlasticRecurrentNetwork(4, 4, 4)


def test_episodes_score_only_the_last_query_step():
    task = make_task("patterns", **TINY)
    episodes = task.sample(3, np.random.default_rng(0))
    length = task.protocol.episode_length
    assert episodes.inputs.shape == episodes.targets.shape == (length, 3, 10)
    assert episodes.mask[:, :, 0].sum(0).tolist() == [1, 1, 1] and episodes.mask[-1].all()
    perfect = episodes.targets.clone()
    assert task.metrics(perfect, episodes) == {"wrong_bits": 0.0, "squared_error": 0.0}
    assert task.metrics(-perfect, episodes)["wrong_bits"] == 1.0


@pytest.mark.parametrize(
    "schedule", [{}, {"learning_rate_schedule": "cosine", "schedule_steps": 8}], ids=["constant", "cosine"]
)
def test_checkpoint_resumes_exactly(tmp_path, schedule):
    straight = _trainer(**schedule)
    straight.train(8)
    first = _trainer(tmp_path, **schedule)
    first.train(4)
    resumed = SupervisedTrainer.resume(tmp_path / "checkpoint.pt", progress=False)
    assert resumed.step == 4
    resumed.train(8)
    for (name, expected), actual in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name
    strip = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in straight.history]
    assert strip == [{k: v for k, v in row.items() if not k.endswith("_s")} for row in resumed.history]


def test_cosine_schedule_anneals_the_learning_rate_to_zero_over_its_steps():
    trainer = _trainer(learning_rate=0.002, learning_rate_schedule="cosine", schedule_steps=4)
    rates = []
    for _ in range(6):
        rates.append(trainer.current_learning_rate())
        trainer.train_step()
        assert trainer.optimizer.param_groups[0]["lr"] == rates[-1]  # the step used the scheduled rate
    np.testing.assert_allclose(rates, [0.002, 0.002 * (0.5 + 0.5**1.5), 0.001, 0.002 * (0.5 - 0.5**1.5), 0, 0])
    assert _trainer(learning_rate=0.002).current_learning_rate() == 0.002
    with pytest.raises(ValueError, match="steps must be at most 4, the length of this run's cosine schedule"):
        trainer.train(5)
    with pytest.raises(ValueError, match="schedule_steps must be"):
        _trainer(learning_rate_schedule="cosine")
    with pytest.raises(ValueError, match="learning_rate_schedule must be one of"):
        _trainer(learning_rate_schedule="linear", schedule_steps=4)


def test_model_file_loads_back_in_one_call(tmp_path):
    trainer = _trainer()
    trainer.train(2)
    trainer.save_model(tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt")
    task = load_task(tmp_path / "model.pt")
    assert task.config() == trainer.task.config()
    episodes = task.sample(3, np.random.default_rng(123))
    with torch.no_grad():
        torch.testing.assert_close(model(episodes.inputs), trainer.model(episodes.inputs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a checkpoint"):
        SupervisedTrainer.resume(tmp_path / "model.pt")


def test_a_few_seconds_of_training_cut_the_error_well_below_chance():
    torch.manual_seed(0)
    task = make_task("patterns", pattern_count=3, pattern_size=50, steps_shown=3, gap_steps=1, repetitions=2)
    trainer = SupervisedTrainer(task, task.build_model("plastic"), batch_size=8, eval_interval=0, progress=False)
    before = trainer.evaluate(128)["wrong_bits"]
    trainer.train(150)
    after = trainer.evaluate(128)["wrong_bits"]
    # Untrained, the unclamped half of the bits is a coin toss: about 25% wrong.
    assert before > 0.15 and after < 0.1


def test_tensorboard_and_live_curve(tmp_path):
    trainer = _trainer(log_dir=tmp_path / "tb", curve_path=tmp_path / "curve.csv")
    trainer.train(4)
    trainer.close()
    assert any((tmp_path / "tb").iterdir())
    with open(tmp_path / "curve.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["2", "3", "4"]
    assert [row["eval_wrong_bits"] != "" for row in rows] == [False, True, False]


@pytest.mark.parametrize("model", ["plastic", "rnn", "lstm", "lstm --lstm-output clamped --lstm-hidden-size 12"])
def test_supervised_command_trains_every_model(tmp_path, model):
    name, *options = model.split()
    run_dir = tmp_path / name
    code = main(
        ["supervised", "patterns", "--model", name, "--steps", "2", "--run-dir", str(run_dir)]
        + ["--no-progress", *TINY_ARGS, *options]
    )
    assert code == 0
    assert {"model.pt", "checkpoint.pt", "curve.csv", "tensorboard"} <= {path.name for path in run_dir.iterdir()}
    assert load_model(run_dir / "model.pt")(torch.zeros(3, 1, 10)).shape == (3, 1, 10)
    assert (
        main(["supervised", "patterns", "--resume", str(run_dir / "checkpoint.pt"), "--steps", "3", "--no-progress"])
        == 0
    )
    assert load_task(run_dir / "model.pt").config()["pattern_size"] == 10


def test_command_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["supervised", "patterns", "--pattern-count", "0", "--run-dir", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "plastic-rl supervised patterns: error: pattern_count must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["supervised", "patterns", "--protocol", "slow"])
    with pytest.raises(ValueError, match="task must be one of 'patterns'"):
        make_task("imagez")


def test_generic_supervised_command_lists_the_registered_tasks(capsys):
    import argparse

    from plastic_rl.commands import supervised

    parser = argparse.ArgumentParser(prog="plastic-rl supervised")
    supervised.add_arguments(parser)
    assert parser.parse_args(["patterns", "--protocol", "fast"]).task == "patterns"
    with pytest.raises(SystemExit):
        parser.parse_args(["imagez"])
    assert "invalid choice: 'imagez'" in capsys.readouterr().err


def test_bench_command_reports_time_and_memory(tmp_path):
    table = tmp_path / "bench.csv"
    arguments = ["bench", "patterns", "--batch-sizes", "2", "--repeats", "1", "--threads", "1", "--csv", str(table)]
    assert main(arguments + TINY_PROTOCOL_ARGS) == 0
    with open(table) as file:
        (row,) = list(csv.DictReader(file))
    assert row["batch_size"] == "2" and float(row["seconds_per_episode"]) > 0
    assert float(row["peak_gib"]) >= float(row["base_gib"]) > 0
