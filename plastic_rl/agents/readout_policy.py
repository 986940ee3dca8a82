"""A plastic read-out policy: the supervised Omniglot classifier's head (a plastic layer whose trace the shown labels
write) as an actor-critic policy, for episodes that show labelled examples and then ask for a label by reward."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from plastic_rl.agents.policies import Observation, RecurrentActorCriticPolicy, RecurrentState, reset_rows
from plastic_rl.core import PlasticLinear, PlasticState
from plastic_rl.core.fused import RecordedUnroll
from plastic_rl.core.rules import get_rule


def _described(space: spaces.Space) -> str:
    """A space's kind and keys or shape, without a Box's bounds (hundreds of numbers for an image)."""
    if isinstance(space, spaces.Dict):
        return f"a Dict with keys {', '.join(map(repr, space.spaces))}"
    return f"a {type(space).__name__} of shape {space.shape}"


class ConfidenceCritic(nn.Module):
    """A value from an actor's logits ``(..., n)``: a linear function of the action probabilities sorted from the most
    likely down, the logits detached. Sorted, because an episode's labels are drawn afresh (how sure the actor is
    matters, not which label it favours); detached, because the logits are the actor's output, not a representation
    that the value's regression should shape."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_actions, 1)

    def forward(self, logits: th.Tensor) -> th.Tensor:
        return self.linear(logits.detach().softmax(dim=-1).sort(dim=-1, descending=True).values)


class PlasticReadoutPolicy(RecurrentActorCriticPolicy):
    """Action logits read through a plastic layer whose trace the observation's label writes (the paper's Omniglot
    classifier head, trained from reward).

    The observation is a ``Dict`` whose ``label_key`` is a one-hot label of the actions, ``(n_actions,)``, all zeros on
    unlabelled steps; the other keys go through the features extractor (e.g.
    :class:`~plastic_rl.agents.extractors.ImageKeyExtractor`), scaled to unit length. Every step the logits are
    ``features @ (w + alpha * Hebb)``: there is no hidden layer, the logits are the actor's output, and the value is
    read from them (:class:`ConfidenceCritic`). On a labelled step the rule writes ``Hebb`` with the label as its
    post-synaptic side (after the logits are read), so that with Oja's rule at eta 1 a labelled drawing's features
    replace its label's column; an unlabelled step (the query) reads the trace without writing it. A labelled step asks
    no question: its logits are zero (a uniform action, which such an env ignores, and no gradient), so that the policy
    gradient comes from the answers alone, as the supervised head's loss does. The state is the trace,
    ``(B, features, n_actions)`` (and the eligibility trace, for a rule with one).

    Parameters
    ----------
    observation_space : a ``Dict`` space with a ``label_key`` Box of shape ``(n_actions,)``.
    action_space : ``Discrete(n_actions)``.
    lr_schedule, use_sde, log_std_init, features_extractor_class, features_extractor_kwargs, normalize_images,
        optimizer_class, optimizer_kwargs : as :class:`~plastic_rl.agents.policies.RecurrentActorCriticPolicy`
        (the extractor reads the observation without ``label_key``; ``hidden_size`` is the number of actions).
    label_key : the key of the label.
    rule, hebbian_learning_rate : the read-out's plasticity rule and initial eta (Oja's rule at 1, as the supervised
        head).
    alpha_init : alpha starts at ``alpha_init`` (+-10%), which with unit-length features sets the softmax's temperature
        over the cosine of the query with each shown drawing: large enough that the plastic path carries the answer
        from the first episode (10: RESULTS.md, Experiment 3, "Omniglot from reward alone").
    normalize_features : scale the features to unit length (see ``alpha_init``).
    """

    core: PlasticLinear

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        use_sde: bool = False,
        label_key: str = "label",
        rule: str = "oja",
        hebbian_learning_rate: float = 1.0,
        alpha_init: float = 10.0,
        normalize_features: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"action_space must be Discrete for PlasticReadoutPolicy; got {action_space}")
        n_actions = int(action_space.n)
        label_space = observation_space.spaces.get(label_key) if isinstance(observation_space, spaces.Dict) else None
        if not isinstance(label_space, spaces.Box) or label_space.shape != (n_actions,):
            raise ValueError(
                "PlasticReadoutPolicy needs a labelled task such as PlasticOmniglot-v0: observation_space must be a "
                f"Dict space whose {label_key!r} key (label_key) is a Box of shape ({n_actions},), one entry per "
                f"action; got {_described(observation_space)}"
            )
        if "hidden_size" in kwargs:
            raise ValueError("hidden_size is not an option of PlasticReadoutPolicy: its logits are its activations")
        self.label_key = label_key
        self.rule = get_rule(rule).name
        self.hebbian_learning_rate = float(hebbian_learning_rate)
        self.alpha_init = float(alpha_init)
        self.normalize_features = bool(normalize_features)
        super().__init__(observation_space, action_space, lr_schedule, use_sde, hidden_size=n_actions, **kwargs)

    def _unlabelled_space(self) -> spaces.Dict:
        assert isinstance(self.observation_space, spaces.Dict), "checked in __init__"
        return spaces.Dict(
            {key: space for key, space in self.observation_space.spaces.items() if key != self.label_key}
        )

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        return self.features_extractor_class(self._unlabelled_space(), **self.features_extractor_kwargs)

    def _build_core(self, input_size: int) -> PlasticLinear:
        core = PlasticLinear(
            input_size,
            self.hidden_size,
            rule=self.rule,
            hebbian_learning_rate=self.hebbian_learning_rate,
            output_activation="identity",  # the label is the post-synaptic side of every write
            bias=False,
        )
        with th.no_grad():
            assert core.plasticity_coefficient is not None, "the read-out has one alpha per connection"
            core.plasticity_coefficient.normal_(self.alpha_init, 0.1 * abs(self.alpha_init))
        return core

    def _build_action_net(self) -> nn.Module:
        return nn.Identity()

    def _build_value_net(self) -> nn.Module:
        return ConfidenceCritic(self.hidden_size)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        del data["hidden_size"]
        data.update(
            label_key=self.label_key,
            rule=self.rule,
            hebbian_learning_rate=self.hebbian_learning_rate,
            alpha_init=self.alpha_init,
            normalize_features=self.normalize_features,
        )
        return data

    def _features(self, obs: Observation) -> th.Tensor:
        """The extractor's features of ``obs`` without its label (unit length), then the label: ``(T, B, F + n)``."""
        if not isinstance(obs, dict):
            raise ValueError(f"observations must be a Dict with a {self.label_key!r} key; got a {type(obs).__name__}")
        unlabelled = {key: value for key, value in obs.items() if key != self.label_key}
        features = super()._features(unlabelled)
        if self.normalize_features:
            features = nn.functional.normalize(features, dim=-1)
        return th.cat([features, obs[self.label_key].to(features.dtype)], dim=-1)

    def initial_state(self, batch_size: int) -> RecurrentState:
        return tuple(part for part in self.core.initial_state(batch_size)[1:] if part is not None)

    def _unroll_core(
        self,
        features: th.Tensor,
        state: RecurrentState,
        episode_starts: th.Tensor,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        assert recorded is None, "the read-out records no rollout (record_rollout gives None)"
        inputs, labels = features[..., : -self.hidden_size], features[..., -self.hidden_size :]
        initial = self.initial_state(features.shape[1])
        no_activation = inputs.new_zeros(features.shape[1], 0)
        logits = []
        for step in range(features.shape[0]):
            state = reset_rows(state, episode_starts[step], initial)
            step_logits, written = self.core.step(inputs[step], PlasticState(no_activation, *state), labels[step])
            labelled = labels[step].ne(0).any(dim=-1)
            state = reset_rows(tuple(part for part in written[1:] if part is not None), ~labelled, state)
            logits.append(th.where(labelled[:, None], th.zeros_like(step_logits), step_logits))
        return th.stack(logits), state

    def plasticity_statistics(self, state: RecurrentState) -> dict[str, float]:
        """``eta``, the mean ``|alpha|`` and the mean Frobenius norm of the trace in ``state``."""
        eta = self.core.hebbian_learning_rate
        alpha = self.core.plasticity_coefficient
        assert alpha is not None, "the read-out has one alpha per connection"
        return {
            **({} if eta is None else {"eta": eta.item()}),
            "mean_abs_alpha": alpha.abs().mean().item(),
            "trace_norm": th.linalg.matrix_norm(state[0]).mean().item(),
        }
