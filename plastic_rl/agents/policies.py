"""Recurrent actor-critic policies: one recurrent core, with actor and critic heads reading its activations.

The runtime recurrent state is never stored in the module (no buffer, nothing pickled): every method
takes the state and returns the new one. A state is a tuple of tensors whose first dimension is the
batch (one row per env): ``(activation, hebbian_trace)`` for a plastic core (plus the eligibility trace for
retroactive neuromodulation), ``(activation,)`` for a non-plastic one and ``(h, c)`` for the LSTM.
:meth:`RecurrentActorCriticPolicy.predict` hands it out as a tuple of numpy arrays, with the same contract as
sb3-contrib's ``RecurrentPPO``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    make_proba_distribution,
)
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from plastic_rl.core import PlasticRecurrentLayer, PlasticState
from plastic_rl.core.fused import RecordedUnroll
from plastic_rl.core.options import (
    MODULATION_MODES,
    PLASTICITY_MODES,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from plastic_rl.core.rules import get_rule

RecurrentState = tuple[th.Tensor, ...]
Observation = th.Tensor | dict[str, th.Tensor]

# A Dict observation goes through SB3's CombinedExtractor by default (a CNN for image keys, flattened otherwise).
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)


def check_observation_space(observation_space: spaces.Space) -> None:
    """Raise ``ValueError`` unless the recurrent policies can read ``observation_space``."""
    if not isinstance(observation_space, SUPPORTED_OBSERVATION_SPACES):
        supported = ", ".join(space.__name__ for space in SUPPORTED_OBSERVATION_SPACES)
        raise ValueError(f"observation_space must be one of {supported}; got {observation_space}")


def map_observation(function: Callable[[Any], Any], observation: Any) -> Any:
    """``function`` applied to the observation, or to each of its keys' arrays for a Dict observation."""
    if isinstance(observation, dict):
        return {key: function(value) for key, value in observation.items()}
    return function(observation)


def _one_step(observation: Observation) -> Observation:
    """A batch of observations (B, ...) as a sequence of one step (1, B, ...)."""
    return map_observation(lambda part: part.unsqueeze(0), observation)


def _leading_shape(observation: Observation) -> th.Size:
    return next(iter(observation.values())).shape if isinstance(observation, dict) else observation.shape


# The paper's optimizer: Adam with a large epsilon, which keeps the first updates of the rarely
# rewarded maze from being huge.
DEFAULT_ADAM_EPS = 1e-4
INIT_DISTRIBUTIONS = ("normal", "uniform")


def sample_categorical(probs: th.Tensor) -> th.Tensor:
    """One draw from each row of ``probs`` (B, n), a softmax's: ``torch.multinomial(probs, 1, True)[:, 0]``, draw for
    draw from the same generator (torch draws one sample as the argmax of ``probs`` over exponential noise, as here;
    tested), without its validation of ``probs`` (four more operations and a sync, on the rollout's path)."""
    noise = th.empty_like(probs).exponential_()
    return probs.div(noise).argmax(dim=1)


def reset_rows(state: RecurrentState, episode_starts: th.Tensor, initial: RecurrentState) -> RecurrentState:
    """Replace the rows of ``state`` where ``episode_starts`` (B,) is true by the rows of ``initial``."""
    starts = episode_starts.to(dtype=th.bool)
    return tuple(
        th.where(starts.reshape(-1, *([1] * (part.dim() - 1))), reset, part)
        for part, reset in zip(state, initial, strict=True)
    )


class RecurrentActorCriticPolicy(BasePolicy):
    """Actor and critic heads on one shared recurrent core (the paper's architecture).

    Subclasses build the core (:meth:`_build_core`), give its state at an episode start
    (:meth:`initial_state`) and unroll it (:meth:`_unroll_core`); the actor's and the critic's
    layers on the core (:meth:`_build_action_net`, :meth:`_build_value_net`) are SB3's unless a subclass's core gives
    the logits itself.

    Parameters
    ----------
    observation_space, action_space : the env's spaces (Box, Discrete, MultiDiscrete or MultiBinary actions).
    lr_schedule : learning-rate schedule (its value at progress 1 sets the optimizer's initial rate).
    use_sde : must be False (state-dependent exploration is not supported).
    hidden_size : number of recurrent neurons, read by both heads.
    log_std_init : initial log standard deviation of continuous actions.
    features_extractor_class, features_extractor_kwargs, normalize_images : as in SB3.
    optimizer_class, optimizer_kwargs : the optimizer; Adam with ``eps=1e-4`` by default.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        use_sde: bool = False,
        hidden_size: int = 200,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if use_sde:
            raise ValueError("use_sde must be False: recurrent policies do not support state-dependent exploration")
        check_observation_space(observation_space)
        if isinstance(observation_space, spaces.Dict) and features_extractor_class is FlattenExtractor:
            features_extractor_class = CombinedExtractor  # as SB3's MultiInputPolicy
        if optimizer_kwargs is None:
            optimizer_kwargs = {"eps": DEFAULT_ADAM_EPS} if optimizer_class is th.optim.Adam else {}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.log_std_init = float(log_std_init)
        self.features_extractor = self.make_features_extractor()
        self.core = self._build_core(self.features_extractor.features_dim)
        self.action_dist = make_proba_distribution(action_space)
        self.action_net = self._build_action_net()
        self.value_net = self._build_value_net()
        # Discrete actions are sampled from the logits directly: SB3's distribution object (validation, lazy
        # properties) cost more than the maths on the per-step rollout path.
        self._discrete_actions = isinstance(self.action_dist, CategoricalDistribution)
        self.last_action_probabilities: th.Tensor | None = None
        # A flat float Box through the default extractor is its own features: skip the per-step module calls.
        self._observations_are_features = (
            features_extractor_class is FlattenExtractor
            and isinstance(observation_space, spaces.Box)
            and len(observation_space.shape) == 1
            and observation_space.dtype == np.float32
        )
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    # --- the core, supplied by subclasses -------------------------------------------------------------

    def _build_core(self, input_size: int) -> nn.Module:
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> RecurrentState:
        """The recurrent state at an episode start, for ``batch_size`` envs."""
        raise NotImplementedError

    def _build_action_net(self) -> nn.Module:
        """The layer from the core's activations to the action distribution's parameters (and, for continuous
        actions, ``self.log_std``)."""
        if isinstance(self.action_dist, DiagGaussianDistribution):
            action_net, self.log_std = self.action_dist.proba_distribution_net(
                latent_dim=self.hidden_size, log_std_init=self.log_std_init
            )
            return action_net
        if isinstance(self.action_dist, (CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)):
            return self.action_dist.proba_distribution_net(latent_dim=self.hidden_size)
        raise ValueError(f"action_space must be Box, Discrete, MultiDiscrete or MultiBinary; got {self.action_space}")

    def _build_value_net(self) -> nn.Module:
        """The critic: the value of a step from the core's activations ``(..., hidden_size)``, as ``(..., 1)``."""
        return nn.Linear(self.hidden_size, 1)

    def _unroll_core(
        self,
        features: th.Tensor,
        state: RecurrentState,
        episode_starts: th.Tensor,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        """``features`` (T, B, F) -> activations (T, B, hidden_size) and the final state; the state
        is reset before step ``t`` where ``episode_starts[t]`` is true. ``overwrite_state``: without gradients, the
        new state may be written into ``state``'s memory (the caller drops ``state``): see :meth:`forward`.
        ``recorded``: the :meth:`record_rollout` of this sequence, differentiated instead of unrolled again."""
        raise NotImplementedError

    def record_rollout(self, state: RecurrentState, steps: int) -> RecordedUnroll | None:
        """A recording of the core over the next ``steps`` rollout steps from ``state`` (stepped in place), for
        :meth:`recorded_step` and then :meth:`evaluate_actions`; ``None`` where the core has none (the rollout then
        steps :meth:`forward`)."""
        return None

    def recorded_state(self, recording: RecordedUnroll) -> RecurrentState:
        """The state after the steps of ``recording`` run so far."""
        raise NotImplementedError

    def plasticity_statistics(self, state: RecurrentState) -> dict[str, float]:
        """Scalars worth logging about the core (none by default)."""
        return {}

    # --- sequences ------------------------------------------------------------------------------------

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden_size=self.hidden_size, log_std_init=self.log_std_init)
        return data

    def _features(self, obs: Observation) -> th.Tensor:
        """Observations (T, B, ...) (each key's, for a Dict) -> features (T, B, F)."""
        steps, batch = _leading_shape(obs)[:2]
        if self._observations_are_features:
            assert isinstance(obs, th.Tensor), "only a flat Box observation is its own features"
            return obs.to(th.float32)
        flat = map_observation(lambda part: part.reshape(steps * batch, *part.shape[2:]), obs)
        return self.extract_features(flat, self.features_extractor).reshape(steps, batch, -1)

    def unroll(
        self,
        obs: Observation,
        state: RecurrentState,
        episode_starts: th.Tensor,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        """Observations (T, B, ...) -> hidden activations (T, B, hidden_size) and the final state."""
        starts = episode_starts.to(th.bool)
        return self._unroll_core(self._features(obs), state, starts, overwrite_state, recorded)

    def _distribution(self, latent: th.Tensor) -> Distribution:
        action_output = self.action_net(latent)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return self.action_dist.proba_distribution(action_output, self.log_std)
        return self.action_dist.proba_distribution(action_logits=action_output)

    @staticmethod
    def _categorical(logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Normalised log-probabilities and probabilities of ``logits`` (B, n): torch's ``Categorical`` (SB3's
        distribution) to rounding, in two operations where it takes three (on the rollout's path, a torch operation on
        a (32, 4) batch costs more than its maths)."""
        log_probs = logits.log_softmax(dim=-1)
        return log_probs, log_probs.exp()

    def forward(
        self,
        obs: Observation,
        state: RecurrentState,
        episode_starts: th.Tensor,
        deterministic: bool = False,
        overwrite_state: bool = False,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, RecurrentState]:
        """One step for a batch of envs: returns actions, values, log-probabilities and the new state.

        ``overwrite_state=True`` (the rollout's choice, under ``torch.no_grad``) lets the plastic core write the new
        trace into ``state``'s: the old ``state`` must not be used afterwards.
        """
        latent, state = self.unroll(_one_step(obs), state, episode_starts.unsqueeze(0), overwrite_state)
        return (*self._act(latent[0], deterministic), state)

    def recorded_step(
        self, obs: Observation, episode_starts: th.Tensor | None, recording: RecordedUnroll, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor]:
        """:meth:`forward` for the next step of ``recording`` (``episode_starts``: ``None`` when none starts):
        actions and log-probabilities (the values of all the steps come after, from :meth:`recorded_values`);
        the state stays in the recording."""
        raise NotImplementedError

    def recorded_values(self, recording: RecordedUnroll) -> th.Tensor:
        """The values ``(T, B)`` of the steps of ``recording`` run so far, in one product: no action depends on them."""
        return self.value_net(recording.outputs)[..., 0]

    def _act(self, latent: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values and log-probabilities of one step's activations ``latent`` (B, hidden_size)."""
        values = self.value_net(latent).flatten()
        actions, log_probs = self._sample(latent, deterministic)
        return actions, values, log_probs

    def _sample(self, latent: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
        """Actions and their log-probabilities for one step's activations ``latent`` (B, hidden_size)."""
        if not self._discrete_actions:
            distribution = self._distribution(latent)
            actions = distribution.get_actions(deterministic=deterministic)
            return actions, distribution.log_prob(actions)
        log_probs, probs = self._categorical(self.action_net(latent))
        actions = probs.argmax(dim=1) if deterministic else sample_categorical(probs)
        return actions, log_probs.gather(1, actions[:, None])[:, 0]

    def predict_values(self, obs: Observation, state: RecurrentState, episode_starts: th.Tensor) -> th.Tensor:
        """Values (B,) of the observations (B, ...) seen from ``state``."""
        latent, _ = self.unroll(_one_step(obs), state, episode_starts.unsqueeze(0))
        return self.value_net(latent[0]).flatten()

    def evaluate_actions(
        self,
        obs: Observation,
        actions: th.Tensor,
        state: RecurrentState,
        episode_starts: th.Tensor,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, RecurrentState]:
        """Re-run whole sequences: observations (T, B, ...), actions (T * B, ...) in the same order; ``recorded``:
        the rollout's :meth:`record_rollout` of them, whose forward is then reused (the parameters unchanged since).

        Returns the values, log-probabilities and entropies, each flat (T * B,), and the final state. For discrete
        actions the probabilities of every action, (T * B, n), stay in ``last_action_probabilities`` (as SB3 keeps
        them on its distribution object) for losses that need them, e.g. the authors' sum of squares.
        """
        latent, state = self.unroll(obs, state, episode_starts, recorded=recorded)
        latent = latent.reshape(-1, self.hidden_size)
        values = self.value_net(latent).flatten()
        if not self._discrete_actions:
            distribution = self._distribution(latent)
            self.last_action_probabilities = None
            return values, distribution.log_prob(actions), distribution.entropy(), state
        log_probs, probs = self._categorical(self.action_net(latent))
        self.last_action_probabilities = probs
        # Categorical.entropy's expression, clamp included (it keeps 0 * -inf out of the sum).
        entropy = -(log_probs.clamp(min=th.finfo(log_probs.dtype).min) * probs).sum(dim=-1)
        return values, log_probs.gather(1, actions.long().reshape(-1, 1))[:, 0], entropy, state

    # --- SB3's predict contract -----------------------------------------------------------------------

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        raise NotImplementedError("a recurrent policy needs its state: call predict(obs, state, episode_start)")

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The action for ``observation`` and the next state, as sb3-contrib's ``RecurrentPPO``.

        Parameters
        ----------
        observation : one observation, or a batch from a VecEnv.
        state : the state returned by the previous call (a tuple of arrays with one row per env), or
            ``None`` at the start of the episodes.
        episode_start : (n_envs,) booleans: reset the state of these envs before acting.
        deterministic : take the most likely action instead of sampling.
        """
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        parts = obs_tensor.values() if isinstance(obs_tensor, dict) else [obs_tensor]
        if not all(bool(th.isfinite(part.float()).all()) for part in parts):  # it would act on NaN silently
            raise ValueError("observation must hold finite values; got NaN or infinite values")
        n_envs = _leading_shape(obs_tensor)[0]
        with th.no_grad():
            if state is None:
                state_tensors = self.initial_state(n_envs)
            else:
                expected = self.initial_state(n_envs)
                state_tensors = tuple(
                    th.as_tensor(np.asarray(part), dtype=th.float32, device=self.device) for part in state
                )
                shapes = [tuple(part.shape) for part in state_tensors]
                if shapes != [tuple(part.shape) for part in expected]:
                    raise ValueError(
                        f"state must be the tuple returned by the previous predict() for {n_envs} env(s), with "
                        f"shapes {[tuple(part.shape) for part in expected]}; got shapes {shapes}"
                    )
            starts = th.zeros(n_envs, dtype=th.bool, device=self.device)
            if episode_start is not None:
                starts = th.as_tensor(np.asarray(episode_start), device=self.device).reshape(n_envs).to(th.bool)
            actions, _, _, state_tensors = self(obs_tensor, state_tensors, starts, deterministic=deterministic)
        actions = actions.cpu().numpy().reshape((-1, *(self.action_space.shape or ())))
        if isinstance(self.action_space, spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, tuple(part.cpu().numpy() for part in state_tensors)


class PlasticRecurrentPolicy(RecurrentActorCriticPolicy):
    """Actor-critic heads on a :class:`~plastic_rl.core.PlasticRecurrentLayer` (a learned input projection).

    Parameters
    ----------
    plasticity : ``"full"`` (one plasticity coefficient per connection: the paper's plastic network),
        ``"shared"`` (one for all: homogeneous plasticity) or ``"none"`` (a plain RNN).
    rule : a plasticity rule of :mod:`plastic_rl.core.rules`: ``"hebb"``, ``"oja"``, ``"neuromod"`` or
        ``"retroneuromod"`` (Backpropamine's neuromodulated rules; the state then also holds the eligibility trace).
    modulation : for a neuromodulated rule, ``"shared"`` (one ``M(t)``) or ``"per_neuron"``.
    hebbian_learning_rate : initial ``eta``.
    trace_clip : clamp the Hebbian trace to ``[-trace_clip, trace_clip]``; ``None`` for no clipping.
    init_scale : scale of the initial recurrent weights and plasticity coefficients.
    init_distribution : ``"normal"`` (standard deviation ``init_scale``) or ``"uniform"`` (in
        ``[0, init_scale)``, as the authors' maze code) for the recurrent weights and per-connection alphas.
    Others : as :class:`RecurrentActorCriticPolicy`.
    """

    core: PlasticRecurrentLayer

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        use_sde: bool = False,
        hidden_size: int = 200,
        plasticity: str = "full",
        rule: str = "hebb",
        hebbian_learning_rate: float = 0.01,
        trace_clip: float | None = None,
        init_scale: float = 0.01,
        modulation: str = "shared",
        init_distribution: str = "normal",
        **kwargs: Any,
    ) -> None:
        self.plasticity = check_choice("plasticity", plasticity, PLASTICITY_MODES)
        self.rule = get_rule(rule).name
        self.modulation = check_choice("modulation", modulation, MODULATION_MODES)
        self.hebbian_learning_rate = check_positive_float("hebbian_learning_rate", hebbian_learning_rate)
        self.trace_clip = check_positive_float("trace_clip", trace_clip, allow_none=True)
        self.init_scale = check_positive_float("init_scale", init_scale)
        self.init_distribution = check_choice("init_distribution", init_distribution, INIT_DISTRIBUTIONS)
        super().__init__(observation_space, action_space, lr_schedule, use_sde, hidden_size, **kwargs)

    def _build_core(self, input_size: int) -> PlasticRecurrentLayer:
        core = PlasticRecurrentLayer(
            self.hidden_size,
            input_size,
            plasticity=self.plasticity,
            rule=self.rule,
            input_mapping="linear",
            hebbian_learning_rate=self.hebbian_learning_rate,
            trace_clip=self.trace_clip,
            init_scale=self.init_scale,
            modulation=self.modulation,
        )
        if self.init_distribution == "uniform":
            with th.no_grad():
                core.weight.uniform_(0.0, self.init_scale)
                if self.plasticity == "full":
                    core.plasticity_coefficient.uniform_(0.0, self.init_scale)
        return core

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            plasticity=self.plasticity,
            rule=self.rule,
            hebbian_learning_rate=self.hebbian_learning_rate,
            trace_clip=self.trace_clip,
            init_scale=self.init_scale,
            modulation=self.modulation,
            init_distribution=self.init_distribution,
        )
        return data

    def initial_state(self, batch_size: int) -> RecurrentState:
        return tuple(part for part in self.core.initial_state(batch_size) if part is not None)

    def _unroll_core(
        self,
        features: th.Tensor,
        state: RecurrentState,
        episode_starts: th.Tensor,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        activations, new_state = self.core(features, PlasticState(*state), episode_starts, overwrite_state, recorded)
        return activations, tuple(part for part in new_state if part is not None)

    def record_rollout(self, state: RecurrentState, steps: int) -> RecordedUnroll | None:
        if getattr(self.features_extractor, "batch_statistics", False):
            return None  # the update's features are not the rollout's: it must re-run the rollout
        return self.core.record(steps, PlasticState(*state))

    def recorded_state(self, recording: RecordedUnroll) -> RecurrentState:
        activation, *traces = recording.state()
        return (activation.clone(), *(trace for trace in traces if trace is not None))

    def recorded_step(
        self, obs: Observation, episode_starts: th.Tensor | None, recording: RecordedUnroll, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor]:
        features = self._features(_one_step(obs))[0]
        return self._sample(self.core.recorded_step(features, recording, episode_starts), deterministic)

    def plasticity_statistics(self, state: RecurrentState) -> dict[str, float]:
        """``eta``, the mean ``|alpha|``, the mean Frobenius norm of the trace in ``state`` and the size of the
        plastic part of the weights against the fixed part: the mean over ``state``'s episodes of
        ``|alpha ⊙ Hebb| / |w|`` (Frobenius norms; ``plastic_weight_ratio``, near 0 when plasticity is off)."""
        alpha = self.core.plasticity_coefficient
        if alpha is None:
            return {}
        eta = self.core.hebbian_learning_rate
        with th.no_grad():
            plastic_norm = th.linalg.matrix_norm(alpha * state[1]).mean()
            ratio = (plastic_norm / th.linalg.matrix_norm(self.core.weight).clamp_min(1e-30)).item()
        return {
            **({} if eta is None else {"eta": eta.item()}),
            "mean_abs_alpha": alpha.abs().mean().item(),
            "trace_norm": th.linalg.matrix_norm(state[1]).mean().item(),
            "plastic_weight_ratio": ratio,
        }


class LstmPolicy(RecurrentActorCriticPolicy):
    """The same heads on a one-layer ``torch.nn.LSTM`` (the paper's LSTM baseline); the state is ``(h, c)``."""

    core: nn.LSTM

    def _build_core(self, input_size: int) -> nn.LSTM:
        return nn.LSTM(input_size, self.hidden_size)

    def initial_state(self, batch_size: int) -> RecurrentState:
        check_positive_int("batch_size", batch_size)
        zeros = th.zeros(batch_size, self.hidden_size, device=self.device)
        return zeros, zeros.clone()

    def _unroll_core(
        self,
        features: th.Tensor,
        state: RecurrentState,
        episode_starts: th.Tensor,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        assert recorded is None, "the LSTM records no rollout (record_rollout gives None)"
        # The LSTM runs whole segments between episode starts in one call (the usual case, episodes
        # aligned with rollouts, is a single segment); states are reset at each segment's first step.
        initial = self.initial_state(features.shape[1])
        boundaries = [0, *(episode_starts[1:].any(dim=1).nonzero().flatten() + 1).tolist(), features.shape[0]]
        outputs = []
        for start, end in zip(boundaries[:-1], boundaries[1:], strict=True):
            hidden, cell = reset_rows(state, episode_starts[start], initial)
            output, (hidden, cell) = self.core(features[start:end], (hidden.unsqueeze(0), cell.unsqueeze(0)))
            outputs.append(output)
            state = (hidden[0], cell[0])
        return th.cat(outputs), state
