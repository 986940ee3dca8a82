"""The plasticity rules: each one declared once, here, and found by name by every unroll path.

A rule is a :class:`PlasticityRule`: its name, its trace update (the autograd reference, used by every layer's
:meth:`step` and by the ``"autograd"`` unroll) and, for the fused unroll (:mod:`plastic_rl.core.fused`), its
:class:`DecayForm` (a decaying trace, its gain ``eta`` or the network's ``M(t)``, and whether ``M(t)`` gates it into
the Hebbian trace), from which the PyTorch backend derives its hand-written backward; a ``kernel_code`` says which
instantiation of the C++ kernel (``enum Rule`` in ``csrc/plastic_unroll.cpp``) runs it. What each backend supports
is read from this registry (:func:`rule_names`); ``implementation="auto"`` runs a rule without a fused form on the
autograd loop.

Conventions as in :mod:`plastic_rl.core.functional`: traces are ``(B, N_pre, N_post)``, ``pre`` is ``(B, N_pre)``,
``post`` is ``(B, N_post)``. The neuromodulated rules (Miconi et al., "Backpropamine", ICLR 2019) also take the
network's own neuromodulator ``M(t)``, ``(B, 1, 1)`` (one value per episode) or ``(B, 1, N_post)`` (one per
post-synaptic neuron), and "retroneuromod" keeps an eligibility trace beside the Hebbian one.

Adding a rule: decorate its update with :func:`plasticity_rule` (and give a :class:`DecayForm` if it is of that form,
to make it fast), then test it; see the README's "Adding a plasticity rule".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

BACKENDS = ("autograd", "torch", "cpp")


class Traces(NamedTuple):
    """The plastic traces of a batch: the Hebbian trace, and the eligibility trace of a rule that has one."""

    hebbian: Tensor
    eligibility: Tensor | None = None


TraceUpdate = Callable[[Traces, Tensor, Tensor, "Tensor | None", "Tensor | None"], Traces]
"""``update(traces, pre, post, hebbian_learning_rate, modulation) -> traces``, before clipping the Hebbian trace."""


GAINS = ("eta", "modulation")


@dataclass(frozen=True)
class DecayForm:
    """A rule of the form ``T <- T * (1 - g q(post)) + g pre post^T``, which the fused unroll runs.

    ``T`` is the Hebbian trace ``H``, or with ``gated`` an eligibility trace ``E`` that the network's neuromodulator
    gates into the Hebbian one, ``H <- H + M(t) E`` (with ``E`` as it was before this step, Backpropamine's order).
    ``gain`` is what ``g`` is: ``"eta"`` (the learned Hebbian learning rate) or ``"modulation"`` (the network's own
    ``M(t)``, one value or one per post-synaptic neuron; its ``q`` must be the constant 0: the backward has no
    ``M q(post)`` term).

    ``forgetting`` is ``q``: ``(B, N_post) -> (B, N_post)``, or a float where it does not depend on ``post``; it
    must grow with ``|post|`` (the checkpoint plan bounds the decay with it). ``forgetting_derivative`` is
    ``dq/dpost`` (``None`` for a constant ``q``). Together they give the backward: ``dU/deta = pre post^T - q T``
    and ``dU_ij/dpost_j = eta pre_i - eta q'(post_j) T_ij``. ``kernel_code`` is the rule's code in the C++ kernel
    (``None``: the PyTorch backend only).
    """

    forgetting: Callable[[Tensor], Tensor | float]
    forgetting_derivative: Callable[[Tensor], Tensor] | None = None
    kernel_code: int | None = None
    gain: str = "eta"
    gated: bool = False

    def __post_init__(self) -> None:
        if self.gain not in GAINS:
            raise ValueError(f"gain must be one of {', '.join(repr(g) for g in GAINS)}; got {self.gain!r}")
        if self.gain == "modulation" and (self.gated or self.forgetting_derivative is not None):
            raise ValueError("a decay form with gain 'modulation' has a constant forgetting of 0 and no gate")

    @property
    def modulated(self) -> bool:
        """Whether the network's ``M(t)`` enters the update (as the gain, or as the gate)."""
        return self.gain == "modulation" or self.gated

    def decay(self, post: Tensor, eta: float) -> Tensor | float:
        """``1 - eta q(post)``: a float, or ``(B, 1, N_post)`` to multiply a trace with (1 for gain ``M(t)``)."""
        if self.gain == "modulation":
            return 1.0
        forgetting = self.forgetting(post)
        if isinstance(forgetting, Tensor):
            return (1.0 - eta * forgetting).unsqueeze(1)
        return 1.0 - eta * forgetting

    def largest_forgetting(self, post_bound: float) -> float:
        """The largest ``q`` over ``|post| <= post_bound`` (0 for gain ``M(t)``, which does not decay)."""
        if self.gain == "modulation":
            return 0.0
        forgetting = self.forgetting(torch.tensor([[post_bound]], dtype=torch.float64))
        return float(forgetting.max()) if isinstance(forgetting, Tensor) else float(forgetting)


@dataclass(frozen=True)
class PlasticityRule:
    """One plasticity rule: its name, its trace update and what it needs.

    ``uses_learning_rate``: the rule reads ``eta`` (the layer learns one); ``modulated``: it reads the network's
    neuromodulator ``M(t)`` (the layer learns a modulator head); ``eligibility``: its state holds an eligibility
    trace; ``decay_form``: how the fused unroll runs it (``None``: autograd only).
    """

    name: str
    update: TraceUpdate
    summary: str
    uses_learning_rate: bool = True
    modulated: bool = False
    eligibility: bool = False
    decay_form: DecayForm | None = None

    def supports(self, backend: str) -> bool:
        """Whether ``backend`` (one of :data:`BACKENDS`) runs this rule."""
        if backend == "autograd":
            return True
        if self.decay_form is None:
            return False
        return backend == "torch" or self.decay_form.kernel_code is not None


_REGISTRY: dict[str, PlasticityRule] = {}


def plasticity_rule(
    name: str,
    *,
    summary: str,
    uses_learning_rate: bool = True,
    modulated: bool = False,
    eligibility: bool = False,
    decay_form: DecayForm | None = None,
) -> Callable[[TraceUpdate], TraceUpdate]:
    """Register the decorated trace update as the rule ``name`` (see :class:`PlasticityRule`)."""

    def register(update: TraceUpdate) -> TraceUpdate:
        if name in _REGISTRY:
            raise ValueError(f"a plasticity rule named {name!r} is already registered")
        if decay_form is not None and (decay_form.modulated, decay_form.gated) != (modulated, eligibility):
            raise ValueError(f"rule {name!r}: its decay form's gain and gate must match modulated and eligibility")
        _REGISTRY[name] = PlasticityRule(name, update, summary, uses_learning_rate, modulated, eligibility, decay_form)
        return update

    return register


def rule_names(backend: str = "autograd") -> tuple[str, ...]:
    """The registered rules that ``backend`` (``"autograd"``: all, ``"torch"``, ``"cpp"``) runs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got {backend!r}")
    return tuple(name for name, rule in _REGISTRY.items() if rule.supports(backend))


def get_rule(name: str, backend: str = "autograd") -> PlasticityRule:
    """The rule ``name``; a ``ValueError`` naming the allowed rules when ``backend`` does not run it."""
    allowed = rule_names(backend)
    if not isinstance(name, str) or name not in allowed:
        where = "" if backend == "autograd" else f" with the fused {backend!r} backend"
        raise ValueError(f"rule must be one of {', '.join(repr(a) for a in allowed)}{where}; got {name!r}")
    return _REGISTRY[name]


def kernel_rule_codes() -> dict[str, int]:
    """``{name: code}`` of the rules the C++ kernel runs."""
    return {
        name: rule.decay_form.kernel_code
        for name, rule in _REGISTRY.items()
        if rule.decay_form is not None and rule.decay_form.kernel_code is not None
    }


def outer_product(pre: Tensor, post: Tensor) -> Tensor:
    """``pre post^T`` for a batch: ``(B, N_pre, N_post)``."""
    return pre.unsqueeze(2) * post.unsqueeze(1)


@plasticity_rule(
    "hebb",
    summary="decaying Hebb: H <- (1 - eta) H + eta pre post^T",
    decay_form=DecayForm(forgetting=lambda post: 1.0, kernel_code=0),
)
def hebb(traces: Traces, pre: Tensor, post: Tensor, eta: Tensor | None, modulation: Tensor | None) -> Traces:
    assert eta is not None, "hebb reads eta"
    return Traces(torch.lerp(traces.hebbian, outer_product(pre, post), eta))


@plasticity_rule(
    "oja",
    summary="Oja: H <- H + eta post (pre - post H)",
    decay_form=DecayForm(forgetting=torch.square, forgetting_derivative=lambda post: 2 * post, kernel_code=1),
)
def oja(traces: Traces, pre: Tensor, post: Tensor, eta: Tensor | None, modulation: Tensor | None) -> Traces:
    assert eta is not None, "oja reads eta"
    hebbian = traces.hebbian
    return Traces(hebbian + eta * (outer_product(pre, post) - post.square().unsqueeze(1) * hebbian))


@plasticity_rule(
    "neuromod",
    summary="simple neuromodulation (Backpropamine): H <- H + M(t) pre post^T, M(t) computed by the network",
    uses_learning_rate=False,
    modulated=True,
    decay_form=DecayForm(forgetting=lambda post: 0.0, kernel_code=2, gain="modulation"),
)
def neuromod(traces: Traces, pre: Tensor, post: Tensor, eta: Tensor | None, modulation: Tensor | None) -> Traces:
    assert modulation is not None, "neuromod reads M(t)"
    # M(t) scales the columns (post-synaptic neurons) of pre post^T: one batched outer product of pre and M post.
    return Traces(torch.baddbmm(traces.hebbian, pre.unsqueeze(2), modulation * post.unsqueeze(1)))


@plasticity_rule(
    "retroneuromod",
    summary="retroactive neuromodulation (Backpropamine): H <- H + M(t) E, then E <- (1 - eta) E + eta pre post^T",
    modulated=True,
    eligibility=True,
    decay_form=DecayForm(forgetting=lambda post: 1.0, kernel_code=3, gated=True),
)
def retroneuromod(traces: Traces, pre: Tensor, post: Tensor, eta: Tensor | None, modulation: Tensor | None) -> Traces:
    # The paper's order: M(t) acts on the eligibility built up to the previous step, E(t), not on this step's product.
    eligibility = traces.eligibility
    assert eta is not None and modulation is not None and eligibility is not None, "retroneuromod reads eta, M(t), E"
    hebbian = torch.addcmul(traces.hebbian, modulation, eligibility)
    return Traces(hebbian, torch.lerp(eligibility, outer_product(pre, post), eta))
