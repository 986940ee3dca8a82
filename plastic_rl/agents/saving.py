"""Model files of the RL algorithms: saves that are never half-written, loads that run no code from the file and
whose errors name it."""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Iterable
from typing import Any

from plastic_rl.agents.plain_fields import PLAIN_FIELDS, plain_fields, supplied_objects
from plastic_rl.core.files import atomic_path


def _model_file(path: str | os.PathLike) -> pathlib.Path:
    """``path``, or ``path`` with ".zip" added when it has no suffix (SB3's rule); a ValueError when neither exists."""
    path = pathlib.Path(path)
    if not path.exists() and path.suffix == "" and path.with_name(path.name + ".zip").exists():
        path = path.with_name(path.name + ".zip")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return path


class ModelFileMixin:
    """Put before an SB3 algorithm class: ``save`` writes a temporary file and renames it (atomic) and keeps the
    fields SB3 pickles also as plain data; ``load`` unpickles nothing from the file (:mod:`plain_fields`), and
    raises one ``ValueError`` that names the file when it is empty, truncated, foreign or would need unpickling."""

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        excluded = {*self._excluded_save_params(), *(exclude or ())} - set(include or ())  # type: ignore[attr-defined]
        attributes = {name: value for name, value in vars(self).items() if name not in excluded}
        self.plain_fields = plain_fields(attributes, type(self))
        try:
            if isinstance(path, io.IOBase):
                return super().save(path, exclude, include)  # type: ignore[misc]  # a mixin before an SB3 class
            path = pathlib.Path(path)
            if path.suffix == "":  # SB3's own rule: a path without a suffix gets ".zip"
                path = path.with_name(path.name + ".zip")
            with atomic_path(path) as partial:
                super().save(partial, exclude, include)  # type: ignore[misc]
        finally:
            del self.plain_fields

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | io.BufferedIOBase,
        env: Any = None,
        device: Any = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        *,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> Any:
        """SB3's ``load``; with ``allow_pickle=False`` (the default) every field SB3 would unpickle is supplied from
        the file's plain data or from ``env`` instead. ``allow_pickle=True`` is SB3's own load: only for a trusted
        file."""
        if isinstance(path, (str, os.PathLike)):
            path = _model_file(path)
        supplied = {} if allow_pickle else supplied_objects(path, cls, env)
        try:
            model = super().load(  # type: ignore[misc]
                path,
                env=env,
                device=device,
                custom_objects={**supplied, **(custom_objects or {})},
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except Exception as error:  # SB3's and torch's errors for a bad file vary widely (KeyError, EOFError, ...)
            raise ValueError(
                f"{path}: cannot load a {cls.__name__} model from it (empty, truncated or another kind of file): "
                f"{type(error).__name__}: {error}"
            ) from error
        vars(model).pop(PLAIN_FIELDS, None)
        return model
