"""Pretrained agents shipped with the package: a run folder each (the model and its ``config.yml``), so that
``plastic-rl enjoy --pretrained NAME`` and ``plastic-rl evaluate --pretrained NAME`` read it as they read a run.

``config.yml`` is a ``plastic-rl train`` run's, with ``provenance`` added: the training command, commit, seed and
budget, and the held-out result measured when it was packaged. Models are packaged without their optimizer state
(:func:`package_pretrained`): a pretrained agent is for playing and evaluating, or as ``plastic-rl train -i``'s
starting weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from plastic_rl.agents.hyperparameters import algorithm_class
from plastic_rl.agents.run_folders import read_run_config, write_run_config
from plastic_rl.core.files import atomic_path
from plastic_rl.core.options import check_choice
from plastic_rl.envs import MAZE_ID

#: Name -> the env its agent plays.
PRETRAINED_AGENTS = {"maze": MAZE_ID}


def pretrained_folder(name: str) -> Path:
    """The package folder of the pretrained agent ``name`` (holding ``<env>.zip`` and ``config.yml``)."""
    check_choice("pretrained", name, PRETRAINED_AGENTS)
    return Path(str(resources.files("plastic_rl.agents").joinpath("pretrained_models").joinpath(name)))


def pretrained_config(name: str) -> dict[str, Any]:
    """The run configuration of the pretrained agent ``name``, with its ``provenance``."""
    return read_run_config(pretrained_folder(name))


def load_pretrained(name: str, device: str = "cpu") -> Any:
    """The pretrained agent ``name`` (e.g. ``"maze"``: a plastic PlasticA2C agent on ``PlasticMaze-v0``; play it on
    ``gym.make("PlasticMaze-v0", **pretrained_config("maze")["hyperparameters"]["env_kwargs"])``)."""
    config = pretrained_config(name)
    return algorithm_class(config["algo"]).load(pretrained_folder(name) / f"{config['env']}.zip", device=device)


def package_pretrained(run_folder: Path, name: str, provenance: dict[str, Any], target: Path | None = None) -> Path:
    """Copy the final model of the ``plastic-rl train`` run in ``run_folder`` (without its optimizer state) and its
    configuration (with ``provenance``) into the package folder of ``name`` (or ``target``); returns that folder."""
    env_id = PRETRAINED_AGENTS[check_choice("pretrained", name, PRETRAINED_AGENTS)]
    config = read_run_config(run_folder)
    model = algorithm_class(config["algo"]).load(run_folder / f"{env_id}.zip", device="cpu")
    model.policy.optimizer.state.clear()  # Adam's moments: 2/3 of the file, and re-made at the first step
    folder = target or pretrained_folder(name)
    with atomic_path(folder / f"{env_id}.zip") as partial:
        model.save(partial)
    write_run_config(folder, {**config, "provenance": provenance})
    return folder
