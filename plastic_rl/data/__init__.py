"""Datasets of the paper's supervised experiments: where they live, how they are fetched and checked.

A dataset is read from a *data directory*: the ``--data-dir`` option, else the ``PLASTIC_RL_DATA``
environment variable, else a per-user cache folder (:func:`default_data_dir`). Preprocessed arrays
go to :func:`cache_dir`, never into the data directory, which may be read-only. Each dataset module
is named in :data:`DATASETS` and defines ``download(data_dir: Path) -> None`` (used by
``plastic-rl download NAME``), which fetches the official files and checks their published checksums.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENVIRONMENT_VARIABLE = "PLASTIC_RL_DATA"
CACHE_ENVIRONMENT_VARIABLE = "PLASTIC_RL_CACHE"


class DataError(RuntimeError):
    """A dataset file is missing, unreadable or corrupt; the message says which, where and how to get it."""


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plastic_rl"


def default_data_dir() -> Path:
    """The data directory used when neither ``--data-dir`` nor ``PLASTIC_RL_DATA`` is given."""
    return _user_cache_root() / "data"


def environment_data_dir() -> str | None:
    """The data directory that ``$PLASTIC_RL_DATA`` names; None when it is unset or empty. The supervised commands'
    ``--data-dir`` defaults to it, so that a run, its model file and its recorded command name the folder read."""
    return os.environ.get(DATA_ENVIRONMENT_VARIABLE) or None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$PLASTIC_RL_DATA``, else :func:`default_data_dir`."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_environment = environment_data_dir()
    return Path(from_environment).expanduser() if from_environment else default_data_dir()


def cache_dir() -> Path:
    """The per-user folder for preprocessed arrays (``$PLASTIC_RL_CACHE`` overrides it)."""
    from_environment = os.environ.get(CACHE_ENVIRONMENT_VARIABLE, "")
    return Path(from_environment).expanduser() if from_environment else _user_cache_root() / "preprocessed"


# dataset name -> the module that reads it and defines download(data_dir); one line per dataset.
DATASETS: dict[str, str] = {
    "omniglot": "plastic_rl.data.omniglot",
    "cifar": "plastic_rl.data.cifar",
}
