"""A supervised training run in its folder, from the options of ``plastic-rl supervised TASK``.

:func:`train_run` is the command's work, which the experiment runner also calls for each of its runs: it chooses the
run folder (never mixing two runs in one, see :func:`choose_run_dir`), builds the trainer of any registered task (or
resumes one from its checkpoint), trains, and writes the model, the curve and the TensorBoard events. The options are
those of :func:`~plastic_rl.supervised.options.add_task_arguments`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from plastic_rl.core.options import BadInputError, check_utf8_path, reported_as_bad_input
from plastic_rl.supervised.models import count_parameters
from plastic_rl.supervised.task import get_task_class
from plastic_rl.supervised.trainer import SupervisedTrainer


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


def train_run(args: argparse.Namespace) -> Path:
    """Train the run of ``args`` (a new one, or ``--resume``'s) in its folder; returns the path of its model.

    An interrupted run saves its model as ``model_interrupted.pt`` beside its checkpoint and says how to go on.
    """
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
    return run_dir / "model.pt"
