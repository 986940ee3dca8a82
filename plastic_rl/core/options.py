"""Validation of the core's keyword options.

Every public constructor in :mod:`plastic_rl` validates its keywords here, so that a typo gives a
``ValueError`` that names the parameter and the values it accepts instead of a traceback from deep
inside torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload

PLASTICITY_MODES = ("full", "shared", "none")
RULES = ("hebb", "oja")
INPUT_MAPPINGS = ("linear", "identity")
INPUT_MODES = ("add", "clamp")
BIAS_MODES = ("vector", "neuron", "none")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ``ValueError`` naming both."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer > 0, else raise a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


@overload
def check_positive_float(name: str, value: Any, *, allow_none: Literal[False] = False) -> float: ...
@overload
def check_positive_float(name: str, value: Any, *, allow_none: bool) -> float | None: ...
def check_positive_float(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float if it is > 0 (or ``None`` when allowed), else raise ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a number > 0{suffix}; got {value!r}")
    return float(value)
