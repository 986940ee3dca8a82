"""Stable-Baselines3 algorithms and policies with recurrent plastic networks.

``PlasticA2C`` and ``PlasticPPO`` train :class:`PlasticRecurrentPolicy` (the paper's plastic network, with
homogeneous or no plasticity as options) and :class:`LstmPolicy` by backpropagation through whole rollouts;
:class:`ImageKeyExtractor` reads a Dict observation's image through the suite's image embedding.
"""

from plastic_rl.agents.a2c import PlasticA2C, PlasticPPO
from plastic_rl.agents.extractors import ImageKeyExtractor
from plastic_rl.agents.policies import LstmPolicy, PlasticRecurrentPolicy, RecurrentActorCriticPolicy
from plastic_rl.agents.pretrained import load_pretrained, pretrained_config

__all__ = [
    "ImageKeyExtractor",
    "LstmPolicy",
    "PlasticA2C",
    "PlasticPPO",
    "PlasticRecurrentPolicy",
    "RecurrentActorCriticPolicy",
    "load_pretrained",
    "pretrained_config",
]
