"""Checkpoints of an RL run that continue it exactly.

A checkpoint is one file, ``rl_checkpoint_<steps>_steps.pt`` in the run folder, written atomically
(:func:`plastic_rl.core.files.atomic_write_bytes`) between two updates, when a rollout starts. It holds the
model as SB3 saves it (parameters, optimizer state, step and update counters, the last observations and episode
starts), the recurrent state the next rollout starts from, every random state (torch, CUDA, numpy, Python, the
action space's), the VecEnv's state where it has one (:class:`~plastic_rl.agents.batched_vec_env.BatchedVecEnv`:
the mazes, their generators and the monitor files' ends), the evaluation callback's counters and the run's
``plastic-rl train`` arguments. Resuming from it on the same machine and thread count gives the parameters of
the run that was never stopped (tested with SIGKILL). The file holds tensors and plain data only
(:mod:`plastic_rl.core.plain_data`) and is read with ``torch.load(weights_only=True)``: reading it runs no code.
"""

from __future__ import annotations

import io
import random
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from plastic_rl.core.files import atomic_write_bytes
from plastic_rl.core.plain_data import from_plain, to_plain

CHECKPOINT_FORMAT = 2
CHECKPOINT_FIELDS = {"format", "arguments", "model", "recurrent_state", "random_states", "env_state", "eval"}
CHECKPOINT_PATTERN = re.compile(r"rl_checkpoint_(\d+)_steps\.pt")
# What an EvalCallback has to carry over for its evaluations to fall at the same steps and its files to go on.
EVAL_CALLBACK_FIELDS = (
    "n_calls",
    "best_mean_reward",
    "last_mean_reward",
    "evaluations_timesteps",
    "evaluations_results",
    "evaluations_length",
    "evaluations_successes",
)


def checkpoint_path(folder: str | Path, steps: int) -> Path:
    """The checkpoint of ``folder`` after ``steps`` env steps."""
    return Path(folder) / f"rl_checkpoint_{steps}_steps.pt"


def checkpoints_newest_first(folder: str | Path) -> list[Path]:
    """The checkpoints of ``folder``, the one with the most steps first (none when ``folder`` does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint of ``folder`` with the most steps, or ``None`` when it has none."""
    return next(iter(checkpoints_newest_first(folder)), None)


def random_states(model: BaseAlgorithm) -> dict[str, Any]:
    return {
        "torch": th.get_rng_state(),
        "cuda": th.cuda.get_rng_state_all() if th.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "action_space": model.action_space.np_random.bit_generator.state,
    }


def set_random_states(model: BaseAlgorithm, states: dict[str, Any]) -> None:
    th.set_rng_state(states["torch"])
    if states["cuda"] and th.cuda.is_available():
        th.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    model.action_space.np_random.bit_generator.state = states["action_space"]


def save_checkpoint(
    path: str | Path, model: BaseAlgorithm, arguments: dict[str, Any], eval_callback: EvalCallback | None = None
) -> None:
    """Write everything that continues ``model``'s run exactly to ``path`` (atomically)."""
    model_bytes = io.BytesIO()
    model.save(model_bytes)
    env = model.get_env()
    assert env is not None, "a model being trained has its env"
    recurrent_state = getattr(model, "_last_recurrent_state", None)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arguments": arguments,
        "model": model_bytes.getvalue(),
        "recurrent_state": None if recurrent_state is None else tuple(part.cpu() for part in recurrent_state),
        "random_states": random_states(model),
        "env_state": env.get_state() if hasattr(env, "get_state") else None,
        "eval": None if eval_callback is None else _eval_state(eval_callback),
    }
    buffer = io.BytesIO()
    th.save(to_plain(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _eval_state(callback: EvalCallback) -> dict[str, Any]:
    env = callback.eval_env
    return {
        "fields": {name: getattr(callback, name) for name in EVAL_CALLBACK_FIELDS},
        "env_state": env.get_state() if hasattr(env, "get_state") and getattr(env, "was_reset", False) else None,
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file; a ValueError that names the file when it is not one."""
    try:
        payload = from_plain(th.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # a truncated, foreign or code-carrying file: say which, and why
        raise ValueError(
            f"{path} is not a readable plastic-rl checkpoint of format {CHECKPOINT_FORMAT}: checkpoints hold tensors "
            "and plain data only, and one written before format 2 (with pickled numpy objects) resumes only with "
            f"the plastic-rl that wrote it ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a plastic-rl checkpoint of format {CHECKPOINT_FORMAT}")
    if missing := sorted(CHECKPOINT_FIELDS - set(payload)):
        raise ValueError(f"{path} is corrupt: it lacks {', '.join(missing)}")
    if not isinstance(payload["arguments"], dict):
        raise ValueError(f"{path} is corrupt: its arguments are not a mapping")
    # The model is a zip archive inside the checkpoint: its CRCs catch a flipped bit there, which would otherwise
    # surface later as an error about an unnamed in-memory file.
    try:
        damaged = zipfile.ZipFile(io.BytesIO(payload["model"])).testzip()
    except (KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is corrupt: its model is not a readable archive ({error})") from error
    if damaged is not None:
        raise ValueError(f"{path} is corrupt: {damaged} in its model archive fails its CRC check")
    return payload


def newest_readable_checkpoint(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that reads back, with its contents (``None`` when none does); an
    unreadable newer one is skipped with a note on stderr: it is why the run keeps its last two."""
    for path in checkpoints_newest_first(folder):
        try:
            return path, read_checkpoint(path)
        except ValueError as error:
            print(f"plastic-rl: skipping a checkpoint that does not read back: {error}", file=sys.stderr)
    return None


def restore_checkpoint(
    payload: dict[str, Any],
    algorithm_class: type[BaseAlgorithm],
    env: Any,
    device: str,
    eval_callback: EvalCallback | None = None,
    **load_kwargs: Any,
) -> BaseAlgorithm:
    """The model of a checkpoint on ``env``, with ``env``, the random states and ``eval_callback`` where they were."""
    exact = payload["env_state"] is not None
    if not exact:
        warnings.warn(
            "this VecEnv cannot save its state: the resumed run starts new episodes (it is not exactly the run that "
            "was stopped)",
            stacklevel=2,
        )
    model = algorithm_class.load(
        io.BytesIO(payload["model"]), env=env, device=device, force_reset=not exact, **load_kwargs
    )
    if payload["recurrent_state"] is not None:
        recurrent_state = tuple(part.to(model.device) for part in payload["recurrent_state"])
        model._last_recurrent_state = recurrent_state  # type: ignore[attr-defined]  # PlasticA2C's rollout state
    if exact:
        env.set_state(payload["env_state"])
        # Loading seeded the env for a reset that never comes: drop those seeds.
        env._reset_seeds()
    if eval_callback is not None and payload["eval"] is not None:
        for name, value in payload["eval"]["fields"].items():
            setattr(eval_callback, name, value)
        if payload["eval"]["env_state"] is not None:
            eval_callback.eval_env.reset()
            eval_callback.eval_env.set_state(payload["eval"]["env_state"])  # type: ignore[attr-defined]
    set_random_states(model, payload["random_states"])
    return model


class ResumeCheckpointCallback(BaseCallback):
    """Writes a checkpoint when a rollout starts and ``save_freq`` env steps have passed since the last one, and
    keeps the latest ``keep``.

    A rollout's start is the one point of ``learn()`` where nothing is half done: the last update has been applied
    and no step of the next rollout taken.
    """

    def __init__(
        self,
        folder: str | Path,
        save_freq: int,
        arguments: dict[str, Any],
        eval_callback: EvalCallback | None = None,
        keep: int = 2,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.save_freq = save_freq
        self.keep = keep
        self.arguments = arguments
        self.eval_callback = eval_callback
        self._last_saved: int | None = None

    def _on_training_start(self) -> None:
        self._last_saved = self.num_timesteps

    def _on_rollout_start(self) -> None:
        assert self._last_saved is not None, "set when training starts"
        if self.num_timesteps - self._last_saved >= self.save_freq:
            path = checkpoint_path(self.folder, self.num_timesteps)
            save_checkpoint(path, self.model, self.arguments, self.eval_callback)
            self._last_saved = self.num_timesteps
            for old in checkpoints_newest_first(self.folder)[self.keep :]:
                old.unlink()

    def _on_step(self) -> bool:
        return True
