"""sb3-contrib's RecurrentPPO with the suite's model files (atomic saves, clear load errors)."""

from __future__ import annotations

from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

from plastic_rl.agents.saving import AtomicSaveMixin


class RecurrentPPO(AtomicSaveMixin, ContribRecurrentPPO):
    """:class:`sb3_contrib.RecurrentPPO`, saving atomically; it reads and writes the same files."""
