"""What an RL run is built from: its algorithm, its policy name, and its hyperparameters (the packaged YAML files and
``-params`` / ``--env-kwargs`` overrides).

The conventions are RL Baselines3 Zoo's: one YAML file of hyperparameters per algorithm, keyed by env id
(with a ``default`` entry). Where a run is saved, and its ``config.yml``, are :mod:`plastic_rl.agents.run_folders`'.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from plastic_rl.core.options import check_choice

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

# algo name -> (module, class)
ALGORITHMS: dict[str, tuple[str, str]] = {
    "plastic_a2c": ("plastic_rl.agents.a2c", "PlasticA2C"),
    "plastic_ppo": ("plastic_rl.agents.ppo", "PlasticPPO"),
    "recurrent_ppo": ("plastic_rl.agents.recurrent_ppo", "RecurrentPPO"),
}
# --policy name -> (policy alias, policy kwargs it implies)
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "plastic": ("PlasticRecurrentPolicy", {"plasticity": "full"}),
    "homogeneous": ("PlasticRecurrentPolicy", {"plasticity": "shared"}),
    "rnn": ("PlasticRecurrentPolicy", {"plasticity": "none"}),
    # Backpropamine's neuromodulated plasticity, with its trace clipped at 1
    "neuromod": ("PlasticRecurrentPolicy", {"plasticity": "full", "rule": "neuromod", "trace_clip": 1.0}),
    "retroneuromod": ("PlasticRecurrentPolicy", {"plasticity": "full", "rule": "retroneuromod", "trace_clip": 1.0}),
    "lstm": ("LstmPolicy", {}),
    # the supervised Omniglot classifier's plastic head, whose trace the observation's label writes
    "readout": ("PlasticReadoutPolicy", {}),
}


def plasticity_keys() -> set[str]:
    """The ``policy_kwargs`` that configure plasticity: those :class:`PlasticRecurrentPolicy` takes beyond the
    recurrent policy's own. A study passes one ``-params`` to all its conditions, so the LSTM, which has no
    plasticity, leaves these out (with a warning) instead of refusing them; its own keys are still checked."""
    import inspect

    from plastic_rl.agents.policies import PlasticRecurrentPolicy, RecurrentActorCriticPolicy

    def named(function: Any) -> set[str]:
        return {
            name
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is not inspect.Parameter.VAR_KEYWORD
        }

    return named(PlasticRecurrentPolicy.__init__) - named(RecurrentActorCriticPolicy.__init__)


# Keys of a hyperparameter entry that configure the run rather than the algorithm.
RUN_KEYS = ("n_envs", "n_timesteps", "env_kwargs", "policy_kwargs")


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 algorithm class for ``algo``."""
    module_name, class_name = ALGORITHMS[check_choice("algo", algo, ALGORITHMS)]
    return getattr(importlib.import_module(module_name), class_name)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is a registered Gymnasium id (``plastic_rl``'s included), else raise ``ValueError``."""
    import gymnasium as gym

    import plastic_rl  # noqa: F401  (registers the envs)

    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        raise ValueError(
            f"env must be a registered Gymnasium id (e.g. 'PlasticMaze-v0'); got {env_id!r}: {error}"
        ) from None
    return env_id


def load_hyperparameters(algo: str, env_id: str, hyperparams_set: str | None = None) -> dict[str, Any]:
    """The entry for ``env_id`` (else ``default``) of the algorithm's packaged YAML file; with ``hyperparams_set``,
    the named entry ``"<env_id>:<hyperparams_set>"`` (e.g. ``PlasticMaze-v0:authors``)."""
    check_choice("algo", algo, ALGORITHMS)
    text = resources.files("plastic_rl.agents").joinpath("hyperparams").joinpath(f"{algo}.yml").read_text()
    table = yaml.safe_load(text)
    if hyperparams_set is None:
        entry = table.get(env_id, table["default"])
    else:
        named = {key.partition(":")[2] for key in table if key.startswith(f"{env_id}:")}
        entry = table[f"{env_id}:{check_choice('hyperparams_set', hyperparams_set, sorted(named))}"]
    # "policy" is for RL Zoo, which reads these files too (plastic_rl.agents.zoo); here --policy chooses.
    return {key: dict(value) if isinstance(value, dict) else value for key, value in entry.items() if key != "policy"}


# YAML 1.1 (PyYAML) reads 1e-4 as text, wanting 1.0e-4: a command line means the number.
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _exponent_numbers(value: Any) -> Any:
    """``value`` with every string written like ``1e-4`` read as that float, in nested lists and dicts too."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
        return float(value)
    if isinstance(value, list):
        return [_exponent_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _exponent_numbers(item) for key, item in value.items()}
    return value


def parse_key_values(pairs: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``["key:value", ...]`` -> dict, each value read as YAML (numbers, ``1e-4`` included, booleans, lists, dicts)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, separator, value = pair.partition(":")
        if not separator or not key:
            raise ValueError(f"{option} takes key:value pairs; got {pair!r}")
        result[key] = _exponent_numbers(yaml.safe_load(value))
    return result


def decided_by_policy(policy: str) -> set[str]:
    """The ``policy_kwargs`` that the ``--policy`` name ``policy`` decides: a hyperparameter file's values for them
    give way to it (the maze entry's ``rule: oja`` under ``--policy neuromod``), where ``-params`` contradicting it is
    an error (:func:`policy_settings`)."""
    check_choice("policy", policy, POLICIES)
    if policy == "lstm":
        return plasticity_keys()
    if policy == "readout":  # the recurrent core's options: the read-out has its own, and no hidden layer
        return plasticity_keys() | {"hidden_size"}
    return set(POLICIES[policy][1])


def hyperparameters_for_policy(
    algo: str, env_id: str, policy: str, hyperparams_set: str | None = None
) -> dict[str, Any]:
    """The hyperparameter entry (:func:`load_hyperparameters`) for a run of the ``--policy`` name ``policy``: without
    the ``policy_kwargs`` that the policy decides (:func:`decided_by_policy`)."""
    hyperparameters = load_hyperparameters(algo, env_id, hyperparams_set)
    decided = decided_by_policy(policy)
    from_file = hyperparameters.get("policy_kwargs") or {}
    hyperparameters["policy_kwargs"] = {key: value for key, value in from_file.items() if key not in decided}
    return hyperparameters


def policy_settings(algo: str, policy: str, policy_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The policy alias and keyword arguments for the ``--policy`` name ``policy`` under ``algo``.

    ``policy_kwargs`` (from the hyperparameter file and ``-params``) may set ``hidden_size``; for
    sb3-contrib's ``RecurrentPPO`` it becomes one shared LSTM of that size, heads directly on it.
    For ``"lstm"``, the :func:`plasticity_keys` are left out with a warning.
    """
    check_choice("policy", policy, POLICIES)
    if policy == "lstm":
        plastic_only = plasticity_keys()
        ignored = sorted(set(policy_kwargs) & plastic_only)
        if ignored:
            warnings.warn(f"policy 'lstm' has no plasticity: ignoring policy_kwargs {', '.join(ignored)}", stacklevel=2)
        policy_kwargs = {key: value for key, value in policy_kwargs.items() if key not in plastic_only}
    if algo == "recurrent_ppo":
        if policy != "lstm":
            raise ValueError(f"policy must be 'lstm' with algo 'recurrent_ppo'; got {policy!r}")
        kwargs = dict(policy_kwargs)
        hidden_size = kwargs.pop("hidden_size", 200)
        kwargs = {
            "lstm_hidden_size": hidden_size,
            "n_lstm_layers": 1,
            "shared_lstm": True,
            "enable_critic_lstm": False,
            "net_arch": [],
            **kwargs,
        }
        return "MlpLstmPolicy", kwargs
    alias, implied = POLICIES[policy]
    for key, value in implied.items():
        if key in policy_kwargs and policy_kwargs[key] != value:
            raise ValueError(
                f"policy_kwargs {key}={policy_kwargs[key]!r} contradicts the policy {policy!r} ({key}={value!r}): "
                f"choose the {key} with the policy name"
            )
    return alias, {**policy_kwargs, **implied}
