"""Package names imported on first use, so that a package's light modules import without its heavy ones.

``plastic-rl CMD --help`` imports the command's module; were every package's ``__init__`` to import its classes (and
with them torch and Stable-Baselines3), each ``--help`` would take seconds. A package lists its public names with
the module each lives in, and :func:`lazy_exports` gives it the module ``__getattr__`` (PEP 562) that imports that
module when a name is first used: ``from plastic_rl.agents import PlasticA2C`` works as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package`` for ``exports`` (public name -> the module that defines it)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
