"""The plastic network core: plain PyTorch, shared by the RL agents and the supervised trainers."""

from plastic_rl.core.exports import lazy_exports

_EXPORTS = {name: "plastic_rl.core.layers" for name in ("PlasticLinear", "PlasticRecurrentLayer", "PlasticState")}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
