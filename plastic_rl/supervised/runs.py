"""A supervised training run in its folder, from a :class:`~plastic_rl.supervised.config.SupervisedConfig`.

:func:`train_run` is the work of ``plastic-rl supervised TASK``, which the experiment runner also calls for each of its
runs: it chooses the run folder (never mixing two runs in one, see :func:`choose_run_dir`), builds the trainer of any
registered task (or resumes one from its checkpoint), trains, and writes the model, the curve and the TensorBoard
events.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plastic_rl.core.options import BadInputError, check_utf8_path, reported_as_bad_input
from plastic_rl.supervised.config import SupervisedConfig
from plastic_rl.supervised.models import count_parameters
from plastic_rl.supervised.task import SupervisedTask, get_task_class
from plastic_rl.supervised.trainer import SupervisedTrainer


def task_and_model(config: SupervisedConfig, check_data: bool = False) -> tuple[SupervisedTask, nn.Module]:
    """The run's task (its data checked first if ``check_data``) and a fresh model of it."""
    task = get_task_class(config.task).from_options(config.task_options, config.data_dir)
    if check_data:
        task.check_data()
    return task, task.build_model(config.model, **config.model_options.keywords())


def build_trainer(config: SupervisedConfig, run_dir: Path) -> SupervisedTrainer:
    """A new trainer for the run of ``config`` (or the one resumed from ``config.resume``) writing into ``run_dir``."""
    options = config.trainer
    outputs: dict[str, Any] = dict(
        device=options.device,
        log_dir=run_dir / "tensorboard",
        checkpoint_path=run_dir / "checkpoint.pt",
        checkpoint_interval=options.checkpoint_interval,
        curve_path=run_dir / "curve.csv",
        progress=not options.no_progress,
    )
    if config.resume:
        return SupervisedTrainer.resume(config.resume, **outputs)
    torch.manual_seed(options.seed)
    task, model = task_and_model(config, check_data=True)
    return SupervisedTrainer(
        task,
        model,
        model_name=config.model,
        learning_rate=options.learning_rate,
        learning_rate_schedule=options.learning_rate_schedule,
        schedule_steps=options.steps if options.learning_rate_schedule == "cosine" else None,
        batch_size=options.batch_size,
        seed=options.seed,
        log_interval=options.log_interval,
        eval_interval=options.eval_interval,
        eval_episodes=options.eval_episodes,
        gradient_clip=options.gradient_clip,
        on_non_finite=options.on_non_finite,
        **outputs,
    )


# What a run writes into its folder; a folder holding any of them holds a run.
RUN_OUTPUTS = ("model.pt", "model_interrupted.pt", "checkpoint.pt", "curve.csv", "tensorboard")


def _run_outputs(folder: Path) -> list[Path]:
    return [folder / name for name in RUN_OUTPUTS if (folder / name).exists()]


def choose_run_dir(config: SupervisedConfig) -> Path:
    """The run folder: ``--run-dir``, else the ``--resume`` folder, else a new numbered default folder.

    A ``--run-dir`` that already holds another run is refused unless ``--overwrite`` is given (see
    :func:`remove_previous_run`), so that two runs never mix their models, curves or TensorBoard events.
    """
    if config.run_dir:
        run_dir = check_utf8_path("--run-dir", config.run_dir)
    elif config.resume:
        return Path(config.resume).parent
    else:
        base = Path("runs", "supervised", config.task, f"{config.model}-seed{config.trainer.seed}")
        run_dir, number = base, 1
        while _run_outputs(run_dir):
            number += 1
            run_dir = base.with_name(f"{base.name}_{number}")
        return run_dir
    existing = _previous_run(config, run_dir)
    if existing and not config.overwrite:
        raise BadInputError(
            f"--run-dir {run_dir} already holds a run ({', '.join(path.name for path in existing)}): continue it "
            f"with --resume {run_dir / 'checkpoint.pt'}, replace it with --overwrite, or choose another --run-dir"
        )
    return run_dir


def _previous_run(config: SupervisedConfig, run_dir: Path) -> list[Path]:
    continues_its_own_run = config.resume and Path(config.resume).resolve().parent == run_dir.resolve()
    return [] if continues_its_own_run else _run_outputs(run_dir)


def remove_previous_run(config: SupervisedConfig, run_dir: Path) -> None:
    """With ``--overwrite``, remove the outputs of the other run in ``run_dir`` (once the new one is set up)."""
    if config.overwrite:
        for path in _previous_run(config, run_dir):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def describe(trainer: SupervisedTrainer) -> str:
    settings = ", ".join(f"{name}={value}" for name, value in trainer.task.config().items())
    return (
        f"task {trainer.task.name} ({settings})\nmodel {trainer.model_name}: {count_parameters(trainer.model):,} "
        f"trainable parameters on {trainer.device}; starting at step {trainer.step}"
    )


def train_run(config: SupervisedConfig) -> Path:
    """Train the run of ``config`` (a new one, or ``config.resume``'s) in its folder; returns the path of its model.

    An interrupted run saves its model as ``model_interrupted.pt`` beside its checkpoint and says how to go on.
    """
    steps = config.trainer.steps
    if config.trainer.threads:
        torch.set_num_threads(config.trainer.threads)
    with reported_as_bad_input():
        run_dir = choose_run_dir(config)
        trainer = build_trainer(config, run_dir)
        trainer.check_steps(steps)  # a resumed run's schedule may end before --steps
    remove_previous_run(config, run_dir)
    print(describe(trainer))
    try:
        trainer.train(steps)
    except KeyboardInterrupt:
        trainer.save_model(run_dir / "model_interrupted.pt")
        checkpoint = run_dir / "checkpoint.pt"
        how = (f"continue from its latest checkpoint with: plastic-rl supervised {config.task} --resume {checkpoint}"
               if checkpoint.exists() else "no checkpoint was written yet, so it cannot be resumed")  # fmt: skip
        print(f"Interrupted at step {trainer.step}: saved {run_dir / 'model_interrupted.pt'}; {how}", file=sys.stderr)
        raise
    finally:
        trainer.close()
    trainer.save_model(run_dir / "model.pt")
    final = trainer.history[-1] if trainer.history else {}
    parts = [f"{trainer.episodes} episodes, {trainer.train_seconds:.1f} s training"]
    parts += [", ".join(f"{name}={value:.4g}" for name, value in final.items() if name.startswith("eval_"))]
    parts += [f"{trainer.skipped_steps} steps skipped (non-finite loss or gradient)" if trainer.skipped_steps else ""]
    print("; ".join(part for part in parts if part))
    curve = run_dir / "curve.csv" if trainer.history else "none (fewer steps than --log-interval)"
    print(f"model: {run_dir / 'model.pt'} (plastic_rl.supervised.load_model); curve: {curve}")
    return run_dir / "model.pt"
