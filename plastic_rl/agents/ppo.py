"""PlasticPPO: PPO's clipped objective on PlasticA2C's machinery, for recurrent (plastic or LSTM) policies.

It shares PlasticA2C's rollout (one snapshot of the recurrent state per rollout, the fused core's recorded forward)
and re-runs the whole rollout's sequences from that snapshot in each of its ``n_epochs`` gradient steps.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule

from plastic_rl.agents.a2c import PlasticA2C
from plastic_rl.agents.policies import (
    RecurrentActorCriticPolicy,
)
from plastic_rl.core.options import (
    check_positive_float,
    check_positive_int,
)


class PlasticPPO(PlasticA2C):
    """PPO on the same machinery: the clipped objective over ``n_epochs`` re-runs of the whole rollout.

    Each epoch is one gradient step on all the rollout's sequences, re-run from the rollout's snapshot
    (the sequences are never cut into minibatches).

    Parameters
    ----------
    n_epochs : gradient steps per rollout.
    clip_range : clipping of the probability ratio (a float or a schedule of the remaining progress).
    target_kl : stop the epochs early when the approximate KL divergence exceeds ``1.5 * target_kl``.
    normalize_advantage : standardize the advantages (True, as in SB3's PPO).
    kwargs : as :class:`PlasticA2C`, whose defaults (the paper's maze: lr 1e-3, n_steps 250, gamma 0.9, Monte-Carlo
        returns) are also PlasticPPO's, not SB3 PPO's (lr 3e-4, n_steps 2048, gamma 0.99, gae_lambda 0.95).

    SB3 PPO's ``batch_size`` (minibatches) and ``clip_range_vf`` are refused with a ValueError that says why: an
    update backpropagates through every sequence from its rollout's first step, so a minibatch of single steps
    cannot be taken, and the value loss is not clipped.
    """

    default_log_interval: ClassVar[int] = 1

    #: SB3 PPO keywords this algorithm does not take, and why.
    unsupported_keywords: ClassVar[dict[str, str]] = {
        "batch_size": "each epoch is one gradient step on all the rollout's sequences (n_envs x n_steps steps), "
        "backpropagated through the recurrent state from the rollout's start: there are no minibatches",
        "clip_range_vf": "the value loss is not clipped",
    }

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        n_epochs: int = 4,
        clip_range: float | Schedule = 0.2,
        target_kl: float | None = None,
        normalize_advantage: bool = True,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, reason in self.unsupported_keywords.items():
            if name in kwargs:
                raise ValueError(f"{name}: PlasticPPO does not take SB3 PPO's {name!r}: {reason}")
        unknown = sorted(set(kwargs) - set(inspect.signature(PlasticA2C.__init__).parameters))
        if unknown:
            raise TypeError(f"PlasticPPO got unexpected keyword arguments: {', '.join(unknown)}")
        super().__init__(policy, env, normalize_advantage=normalize_advantage, _init_setup_model=False, **kwargs)
        self.n_epochs = check_positive_int("n_epochs", n_epochs)
        if not callable(clip_range):
            check_positive_float("clip_range", clip_range)
        # A float or a schedule until _setup_model makes it a schedule, as in SB3's PPO.
        self.clip_range = clip_range  # type: ignore[assignment]
        self.target_kl = check_positive_float("target_kl", target_kl, allow_none=True)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.clip_range = FloatSchedule(self.clip_range)  # type: ignore[arg-type]
