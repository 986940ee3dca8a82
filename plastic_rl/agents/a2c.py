"""PlasticA2C: an SB3 on-policy algorithm for recurrent (plastic or LSTM) policies (PlasticPPO builds on it: ppo.py).

A rollout threads the recurrent state through the VecEnv and keeps ONE detached snapshot of the state
at its start (never one per step: a Hebbian trace is ``N x N`` per env). ``train()`` re-runs the policy
over the stored ``(n_steps, n_envs)`` observations from that snapshot, with the stored episode starts,
so gradients flow through the whole rollout (full-episode backpropagation through time when episodes
line up with rollouts, as in the paper). A plastic core on the fused kernel records its forward as the rollout
steps it (:class:`~plastic_rl.core.fused.RecordedUnroll`: the activations and the trace checkpoints that the
backward needs), and the first gradient step differentiates that recording instead of running the forward again.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from plastic_rl.agents.diagnostics import gradient_norms, parameter_group
from plastic_rl.agents.policies import (
    LstmPolicy,
    PlasticRecurrentPolicy,
    RecurrentActorCriticPolicy,
    RecurrentState,
    check_observation_space,
    map_observation,
)
from plastic_rl.agents.readout_policy import PlasticReadoutPolicy
from plastic_rl.agents.saving import ModelFileMixin
from plastic_rl.core.divergence import (
    TrainingDiverged,
    check_finite_parameters,
    divergence_message,
    find_non_finite,
)
from plastic_rl.core.fused import RecordedUnroll
from plastic_rl.core.memory import check_fits
from plastic_rl.core.options import (
    NON_FINITE_ACTIONS,
    check_choice,
    check_device,
    check_float_range,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
)

SelfPlasticA2C = TypeVar("SelfPlasticA2C", bound="PlasticA2C")
ENTROPY_BONUSES = ("entropy", "sum_squares")


#: Plasticity counts as switched off when ``|alpha * Hebb| / |w|`` stays below this fraction of its peak ...
PLASTICITY_OFF_FRACTION = 1e-3
#: ... for this many updates in a row (a warning, once per model).
PLASTICITY_OFF_UPDATES = 10


def rollout_bytes(n_steps: int, n_envs: int, observation_size: int = 1) -> int:
    """The bytes of SB3's rollout buffer: per step and env, the observation and seven float32 values (action,
    reward, return, advantage, value, log-probability, episode start)."""
    return n_steps * n_envs * (observation_size + 7) * 4


class PlasticA2C(ModelFileMixin, OnPolicyAlgorithm):
    """Advantage actor-critic with recurrent policies and backpropagation through whole rollouts.

    One gradient step per rollout on ``n_envs`` sequences of ``n_steps``. The constructor takes SB3 ``A2C``'s
    keywords; the defaults that differ from SB3's are the paper's maze settings: ``n_steps=250`` (one episode,
    so each update backpropagates through whole episodes; SB3: 5), ``gamma=0.9`` (0.99), ``ent_coef=0.03``
    (0), ``vf_coef=0.1`` (0.5), ``max_grad_norm=4`` (0.5), ``learning_rate=1e-3`` (7e-4) and Adam instead of
    RMSprop (``use_rms_prop=False``; SB3: True), as the paper trains its plastic networks with Adam (the
    policy's default optimizer, ``eps=1e-4``).

    Parameters
    ----------
    policy : ``"PlasticRecurrentPolicy"``, ``"LstmPolicy"``, ``"PlasticReadoutPolicy"`` or a
        :class:`RecurrentActorCriticPolicy` subclass.
    env : the env (a Gymnasium env, a VecEnv or a registered id).
    learning_rate : optimizer learning rate, or a schedule of the remaining progress.
    n_steps : steps per env per rollout: the length of the backpropagated sequences.
    gamma, gae_lambda : discount and GAE factor (1 for Monte-Carlo returns).
    ent_coef, vf_coef : entropy and value-loss coefficients.
    max_grad_norm : clip the gradient norm to this; ``None`` for no clipping.
    use_rms_prop : use RMSprop (SB3's A2C optimizer) instead of Adam, with ``rms_prop_eps``.
    use_sde : must be False: state-dependent exploration needs a feed-forward policy (SB3's keyword, for
        compatibility); ``sde_sample_freq`` is then unused, as in SB3.
    rollout_buffer_class, rollout_buffer_kwargs : as in SB3 (a :class:`RolloutBuffer`, or a
        :class:`DictRolloutBuffer` for Dict observations, SB3's default for them); the rollout is re-read from it
        as ``(n_steps, n_envs)`` sequences.
    normalize_advantage : standardize the advantages of each batch.
    on_non_finite : at a NaN or infinite loss or gradient, ``"raise"``
        :class:`~plastic_rl.core.divergence.TrainingDiverged` (naming the update; the parameters stay those
        of the last good update) or ``"skip"`` the update, counted in ``train/skipped_updates``.
    entropy_bonus : what ``ent_coef`` weighs: ``"entropy"`` (rewarded) or ``"sum_squares"`` (the authors' maze
        code: the concentration ``sum_a p_a^2`` of discrete action probabilities, penalised).
    plasticity_lr_scale : the learning rate of the plasticity parameters (alpha and eta) is this times the
        others' (their own optimizer parameter group).
    eta_lr_scale : eta's learning rate is this times alpha's (``plasticity_lr_scale`` times the others'): a slow
        eta with alpha at full rate, since eta, one scalar that every trace reads, can carry half of a plastic
        maze agent's gradient norm.
    stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device : as in SB3.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "PlasticRecurrentPolicy": PlasticRecurrentPolicy,
        "LstmPolicy": LstmPolicy,
        "PlasticReadoutPolicy": PlasticReadoutPolicy,
    }
    policy: RecurrentActorCriticPolicy

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 250,
        gamma: float = 0.9,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.03,
        vf_coef: float = 0.1,
        max_grad_norm: float | None = 4.0,
        use_rms_prop: bool = False,
        rms_prop_eps: float = 1e-5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
        on_non_finite: str = "raise",
        entropy_bonus: str = "entropy",
        plasticity_lr_scale: float = 1.0,
        eta_lr_scale: float = 1.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        is_policy_class = isinstance(policy, type) and issubclass(policy, RecurrentActorCriticPolicy)
        if not is_policy_class and policy not in self.policy_aliases:
            raise ValueError(
                f"policy must be one of {', '.join(map(repr, self.policy_aliases))} or a RecurrentActorCriticPolicy "
                f"subclass; got {policy!r}"
            )
        if not isinstance(device, th.device):
            check_device("device", device)
        check_positive_int("n_steps", n_steps)
        check_positive_float("max_grad_norm", max_grad_norm, allow_none=True)
        if not callable(learning_rate):
            check_positive_float("learning_rate", learning_rate)
        check_float_range("gamma", gamma, 0, 1, low_open=True)
        check_float_range("gae_lambda", gae_lambda, 0, 1)
        check_non_negative_float("ent_coef", ent_coef)
        check_non_negative_float("vf_coef", vf_coef)
        check_positive_float("rms_prop_eps", rms_prop_eps)
        check_positive_int("stats_window_size", stats_window_size)
        check_choice("on_non_finite", on_non_finite, NON_FINITE_ACTIONS)
        for name, flag in (("use_rms_prop", use_rms_prop), ("normalize_advantage", normalize_advantage)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False; got {flag!r}")
        if use_sde:
            raise ValueError("use_sde must be False: gSDE needs a feed-forward policy, not a recurrent one")
        if rollout_buffer_class is not None and not (
            isinstance(rollout_buffer_class, type) and issubclass(rollout_buffer_class, RolloutBuffer)
        ):
            raise ValueError(
                "rollout_buffer_class must be RolloutBuffer, DictRolloutBuffer or a subclass; "
                f"got {rollout_buffer_class!r}"
            )
        self.entropy_bonus = check_choice("entropy_bonus", entropy_bonus, ENTROPY_BONUSES)
        self.plasticity_lr_scale = check_positive_float("plasticity_lr_scale", plasticity_lr_scale)
        self.eta_lr_scale = check_positive_float("eta_lr_scale", eta_lr_scale)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.normalize_advantage = normalize_advantage
        self.on_non_finite = on_non_finite
        self.skipped_updates = 0
        # Saved with the model, so that loading a PlasticA2C file as a PlasticPPO (or back) is an error.
        self.algorithm_name = type(self).__name__
        if entropy_bonus == "sum_squares" and not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(f"entropy_bonus 'sum_squares' needs a Discrete action space; got {self.action_space}")
        # A2C is the one-epoch, unclipped case of the update that PlasticPPO parameterises.
        self.n_epochs = 1
        self.clip_range: Schedule | None = None
        self.target_kl: float | None = None
        if use_rms_prop and "optimizer_class" not in self.policy_kwargs:
            self.policy_kwargs["optimizer_class"] = th.optim.RMSprop
            self.policy_kwargs["optimizer_kwargs"] = dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0)
        # Runtime state: the current recurrent state of each env and the snapshot at the rollout start.
        self._last_recurrent_state: RecurrentState | None = None
        self._rollout_initial_state: RecurrentState | None = None
        self._recorded_rollout: RecordedUnroll | None = None
        self._warned_truncated_bptt = False
        self._warned_plasticity_off = False
        self._plasticity_off_updates = 0
        self._plasticity_peak = 0.0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if self.algorithm_name != type(self).__name__:
            raise ValueError(
                f"the file holds a {self.algorithm_name} model, not a {type(self).__name__}: "
                f"load it with {self.algorithm_name}.load"
            )
        check_observation_space(self.observation_space)  # before SB3's buffer, whose error would not name it
        dict_observations = isinstance(self.observation_space, spaces.Dict)
        buffer_class = self.rollout_buffer_class
        if buffer_class is not None and issubclass(buffer_class, DictRolloutBuffer) != dict_observations:
            expected = "DictRolloutBuffer" if dict_observations else "RolloutBuffer, not a DictRolloutBuffer"
            raise ValueError(
                f"rollout_buffer_class must be a {expected} for a {type(self.observation_space).__name__} "
                f"observation space; got {buffer_class!r}"
            )
        observation_size = spaces.flatdim(self.observation_space)
        needed = rollout_bytes(self.n_steps, self.n_envs, observation_size)
        check_fits(f"a rollout of n_steps={self.n_steps} x n_envs={self.n_envs}", needed)
        super()._setup_model()
        scales = self.learning_rate_scales()
        if any(scale != 1.0 for scale in scales.values()):
            groups: dict[float, list[th.nn.Parameter]] = {}
            for name, parameter in self.policy.named_parameters():
                groups.setdefault(scales.get(parameter_group(name), 1.0), []).append(parameter)
            policy = self.policy
            policy.optimizer = policy.optimizer_class(  # type: ignore[call-arg]  # Adam and RMSprop take lr
                [{"params": params, "lr_scale": scale} for scale, params in groups.items()],
                lr=self.lr_schedule(1),
                **policy.optimizer_kwargs,
            )

    def learning_rate_scales(self) -> dict[str, float]:
        """The learning rate of each parameter group (:func:`parameter_group`) that differs from the others', as
        a factor of theirs; a group not named here takes the learning rate itself."""
        return {"alpha": self.plasticity_lr_scale, "eta": self.plasticity_lr_scale * self.eta_lr_scale}

    def _watch_plasticity(self, statistics: dict[str, float]) -> None:
        """Warn once when plasticity has switched itself off: the plastic part of the weights, against the fixed
        part, below :data:`PLASTICITY_OFF_FRACTION` of the largest it was in this training, for
        :data:`PLASTICITY_OFF_UPDATES` updates in a row. Relative to its own peak, since a young network's plastic
        part can be small (a small trace in short episodes) without being off."""
        ratio = statistics.get("plastic_weight_ratio")
        if ratio is None or self._warned_plasticity_off:
            return
        self._plasticity_peak = max(self._plasticity_peak, ratio)
        off = ratio < PLASTICITY_OFF_FRACTION * self._plasticity_peak
        self._plasticity_off_updates = self._plasticity_off_updates + 1 if off else 0
        if self._plasticity_off_updates >= PLASTICITY_OFF_UPDATES:
            self._warned_plasticity_off = True
            warnings.warn(
                f"plasticity has switched itself off: for {PLASTICITY_OFF_UPDATES} updates in a row (up to update "
                f"{self._n_updates}) the plastic part of the recurrent weights against the fixed part, "
                f"|alpha * Hebb| / |w|, was below {PLASTICITY_OFF_FRACTION:.1%} of its peak in this training (now "
                f"{ratio:.2g}, peak {self._plasticity_peak:.2g}; eta {statistics.get('eta', 0):.3g}, mean |alpha| "
                f"{statistics['mean_abs_alpha']:.3g}): the network trains as a plain RNN (plasticity/* in the logs)",
                stacklevel=2,
            )

    def _check_finite(self, loss: th.Tensor | None, *, gradients: bool) -> bool:
        """Whether the update may go on: raise at a non-finite value, or (``on_non_finite="skip"``) count it."""
        problem = find_non_finite(loss, self.policy.named_parameters(), gradients=gradients)
        if problem is None:
            return True
        if self.on_non_finite == "skip" and gradients:
            self.skipped_updates += 1
            self.policy.optimizer.zero_grad()
            return False
        where = f"update {self._n_updates + 1} (after {self.num_timesteps} env steps)"
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        updated = self._n_updates > 0 or not gradients  # a parameter check comes after this update's step
        raise TrainingDiverged(divergence_message(where, problem, learning_rate, updated=updated))

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        super()._update_learning_rate(optimizers)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] *= group.get("lr_scale", 1.0)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_last_recurrent_state",
            "_rollout_initial_state",
            "_recorded_rollout",
            "_warned_plasticity_off",
            "_plasticity_off_updates",
            "_plasticity_peak",
        ]

    def _setup_learn(self, total_timesteps: int, callback: MaybeCallback = None, *args, **kwargs):
        check_finite_parameters(self.policy.named_parameters())
        result = super()._setup_learn(total_timesteps, callback, *args, **kwargs)
        state = self._last_recurrent_state
        if state is None or state[0].shape[0] != self.n_envs:
            # First learn() or a loaded model: SB3 has just reset the env, so every env starts an episode.
            self._last_episode_starts = np.ones((self.n_envs,), dtype=bool)
            self._last_recurrent_state = self.policy.initial_state(self.n_envs)
        return result

    def _end_rollout_early(self, state: RecurrentState, recording: RecordedUnroll | None) -> None:
        """Keep the state where the rollout's steps got to (its recording's, with no background product still writing
        the trace) and drop the unfinished recording."""
        self._last_recurrent_state = state if recording is None else self.policy.recorded_state(recording)
        self._recorded_rollout = None

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every env, in sequence order."""
        assert self._last_obs is not None and self._last_recurrent_state is not None
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if not self._warned_truncated_bptt and not np.all(self._last_episode_starts):
            self._warned_truncated_bptt = True
            warnings.warn(
                f"episodes do not line up with rollouts of n_steps={self.n_steps}: gradients are truncated at the "
                "rollout boundaries (truncated BPTT). Use n_steps equal to (a multiple of) the episode length for "
                "full-episode backpropagation.",
                stacklevel=2,
            )
        state = self._last_recurrent_state
        self._rollout_initial_state = tuple(part.detach().clone() for part in state)
        # A plastic core records its forward as it steps (its state stepped in place), and train() differentiates the
        # recording instead of unrolling the rollout again; a core without one steps forward() on its state.
        self._recorded_rollout = recording = self.policy.record_rollout(state, n_rollout_steps)
        callback.on_rollout_start()
        # The buffer's arrays are filled in place, one row per step (RolloutBuffer.add copies and converts each
        # argument again); the observations go to the policy without a copy.
        buffer, n_envs = rollout_buffer, env.num_envs
        clip_actions = isinstance(self.action_space, spaces.Box)
        # While the recording's worker runs each next step's product on torch's other threads, the rollout's own
        # small torch operations run on one: one on two threads wakes OpenMP's second thread, which then spins for
        # milliseconds on the core that the worker needs.
        torch_threads = th.get_num_threads()
        try:
            if recording is not None and recording.overlapped:
                th.set_num_threads(1)
            for step in range(n_rollout_steps):
                with th.no_grad():
                    obs_tensor = map_observation(functools.partial(th.as_tensor, device=self.device), self._last_obs)
                    if recording is not None:
                        starts = None
                        if self._last_episode_starts.any():
                            starts = th.as_tensor(self._last_episode_starts, device=self.device)
                        actions, log_probs = self.policy.recorded_step(obs_tensor, starts, recording)
                    else:
                        starts = th.as_tensor(self._last_episode_starts, device=self.device)
                        # The state is stepped forward and the old one dropped: the core may reuse its trace's memory.
                        actions, values, log_probs, state = self.policy(obs_tensor, state, starts, overwrite_state=True)
                actions = actions.cpu().numpy()
                if clip_actions:
                    assert isinstance(self.action_space, spaces.Box)
                    env_actions = np.clip(actions, self.action_space.low, self.action_space.high)
                else:
                    env_actions = actions
                new_obs, rewards, dones, infos = env.step(env_actions)
                self.num_timesteps += n_envs
                callback.update_locals(locals())
                if not callback.on_step():
                    self._end_rollout_early(state, recording)
                    return False
                done_indices = np.flatnonzero(dones)
                if len(done_indices):
                    # Episode statistics are only in the infos of the envs that are done.
                    self._update_info_buffer([infos[index] for index in done_indices], dones[done_indices])
                    rewards = self._bootstrap_truncated(rewards, infos, done_indices, state, recording)
                if isinstance(self._last_obs, dict):
                    for key, part in self._last_obs.items():
                        buffer.observations[key][step] = part
                else:
                    buffer.observations[step] = self._last_obs
                buffer.actions[step] = actions.reshape(n_envs, -1)
                buffer.rewards[step] = rewards
                buffer.episode_starts[step] = self._last_episode_starts
                if recording is None:
                    buffer.values[step] = values.cpu().numpy()
                buffer.log_probs[step] = log_probs.cpu().numpy()
                self._last_obs = new_obs
                self._last_episode_starts = dones
        except BaseException:
            # An exception mid-rollout (a callback's, an env's, Ctrl-C) ends it as a callback's stop does.
            self._end_rollout_early(state, recording)
            raise
        finally:
            th.set_num_threads(torch_threads)
        buffer.pos, buffer.full = n_rollout_steps, True
        if recording is not None:
            state = self.policy.recorded_state(recording)
            with th.no_grad():
                buffer.values[:] = self.policy.recorded_values(recording).cpu().numpy()
        self._compute_returns(rollout_buffer, new_obs, dones, state)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _compute_returns(
        self, rollout_buffer: RolloutBuffer, last_obs: np.ndarray, dones: np.ndarray, state: RecurrentState
    ) -> None:
        """Keep the rollout's final ``state`` and compute its returns and advantages, bootstrapped from the value of
        ``last_obs``."""
        self._last_recurrent_state = state
        with th.no_grad():
            last_values = self.policy.predict_values(
                obs_as_tensor(last_obs, self.device), state, th.as_tensor(dones, device=self.device)
            )
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)

    def _bootstrap_truncated(
        self,
        rewards: np.ndarray,
        infos: list[dict],
        done_indices: np.ndarray,
        state: RecurrentState,
        recording: RecordedUnroll | None = None,
    ) -> np.ndarray:
        """``rewards`` plus ``gamma`` times the value of the terminal observation where a time limit truncated an
        episode, seen from the state that env had reached (in ``recording``, when the rollout records one)."""
        for index in done_indices.tolist():
            info = infos[index]
            if info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
                if recording is not None:
                    state = self.policy.recorded_state(recording)
                terminal_obs = self.policy.obs_to_tensor(info["terminal_observation"])[0]
                env_state = tuple(part[index : index + 1] for part in state)
                no_start = th.zeros(1, dtype=th.bool, device=self.device)
                with th.no_grad():
                    terminal_value = self.policy.predict_values(terminal_obs, env_state, no_start)[0]
                rewards[index] += self.gamma * terminal_value.item()
        return rewards

    def _stored_sequences(self) -> dict[str, th.Tensor]:
        # The buffer is read in rollout order (n_steps, n_envs, ...): RolloutBuffer.get() would shuffle
        # and flatten it, and the re-run needs the sequences.
        buffer = self.rollout_buffer
        as_tensor = functools.partial(th.as_tensor, device=self.device)
        actions = as_tensor(buffer.actions).reshape(self.n_steps * self.n_envs, -1)
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        return dict(
            observations=map_observation(as_tensor, buffer.observations),
            actions=actions,
            episode_starts=as_tensor(buffer.episode_starts).to(th.bool),
            advantages=as_tensor(buffer.advantages).flatten(),
            returns=as_tensor(buffer.returns).flatten(),
            old_log_prob=as_tensor(buffer.log_probs).flatten(),
        )

    def train(self) -> None:
        """``n_epochs`` gradient steps, each re-running the whole rollout from its initial-state snapshot."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = None if self.clip_range is None else self.clip_range(self._current_progress_remaining)
        batch = self._stored_sequences()
        advantages = batch["advantages"]
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        logs: dict[str, list[float]] = {}
        # Until the first optimizer step the parameters are the rollout's: its recorded forward is this one's.
        recorded, self._recorded_rollout = self._recorded_rollout, None
        for _ in range(self.n_epochs):
            values, log_prob, entropy, final_state = self.policy.evaluate_actions(
                batch["observations"],
                batch["actions"],
                self._rollout_initial_state,
                batch["episode_starts"],
                recorded=recorded,
            )
            log_ratio = log_prob - batch["old_log_prob"]
            if clip_range is None:
                policy_loss = -(advantages * log_prob).mean()
            else:
                ratio = th.exp(log_ratio)
                clipped_ratio = th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(advantages * ratio, advantages * clipped_ratio).mean()
                logs.setdefault("clip_fraction", []).append(((ratio - 1).abs() > clip_range).float().mean().item())
            value_loss = F.mse_loss(batch["returns"], values)
            if self.entropy_bonus == "sum_squares":
                probabilities = self.policy.last_action_probabilities  # of the evaluate_actions() above
                assert probabilities is not None, "sum_squares is checked to need a Discrete action space"
                entropy_loss = probabilities.square().sum(dim=-1).mean()
            else:
                entropy_loss = -th.mean(-log_prob if entropy is None else entropy)
            with th.no_grad():
                approx_kl = th.mean(th.exp(log_ratio) - 1 - log_ratio).item()
            if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                if self.verbose >= 1:
                    print(f"Early stopping after {len(logs.get('loss', []))} epochs: approx_kl {approx_kl:.3f}")
                break
            loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
            self.policy.optimizer.zero_grad()
            loss.backward()
            if not self._check_finite(loss, gradients=True):
                continue
            for group, norm in gradient_norms(self.policy).items():
                logs.setdefault(f"grad_norm_{group}", []).append(norm)
            if self.max_grad_norm is not None:
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                logs.setdefault("grad_norm", []).append(grad_norm.item())
            self.policy.optimizer.step()
            recorded = None
            self._check_finite(None, gradients=False)
            self._n_updates += 1
            for name, value in [
                # SB3's names: A2C logs "policy_loss", PPO "policy_gradient_loss".
                ("policy_loss" if clip_range is None else "policy_gradient_loss", policy_loss.item()),
                ("value_loss", value_loss.item()),
                ("entropy_loss", entropy_loss.item()),
                ("loss", loss.item()),
                # PPO's; A2C's single step has the rollout's own policy, where it only measures rounding.
                *([] if clip_range is None else [("approx_kl", approx_kl)]),
            ]:
                logs.setdefault(name, []).append(value)
        for name, values_logged in logs.items():
            self.logger.record(f"train/{name}", float(np.mean(values_logged)))
        if isinstance(self.action_space, spaces.Box) and hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        statistics = self.policy.plasticity_statistics(final_state)
        for name, value in statistics.items():
            self.logger.record(f"plasticity/{name}", value)
        self._watch_plasticity(statistics)
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if self.on_non_finite == "skip":
            self.logger.record("train/skipped_updates", self.skipped_updates)
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)

    #: Updates between two dumps of the logs (printed with ``verbose=1``) when ``learn`` is not told: SB3's A2C's.
    default_log_interval: ClassVar[int] = 100

    def learn(
        self: SelfPlasticA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = None,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPlasticA2C:
        """As SB3's ``learn``; ``log_interval`` defaults to :attr:`default_log_interval` (100 updates for A2C, 1 for
        PPO, as SB3's), and ``plastic-rl train`` passes 1 so that its ``progress.csv`` has a row per update."""
        whole = isinstance(total_timesteps, numbers.Real) and float(total_timesteps).is_integer()
        if isinstance(total_timesteps, bool) or not whole or total_timesteps < 1:  # 1e5 and numpy ints are fine
            raise ValueError(f"total_timesteps must be a positive whole number; got {total_timesteps!r}")
        try:
            return super().learn(
                total_timesteps=int(total_timesteps),
                callback=callback,
                log_interval=self.default_log_interval if log_interval is None else log_interval,
                tb_log_name=tb_log_name or type(self).__name__,
                reset_num_timesteps=reset_num_timesteps,
                progress_bar=progress_bar,
            )
        except ValueError as error:
            # torch.distributions' check of the policy's output: finite parameters gave NaN in a rollout
            # (e.g. an overflowing Hebbian trace after too large an update).
            if "found invalid values" not in str(error):
                raise
            where = f"the rollout after update {self._n_updates} ({self.num_timesteps} env steps)"
            learning_rate = self.lr_schedule(self._current_progress_remaining)
            quantity = "policy's output (its action distribution)"
            updated = self._n_updates > 0
            raise TrainingDiverged(divergence_message(where, quantity, learning_rate, updated=updated)) from error
