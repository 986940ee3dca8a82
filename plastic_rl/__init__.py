"""plastic_rl: differentiable plasticity (Miconi, Clune & Stanley, ICML 2018) for RL and meta-learning.

Importing the package registers its Gymnasium environments, so ``gym.make("PlasticMaze-v0")`` works
after ``import plastic_rl`` and ``gym.make("plastic_rl:PlasticMaze-v0")`` works with no prior import.
"""

from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer, PlasticState
from plastic_rl.envs import register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["PlasticLinear", "PlasticRecurrentLayer", "PlasticState", "__version__"]
