"""Bad input everywhere gives a clear error; diverged training stops cleanly; files are never half-written.

Tables of bad inputs: every public constructor (a ``ValueError`` whose message names the parameter) and
every command-line flag (``plastic-rl CMD: error: ...`` naming the option, exit 2, no traceback), run in
process. Then divergence in both trainers, corrupt files, and a kill during each kind of write.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import plastic_rl  # noqa: F401  (registers the envs)
from plastic_rl.agents import PlasticA2C, PlasticPPO
from plastic_rl.agents.training import train_run
from plastic_rl.cli import COMMANDS, main
from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer
from plastic_rl.core.divergence import TrainingDiverged
from plastic_rl.core.files import atomic_write
from plastic_rl.envs.maze import PlasticMazeEnv
from plastic_rl.envs.pattern_memory import PatternMemoryEnv, PatternMemoryProtocol
from plastic_rl.supervised import SupervisedTrainer, load_model, make_task
from plastic_rl.supervised.models import PlasticRecurrentNetwork, SequenceLSTM, plastic_layers

TINY_MAZE = {"size": 5, "episode_length": 10}
TINY_PATTERNS = dict(pattern_count=2, pattern_size=10, steps_shown=2, gap_steps=1, repetitions=1)
NAN, INF = math.nan, math.inf


pytestmark = pytest.mark.usefixtures("one_thread")


def a2c(**kwargs):
    return PlasticA2C("PlasticRecurrentPolicy", "PlasticMaze-v0", **kwargs)


def tiny_task():
    return make_task("patterns", **TINY_PATTERNS)


def trainer(**kwargs):
    task = tiny_task()
    return SupervisedTrainer(task, task.build_model("plastic"), progress=False, **kwargs)


# (callable, the parameter its message must name)
API_CASES = {
    "layer hidden_size 0": (lambda: PlasticRecurrentLayer(0, 3), "hidden_size"),
    "layer eta nan": (lambda: PlasticRecurrentLayer(8, 3, hebbian_learning_rate=NAN), "hebbian_learning_rate"),
    "layer eta inf": (lambda: PlasticRecurrentLayer(8, 3, hebbian_learning_rate=INF), "hebbian_learning_rate"),
    "layer eta negative": (lambda: PlasticRecurrentLayer(8, 3, hebbian_learning_rate=-1), "hebbian_learning_rate"),
    "layer init_scale inf": (lambda: PlasticRecurrentLayer(8, 3, init_scale=INF), "init_scale"),
    "layer trace_clip nan": (lambda: PlasticRecurrentLayer(8, 3, trace_clip=NAN), "trace_clip"),
    "layer rule": (lambda: PlasticRecurrentLayer(8, 3, rule="bogus"), "rule"),
    "layer implementation": (lambda: PlasticRecurrentLayer(8, 3, implementation="bogus"), "implementation"),
    "linear eta nan": (lambda: PlasticLinear(4, 3, hebbian_learning_rate=NAN), "hebbian_learning_rate"),
    "linear init_scale inf": (lambda: PlasticLinear(4, 3, init_scale=INF), "init_scale"),
    "network input_gain inf": (lambda: PlasticRecurrentNetwork(4, 4, 5, input_gain=INF), "input_gain"),
    "lstm hidden 0": (lambda: SequenceLSTM(4, 4, 0), "hidden_size"),
    "protocol fraction": (lambda: PatternMemoryProtocol(degraded_fraction=1.5), "degraded_fraction"),
    "pattern env count": (lambda: PatternMemoryEnv(pattern_count=0), "pattern_count"),
    "maze size": (lambda: PlasticMazeEnv(size=4), "size"),
    "a2c gamma 2": (lambda: a2c(gamma=2), "gamma"),
    "a2c gamma nan": (lambda: a2c(gamma=NAN), "gamma"),
    "a2c gae_lambda": (lambda: a2c(gae_lambda=-0.1), "gae_lambda"),
    "a2c ent_coef str": (lambda: a2c(ent_coef="x"), "ent_coef"),
    "a2c vf_coef inf": (lambda: a2c(vf_coef=INF), "vf_coef"),
    "a2c learning_rate nan": (lambda: a2c(learning_rate=NAN), "learning_rate"),
    "a2c learning_rate 0": (lambda: a2c(learning_rate=0), "learning_rate"),
    "a2c n_steps 0": (lambda: a2c(n_steps=0), "n_steps"),
    "a2c max_grad_norm": (lambda: a2c(max_grad_norm=-1), "max_grad_norm"),
    "a2c use_rms_prop": (lambda: a2c(use_rms_prop=1), "use_rms_prop"),
    "a2c on_non_finite": (lambda: a2c(on_non_finite="ignore"), "on_non_finite"),
    "a2c policy eta": (lambda: a2c(policy_kwargs={"hebbian_learning_rate": NAN}), "hebbian_learning_rate"),
    "a2c policy not a policy": (lambda: PlasticA2C(1, "PlasticMaze-v0"), "policy"),
    "a2c device": (lambda: a2c(device="bogus"), "device"),
    "ppo clip_range str": (
        lambda: PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", clip_range="x"),
        "clip_range",
    ),
    "ppo n_epochs": (lambda: PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", n_epochs=0), "n_epochs"),
    "ppo clip_range": (lambda: PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", clip_range=-1), "clip_range"),
    "ppo batch_size": (
        lambda: PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", batch_size=64),
        "batch_size: PlasticPPO does not take SB3 PPO's 'batch_size': each epoch is one gradient step",
    ),
    "ppo clip_range_vf": (
        lambda: PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", clip_range_vf=0.2),
        "clip_range_vf: .* the value loss is not clipped",
    ),
    "learn total_timesteps 0": (lambda: a2c(n_steps=5).learn(0), "total_timesteps"),
    "learn total_timesteps -1": (lambda: a2c(n_steps=5).learn(-1), "total_timesteps"),
    "learn total_timesteps 2.5": (lambda: a2c(n_steps=5).learn(2.5), "total_timesteps"),
    "predict nan observation": (lambda: a2c().predict(np.full(10, np.nan)), "observation must hold finite values"),
    "trainer learning_rate inf": (lambda: trainer(learning_rate=INF), "learning_rate"),
    "trainer batch_size 0": (lambda: trainer(batch_size=0), "batch_size"),
    "trainer on_non_finite": (lambda: trainer(on_non_finite="ignore"), "on_non_finite"),
    "trainer seed -1": (lambda: trainer(seed=-1), "seed"),
    "task extra_neurons": (lambda: tiny_task().build_model("rnn", extra_neurons=-5), "extra_neurons"),
    "trainer steps 0": (lambda: trainer().train(0), "steps"),
    "atomic_write mode": (lambda: atomic_write("x", "a").__enter__(), "mode"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_constructors_name_the_bad_parameter(case):
    build, name = API_CASES[case]
    with pytest.raises(ValueError, match=name):
        build()


def test_plastic_ppo_names_itself_for_an_unknown_keyword():
    with pytest.raises(TypeError, match="PlasticPPO got unexpected keyword arguments: bogus, n_batches"):
        PlasticPPO("PlasticRecurrentPolicy", "PlasticMaze-v0", bogus=1, n_batches=2)


def test_envs_refuse_bad_actions_and_steps_after_the_end():
    env = PatternMemoryEnv(**TINY_PATTERNS)
    env.reset(seed=0)
    for action in (np.full(10, np.nan), np.full(10, 2.0), np.zeros(3)):
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    maze = PlasticMazeEnv(**TINY_MAZE)
    maze.reset(seed=0)
    for _ in range(10):
        *_, terminated, _, _ = maze.step(0)
    assert terminated
    with pytest.raises(RuntimeError, match="reset"):
        maze.step(0)


TRAIN_FROM_YAML = ["train", "--no-progress-bar", "--env-kwargs", "size:5", "episode_length:10"]
TRAIN = [*TRAIN_FROM_YAML, "-n", "20", "--n-envs", "2"]
SUPERVISED = ["supervised", "patterns", "--no-progress", "--steps", "1"]
SUPERVISED += [f"--{key.replace('_', '-')}={value}" for key, value in TINY_PATTERNS.items()]
NO_CUDA = [] if torch.cuda.is_available() else [(TRAIN + ["--device", "cuda"], "device")]

# (argv, what the message must name); "-f"/"--run-dir" folders are added per test.
CLI_CASES = [
    *NO_CUDA,
    (TRAIN + ["-n", "0"], "n-timesteps"),
    (TRAIN + ["-n", "-5"], "n-timesteps"),
    (TRAIN + ["--n-envs", "0"], "n-envs"),
    (TRAIN + ["--n-envs", "-1"], "n-envs"),
    (TRAIN + ["--threads", "0"], "threads"),
    (TRAIN + ["--seed", "-1"], "seed"),
    (TRAIN + ["--eval-freq", "0"], "eval-freq"),
    (TRAIN + ["--save-freq", "-1"], "save-freq"),
    (TRAIN + ["--eval-episodes", "0"], "eval-episodes"),
    (TRAIN + ["--env", "Bogus-v0"], "env"),
    (TRAIN + ["-params", "gamma:5"], "gamma"),
    (TRAIN + ["-params", "learning_rate:nan"], "learning_rate"),
    (TRAIN + ["-params", "ent_coef:x"], "ent_coef"),
    (TRAIN + ["-params", "n_steps:0"], "n_steps"),
    (TRAIN_FROM_YAML + ["-params", "n_envs:0"], "n_envs"),
    (TRAIN_FROM_YAML + ["-params", "n_timesteps:0"], "n_timesteps"),
    (TRAIN + ["-params", "policy_kwargs:{plasticity: none}"], "plasticity"),
    (TRAIN + ["-params", "policy_kwargs:{hidden_size: 0}"], "hidden_size"),
    (TRAIN + ["-params", "bogus_key:1"], "bogus_key"),
    (TRAIN + ["-params", "n_steps=10"], "key:value"),
    (TRAIN + ["--env-kwargs", "size:4"], "size"),
    (TRAIN + ["--algo", "recurrent_ppo", "--policy", "rnn"], "policy"),
    (TRAIN + ["--algo", "plastic_ppo", "-params", "n_epochs:0"], "n_epochs"),
    (TRAIN + ["--algo", "recurrent_ppo", "--policy", "lstm", "-params", "gamma:5"], "gamma"),
    (TRAIN + ["-params", "policy_kwargs:5"], "policy_kwargs"),
    (["enjoy", "--no-render", "--n-episodes", "0"], "n-episodes"),
    (["enjoy", "--no-render", "--exp-id", "-1"], "exp-id"),
    (["enjoy", "--no-render"], "no run of PlasticMaze-v0"),
    (["play", "maze", "--size", "4"], "size"),
    (["play", "maze", "--fps", "0"], "fps"),
    (["play", "maze", "--zoom", "0"], "zoom"),
    (["bench", "a2c", "--updates", "0"], "updates"),
    (["bench", "a2c", "--n-envs", "0"], "n-envs"),
    (["bench", "a2c", "--hidden-size", "0"], "hidden-size"),
    (["bench", "patterns", "--batch-sizes", "0"], "batch-sizes"),
    (["bench", "patterns", "--implementation", "bogus"], "implementation"),
    (["bench", "patterns", "--pattern-count", "0"], "pattern_count"),
    (["bench", "core", "--configs", "1,2"], "configs"),
    (["bench", "core", "--repeats", "0"], "repeats"),
    (["bench", "core", "--rules", "bcm"], "rules"),
    (SUPERVISED + ["--steps", "0"], "steps"),
    (SUPERVISED + ["--batch-size", "-1"], "batch-size"),
    (SUPERVISED + ["--learning-rate", "nan"], "learning-rate"),
    (SUPERVISED + ["--eta", "-1"], "eta"),
    (SUPERVISED + ["--eta", "inf"], "eta"),
    (SUPERVISED + ["--seed", "-1"], "seed"),
    (SUPERVISED + ["--degraded-fraction", "1.5"], "degraded_fraction"),
    (SUPERVISED + ["--eval-interval", "-1"], "eval-interval"),
    (SUPERVISED + ["--device", "bogus"], "device"),
    (SUPERVISED + ["--model", "rnn", "--extra-neurons", "-1"], "extra_neurons"),
    (SUPERVISED + ["--resume", "missing.pt"], "missing.pt"),
    (["download", "bogus"], "dataset"),
]


def _folder_options(argv, tmp_path):
    if argv[0] in ("train", "enjoy"):
        return ["-f", str(tmp_path)]
    if argv[0] == "supervised":
        return ["--run-dir", str(tmp_path / "run")]
    return []


@pytest.mark.parametrize("argv, name", CLI_CASES, ids=[" ".join(argv[-2:]) for argv, _ in CLI_CASES])
def test_every_command_reports_bad_input_with_exit_2(argv, name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *_folder_options(argv, tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    command = next(" ".join(words) for words in COMMANDS if tuple(argv[: len(words)]) == words)
    assert f"plastic-rl {command}: error:" in error and name in error, error
    assert "Traceback" not in error


# --- divergence -------------------------------------------------------------------------------------


def _nan_loss_at(run: SupervisedTrainer, steps: set[int]) -> None:
    """Make the training loss of ``run`` NaN at the given (1-based) steps."""
    loss = run.task.loss

    def patched(outputs, episodes):
        value = loss(outputs, episodes)
        return value * math.nan if torch.is_grad_enabled() and run.step + 1 in steps else value

    run.task.loss = patched


def test_supervised_training_stops_where_it_diverges_and_keeps_the_last_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    run = trainer(checkpoint_path=checkpoint, checkpoint_interval=2, eval_interval=0)
    _nan_loss_at(run, {3})
    with pytest.raises(TrainingDiverged, match=r"at step 3: the loss .* learning rate \(0.001\).* at step 2"):
        run.train(4)
    assert run.step == 2 and all(torch.isfinite(p).all() for p in run.model.parameters())
    assert SupervisedTrainer.resume(checkpoint, progress=False).step == 2
    skipping = trainer(on_non_finite="skip", eval_interval=0, log_interval=1)
    _nan_loss_at(skipping, {2})
    history = skipping.train(3)
    assert skipping.skipped_steps == 1 and [row["skipped_steps"] for row in history] == [0, 1, 1]
    assert "loss" not in history[1] and all(torch.isfinite(p).all() for p in skipping.model.parameters())


def test_a_finite_but_exploding_loss_is_warned_about():
    run = trainer(eval_interval=0, log_interval=2)
    loss = run.task.loss
    run.task.loss = lambda outputs, episodes: loss(outputs, episodes) * (1 if run.step == 0 else 1e4)
    with pytest.warns(RuntimeWarning, match=r"grown from .* at step 2: training is probably diverging"):
        run.train(4)


def test_supervised_command_exits_3_on_divergence_without_a_model(tmp_path, capsys, monkeypatch):
    from plastic_rl.supervised.patterns import PatternMemoryTask

    monkeypatch.setattr(PatternMemoryTask, "loss", lambda self, outputs, episodes: outputs.sum() * math.nan)
    run_dir = tmp_path / "run"
    assert main([*SUPERVISED, "--run-dir", str(run_dir)]) == 3
    assert "error: training diverged at step 1: the loss" in capsys.readouterr().err
    assert not (run_dir / "model.pt").exists()


class _NaNValueBias(BaseCallback):
    def _on_rollout_end(self) -> None:
        with torch.no_grad():
            self.model.policy.value_net.bias.fill_(math.nan)

    def _on_step(self) -> bool:
        return True


@pytest.mark.filterwarnings("ignore:episodes do not line up")
def test_rl_training_stops_at_the_update_that_diverges_or_skips_it():
    for on_non_finite in ("raise", "skip"):
        model = PlasticA2C(
            "PlasticRecurrentPolicy",
            "PlasticMaze-v0",
            n_steps=5,
            policy_kwargs={"hidden_size": 8},
            on_non_finite=on_non_finite,
            seed=0,
        )
        before = {name: p.clone() for name, p in model.policy.named_parameters()}
        poison = _NaNValueBias()  # NaN values from the first rollout's end on, hence a NaN value loss
        if on_non_finite == "raise":
            with pytest.raises(TrainingDiverged, match=r"update 1 .*the loss .*No update had been applied yet"):
                model.learn(5, callback=poison)
        else:
            model.learn(10, callback=poison)
            assert model.skipped_updates == 2
        after = dict(model.policy.named_parameters())
        assert all(
            torch.equal(
                before[name],
                after[name],
            )
            or name == "value_net.bias"
            for name in before
        )


def test_training_refuses_non_finite_starting_values_and_does_not_blame_the_learning_rate(tmp_path, capsys):
    layer = PlasticRecurrentLayer(8, 3)
    for value in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="hebbian_learning_rate must be a finite number > 0"):
            layer.set_hebbian_learning_rate(value)
    model = a2c(n_steps=5, policy_kwargs={"hidden_size": 8})
    with torch.no_grad():
        model.policy.core.eta_raw.fill_(math.inf)
    with pytest.raises(ValueError, match="the model's parameter core.eta_raw holds NaN or infinite values"):
        model.learn(5)
    run = trainer()
    with torch.no_grad():
        next(iter(plastic_layers(run.model).values())).weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"the model's parameter .*weight holds NaN or infinite values"):
        run.train(1)
    # A finite eta so large that the first step overflows: the error names the starting values, not the rate.
    assert main([*SUPERVISED, "--eta", "1e30", "--run-dir", str(tmp_path / "run")]) == 3
    error = capsys.readouterr().err
    assert "diverged at step 1" in error and "No update had been applied yet" in error and "eta" in error


def test_train_command_exits_3_on_divergence_and_keeps_the_run_folder(tmp_path, capsys, monkeypatch):
    from plastic_rl.agents import a2c as a2c_module

    monkeypatch.setattr(a2c_module, "find_non_finite", lambda *args, **kwargs: "loss")
    tiny = ["-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}", "-f", str(tmp_path)]
    assert main([*TRAIN, *tiny]) == 3
    error = capsys.readouterr().err
    assert "plastic-rl train: error: training diverged at update 1" in error and "no final model" in error
    assert not (tmp_path / "plastic_a2c" / "PlasticMaze-v0_1" / "PlasticMaze-v0.zip").exists()


# --- files --------------------------------------------------------------------------------------------


def test_corrupt_empty_truncated_and_foreign_model_files_name_the_file(tmp_path, capsys):
    path = tmp_path / "model.pt"
    trainer().save_model(path)
    load_model(path)
    record = torch.load(path, weights_only=True)
    record["model_state"]["recurrent.weight"][0, 0] += 1.0  # a silent change of one value
    torch.save(record, path)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)
    good = tmp_path / "good.pt"
    trainer().save_model(good)
    contents = good.read_bytes()
    for name, data in [("empty", b""), ("truncated", contents[: len(contents) // 2]), ("random", os.urandom(64))]:
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=str(bad)):
            load_model(bad)
    with pytest.raises(SystemExit):
        main([*SUPERVISED, "--resume", str(tmp_path / "truncated.pt"), "--run-dir", str(tmp_path / "run")])
    assert "truncated.pt is not a readable plastic_rl" in capsys.readouterr().err


def test_a_supervised_model_file_can_neither_run_a_function_nor_skip_its_checksum(tmp_path):
    from plastic_rl.supervised.model_files import checksum

    path = tmp_path / "model.pt"
    trainer().save_model(path)
    record = torch.load(path, weights_only=True)
    del record["checksum"]
    # A crafted file naming a function of the package with the file's keywords: it would write this file.
    target = tmp_path / "written_by_the_file"
    crafted = {**record, "model_class": "plastic_rl.core.files:atomic_write_text",
               "model_config": {"path": str(target), "text": "x"}}  # fmt: skip
    torch.save({**crafted, "checksum": checksum(crafted)}, path)
    with pytest.raises(ValueError, match="refusing to build model class 'plastic_rl.core.files:atomic_write_text'"):
        load_model(path)
    assert not target.exists()
    torch.save(record, path)  # without its checksum
    with pytest.raises(ValueError, match="has no checksum"):
        load_model(path)


def test_sb3_model_files_name_the_file_and_the_algorithm(tmp_path):
    path = tmp_path / "a2c.zip"
    a2c(n_steps=5, policy_kwargs={"hidden_size": 8}).save(tmp_path / "a2c")  # SB3 adds .zip
    assert PlasticA2C.load(path).n_steps == 5
    assert not [p.name for p in tmp_path.iterdir() if p.name != "a2c.zip"]  # no temporary file left
    with pytest.raises(ValueError, match="holds a PlasticA2C model.*PlasticA2C.load"):
        PlasticPPO.load(path)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "hello")
    contents = path.read_bytes()
    for name, data in [("empty", b""), ("truncated", contents[: len(contents) // 2]), ("foreign", None)]:
        bad = tmp_path / f"{name}.zip"
        if data is not None:
            bad.write_bytes(data)
        with pytest.raises(ValueError, match=f"{bad}: cannot load a PlasticA2C model"):
            PlasticA2C.load(bad)


def _with_pickled_fields(path, fields):
    """Rewrite the SB3 zip ``path`` with each of ``fields`` (name -> object) pickled into its JSON as SB3 does."""
    import base64
    import json

    import cloudpickle

    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(contents["data"])
    for name, value in fields.items():
        data[name] = {":type:": "<class 'x'>", ":serialized:": base64.b64encode(cloudpickle.dumps(value)).decode()}
    contents["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in contents.items():
            archive.writestr(name, content)


def test_an_sb3_model_file_runs_no_code_when_loaded(tmp_path, code_carrier):
    marker = tmp_path / "pwned"
    path = tmp_path / "a2c.zip"
    model = a2c(n_steps=5, policy_kwargs={"hidden_size": 8})
    model.learn(10)
    model.save(path)
    # Every field SB3 pickles is taken from the file's plain data: the pickles in the file are never read.
    pickled = ("policy_class", "observation_space", "lr_schedule", "_last_obs", "ep_info_buffer")
    _with_pickled_fields(path, {name: code_carrier(marker) for name in pickled})
    loaded = PlasticA2C.load(path)
    assert not marker.exists()
    assert loaded.observation_space == model.observation_space and np.array_equal(loaded._last_obs, model._last_obs)
    _with_pickled_fields(path, {"extra": code_carrier(marker)})  # a pickled field the suite cannot supply
    with pytest.raises(ValueError, match=r"a2c.zip: its field 'extra' is pickled Python.*allow_pickle=True"):
        PlasticA2C.load(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="The space is of type <class 'int'>"):  # os.system's return value
        PlasticA2C.load(path, allow_pickle=True)  # SB3's own load, for trusted files only: the exploit is real
    assert marker.exists()


def test_a_model_file_saved_without_plain_fields_still_loads(tmp_path):
    import json

    path = tmp_path / "old.zip"
    model = a2c(n_steps=5, policy_kwargs={"hidden_size": 8})
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(contents["data"])
    del data["plain_fields"]  # as files saved before the plain fields existed
    contents["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in contents.items():
            archive.writestr(name, content)
    loaded = PlasticA2C.load(path)  # spaces from SB3's plain listing, the policy class by its module and members
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.policy_class is model.policy_class


def test_an_rl_checkpoint_runs_no_code_and_a_damaged_one_is_named(tmp_path, capsys, code_carrier, train_config):
    from plastic_rl.agents.checkpoints import latest_checkpoint, read_checkpoint

    run = tmp_path / "run"
    arguments = ["--n-envs", "2", "--threads", "1", "--no-progress-bar", "-n", "40", "--save-freq", "20"]
    train_run(run, train_config(*arguments, "--env-kwargs", "size:5", "episode_length:10", "-params", "n_steps:10",
                                "policy_kwargs:{hidden_size: 8}"))  # fmt: skip
    checkpoint = latest_checkpoint(run)
    payload = torch.load(checkpoint, weights_only=True)  # tensors and plain data only
    for field in ("arguments", "model", "random_states"):  # damaged checkpoints: named, no traceback
        torch.save({key: value for key, value in payload.items() if key != field}, checkpoint)
        with pytest.raises(SystemExit) as stopped:
            main(["train", "--resume", str(checkpoint), "--no-progress-bar"])
        assert stopped.value.code == 2
        assert f"{checkpoint} is corrupt: it lacks {field}" in capsys.readouterr().err
    marker = tmp_path / "pwned"
    torch.save({**payload, "arguments": code_carrier(marker)}, checkpoint)
    with pytest.raises(ValueError, match=f"{checkpoint} is not a readable plastic-rl checkpoint"):
        read_checkpoint(checkpoint)
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--resume", str(checkpoint), "--no-progress-bar"])
    assert stopped.value.code == 2
    assert not marker.exists() and "not a readable plastic-rl checkpoint" in capsys.readouterr().err


def test_supervised_run_folder_is_never_overwritten_by_accident(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    assert main([*SUPERVISED, "--run-dir", str(run_dir), "--log-interval", "1"]) == 0
    first = (run_dir / "model.pt").read_bytes()
    with pytest.raises(SystemExit):
        main([*SUPERVISED, "--run-dir", str(run_dir), "--seed", "1"])
    assert "already holds a run" in capsys.readouterr().err and (run_dir / "model.pt").read_bytes() == first
    with pytest.raises(SystemExit):  # bad input with --overwrite: the old run is still there
        main([*SUPERVISED, "--run-dir", str(run_dir), "--overwrite", "--pattern-count", "0"])
    assert (run_dir / "model.pt").read_bytes() == first
    assert main([*SUPERVISED, "--run-dir", str(run_dir), "--seed", "1", "--overwrite", "--log-interval", "1"]) == 0
    assert (run_dir / "model.pt").read_bytes() != first and len(list((run_dir / "tensorboard").iterdir())) == 1
    monkeypatch.chdir(tmp_path)  # the default folder is numbered, never reused
    assert main(SUPERVISED) == 0 and main(SUPERVISED) == 0
    assert sorted(p.name for p in (tmp_path / "runs/supervised/patterns").iterdir()) == [
        "plastic-seed0",
        "plastic-seed0_2",
    ]


# Each script writes its kind of file in a loop until it is killed; LOAD must then read the final path.
KILL_SCRIPTS = {
    "supervised model and checkpoint": """
        from plastic_rl.supervised import SupervisedTrainer, make_task
        task = make_task("patterns", pattern_size=400, pattern_count=2, steps_shown=1, gap_steps=0, repetitions=1)
        run = SupervisedTrainer(task, task.build_model("plastic"), checkpoint_path=PATH + ".ckpt", progress=False)
        while True:
            run.save_model(PATH)
            run.save_checkpoint()
    """,
    "SB3 model": """
        from plastic_rl.agents import PlasticA2C
        model = PlasticA2C("PlasticRecurrentPolicy", "PlasticMaze-v0", policy_kwargs={"hidden_size": 200})
        while True:
            model.save(PATH)
    """,
    "CSV curve": """
        from plastic_rl.supervised.trainer import write_history_csv
        rows = [{"step": i, "loss": i / 7} for i in range(100_000)]
        while True:
            write_history_csv(rows, PATH)
    """,
    "GIF recording": """
        import numpy as np
        from PIL import Image
        from plastic_rl.core.files import atomic_write
        frames = [Image.fromarray(np.full((200, 200, 3), i, np.uint8)) for i in range(40)]
        while True:
            with atomic_write(PATH) as handle:
                frames[0].save(handle, format="GIF", save_all=True, append_images=frames[1:])
    """,
}


def _load_written(kind: str, path) -> None:
    if kind == "supervised model and checkpoint":
        load_model(path)
        if os.path.exists(str(path) + ".ckpt"):
            SupervisedTrainer.resume(str(path) + ".ckpt", progress=False)
    elif kind == "SB3 model":
        PlasticA2C.load(path)
    elif kind == "CSV curve":
        assert len(path.read_text().splitlines()) == 100_001
    else:
        from PIL import Image

        with Image.open(path) as image:
            assert image.n_frames == 40


@pytest.mark.parametrize("kind", list(KILL_SCRIPTS))
def test_a_kill_during_a_write_leaves_the_old_file_or_the_new_one(kind, tmp_path):
    path = tmp_path / ("out.zip" if kind == "SB3 model" else "out")
    script = f"import torch\ntorch.set_num_threads(1)\nPATH = {str(path)!r}\n" + textwrap.dedent(KILL_SCRIPTS[kind])
    writer = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not path.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # well into the next writes
    writer.send_signal(signal.SIGKILL)
    _, errors = writer.communicate()
    assert writer.returncode == -signal.SIGKILL, errors.decode()
    _load_written(kind, path)


def test_a_cached_measurement_is_redone_when_its_record_is_corrupt_or_for_other_inputs(tmp_path):
    from plastic_rl.core.files import cached_json

    record, calls = tmp_path / "record.json", []

    def measure():
        calls.append(1)
        return {"score": len(calls)}

    assert cached_json(record, {"model": "a"}, measure) == {"score": 1}
    assert cached_json(record, {"model": "a"}, measure) == {"score": 1}  # reused
    assert cached_json(record, {"model": "b"}, measure) == {"score": 2}  # another model
    record.write_text('{"key": {"model": "b"}, "val')  # truncated by hand
    assert cached_json(record, {"model": "b"}, measure) == {"score": 3}
    assert cached_json(record, {"model": "b"}, measure) == {"score": 3}


def test_files_written_atomically_get_the_mode_of_any_new_file(tmp_path):
    # mkstemp's 0600 made shared results unreadable to other users: a new file follows the umask.
    from plastic_rl.core import files

    script = textwrap.dedent(
        f"""
        import os
        os.umask(0o027)
        from plastic_rl.core.files import atomic_path, atomic_write_text
        atomic_write_text({str(tmp_path / "text")!r}, "x")
        with atomic_path({str(tmp_path / "named.zip")!r}) as partial:
            partial.write_bytes(b"y")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert {(tmp_path / name).stat().st_mode & 0o777 for name in ("text", "named.zip")} == {0o640}
    files.atomic_write_bytes(tmp_path / "here", b"z")
    assert (tmp_path / "here").stat().st_mode & 0o777 == files._NEW_FILE_MODE
    assert not list(tmp_path.glob(".*partial*"))


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    from plastic_rl.core.files import atomic_write_bytes

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".model.zip.{int(dead.stdout)}.k2j4.partial.zip"
    writing = tmp_path / f".model.zip.{os.getpid()}.x9q1.partial.zip"  # a live writer's: kept
    other = tmp_path / f".other.zip.{int(dead.stdout)}.k2j4.partial.zip"  # another file's: left to its next write
    for path in (abandoned, writing, other):
        path.write_bytes(b"half")
    atomic_write_bytes(tmp_path / "model.zip", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.zip", writing.name, other.name])


@pytest.mark.parametrize(
    "command, written",
    [
        ([*TRAIN, "-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}", "-f", "{file}"], "{file}/plastic_a2c"),
        ([*SUPERVISED, "--run-dir", "{file}/run"], "{file}/run"),
        (["evaluate", "--pretrained", "maze", "--n-episodes", "1", "--no-random", "--out", "{file}/x.json"], "{file}"),
        (["experiment", "maze", "--conditions", "rnn", "--seeds", "1", "--timesteps", "9", "-f", "{file}/s"], "{file}"),
    ],
)
def test_a_file_where_a_folder_is_needed_is_a_clear_error(tmp_path, capsys, command, written):
    in_the_way = tmp_path / "in_the_way"
    in_the_way.write_text("")
    with pytest.raises(SystemExit) as stopped:
        main([part.replace("{file}", str(in_the_way)) for part in command])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("plastic-rl ") and ": error: cannot write " in error and "Traceback" not in error
    assert written.replace("{file}", str(in_the_way)) in error
    assert "a part of the path is a file" in error or "a file is where a folder is needed" in error


def test_a_full_disk_is_a_clear_error_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    import errno

    from plastic_rl.core import files

    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(SystemExit) as stopped:
        main([*SUPERVISED, "--run-dir", str(tmp_path / "run")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'run'}/" in error and ": no space left on the device" in error
    assert not [path for path in tmp_path.rglob("*") if "partial" in path.name]


@pytest.mark.parametrize(
    "command, what",
    [
        ([*TRAIN, "-params", "policy_kwargs:{hidden_size: 1000000}"], "a plastic connection of 1000000 x 1000000"),
        ([*TRAIN, "-params", "n_steps:1000000000"], "a rollout of n_steps=1000000000 x n_envs=2"),
        ([*TRAIN_FROM_YAML, "-n", "20", "--n-envs", "10000000"], "a rollout of n_steps=250 x n_envs=10000000"),
        ([*TRAIN, "--env-kwargs", "size:100001"], "a maze of size 100001"),
        ([*SUPERVISED, "--pattern-size", "1000000000"], "a plastic connection of 1000000001 x 1000000001"),
        ([*SUPERVISED, "--batch-size", "1000000000"], "a batch of 1000000000 episodes (its plastic traces)"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_with_their_estimate(tmp_path, capsys, command, what):
    with pytest.raises(SystemExit) as stopped:
        main([*command, *(["-f", str(tmp_path)] if command[0] == "train" else ["--run-dir", str(tmp_path / "r")])])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"error: {what} needs " in error and " GiB of memory, more than this machine's " in error


def test_check_fits_compares_with_all_the_memory_of_the_device(monkeypatch):
    from plastic_rl.core import memory

    monkeypatch.setattr(memory, "device_bytes", lambda device="cpu": 3 * memory.GIB)
    memory.check_fits("a thing", 3 * memory.GIB)
    with pytest.raises(ValueError, match=r"a thing needs 3\.5 GiB of memory, more than this machine's 3\.0 GiB"):
        memory.check_fits("a thing", int(3.5 * memory.GIB))
    monkeypatch.undo()
    assert memory.device_bytes("cpu") is None or memory.device_bytes("cpu") > memory.GIB


def test_a_folder_whose_name_is_not_utf8_works_or_is_refused_where_tensorboard_writes(tmp_path, capsys):
    folder = str(tmp_path / "study-\udcff")  # the byte 0xff, as Python reads it from the file system
    tiny = ["-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}", "--env-kwargs", "size:5", "episode_length:10"]
    assert (
        main(["experiment", "maze", "--conditions", "rnn", "--seeds", "1", "--timesteps", "20", *tiny, "-f", folder])
        == 0
    )
    assert os.path.isfile(os.path.join(folder, "finals.csv"))
    for command in (
        [*SUPERVISED, "--run-dir", folder + "-run"],
        ["experiment", "patterns", "--conditions", "rnn", "--seeds", "1", "--steps", "10", "-f", folder + "-p"],
        [*TRAIN, "-tb", folder + "-tb", "-f", str(tmp_path)],
    ):
        try:
            code = main(command)
        except SystemExit as stopped:
            code = stopped.code
        assert code == 2
        assert "must be a path whose name is valid UTF-8 (TensorBoard cannot write under it)" in capsys.readouterr().err


def test_second_trial_snags_are_one_line_errors_that_leave_nothing_behind(tmp_path, capsys):
    tiny = ["-params", "n_steps:10", "policy_kwargs:{hidden_size: 8}"]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"x")
    assert_exit_2 = "plastic-rl train: error: "
    with pytest.raises(SystemExit):  # train -i with an unreadable model: no traceback, no empty run folder
        main([*TRAIN, *tiny, "-i", str(bad), "-f", str(tmp_path / "i")])
    assert f"{assert_exit_2}{bad}: cannot load a PlasticA2C model" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    with pytest.raises(SystemExit):  # more envs than files may be open: refused before any is made
        main([*TRAIN_FROM_YAML, "-n", "20", "--n-envs", "10000000", *tiny, "-f", str(tmp_path / "n")])
    assert "n_envs=10000000 (a monitor file each) needs 10,000,000 files open at once" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit):  # the error names the user's path, not a temporary file
        main(
            ["evaluate", "--pretrained", "maze", "--n-episodes", "1", "--no-random", "--out", str(tmp_path / "folder")]
        )
    assert f"cannot write {tmp_path / 'folder'}: it is a folder, where a file is needed" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main([*TRAIN, *tiny, "-n", "40", "--save-freq", "20", "-f", str(run)]) == 0
    folder = run / "plastic_a2c" / "PlasticMaze-v0_1"
    with pytest.raises(SystemExit) as stopped:  # options given with --resume are refused
        main(["train", "--resume", str(folder), "-n", "4200"])
    assert stopped.value.code == 2
    assert "these differ: n_timesteps (the run's 40, given 4200)" in capsys.readouterr().err


def test_a_damaged_monitor_file_and_a_nan_eta_are_named(tmp_path):
    from plastic_rl.experiments.rl import episode_rewards

    (tmp_path / "0.monitor.csv").write_text('#{"t_start": 0}\nr,l,t\n--9.9,10,1.0\n')
    with pytest.raises(ValueError, match=r"0\.monitor\.csv is not a readable monitor file"):
        episode_rewards(tmp_path)
    layer = PlasticRecurrentLayer(8, 3)
    with torch.no_grad():
        layer.eta_raw.fill_(math.nan)
    with pytest.raises(ValueError, match="eta must be finite; got nan"):
        layer(torch.zeros(4, 2, 3), layer.initial_state(2))
