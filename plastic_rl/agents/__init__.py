"""Stable-Baselines3 algorithms and policies with recurrent plastic networks.

``PlasticA2C`` and ``PlasticPPO`` train :class:`PlasticRecurrentPolicy` (the paper's plastic network, with
homogeneous or no plasticity as options) and :class:`LstmPolicy` by backpropagation through whole rollouts;
:class:`PlasticReadoutPolicy` is the supervised Omniglot classifier's plastic head as a policy, whose trace the
observation's label writes; :class:`ImageKeyExtractor` reads a Dict observation's image through the suite's image
embedding.
"""

from plastic_rl.core.exports import lazy_exports

_EXPORTS = {
    "ImageKeyExtractor": "plastic_rl.agents.extractors",
    "LstmPolicy": "plastic_rl.agents.policies",
    "PlasticA2C": "plastic_rl.agents.a2c",
    "PlasticPPO": "plastic_rl.agents.ppo",
    "PlasticReadoutPolicy": "plastic_rl.agents.readout_policy",
    "PlasticRecurrentPolicy": "plastic_rl.agents.policies",
    "RecurrentActorCriticPolicy": "plastic_rl.agents.policies",
    "load_pretrained": "plastic_rl.agents.pretrained",
    "pretrained_config": "plastic_rl.agents.pretrained",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
