"""The file of a supervised model or trainer checkpoint (``model.pt``, ``checkpoint.pt``): one checksummed record of
plain data and tensors (format ``plastic_rl.supervised/1``), written atomically and read as data, never as code.

A record holds the task's name and settings, the model's class (one of :data:`MODEL_CLASSES`), constructor keywords and
state; a checkpoint adds the trainer's state (:class:`~plastic_rl.supervised.trainer.SupervisedTrainer`). The test
scores of a model file are kept beside it (:func:`cached_test_scores`).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plastic_rl.core.files import atomic_write, cached_json, file_sha256
from plastic_rl.core.options import check_positive_int, select_device
from plastic_rl.supervised.task import SupervisedTask, make_task

FILE_FORMAT = "plastic_rl.supervised/1"


def model_record(task: SupervisedTask, model: nn.Module, model_name: str | None) -> dict[str, Any]:
    """The record of ``model`` trained on ``task`` (a model file's whole content, less its checksum)."""
    if not isinstance(getattr(model, "config", None), dict):
        raise ValueError("model must keep its constructor keywords in a dict attribute 'config' to be saved")
    model_class = type(model)
    return {
        "format": FILE_FORMAT,
        "task": task.name,
        "task_config": task.config(),
        "model_name": model_name,
        "model_class": f"{model_class.__module__}:{model_class.__qualname__}",
        "model_config": model.config,
        "model_state": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }


def checksum(value: Any, digest: Any = None) -> str:
    """SHA-256 of a record's content: every tensor's dtype, shape and bytes, and every other value's repr."""
    digest = hashlib.sha256() if digest is None else digest
    if isinstance(value, dict):
        for key, item in value.items():
            digest.update(repr(key).encode())
            checksum(item, digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            checksum(item, digest)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record in ``path``; a ``ValueError`` naming the file if it is missing, unreadable, foreign or corrupt."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as error:  # torch.load's errors for empty, truncated or foreign files vary widely
        raise ValueError(
            f"{path} is not a readable plastic_rl supervised model or checkpoint file (empty, truncated or "
            f"another format): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(record, dict) or record.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a plastic_rl supervised model or checkpoint file")
    stored = record.pop("checksum", None)
    if stored is None:
        raise ValueError(f"{path} has no checksum: it was not written by plastic_rl, or was altered")
    if stored != checksum(record):
        raise ValueError(f"{path} is corrupt: the checksum of its content does not match the one it stores")
    return record


#: The classes a model file may name: a file is data, so it can only choose among the suite's own models (a name it
#: could choose freely would be code it runs, e.g. any function of the package called with the file's keywords).
MODEL_CLASSES = (
    "plastic_rl.supervised.models:PlasticRecurrentNetwork",
    "plastic_rl.supervised.models:SequenceLSTM",
    "plastic_rl.supervised.omniglot:OmniglotClassifier",
)


def build_model(record: dict[str, Any]) -> nn.Module:
    if record["model_class"] not in MODEL_CLASSES:
        raise ValueError(
            f"refusing to build model class {record['model_class']!r}: a model file may name one of "
            f"{', '.join(MODEL_CLASSES)}"
        )
    module_name, class_name = record["model_class"].split(":")
    model = getattr(importlib.import_module(module_name), class_name)(**record["model_config"])
    model.load_state_dict(record["model_state"])
    return model


def load_model(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The trained model saved in ``path`` (a model file or a checkpoint), in eval mode on ``device``.

    It maps the ``inputs`` of its task's episodes (see :func:`load_task`) to outputs.
    """
    record = read_record(path)
    try:
        model = build_model(record)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # RuntimeError: a state dict that does not fit
        raise ValueError(f"{path}: {error}") from error
    return model.to(select_device(device)).eval()


def load_task(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> SupervisedTask:
    """The task, with its settings, that the model in ``path`` was trained on.

    ``data_dir`` replaces the data directory of a task that reads a dataset (the same data elsewhere)."""
    record = read_record(path)
    config = dict(record["task_config"])
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    return make_task(record["task"], **config)


# The test scores of a model file, kept beside it (MODEL.test.json): each model is measured once per setting.
TEST_RECORD_SUFFIX = ".test.json"


def cached_test_scores(
    path: str | os.PathLike, episodes: int, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """:meth:`SupervisedTask.test_scores` of the model in ``path`` on its task's test part, per episode.

    ``data_dir`` replaces the data directory the model was trained with (the same dataset elsewhere).
    Kept in ``path``'s ``.test.json`` sibling, keyed by the model file's SHA-256, so a study's summary and a
    report measure a model once; a retrained model is measured again.
    """
    path = Path(path)
    check_positive_int("episodes", episodes)
    key = {"model_sha256": file_sha256(path), "episodes": episodes, "seed": seed}

    def measure() -> dict[str, list[float]]:
        scores = load_task(path, data_dir).test_scores(load_model(path), episodes, seed)
        return {name: values.tolist() for name, values in scores.items()}

    record = cached_json(path.with_name(path.stem + TEST_RECORD_SUFFIX), key, measure)
    return {name: np.asarray(values, dtype=np.float64) for name, values in record.items()}


def write_record(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``record`` with the checksum that :func:`read_record` verifies, never leaving a half-written file."""
    with atomic_write(path) as handle:
        torch.save({**record, "checksum": checksum(record)}, handle)
