"""The supervised trainer shared by the pattern, image and Omniglot tasks; the files it writes are
:mod:`~plastic_rl.supervised.model_files`'."""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from plastic_rl.core.divergence import (
    TrainingDiverged,
    check_finite_parameters,
    divergence_message,
    find_non_finite,
)
from plastic_rl.core.files import atomic_write_text
from plastic_rl.core.memory import check_fits
from plastic_rl.core.options import (
    NON_FINITE_ACTIONS,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_utf8_path,
    select_device,
)
from plastic_rl.supervised.model_files import build_model, model_record, read_record, write_record
from plastic_rl.supervised.models import plastic_layers
from plastic_rl.supervised.options import LEARNING_RATE_SCHEDULES
from plastic_rl.supervised.task import Episodes, SupervisedTask, make_task

# A logged training loss this many times the first step's is reported as probable (finite) divergence.
DIVERGENCE_WARNING_FACTOR = 100.0


def write_history_csv(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write the trainer's history rows as CSV (columns: the union of the rows' keys)."""
    columns: dict[str, None] = {}
    for row in history:
        columns.update(dict.fromkeys(row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


class SupervisedTrainer:
    """Train a model on a :class:`~plastic_rl.supervised.task.SupervisedTask` with Adam.

    Each step draws ``batch_size`` fresh episodes from the task, unrolls the model over them,
    takes the task's loss at its scored steps and steps Adam. Training metrics are averaged over
    ``log_interval`` steps into :attr:`history` (and TensorBoard, with the plastic layers' eta and
    mean ``|alpha|``); every ``eval_interval`` steps the model is scored on ``eval_episodes`` fresh
    episodes (and its ``w`` and ``alpha`` matrices go to TensorBoard as images). A checkpoint holds
    the model, the optimizer, the step, the history and every random state, so that
    :meth:`resume` continues exactly where training stopped.

    A history row holds ``step``, ``episodes``, ``train_s`` (seconds spent in training steps),
    ``wall_s`` (the same plus evaluations), the training loss and metrics averaged since the previous
    row and, at evaluation steps, ``eval_<name>`` for each of them.

    Parameters
    ----------
    task, model : the task and a model from ``task.build_model``.
    model_name : the model's name in the task (recorded in files).
    learning_rate : Adam's learning rate (0.001 in the paper).
    learning_rate_schedule : ``"constant"``, or ``"cosine"``: annealed from ``learning_rate`` to zero over
        ``schedule_steps`` steps (half a cosine), then zero. The rate of a step depends on the step's number
        only, so a resumed run follows the same schedule.
    schedule_steps : length of the cosine schedule in steps (required with ``"cosine"``; the command line
        sets it to ``--steps``).
    batch_size : episodes per step.
    seed : seeds the episodes drawn for training and for evaluation (two separate streams).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.
    log_dir : TensorBoard folder, or ``None`` for no TensorBoard.
    log_interval, eval_interval, eval_episodes : see above; ``eval_interval=0`` turns evaluation off.
    checkpoint_path, checkpoint_interval : where and how often (in steps; 0: only at the end of
        :meth:`train`) to write the checkpoint; no checkpoint when the path is ``None``.
    gradient_clip : clip the gradient norm to this value; ``None`` for no clipping.
    on_non_finite : at a NaN or infinite loss or gradient, ``"raise"`` :class:`TrainingDiverged` (naming
        the step and the quantity; the parameters stay those of the last good step and no checkpoint
        is written) or ``"skip"`` the step, counted in :attr:`skipped_steps` and the history.
    curve_path : rewrite :attr:`history` as CSV there at every logged step (a live curve), if given.
    progress : show a tqdm progress bar.
    """

    def __init__(
        self,
        task: SupervisedTask,
        model: nn.Module,
        *,
        model_name: str | None = None,
        learning_rate: float = 1e-3,
        learning_rate_schedule: str = "constant",
        schedule_steps: int | None = None,
        batch_size: int = 1,
        seed: int = 0,
        device: str = "auto",
        log_dir: str | os.PathLike | None = None,
        log_interval: int = 10,
        eval_interval: int = 100,
        eval_episodes: int = 32,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_interval: int = 0,
        gradient_clip: float | None = None,
        on_non_finite: str = "raise",
        curve_path: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        check_positive_float("learning_rate", learning_rate)
        check_choice("learning_rate_schedule", learning_rate_schedule, LEARNING_RATE_SCHEDULES)
        if learning_rate_schedule == "cosine" or schedule_steps is not None:
            check_positive_int("schedule_steps", schedule_steps)
        check_positive_int("batch_size", batch_size)
        check_positive_int("log_interval", log_interval)
        check_positive_int("eval_episodes", eval_episodes)
        check_positive_float("gradient_clip", gradient_clip, allow_none=True)
        check_choice("on_non_finite", on_non_finite, NON_FINITE_ACTIONS)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
        for name, value in (("eval_interval", eval_interval), ("checkpoint_interval", checkpoint_interval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        self.task = task
        self.device = select_device(device)
        traces = sum(layer.trace_bytes(batch_size) for layer in plastic_layers(model).values())
        check_fits(f"a batch of {batch_size} episodes (its plastic traces)", traces, self.device)
        self.model = model.to(self.device)
        self.model_name = model_name
        self.settings = dict(
            learning_rate=learning_rate,
            learning_rate_schedule=learning_rate_schedule,
            schedule_steps=schedule_steps,
            batch_size=batch_size,
            seed=seed,
            log_interval=log_interval,
            eval_interval=eval_interval,
            eval_episodes=eval_episodes,
            gradient_clip=gradient_clip,
            on_non_finite=on_non_finite,
        )
        self.learning_rate = learning_rate
        self.learning_rate_schedule = learning_rate_schedule
        self.schedule_steps = schedule_steps
        self.on_non_finite = on_non_finite
        self.skipped_steps = 0
        self.checkpoint_step: int | None = None  # the step of the last checkpoint written or resumed from
        self._first_loss: float | None = None  # of this trainer's first step, for the divergence warning
        self._warned_divergence = False
        self._updates_applied = 0  # by this trainer: a resumed run starts from values that trained before
        self.batch_size = batch_size
        self.log_interval = log_interval
        self.eval_interval = eval_interval
        self.eval_episodes = eval_episodes
        self.gradient_clip = gradient_clip
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_interval = checkpoint_interval
        self.curve_path = None if curve_path is None else Path(curve_path)
        self.progress = progress
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.train_rng = np.random.default_rng([seed, 0])
        self.eval_rng = np.random.default_rng([seed, 1])
        self.step = 0
        self.train_seconds = 0.0
        self.wall_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._window: dict[str, list[float]] = defaultdict(list)
        self.log_dir = None if log_dir is None else check_utf8_path("log_dir", log_dir)
        self._writer: Any = None  # a torch SummaryWriter, opened on first use

    @property
    def episodes(self) -> int:
        """Training episodes seen so far."""
        return self.step * self.batch_size

    def _summary_writer(self):
        if self.log_dir is not None and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a resumed run is about to write again.
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.step or None)
        return self._writer

    def _loss_and_metrics(self, episodes: Episodes) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.model(episodes.inputs)
        loss = self.task.loss(outputs, episodes)
        return loss, self.task.metrics(outputs.detach(), episodes)

    def current_learning_rate(self) -> float:
        """The learning rate of the next step (:attr:`step` + 1) under the schedule."""
        if self.learning_rate_schedule == "constant":
            return self.learning_rate
        assert self.schedule_steps is not None, "checked in __init__"
        progress = min(self.step / self.schedule_steps, 1.0)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def train_step(self) -> dict[str, float]:
        """One Adam step on a fresh batch; returns the batch's loss and metrics (nothing for a skipped step).

        Raises :class:`TrainingDiverged` at a non-finite loss or gradient (unless ``on_non_finite="skip"``)
        and at a non-finite parameter after the step.
        """
        started = time.perf_counter()
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_learning_rate()
        episodes = self.task.sample(self.batch_size, self.train_rng).to(self.device)
        loss, metrics = self._loss_and_metrics(episodes)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        problem = find_non_finite(loss, self.model.named_parameters(), gradients=True)
        if problem is not None and self.on_non_finite == "raise":
            raise TrainingDiverged(self._divergence_message(problem, updated=self._updates_applied > 0))
        if problem is None:
            if self.gradient_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip)
            self.optimizer.step()
            self._updates_applied += 1
            problem = find_non_finite(None, self.model.named_parameters(), gradients=False)
            if problem is not None:  # too late to skip: the step has been taken
                raise TrainingDiverged(self._divergence_message(problem))
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
        self.step += 1
        if self.device.type == "cuda":  # so that the time covers the queued GPU work too
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - started
        if problem is not None:
            return {}
        if self._first_loss is None:
            self._first_loss = loss.item()
        return {"loss": loss.item(), **metrics}

    def _warn_if_diverging(self, row: dict[str, Any]) -> None:
        first, logged = self._first_loss, row.get("loss")
        if self._warned_divergence or first is None or logged is None or not first > 0:
            return
        if logged < DIVERGENCE_WARNING_FACTOR * first:
            return
        self._warned_divergence = True
        warnings.warn(
            f"the training loss has grown from {first:.4g} at the first step to {logged:.4g} at step {self.step}: "
            f"training is probably diverging; the learning rate ({self.learning_rate:g}) is the likely cause",
            RuntimeWarning,
            stacklevel=3,
        )

    def _divergence_message(self, quantity: str, updated: bool = True) -> str:
        if self.checkpoint_step is not None:
            kept = f"; the last checkpoint, at step {self.checkpoint_step}, is kept in {self.checkpoint_path}"
        else:
            kept = "; no checkpoint had been written yet"
        return divergence_message(f"step {self.step + 1}", quantity, self.learning_rate, kept, updated=updated)

    @torch.no_grad()
    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """Mean loss and metrics over ``episodes`` (default ``eval_episodes``) fresh validation episodes."""
        remaining = self.eval_episodes if episodes is None else check_positive_int("episodes", episodes)
        self.model.eval()
        totals: dict[str, float] = defaultdict(float)
        count = 0
        while remaining > 0:
            size = min(remaining, max(self.batch_size, 32))
            batch = self.task.sample_validation(size, self.eval_rng).to(self.device)
            loss, metrics = self._loss_and_metrics(batch)
            for name, value in {"loss": loss.item(), **metrics}.items():
                totals[name] += value * size
            count += size
            remaining -= size
        return {name: total / count for name, total in totals.items()}

    def _plasticity_scalars(self) -> dict[str, float]:
        layers = plastic_layers(self.model)
        scalars = {}
        for name, layer in layers.items():
            prefix = "plasticity/" if len(layers) == 1 else f"plasticity/{name}/"
            if layer.hebbian_learning_rate is not None:
                scalars[prefix + "eta"] = layer.hebbian_learning_rate.item()
            if layer.plasticity_coefficient is not None:
                scalars[prefix + "mean_abs_alpha"] = layer.plasticity_coefficient.abs().mean().item()
        return scalars

    def _write_images(self, writer) -> None:
        for name, layer in plastic_layers(self.model).items():
            for label, matrix in (("w", layer.weight), ("alpha", layer.plasticity_coefficient)):
                if matrix is None or matrix.dim() != 2:
                    continue
                values = matrix.detach().float().cpu()
                scale = values.abs().max().clamp_min(1e-12)
                # Zero maps to mid-grey, so the sign of a connection reads off the image.
                writer.add_image(f"{label}/{name}", (values / scale + 1).unsqueeze(0) / 2, self.step)

    def _record(self, evaluated: dict[str, float] | None) -> None:
        row: dict[str, Any] = {
            "step": self.step,
            "episodes": self.episodes,
            "train_s": round(self.train_seconds, 3),
            "wall_s": round(self.wall_seconds, 3),
        }
        row.update({name: float(np.mean(values)) for name, values in self._window.items()})
        self._window.clear()
        if self.on_non_finite == "skip":
            row["skipped_steps"] = self.skipped_steps
        if evaluated is not None:
            row.update({f"eval_{name}": value for name, value in evaluated.items()})
        self.history.append(row)
        if self.curve_path is not None:
            write_history_csv(self.history, self.curve_path)
        writer = self._summary_writer()
        if writer is None:
            return
        for name, value in row.items():
            if name in ("step", "episodes") or name.startswith("eval_"):
                continue
            writer.add_scalar(
                f"train/{name}" if name not in ("train_s", "wall_s") else f"time/{name}", value, self.step
            )
        for name, value in (evaluated or {}).items():
            writer.add_scalar(f"eval/{name}", value, self.step)
        for name, value in self._plasticity_scalars().items():
            writer.add_scalar(name, value, self.step)
        if evaluated is not None:
            self._write_images(writer)
        writer.flush()

    def check_steps(self, steps: int) -> None:
        """Refuse a total of ``steps`` that :meth:`train` could not honour."""
        check_positive_int("steps", steps)
        if self.learning_rate_schedule == "cosine" and steps > (self.schedule_steps or 0):
            raise ValueError(
                f"steps must be at most {self.schedule_steps}, the length of this run's cosine schedule (its learning "
                f"rate is zero after it); got {steps}: start a new run with --steps {steps} rather than extend this one"
            )

    def train(self, steps: int) -> list[dict[str, Any]]:
        """Train until :attr:`step` reaches ``steps`` (a total, so a resumed run continues); returns the history."""
        self.check_steps(steps)
        check_finite_parameters(self.model.named_parameters())
        bar = tqdm(
            total=steps, initial=min(self.step, steps), disable=not self.progress, unit="step", dynamic_ncols=True
        )
        metric = self.task.primary_metric
        try:
            while self.step < steps:
                started = time.perf_counter()
                for name, value in self.train_step().items():
                    self._window[name].append(value)
                # Rows only at fixed multiples, so that where a run stops and resumes changes nothing.
                log_now = self.step % self.log_interval == 0
                evaluate_now = self.eval_interval > 0 and self.step % self.eval_interval == 0
                evaluated = self.evaluate() if evaluate_now else None
                self.wall_seconds += time.perf_counter() - started
                if log_now or evaluate_now:
                    self._record(evaluated)
                    row = self.history[-1]
                    self._warn_if_diverging(row)
                    postfix = {name: f"{row[name]:.4f}" for name in ("loss", metric) if name in row}
                    if evaluated is not None:
                        postfix[f"eval_{metric}"] = f"{evaluated[metric]:.4f}"
                    bar.set_postfix(postfix)
                if self.checkpoint_interval and self.step % self.checkpoint_interval == 0:
                    self.save_checkpoint()
                bar.update(1)
        finally:
            bar.close()
        if self.checkpoint_path is not None:
            self.save_checkpoint()
        if self._writer is not None:
            self._writer.flush()
        return self.history

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def save_model(self, path: str | os.PathLike) -> None:
        """Save the model alone, for :func:`load_model`."""
        write_record(model_record(self.task, self.model, self.model_name), path)

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Save everything :meth:`resume` needs (to ``checkpoint_path`` by default)."""
        path = self.checkpoint_path if path is None else path
        if path is None:
            raise ValueError("checkpoint_path must be given to save a checkpoint")
        record = model_record(self.task, self.model, self.model_name)
        record["trainer"] = {
            "settings": self.settings,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds,
            "history": self.history,
            "window": dict(self._window),
            "train_rng": self.train_rng.bit_generator.state,
            "eval_rng": self.eval_rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        write_record(record, path)
        self.checkpoint_step = self.step

    @classmethod
    def resume(cls, path: str | os.PathLike, **overrides: Any) -> SupervisedTrainer:
        """A trainer in the exact state saved in the checkpoint ``path``.

        ``overrides`` are constructor keywords that do not change the training itself (``device``,
        ``log_dir``, ``checkpoint_path`` — the file read by default —, ``checkpoint_interval``,
        ``curve_path``, ``progress``).
        """
        record = read_record(path)
        if "trainer" not in record:
            raise ValueError(f"{path} is a model file, not a checkpoint: it cannot resume training")
        allowed = {"device", "log_dir", "checkpoint_path", "checkpoint_interval", "curve_path", "progress"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ValueError(f"resume() accepts only {sorted(allowed)} as overrides; got {sorted(unknown)}")
        state = record["trainer"]
        options = {"checkpoint_path": path, **overrides}
        trainer = cls(
            make_task(record["task"], **record["task_config"]),
            build_model(record),
            model_name=record["model_name"],
            **state["settings"],
            **options,
        )
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step = trainer.checkpoint_step = state["step"]
        trainer.skipped_steps = state.get("skipped_steps", 0)
        trainer.train_seconds = state["train_seconds"]
        trainer.wall_seconds = state["wall_seconds"]
        trainer.history = list(state["history"])
        trainer._window = defaultdict(list, {name: list(values) for name, values in state["window"].items()})
        trainer.train_rng.bit_generator.state = state["train_rng"]
        trainer.eval_rng.bit_generator.state = state["eval_rng"]
        torch.set_rng_state(state["torch_rng"])
        return trainer
