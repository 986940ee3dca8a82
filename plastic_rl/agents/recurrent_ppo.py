"""sb3-contrib's RecurrentPPO with the suite's model files (atomic saves, loads that run no code, clear errors)."""

from __future__ import annotations

from typing import Any

from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

from plastic_rl.agents.saving import ModelFileMixin
from plastic_rl.core.options import check_float_range


class RecurrentPPO(ModelFileMixin, ContribRecurrentPPO):
    """:class:`sb3_contrib.RecurrentPPO` with the suite's model files (:class:`ModelFileMixin`), checking
    ``gamma`` and ``gae_lambda``."""

    def __init__(self, *args: Any, gamma: float = 0.99, gae_lambda: float = 0.95, **kwargs: Any) -> None:
        check_float_range("gamma", gamma, 0, 1, low_open=True)
        check_float_range("gae_lambda", gae_lambda, 0, 1)
        super().__init__(*args, gamma=gamma, gae_lambda=gae_lambda, **kwargs)  # type: ignore[misc]
