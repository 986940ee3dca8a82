"""plastic_rl: differentiable plasticity (Miconi, Clune & Stanley, ICML 2018) for RL and meta-learning.

Importing the package registers its Gymnasium environments, so ``gym.make("PlasticMaze-v0")`` works
after ``import plastic_rl`` and ``gym.make("plastic_rl:PlasticMaze-v0")`` works with no prior import.
"""

from plastic_rl.core.exports import lazy_exports
from plastic_rl.envs import register_envs

__version__ = "0.1.0"

register_envs()

_EXPORTS = {name: "plastic_rl.core.layers" for name in ("PlasticLinear", "PlasticRecurrentLayer", "PlasticState")}
__all__ = [*_EXPORTS, "__version__"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
