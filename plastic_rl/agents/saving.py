"""Model files of the RL algorithms: saves that are never half-written, loads whose errors name the file."""

from __future__ import annotations

import io
import os
import pathlib
from typing import Any

from stable_baselines3.common import callbacks

from plastic_rl.core.files import atomic_path


class AtomicSaveMixin:
    """Put before an SB3 algorithm class: ``save`` writes a temporary file and renames it (atomic), and
    ``load`` of an empty, truncated or foreign file raises one ``ValueError`` that names the file."""

    def save(self, path: str | pathlib.Path | io.BufferedIOBase, *args: Any, **kwargs: Any) -> None:
        if isinstance(path, io.IOBase):
            return super().save(path, *args, **kwargs)  # type: ignore[misc]  # a mixin before an SB3 class
        path = pathlib.Path(path)
        if path.suffix == "":  # SB3's own rule: a path without a suffix gets ".zip"
            path = path.with_name(path.name + ".zip")
        with atomic_path(path) as partial:
            super().save(partial, *args, **kwargs)  # type: ignore[misc]

    @classmethod
    def load(cls, path: str | os.PathLike | io.BufferedIOBase, *args: Any, **kwargs: Any):
        try:
            return super().load(path, *args, **kwargs)  # type: ignore[misc]
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except Exception as error:  # SB3's and torch's errors for a bad file vary widely (KeyError, EOFError, ...)
            raise ValueError(
                f"{path}: cannot load a {cls.__name__} model from it (empty, truncated or another kind of file): "
                f"{type(error).__name__}: {error}"
            ) from error


class EvalCallback(callbacks.EvalCallback):
    """SB3's ``EvalCallback``, writing ``evaluations.npz`` atomically (``best_model.zip``: the model's save)."""

    def _on_step(self) -> bool:
        evaluates_now = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        if self.log_path is None or not evaluates_now:
            return super()._on_step()
        final = self.log_path
        with atomic_path(f"{final}.npz") as partial:
            self.log_path = str(partial)  # it ends with ".npz", so numpy writes exactly there
            try:
                return super()._on_step()
            finally:
                self.log_path = final
