"""The plastic network core: plain PyTorch, shared by the RL agents and the supervised trainers."""

from plastic_rl.core.layers import PlasticLinear, PlasticRecurrentLayer, PlasticState

__all__ = ["PlasticLinear", "PlasticRecurrentLayer", "PlasticState"]
