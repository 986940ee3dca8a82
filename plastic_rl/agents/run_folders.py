"""The folder of a ``plastic-rl train`` run: where it is, and its ``config.yml``.

Runs are saved under ``LOGDIR/<algo>/<env>_<N>/`` (RL Baselines3 Zoo's convention), ``N`` counting from 1. A run
folder holds the final model ``<env>.zip``, ``best_model.zip`` (with ``--eval-freq``), resumable checkpoints
(:mod:`plastic_rl.agents.checkpoints`), monitor CSVs, ``progress.csv``, RL Zoo's ``<env>/config.yml`` and
``<env>/args.yml`` (:func:`plastic_rl.agents.zoo.write_run_files`), and the run's own ``config.yml``
(:func:`write_run_config`): ``algo``, ``env``, ``policy``, ``seed``, ``device``, the ``hyperparameters`` it trained
with, ``trained_agent`` and the ``command``; a pretrained agent's adds ``provenance``
(:mod:`plastic_rl.agents.pretrained`). The commands that load a run (``enjoy``, ``evaluate``, the experiment runner)
read it with :func:`read_run_config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from plastic_rl.agents.hyperparameters import ALGORITHMS
from plastic_rl.core.files import atomic_write_text
from plastic_rl.core.options import check_choice

#: The run's configuration file, in its folder.
RUN_CONFIG = "config.yml"
#: The entries every run configuration has (since the first run), which the commands that load a run read.
RUN_CONFIG_KEYS = ("algo", "env", "policy", "seed", "hyperparameters")


def next_run_folder(log_folder: str | Path, algo: str, env_id: str) -> Path:
    """``log_folder/<algo>/<env_id>_<N>`` with ``N`` one more than the largest existing run."""
    from stable_baselines3.common.utils import get_latest_run_id

    parent = Path(log_folder) / algo
    return parent / f"{env_id}_{get_latest_run_id(str(parent), env_id) + 1}"


def run_ids(parent: Path, env_id: str) -> list[int]:
    """The ``N`` of the existing ``parent/<env_id>_<N>`` folders."""
    pattern = re.compile(rf"{re.escape(env_id)}_(\d+)")
    if not parent.is_dir():
        return []
    return [int(match.group(1)) for path in parent.iterdir() if (match := pattern.fullmatch(path.name))]


def find_run_folder(log_folder: str | Path, env_id: str, algo: str | None = None, exp_id: int = 0) -> Path:
    """The run folder of ``env_id`` (the latest when ``exp_id`` is 0), searching every algorithm if ``algo`` is None."""
    algos = list(ALGORITHMS) if algo is None else [check_choice("algo", algo, ALGORITHMS)]
    candidates = []
    for name in algos:
        parent = Path(log_folder) / name
        for run_id in run_ids(parent, env_id):
            if exp_id in (0, run_id):
                folder = parent / f"{env_id}_{run_id}"
                candidates.append((folder.stat().st_mtime, folder))
    if not candidates:
        raise ValueError(f"no run of {env_id} (exp-id {exp_id or 'latest'}) under {log_folder} for algo {algos}")
    return max(candidates)[1]


def write_run_config(folder: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` as the ``config.yml`` of the run in ``folder`` (atomically, keys in their order)."""
    atomic_write_text(Path(folder) / RUN_CONFIG, yaml.safe_dump(record, sort_keys=False))


def read_run_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.yml`` of the run in ``folder``; a ``ValueError`` naming the file when it is missing, is not YAML,
    or lacks one of the :data:`RUN_CONFIG_KEYS`."""
    path = Path(folder) / RUN_CONFIG
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not a readable run configuration ({error})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a readable run configuration (not a mapping)")
    missing = [key for key in RUN_CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path}: not a readable run configuration (no {', '.join(missing)})")
    return config
