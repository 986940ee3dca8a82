"""The ``plastic-rl supervised TASK`` command family, for every task in the registry.

:func:`add_arguments` / :func:`run` serve all tasks at once (``plastic-rl supervised TASK ...``,
with one sub-command per registered task); :func:`add_task_arguments` builds the options of a single
task, for a command module bound to one task such as ``cli_patterns``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch

from plastic_rl.core.divergence import NON_FINITE_ACTIONS
from plastic_rl.core.options import (
    BadInputError,
    check_utf8_path,
    non_negative_int,
    positive_float,
    positive_int,
    reported_as_bad_input,
)
from plastic_rl.supervised.models import count_parameters
from plastic_rl.supervised.task import TASKS, get_task_class
from plastic_rl.supervised.trainer import LEARNING_RATE_SCHEDULES, SupervisedTrainer


def add_trainer_arguments(parser: argparse.ArgumentParser, *, single_seed: bool = True) -> None:
    """The options every supervised training command shares (``--seed`` unless ``single_seed`` is false)."""
    group = parser.add_argument_group("training")
    group.add_argument(
        "--steps", type=positive_int, default=1000, help="total Adam steps (episodes = steps x batch size)"
    )
    group.add_argument("--batch-size", type=positive_int, default=1, help="episodes per step")
    group.add_argument("--learning-rate", type=positive_float, default=1e-3, help="Adam's learning rate")
    group.add_argument(
        "--learning-rate-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        default="constant",
        help="constant, or cosine: annealed to zero over --steps",
    )
    group.add_argument("--gradient-clip", type=positive_float, help="clip the gradient norm to this value")
    group.add_argument(
        "--on-non-finite",
        choices=NON_FINITE_ACTIONS,
        default="raise",
        help="at a NaN/inf loss or gradient: stop (exit 3, the last checkpoint kept) or skip the step (counted)",
    )
    if single_seed:
        group.add_argument("--seed", type=non_negative_int, default=0, help="seed of the model and of the episodes")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    group.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    group.add_argument("--log-interval", type=positive_int, default=10, help="steps averaged into one curve row")
    group.add_argument(
        "--eval-interval", type=non_negative_int, default=100, help="steps between evaluations (0: none)"
    )
    group.add_argument("--eval-episodes", type=positive_int, default=32, help="fresh episodes per evaluation")
    group.add_argument(
        "--checkpoint-interval", type=non_negative_int, default=100, help="steps between checkpoints (0: end only)"
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--data-dir",
        default=os.environ.get("PLASTIC_RL_DATA"),
        help="dataset folder for the image and Omniglot tasks (default: $PLASTIC_RL_DATA)",
    )


def add_task_arguments(parser: argparse.ArgumentParser, task_name: str) -> None:
    """All the options of ``plastic-rl supervised <task_name>``."""
    task_class = get_task_class(task_name)
    parser.set_defaults(task=task_name)
    parser.add_argument("--model", choices=task_class.model_names, default=task_class.model_names[0])
    parser.add_argument(
        "--run-dir",
        help=f"output folder (default: a new runs/supervised/{task_name}/MODEL-seedSEED[_N], or the --resume folder)",
    )
    parser.add_argument("--resume", help="checkpoint to continue from (its task, model and settings are kept)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir")
    add_trainer_arguments(parser)
    task_class.add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(TASKS))
    for name in TASKS:
        add_task_arguments(subparsers.add_parser(name, help=f"train on the {name!r} task"), name)


def build_trainer(args: argparse.Namespace, run_dir: Path, model_name: str) -> SupervisedTrainer:
    """A new trainer for ``args.task`` (or the one resumed from ``args.resume``) writing into ``run_dir``."""
    outputs = dict(
        device=args.device,
        log_dir=run_dir / "tensorboard",
        checkpoint_path=run_dir / "checkpoint.pt",
        checkpoint_interval=args.checkpoint_interval,
        curve_path=run_dir / "curve.csv",
        progress=not args.no_progress,
    )
    if getattr(args, "resume", None):
        return SupervisedTrainer.resume(args.resume, **outputs)
    torch.manual_seed(args.seed)
    task, model_options = get_task_class(args.task).from_args(args)
    task.check_data()
    return SupervisedTrainer(
        task,
        task.build_model(model_name, **model_options),
        model_name=model_name,
        learning_rate=args.learning_rate,
        learning_rate_schedule=args.learning_rate_schedule,
        schedule_steps=args.steps if args.learning_rate_schedule == "cosine" else None,
        batch_size=args.batch_size,
        seed=args.seed,
        log_interval=args.log_interval,
        eval_interval=args.eval_interval,
        eval_episodes=args.eval_episodes,
        gradient_clip=args.gradient_clip,
        on_non_finite=args.on_non_finite,
        **outputs,
    )


# What a run writes into its folder; a folder holding any of them holds a run.
RUN_OUTPUTS = ("model.pt", "model_interrupted.pt", "checkpoint.pt", "curve.csv", "tensorboard")


def _run_outputs(folder: Path) -> list[Path]:
    return [folder / name for name in RUN_OUTPUTS if (folder / name).exists()]


def choose_run_dir(args: argparse.Namespace) -> Path:
    """The run folder: ``--run-dir``, else the ``--resume`` folder, else a new numbered default folder.

    A ``--run-dir`` that already holds another run is refused unless ``--overwrite`` is given (see
    :func:`remove_previous_run`), so that two runs never mix their models, curves or TensorBoard events.
    """
    if args.run_dir:
        run_dir = check_utf8_path("--run-dir", args.run_dir)
    elif args.resume:
        return Path(args.resume).parent
    else:
        base = Path("runs", "supervised", args.task, f"{args.model}-seed{args.seed}")
        run_dir, number = base, 1
        while _run_outputs(run_dir):
            number += 1
            run_dir = base.with_name(f"{base.name}_{number}")
        return run_dir
    existing = _previous_run(args, run_dir)
    if existing and not args.overwrite:
        raise BadInputError(
            f"--run-dir {run_dir} already holds a run ({', '.join(path.name for path in existing)}): continue it "
            f"with --resume {run_dir / 'checkpoint.pt'}, replace it with --overwrite, or choose another --run-dir"
        )
    return run_dir


def _previous_run(args: argparse.Namespace, run_dir: Path) -> list[Path]:
    continues_its_own_run = args.resume and Path(args.resume).resolve().parent == run_dir.resolve()
    return [] if continues_its_own_run else _run_outputs(run_dir)


def remove_previous_run(args: argparse.Namespace, run_dir: Path) -> None:
    """With ``--overwrite``, remove the outputs of the other run in ``run_dir`` (once the new one is set up)."""
    if args.overwrite:
        for path in _previous_run(args, run_dir):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def describe(trainer: SupervisedTrainer) -> str:
    settings = ", ".join(f"{name}={value}" for name, value in trainer.task.config().items())
    return (
        f"task {trainer.task.name} ({settings})\nmodel {trainer.model_name}: {count_parameters(trainer.model):,} "
        f"trainable parameters on {trainer.device}; starting at step {trainer.step}"
    )


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    with reported_as_bad_input():
        run_dir = choose_run_dir(args)
        trainer = build_trainer(args, run_dir, args.model)
        trainer.check_steps(args.steps)  # a resumed run's schedule may end before --steps
    remove_previous_run(args, run_dir)
    print(describe(trainer))
    try:
        trainer.train(args.steps)
    except KeyboardInterrupt:
        trainer.save_model(run_dir / "model_interrupted.pt")
        checkpoint = run_dir / "checkpoint.pt"
        how = (f"continue from its latest checkpoint with: plastic-rl supervised {args.task} --resume {checkpoint}"
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
    return 0
