"""Validation of keyword options and command-line values.

Every public constructor in :mod:`plastic_rl` validates its keywords here, so that a typo gives a
``ValueError`` that names the parameter and the values it accepts instead of a traceback from deep
inside torch. The command line reports bad input as ``plastic-rl COMMAND: error: ...`` (exit 2):
argparse does it for the option types below, and a command wraps the setup that turns its options
into objects in :func:`reported_as_bad_input`, so that the constructors' ``ValueError`` reach the
user the same way while a genuine bug later on still shows its traceback. The allowed values of the keyword options
are named here, importing no torch, so that a command declares its options and answers ``--help`` at once. A command's
parsed options become the library's typed configuration objects through :func:`config_from`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    ConfigT = TypeVar("ConfigT", bound=DataclassInstance)

PLASTICITY_MODES = ("full", "shared", "none")
MODULATION_MODES = ("shared", "per_neuron")
INPUT_MAPPINGS = ("linear", "identity")
INPUT_MODES = ("add", "clamp")
BIAS_MODES = ("vector", "neuron", "none")
IMPLEMENTATIONS = ("auto", "fused", "autograd")  # how a layer unrolls (see plastic_rl.core.fused)
EMBEDDINGS = ("paper", "conv4")  # the image embeddings of plastic_rl.core.embeddings
# What a trainer does at a non-finite loss or gradient: stop with TrainingDiverged, or skip the step.
NON_FINITE_ACTIONS = ("raise", "skip")


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
    """Return ``value`` as a float if it is finite and > 0 (or ``None`` when allowed), else raise ``ValueError``."""
    if value is None and allow_none:
        return None
    if not _is_number(value) or not 0 < value < math.inf:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number > 0{suffix}; got {value!r}")
    return float(value)


def check_non_negative_float(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise ``ValueError``."""
    if not _is_number(value) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_utf8_path(name: str, path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if its name is valid UTF-8, else raise ``ValueError``: TensorBoard's writer cannot
    write under a folder whose name is not (one read from the file system holds the bytes as surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{name} must be a path whose name is valid UTF-8 (TensorBoard cannot write under it); got {str(path)!r}"
        ) from None
    return Path(path)


def check_float_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """Return ``value`` as a float if it lies in ``[low, high]`` (open at an end with ``low_open`` / ``high_open``),
    else raise ``ValueError``."""
    inside = (
        _is_number(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high)
    )
    if not inside or not math.isfinite(value):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}")
    return float(value)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_device(name: str, value: Any) -> str:
    """Return ``value`` if it is ``"auto"``, ``"cpu"`` or an available CUDA device (``"cuda"``, ``"cuda:N"``)."""
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise ValueError(f"{name} must be one of 'auto', 'cpu', 'cuda' (or 'cuda:N'); got {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"{name} {value!r} was asked for but CUDA is not available here; use cpu")
    return value


def select_device(value: Any, name: str = "device") -> Any:
    """``value`` (see :func:`check_device`) as a ``torch.device``: ``"auto"`` is CUDA when available (SB3's
    choice, as the RL side makes it), else the CPU; an explicit CUDA device without CUDA is an error."""
    check_device(name, value)
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(value)


def config_from(cls: type[ConfigT], options: Mapping[str, Any]) -> ConfigT:
    """The configuration dataclass ``cls`` from the entries of ``options`` that name its fields (a parsed command
    line's ``vars``, a run's recorded options); a field without an entry keeps its default, other entries are left
    to other objects. Lists become tuples, as a configuration object is immutable."""
    names = {field.name for field in fields(cls)}
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in options.items()}
    return cls(**{name: value for name, value in values.items() if name in names})


class BadInputError(ValueError):
    """A value the user gave is invalid; the command line reports it as ``plastic-rl CMD: error: ...``, exit 2."""


@contextlib.contextmanager
def reported_as_bad_input() -> Iterator[None]:
    """Re-raise the block's ``ValueError`` (and ``TypeError`` / ``AssertionError``) as :class:`BadInputError`.

    For the part of a command that turns its options into objects (envs, models, trainers): there these
    errors mean bad input. Outside such a block they are bugs and keep their traceback.
    """
    try:
        yield
    except BadInputError:
        raise
    except (ValueError, TypeError, AssertionError) as error:
        raise BadInputError(str(error) or type(error).__name__) from error


def _option_type(check: Callable[[str, Any], Any], convert: Callable[[str], Any], kind: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}; got {text!r}") from None
        try:
            return check("value", value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}; got {text!r}") from None

    parse.__name__ = kind
    return parse


def _check_non_negative_int(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    return value


def _check_finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return value


# argparse ``type=`` functions: a bad value gives "argument --x: must be ...; got '0'" and exit 2.
positive_int = _option_type(check_positive_int, int, "a positive integer")
non_negative_int = _option_type(_check_non_negative_int, int, "an integer >= 0")
positive_float = _option_type(check_positive_float, float, "a finite number > 0")
finite_float = _option_type(_check_finite, float, "a finite number")


def rule_name(text: str) -> str:
    """argparse ``type=`` of a plasticity rule's name: one registered in :mod:`plastic_rl.core.rules`.

    Checked when the options are parsed rather than listed as ``choices``, which would import the registry, and with
    it torch, to answer ``--help``."""
    from plastic_rl.core.rules import get_rule  # torch: at parse time only

    try:
        get_rule(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
