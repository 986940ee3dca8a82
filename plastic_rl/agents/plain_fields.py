"""The fields of an SB3 model file that SB3 pickles, written and read back as plain data.

SB3 saves an algorithm's attributes as JSON and cloudpickles those JSON cannot hold: the policy class, the
spaces, the schedules, the rollout buffer class, the last observations and the episode-info deques. Loading such a
file unpickles them, which can run any code the file names. The suite's algorithms also save each of these fields
in the plain form of :func:`plain_field` under ``"plain_fields"`` (the pickled copies stay, so SB3's own loader
still reads our files), and load them with SB3's ``custom_objects`` from :func:`supplied_objects`, so that
nothing in the file is unpickled. A file with a pickled field we cannot supply is refused unless the caller
trusts it (``allow_pickle=True``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.save_util import is_json_serializable
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

from plastic_rl.agents.extractors import EXTRACTORS
from plastic_rl.core.plain_data import from_plain, to_plain

PLAIN_FIELDS = "plain_fields"
SERIALIZED = ":serialized:"
# Fields of files saved before "plain_fields" existed that a load can do without: SB3 rebuilds the schedule and the
# default buffer class in _setup_model, and starts a new rollout and new episode statistics when these are None.
REBUILT_FIELDS = (
    "lr_schedule",
    "rollout_buffer_class",
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
)


def _known_classes(algorithm: type) -> dict[str, type]:
    """The classes a model file may name: the algorithm's policy aliases, SB3's rollout buffers, and what
    ``policy_kwargs`` usually names (the features extractors, activations and optimizers of SB3 and the suite)."""
    known: list[type] = [RolloutBuffer, DictRolloutBuffer, *EXTRACTORS.values()]
    known += [th.nn.Tanh, th.nn.ReLU, th.nn.ELU, th.nn.LeakyReLU, th.optim.Adam, th.optim.RMSprop, th.optim.SGD]
    return {**getattr(algorithm, "policy_aliases", {}), **{cls.__name__: cls for cls in known}}


def space_to_plain(space: gym.Space) -> dict[str, Any]:
    """A Box, Discrete, MultiDiscrete, MultiBinary, Dict or Tuple space as plain data."""
    if isinstance(space, gym.spaces.Box):
        return {"space": "Box", "low": to_plain(space.low), "high": to_plain(space.high), "dtype": space.dtype.str}
    if isinstance(space, gym.spaces.Discrete):
        return {"space": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec, start = to_plain(space.nvec), to_plain(space.start)
        return {"space": "MultiDiscrete", "nvec": nvec, "start": start, "dtype": space.dtype.str}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"space": "MultiBinary", "n": to_plain(np.asarray(space.n))}
    if isinstance(space, gym.spaces.Dict):
        return {"space": "Dict", "spaces": {key: space_to_plain(item) for key, item in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"space": "Tuple", "spaces": [space_to_plain(item) for item in space.spaces]}
    raise ValueError(f"a {type(space).__name__} space has no plain form")


def space_from_plain(plain: dict[str, Any]) -> gym.Space:
    """The space that :func:`space_to_plain` wrote as ``plain``."""
    kind = plain["space"]
    if kind == "Box":
        return gym.spaces.Box(from_plain(plain["low"]), from_plain(plain["high"]), dtype=np.dtype(plain["dtype"]))
    if kind == "Discrete":
        return gym.spaces.Discrete(plain["n"], start=plain["start"])
    if kind == "MultiDiscrete":
        nvec, start = from_plain(plain["nvec"]), from_plain(plain["start"])
        return gym.spaces.MultiDiscrete(nvec, dtype=np.dtype(plain["dtype"]), start=start)
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(from_plain(plain["n"]).tolist())
    if kind == "Dict":
        return gym.spaces.Dict({key: space_from_plain(item) for key, item in plain["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_plain(item) for item in plain["spaces"]])
    raise ValueError(f"unknown space {kind!r} in a model file")


def plain_field(value: Any, algorithm: type) -> dict[str, Any] | None:
    """``value`` (a field SB3 would pickle) as plain data, or ``None`` when it has no plain form here."""
    if isinstance(value, gym.Space):
        try:
            return {"space": space_to_plain(value)}
        except ValueError:
            return None
    if isinstance(value, type):
        names = [name for name, known in _known_classes(algorithm).items() if known is value]
        return {"class": names[0]} if names else None
    if isinstance(value, dict) and not is_json_serializable(value):  # e.g. policy_kwargs naming an extractor class
        items = {key: plain_field(item, algorithm) for key, item in value.items()}
        return None if None in items.values() else {"mapping": items}
    if isinstance(value, ConstantSchedule):
        return {"constant_schedule": value.val}
    if isinstance(value, FloatSchedule) and isinstance(value.value_schedule, ConstantSchedule):
        return {"constant_schedule": value.value_schedule.val, "as_float": True}
    try:
        plain = to_plain(value)
    except ValueError:
        return None
    return {"data": plain} if is_json_serializable(plain) else None


def field_from_plain(plain: dict[str, Any], algorithm: type) -> Any:
    """The value that :func:`plain_field` wrote as ``plain``."""
    if "space" in plain:
        return space_from_plain(plain["space"])
    if "class" in plain:
        known = _known_classes(algorithm)
        if plain["class"] not in known:
            raise ValueError(f"names the class {plain['class']!r}; {algorithm.__name__} knows {', '.join(known)}")
        return known[plain["class"]]
    if "mapping" in plain:
        return {key: field_from_plain(item, algorithm) for key, item in plain["mapping"].items()}
    if "constant_schedule" in plain:
        constant = ConstantSchedule(plain["constant_schedule"])
        return FloatSchedule(constant) if plain.get("as_float") else constant
    return from_plain(plain["data"])


def plain_fields(attributes: dict[str, Any], algorithm: type) -> dict[str, dict[str, Any]]:
    """The plain form of each of ``attributes`` (what SB3 would save) that JSON cannot hold as it is."""
    fields = {}
    for name, value in attributes.items():
        if not is_json_serializable(value) and (plain := plain_field(value, algorithm)) is not None:
            fields[name] = plain
    return fields


def _matching_class(serialized: dict[str, Any], algorithm: type) -> type | None:
    """The known class whose module and own attribute names are those listed beside a pickled class (SB3 writes
    them in plain JSON next to the pickle): how a file saved without ``"plain_fields"`` names its policy."""
    names = {key for key in serialized if not key.startswith(":")}
    for known in _known_classes(algorithm).values():
        if known.__module__ == serialized.get("__module__") and set(vars(known)) == names:
            return known
    return None


def _printed_array(text: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """The array numpy printed as ``text`` (exact: numpy prints each element so that it reads back the same), or
    ``None`` when the print is summarised or does not match ``shape``."""
    if not isinstance(text, str) or "..." in text:
        return None
    values = text.replace("[", " ").replace("]", " ").split()
    if len(values) != int(np.prod(shape)):
        return None
    try:
        return np.array([float(value) for value in values]).astype(dtype).reshape(shape)
    except ValueError:
        return None


def _listed_space(serialized: dict[str, Any]) -> gym.Space | None:
    """The Box or Discrete space whose attributes SB3 lists in plain JSON beside its pickle: how a file saved
    without ``"plain_fields"`` gives its spaces."""
    kind = serialized.get(":type:")
    try:
        if kind == "<class 'gymnasium.spaces.discrete.Discrete'>":
            return gym.spaces.Discrete(int(serialized["n"]), start=int(serialized["start"]))
        if kind == "<class 'gymnasium.spaces.box.Box'>":
            shape, dtype = tuple(serialized["_shape"]), np.dtype(serialized["dtype"])
            low, high = (_printed_array(serialized[bound], shape, dtype) for bound in ("low", "high"))
            return None if low is None or high is None else gym.spaces.Box(low, high, dtype=dtype)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def supplied_objects(path: str | os.PathLike | io.BufferedIOBase, algorithm: type, env: Any = None) -> dict[str, Any]:
    """SB3 ``custom_objects`` for every pickled field of the model file ``path``, so that loading it unpickles
    nothing; a ValueError naming the file and the field when one cannot be supplied."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path}: cannot load a {algorithm.__name__} model from it (empty, truncated or another kind of file): "
            f"{type(error).__name__}: {error}"
        ) from error
    plain = data.get(PLAIN_FIELDS) or {}
    supplied: dict[str, Any] = {}
    for name, item in data.items():
        if not (isinstance(item, dict) and SERIALIZED in item):
            continue
        if name in plain:
            try:
                supplied[name] = field_from_plain(plain[name], algorithm)
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: its field {name!r} {error}") from error
        elif name == "policy_class" and (known := _matching_class(item, algorithm)) is not None:
            supplied[name] = known
        elif name in ("observation_space", "action_space") and env is not None:
            supplied[name] = getattr(env, name)
        elif name in ("observation_space", "action_space") and (space := _listed_space(item)) is not None:
            supplied[name] = space
        elif name in REBUILT_FIELDS:
            supplied[name] = None
        else:
            raise ValueError(
                f"{path}: its field {name!r} is pickled Python ({item.get(':type:', 'unknown type')}), and loading "
                "it would run code from the file; plastic-rl loads model files without unpickling anything: "
                + ("pass env= to take the spaces from an env, or " if name.endswith("_space") else "")
                + "load it with allow_pickle=True only if you trust the file"
            )
    return supplied
