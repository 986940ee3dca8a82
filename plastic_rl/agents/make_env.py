"""The one place that builds the VecEnv an RL run trains or is evaluated on."""

from __future__ import annotations

import os
from typing import Any

from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from plastic_rl.agents.batched_vec_env import BatchedVecEnv
from plastic_rl.core.options import check_choice, check_positive_int
from plastic_rl.envs import ENTRY_POINTS
from plastic_rl.envs.batched_env import batched_form

VEC_ENV_CLASSES = ("dummy", "subproc")


def make_training_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | os.PathLike | None = None,
    vec_env: str = "dummy",
) -> VecEnv:
    """``n_envs`` copies of ``env_id`` in one VecEnv, each with Monitor statistics, seeded ``seed + i``.

    An env whose registration names a batched form (:func:`~plastic_rl.envs.batched_env.batched_form`: the maze's)
    gets it in a :class:`~plastic_rl.agents.batched_vec_env.BatchedVecEnv` (all episodes stepped at once, the same
    transitions as ``make_vec_env`` with the same seed, whatever ``vec_env`` says); any other env goes through SB3's
    ``make_vec_env`` with the ``vec_env`` class (``"dummy"`` or ``"subproc"``).

    Parameters
    ----------
    env_id : a registered Gymnasium id (``"plastic_rl:"`` prefix allowed).
    n_envs : number of envs.
    seed : seed of env 0 (env ``i`` gets ``seed + i``); ``None`` for fresh entropy.
    env_kwargs : keywords of the env's constructor.
    monitor_dir : folder of the Monitor CSVs ``<i>.monitor.csv``; ``None`` for none.
    vec_env : ``"dummy"`` or ``"subproc"`` (ignored for a batched form, which needs neither).
    """
    check_positive_int("n_envs", n_envs)
    check_choice("vec_env", vec_env, VEC_ENV_CLASSES)
    env_kwargs = dict(env_kwargs or {})
    plain_id = env_id.removeprefix("plastic_rl:")
    form = batched_form(plain_id)
    if form is not None:
        env = BatchedVecEnv(form(n_envs, **env_kwargs), env_id=plain_id, monitor_dir=monitor_dir)
        if seed is not None:
            env.seed(seed)
            env.action_space.seed(seed)
        return env
    # "plastic_rl:<id>" makes SubprocVecEnv's worker processes import plastic_rl, which registers its envs.
    return make_vec_env(
        f"plastic_rl:{plain_id}" if plain_id in ENTRY_POINTS else env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        monitor_dir=None if monitor_dir is None else os.fspath(monitor_dir),
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
    )
