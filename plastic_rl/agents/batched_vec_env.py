"""An SB3 VecEnv over an env's batched form, with the episode statistics and files of SB3's ``Monitor``.

The batched form (:class:`~plastic_rl.envs.batched_env.BatchedEnv`, e.g. the maze's
:class:`~plastic_rl.envs.batched_maze.BatchedMaze`) steps all the episodes; this adapter adds what SB3 expects of a
``DummyVecEnv`` over ``Monitor``-wrapped envs, so that training and ``evaluate_policy`` see the same transitions,
infos and monitor files as on ``make_vec_env`` with the same seed. It lives with the agents because it is SB3's
interface: the envs package does not import SB3.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from plastic_rl.core.memory import check_open_files
from plastic_rl.envs.batched_env import BatchedEnv

# Methods that would change one env behind the batch's back: the VecEnv's own reset/step/seed do that.
_STATE_CHANGING_METHODS = ("reset", "step")


class BatchedVecEnv(VecEnv):
    """``batch``'s episodes as SB3's ``DummyVecEnv`` over ``Monitor``-wrapped envs gives them.

    Each info holds the batch's info; at the end of an episode also ``terminal_observation`` and ``episode``
    (``{"r", "l", "t"}``), and the env is reset (its first info in ``reset_infos``). ``get_attr``, ``set_attr``
    and ``env_method`` reach the batch's view of each env, which holds its current state; frames are drawn only
    when asked for (``render()``, ``get_images()``), also in ``"human"`` mode. ``get_state``/``set_state`` save and
    restore everything that continues the run exactly (used by the training checkpoints).

    Parameters
    ----------
    batch : the batched env.
    env_id : the id that the monitor files' header names (as ``Monitor`` writes ``env.spec.id``).
    monitor_dir : folder of the Monitor CSVs (``<rank>.monitor.csv``, as ``make_vec_env`` names them), or
        ``None`` for none.
    """

    def __init__(
        self, batch: BatchedEnv, env_id: str | None = None, monitor_dir: str | os.PathLike | None = None
    ) -> None:
        if monitor_dir is not None:
            check_open_files(f"n_envs={batch.num_envs} (a monitor file each)", batch.num_envs)
        self.batch = batch
        self.env_id = env_id
        self._actions: np.ndarray | None = None
        self.t_start = time.time()
        self.monitor_dir = None if monitor_dir is None else os.fspath(monitor_dir)
        # Opened at the first reset (new files) or by set_state (the files of the run being resumed, cut back).
        self._writers: list[ResultsWriter] = []
        super().__init__(batch.num_envs, batch.observation_space, batch.action_space)

    @property
    def was_reset(self) -> bool:
        """Whether :meth:`get_state` has a state to give: the envs have been reset."""
        return self.batch.was_reset

    def reset(self) -> VecEnvObs:
        observations, self.reset_infos = self.batch.reset(self._seeds)
        self._reset_seeds()
        self._reset_options()
        if self.monitor_dir is not None and not self._writers:
            header: dict[str, float | str] = {"t_start": self.t_start, "env_id": str(self.env_id)}
            self._writers = [ResultsWriter(path, header=header) for path in self._monitor_paths()]
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() needs a step_async(actions) first")
        actions, self._actions = self._actions, None
        step = self.batch.step(actions)
        for info in step.infos:
            # As DummyVecEnv says at every step: a batched form's episodes terminate, they are never truncated.
            info["TimeLimit.truncated"] = False
        if step.ended:
            elapsed = round(time.time() - self.t_start, 6)
            for ended in step.ended:
                episode = {"r": round(ended.episode_return, 6), "l": ended.length, "t": elapsed}
                step.infos[ended.env_index]["episode"] = episode
                step.infos[ended.env_index]["terminal_observation"] = ended.final_observation
                self.reset_infos[ended.env_index] = ended.reset_info
                if self._writers:
                    self._writers[ended.env_index].write_row(episode)
        return step.observations, step.rewards.astype(np.float32), step.dones, step.infos

    # --- exact resume ---------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the batch's state, the clock and the monitor files' ends."""
        return {
            **self.batch.get_state(),
            "t_start": self.t_start,
            "monitor_sizes": [writer.file_handler.tell() for writer in self._writers],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s ``state``; the monitor files are cut back to where it was taken."""
        n_monitors = self.num_envs if self.monitor_dir is not None else 0
        if len(state["monitor_sizes"]) != n_monitors:
            raise ValueError(
                f"state is of {len(state['monitor_sizes'])} monitor file(s); this VecEnv has {n_monitors} monitor "
                "file(s)"
            )
        self.batch.set_state(state)
        self.t_start = state["t_start"]
        for writer in self._writers:
            writer.close()
        self._writers = []
        for path, size in zip(self._monitor_paths(), state["monitor_sizes"], strict=True):
            # Episodes written after the state was taken are cut: the resumed run writes them again.
            with open(path, "r+b") as file:
                file.truncate(size)
            self._writers.append(ResultsWriter(path, override_existing=False))

    def _monitor_paths(self) -> list[str]:
        """``<monitor_dir>/<rank>.monitor.csv``, as ``make_vec_env`` names them."""
        if self.monitor_dir is None:
            return []
        return [os.path.join(self.monitor_dir, f"{rank}.{Monitor.EXT}") for rank in range(self.num_envs)]

    # --- SB3's VecEnv plumbing ------------------------------------------------------------------------

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.batch.view(index), attr_name) for index in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"cannot set {attr_name!r} on a batched env: its envs are arrays; construct it with the keyword instead"
        )

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name in _STATE_CHANGING_METHODS:
            raise ValueError(f"env_method({method_name!r}) is not supported: use the VecEnv's own {method_name}()")
        return [
            getattr(self.batch.view(index), method_name)(*method_args, **method_kwargs)
            for index in self._indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # The episode statistics are Monitor's: evaluate_policy reads them as it reads a Monitor's.
        return [issubclass(Monitor, wrapper_class) for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self.batch.close()
