"""RL Baselines3 Zoo integration (the ``plastic-rl[zoo]`` extra): ``plastic_a2c`` and ``plastic_ppo`` in the Zoo.

The Zoo has no plug-in entry point for algorithms: its scripts check ``--algo`` against ``rl_zoo3.ALGOS`` before
they import ``--gym-packages``. The Zoo's own way to add algorithms (its ``train_sbx.py``) is a launcher that adds
them to ``ALGOS`` and then runs the Zoo's script; that launcher is the ``zoo`` command module (``commands/zoo.py``),
and this module is what it needs: :func:`register` adds the algorithms, :func:`zoo_arguments` completes the Zoo's
command line (our envs' package, and for ``train`` our hyperparameter file, :func:`hyperparameter_file`, and its
``env_kwargs``). Runs of ``plastic-rl train`` carry the Zoo's ``<env>/config.yml`` and ``<env>/args.yml``
(:func:`write_run_files`), so the Zoo's ``enjoy``, ``record_video`` and ``plot_train`` work on them too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from plastic_rl.core.files import atomic_write_text

ZOO_ALGORITHMS = ("plastic_a2c", "plastic_ppo")


def register() -> None:
    """Add ``plastic_a2c`` and ``plastic_ppo`` to ``rl_zoo3.ALGOS`` (the dict every Zoo script reads; idempotent)."""
    from rl_zoo3 import ALGOS

    from plastic_rl.agents.hyperparameters import algorithm_class

    for algo in ZOO_ALGORITHMS:
        ALGOS[algo] = algorithm_class(algo)


def hyperparameter_file(algo: str) -> str:
    """The path of ``plastic-rl train``'s hyperparameter file for ``algo``, which the Zoo reads as ``--conf-file``."""
    return str(resources.files("plastic_rl.agents").joinpath("hyperparams").joinpath(f"{algo}.yml"))


# The Zoo scripts that take --gym-packages; the others import nothing from it (this launcher registers our envs).
TAKE_GYM_PACKAGES = ("train", "enjoy")


def _without_gym_packages(arguments: list[str]) -> list[str]:
    """``arguments`` less ``--gym-packages`` and its values (one README line serves every script)."""
    kept, skipping = [], False
    for word in arguments:
        if word == "--gym-packages":
            skipping = True
        elif skipping and word.startswith("-"):
            skipping = False
        if not skipping:
            kept.append(word)
    return kept


def _yaml_env_kwargs(conf_file: str, env_id: str | None) -> dict[str, Any]:
    """The ``env_kwargs`` of ``env_id``'s entry in a YAML hyperparameter file (none for a file that is missing or
    a Python module: the Zoo reports or reads those itself)."""
    path = Path(conf_file)
    if path.suffix not in (".yml", ".yaml") or not path.is_file():
        return {}
    table = yaml.safe_load(path.read_text()) or {}
    return dict((table.get(env_id) or {}).get("env_kwargs") or {})


def zoo_arguments(script: str, arguments: Sequence[str]) -> list[str]:
    """The Zoo's command line for ``script``: ``arguments``, plus ``--gym-packages plastic_rl`` (so that the Zoo's
    env checks see our envs) where the script takes it (and without it where it does not), and, for ``train`` of one
    of our algorithms, our ``--conf-file`` unless given.

    The Zoo gives its evaluation env, and records for its ``enjoy`` and ``record_video``, the ``--env-kwargs`` of the
    command line, not those of the hyperparameter file: with a file's ``env_kwargs`` (the maze's entry has them) its
    first evaluation failed on the observation's shape, and its ``enjoy`` built another env than the trained one. So
    ``train`` passes the file's ``env_kwargs`` as ``--env-kwargs`` when the command line has none.
    """
    arguments = list(arguments)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", "-a")
    parser.add_argument("--env")
    parser.add_argument("--conf-file", "-conf")
    parser.add_argument("--gym-packages", nargs="*", default=[])
    parser.add_argument("--env-kwargs", nargs="+")
    known, _ = parser.parse_known_args(arguments)
    if script not in TAKE_GYM_PACKAGES:
        return _without_gym_packages(arguments)
    if "plastic_rl" not in known.gym_packages:
        arguments += ["--gym-packages", "plastic_rl"]
    if script == "train" and known.algo in ZOO_ALGORITHMS:
        conf_file = known.conf_file or hyperparameter_file(known.algo)
        if known.conf_file is None:
            arguments += ["--conf-file", conf_file]
        env_kwargs = _yaml_env_kwargs(conf_file, known.env)
        if env_kwargs and known.env_kwargs is None:
            arguments += ["--env-kwargs", *(f"{key}:{value!r}" for key, value in env_kwargs.items())]
    return arguments


def write_run_files(
    folder: str | Path, env_id: str, hyperparameters: dict[str, Any], policy: str, arguments: dict[str, Any]
) -> None:
    """Write ``folder/<env_id>/config.yml`` and ``args.yml`` as the Zoo does for its runs.

    ``config.yml``: the hyperparameters, keys sorted, with ``policy`` the policy alias that was built;
    ``args.yml``: the command line's arguments, keys sorted (``env_kwargs`` as a dict, as the Zoo's ``enjoy``
    reads it). Plain YAML (the Zoo writes an ``OrderedDict`` with a Python tag; its loader reads both).
    """
    run_files = Path(folder) / env_id
    run_files.mkdir(parents=True, exist_ok=True)
    config = {**hyperparameters, "policy": policy}
    atomic_write_text(run_files / "config.yml", yaml.safe_dump(dict(sorted(config.items())), sort_keys=False))
    atomic_write_text(run_files / "args.yml", yaml.safe_dump(dict(sorted(arguments.items())), sort_keys=False))
