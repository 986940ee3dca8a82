"""Plastic layers: the network core shared by the RL agents and the supervised trainers.

No gymnasium or Stable-Baselines3 imports here: the core is plain PyTorch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plastic_rl.core import functional
from plastic_rl.core.fused import RecordedUnroll, resolve_backend
from plastic_rl.core.memory import check_fits
from plastic_rl.core.options import (
    BIAS_MODES,
    IMPLEMENTATIONS,
    INPUT_MAPPINGS,
    INPUT_MODES,
    MODULATION_MODES,
    PLASTICITY_MODES,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from plastic_rl.core.rules import Traces, get_rule, rule_names
from plastic_rl.core.unroll_arguments import Modulator, check_state, reset_where


class PlasticState(NamedTuple):
    """Runtime state of a plastic layer for a batch of episodes.

    ``activation`` is ``(B, N)`` (for the feed-forward layer, ``(B, 0)``: it has none);
    ``hebbian_trace`` is ``(B, N_pre, N_post)``, or ``None`` for a non-plastic layer; ``eligibility_trace``,
    of the same shape, is that of a rule with one (``"retroneuromod"``), else ``None``.
    """

    activation: Tensor
    hebbian_trace: Tensor | None = None
    eligibility_trace: Tensor | None = None

    def detach(self) -> PlasticState:
        """The same state cut from the autograd graph."""
        hebbian, eligibility = self.hebbian_trace, self.eligibility_trace
        return PlasticState(
            self.activation.detach(),
            None if hebbian is None else hebbian.detach(),
            None if eligibility is None else eligibility.detach(),
        )

    def traces(self) -> Traces | None:
        """The plastic traces, as the rules take them."""
        return None if self.hebbian_trace is None else Traces(self.hebbian_trace, self.eligibility_trace)


def _inverse_softplus(value: float) -> float:
    """The ``x`` with ``softplus(x) = value`` (``value`` > 0), computed without overflow."""
    value = check_positive_float("hebbian_learning_rate", value)
    return value + math.log(-math.expm1(-value))


class _PlasticParameters(nn.Module):
    """The connection parameters common to both layers: ``w``, ``alpha``, ``eta`` (for a rule that reads it) and
    the neuromodulator head ``M(t) = tanh(w_M post + b_M)`` (for a modulated rule: see :mod:`plastic_rl.core.rules`).
    """

    def __init__(
        self,
        n_pre: int,
        n_post: int,
        plasticity: str,
        rule: str,
        hebbian_learning_rate: float,
        trace_clip: float | None,
        init_scale: float,
        modulation: str,
    ) -> None:
        check_choice("plasticity", plasticity, PLASTICITY_MODES)
        plasticity_rule = get_rule(rule)
        check_choice("modulation", modulation, MODULATION_MODES)
        check_positive_float("init_scale", init_scale)
        check_positive_float("hebbian_learning_rate", hebbian_learning_rate)
        super().__init__()
        self.plasticity = plasticity
        self.rule = rule
        self.modulation = modulation
        self.trace_clip = check_positive_float("trace_clip", trace_clip, allow_none=True)
        matrices = 2 if plasticity == "full" else 1
        element = torch.get_default_dtype().itemsize
        check_fits(f"a plastic connection of {n_pre} x {n_post}", matrices * n_pre * n_post * element)
        self.weight = nn.Parameter(init_scale * torch.randn(n_pre, n_post))
        if plasticity == "full":
            self.plasticity_coefficient = nn.Parameter(init_scale * torch.randn(n_pre, n_post))
        elif plasticity == "shared":
            self.plasticity_coefficient = nn.Parameter(torch.full((1,), init_scale))
        else:
            self.register_parameter("plasticity_coefficient", None)
        if plasticity == "none" or not plasticity_rule.uses_learning_rate:
            self.register_parameter("eta_raw", None)
        else:
            self.eta_raw = nn.Parameter(torch.tensor(_inverse_softplus(hebbian_learning_rate)))
        self.has_eligibility_trace = plasticity != "none" and plasticity_rule.eligibility
        self.modulator: nn.Linear | None = None
        if plasticity != "none" and plasticity_rule.modulated:
            # torch's default initialisation: M(t) starts at the order of eta's range, not at init_scale's ~0.
            self.modulator = nn.Linear(n_post, 1 if modulation == "shared" else n_post)

    @property
    def is_plastic(self) -> bool:
        return self.plasticity != "none"

    @property
    def hebbian_learning_rate(self) -> Tensor | None:
        """``eta`` as the rule reads it: ``softplus(eta_raw)``, a scalar tensor (``None`` for a rule without eta).

        ``eta`` must stay above 0: a negative one turns every decaying rule's decay ``1 - eta q`` above 1, and the
        trace grows without bound (maze runs whose eta crossed 0 reached trace norms of 10^3-10^5). The softplus
        keeps it positive and, unlike a clamp at 0, never zeroes its gradient, so training can always raise it
        again (RESULTS.md, Experiment 4)."""
        return None if self.eta_raw is None else F.softplus(self.eta_raw)

    @torch.no_grad()
    def set_hebbian_learning_rate(self, value: float) -> None:
        """Set ``eta`` to ``value`` (> 0): ``eta_raw`` becomes its inverse softplus."""
        if self.eta_raw is None:
            raise ValueError(f"this layer has no eta (plasticity={self.plasticity!r}, rule={self.rule!r})")
        self.eta_raw.fill_(_inverse_softplus(check_positive_float("hebbian_learning_rate", value)))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Files written before eta was a softplus hold eta itself (read as 0 below 0) under its old name.
        legacy = state_dict.pop(prefix + "hebbian_learning_rate", None)
        if legacy is not None:
            state_dict[prefix + "eta_raw"] = legacy.new_tensor(_inverse_softplus(max(legacy.item(), 1e-6)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def trace_bytes(self, batch_size: int) -> int:
        """The bytes of this connection's traces (Hebbian and eligibility) for ``batch_size`` episodes."""
        if not self.is_plastic:
            return 0
        traces = 2 if self.has_eligibility_trace else 1
        return traces * batch_size * self.weight.numel() * self.weight.element_size()

    def zero_trace(self, batch_size: int) -> Tensor | None:
        if not self.is_plastic:
            return None
        n_pre, n_post = self.weight.shape
        needed = self.trace_bytes(batch_size)
        check_fits(f"a Hebbian trace of {batch_size} x {n_pre} x {n_post}", needed, self.weight.device)
        return self.weight.new_zeros(batch_size, *self.weight.shape)

    def zero_eligibility_trace(self, batch_size: int) -> Tensor | None:
        return self.zero_trace(batch_size) if self.has_eligibility_trace else None

    def _full_traces(self, state: PlasticState) -> PlasticState:
        """``state`` with a zero eligibility trace where the rule has one and the state none."""
        if self.has_eligibility_trace and state.eligibility_trace is None and state.hebbian_trace is not None:
            return state._replace(eligibility_trace=torch.zeros_like(state.hebbian_trace))
        return state

    def _modulator(self) -> Modulator | None:
        """The neuromodulator head as :func:`plastic_rl.core.functional.neuromodulation` takes it: ``(N, K)``."""
        return None if self.modulator is None else Modulator(self.modulator.weight.T, self.modulator.bias)


def _check_sequence(name: str, tensor: Tensor, size: int, feature_name: str) -> None:
    if tensor.dim() != 3 or tensor.shape[-1] != size:
        raise ValueError(f"{name} must have shape (T, B, {feature_name}={size}); got {tuple(tensor.shape)}")


class PlasticRecurrentLayer(_PlasticParameters):
    """A fully recurrent layer of ``hidden_size`` tanh neurons with plastic connections.

    ``x_j(t) = tanh( sum_i (w[i,j] + alpha[i,j] Hebb[i,j](t)) x_i(t-1) + b_j + input_j(t) )``, with
    the Hebbian trace reset at every episode start and updated by ``rule`` after each step.

    Parameters
    ----------
    hidden_size : number of neurons ``N`` (a bias neuron, if any, is one of them).
    input_size : size of the input; with ``input_mapping="identity"`` it must be ``N`` (or ``N - 1``
        with a bias neuron) and defaults to that.
    plasticity : ``"full"`` (one alpha per connection, the paper), ``"shared"`` (one learned alpha:
        homogeneous plasticity) or ``"none"`` (a plain RNN: no alpha, no eta, no trace).
    rule : a registered plasticity rule (:mod:`plastic_rl.core.rules`): ``"hebb"`` (decaying Hebb), ``"oja"``,
        ``"neuromod"`` (Backpropamine's simple neuromodulation: a learned ``M(t) = tanh(w_M x(t) + b_M)`` in place
        of eta) or ``"retroneuromod"`` (retroactive neuromodulation: ``M(t)`` gates an eligibility trace into the
        Hebbian one; the state holds both). Backpropamine clips the trace at 1 (``trace_clip=1.0``).
    modulation : for a modulated rule, ``"shared"`` (one ``M(t)`` for all connections) or ``"per_neuron"`` (one
        for the connections into each neuron).
    input_mapping : ``"linear"`` (a learned projection) or ``"identity"`` (input ``i`` drives neuron ``i``).
    input_mode : ``"add"`` (input added to the pre-activation) or ``"clamp"`` (a neuron whose input is
        non-zero outputs that input).
    bias : ``"vector"`` (a learned bias per neuron), ``"neuron"`` (the last neuron is held at 1, so its
        outgoing weights act as a plastic bias) or ``"none"``.
    hebbian_learning_rate : initial ``eta``, a learned scalar kept positive as ``softplus(eta_raw)``.
    trace_clip : clamp the trace to ``[-trace_clip, trace_clip]``; ``None`` for no clipping.
    init_scale : standard deviation of the initial ``w`` and ``alpha`` (0.01 in the paper).
    implementation : how :meth:`forward` unrolls a sequence: ``"autograd"`` (a plain loop of
        :meth:`step`, the reference), ``"fused"`` (one hand-written backward pass over the sequence:
        same results in a fraction of the memory, a C++ kernel on the CPU; for the rules it runs) or ``"auto"``
        (the fused unroll where it is faster and runs the rule). :meth:`step` is the same for all three.
    """

    def __init__(
        self,
        hidden_size: int,
        input_size: int | None = None,
        *,
        plasticity: str = "full",
        rule: str = "hebb",
        input_mapping: str = "linear",
        input_mode: str = "add",
        bias: str = "vector",
        hebbian_learning_rate: float = 0.01,
        trace_clip: float | None = None,
        init_scale: float = 0.01,
        implementation: str = "auto",
        modulation: str = "shared",
    ) -> None:
        check_positive_int("hidden_size", hidden_size)
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        if implementation == "fused" and plasticity != "none" and not get_rule(rule).supports("torch"):
            raise ValueError(
                f"implementation='fused' runs the rules {', '.join(repr(r) for r in rule_names('torch'))}; "
                f"use 'auto' or 'autograd' for rule {rule!r}"
            )
        check_choice("input_mapping", input_mapping, INPUT_MAPPINGS)
        check_choice("input_mode", input_mode, INPUT_MODES)
        check_choice("bias", bias, BIAS_MODES)
        bias_neuron = bias == "neuron"
        if bias_neuron and hidden_size < 2:
            raise ValueError(f"hidden_size must be at least 2 with bias='neuron'; got {hidden_size}")
        mapped_size = hidden_size - 1 if bias_neuron else hidden_size
        if input_mapping == "identity":
            if input_size is None:
                input_size = mapped_size
            elif input_size != mapped_size:
                raise ValueError(
                    f"input_size must equal hidden_size{' - 1 (bias neuron)' if bias_neuron else ''} = "
                    f"{mapped_size} with input_mapping='identity'; got {input_size!r}"
                )
        elif input_size is None:
            raise ValueError("input_size must be given with input_mapping='linear'")
        check_positive_int("input_size", input_size)
        super().__init__(
            hidden_size, hidden_size, plasticity, rule, hebbian_learning_rate, trace_clip, init_scale, modulation
        )
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.input_mapping = input_mapping
        self.input_mode = input_mode
        self.bias_mode = bias
        self.bias_neuron = bias_neuron
        self.implementation = implementation
        self.input_projection = nn.Linear(input_size, mapped_size, bias=False) if input_mapping == "linear" else None
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias == "vector" else None

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, input_size={self.input_size}, plasticity={self.plasticity!r}, "
            f"rule={self.rule!r}, modulation={self.modulation!r}, input_mapping={self.input_mapping!r}, "
            f"input_mode={self.input_mode!r}, "
            f"bias={self.bias_mode!r}, trace_clip={self.trace_clip}, implementation={self.implementation!r}"
        )

    def _reset_activation(self) -> Tensor:
        activation = self.weight.new_zeros(self.hidden_size)
        if self.bias_neuron:
            activation[-1] = 1.0
        return activation

    def initial_state(self, batch_size: int) -> PlasticState:
        """The state at an episode start: zero activations (bias neuron at 1) and zero traces."""
        check_positive_int("batch_size", batch_size)
        activation = self._reset_activation().expand(batch_size, -1).clone()
        return PlasticState(activation, self.zero_trace(batch_size), self.zero_eligibility_trace(batch_size))

    def _drive(self, inputs: Tensor) -> Tensor:
        inputs = inputs.to(dtype=self.weight.dtype, device=self.weight.device)
        drive = inputs if self.input_projection is None else self.input_projection(inputs)
        if self.bias_neuron:
            drive = torch.cat([drive, drive.new_zeros(*drive.shape[:-1], 1)], dim=-1)
        return drive

    def _static_options(self) -> dict:
        return dict(
            rule=self.rule,
            input_mode=self.input_mode,
            trace_clip=self.trace_clip,
            bias_neuron=self.bias_neuron,
            modulator=self._modulator(),
        )

    def step(self, inputs: Tensor, state: PlasticState) -> tuple[Tensor, PlasticState]:
        """One step: ``inputs`` ``(B, input_size)`` -> new activation ``(B, N)`` and state."""
        if inputs.dim() != 2 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"inputs must have shape (B, input_size={self.input_size}); got {tuple(inputs.shape)}")
        check_state(
            state.activation,
            state.hebbian_trace,
            inputs.shape[0],
            self.hidden_size,
            self.is_plastic,
            state.eligibility_trace,
            self.has_eligibility_trace,
        )
        state = self._full_traces(state)
        activation, traces = functional.recurrent_step(
            self._drive(inputs),
            state.activation,
            state.traces(),
            self.weight,
            self.plasticity_coefficient,
            self.hebbian_learning_rate,
            self.bias,
            **self._static_options(),
        )
        return activation, PlasticState(activation, *(traces or ()))

    def record(self, steps: int, state: PlasticState) -> RecordedUnroll | None:
        """A recording of the next ``steps`` steps from ``state`` (a rollout's: see :meth:`recorded_step`), whose
        trace it steps in place; ``None`` where the fused unroll does not run this layer without gradients (a rule
        without a fused form, clamped inputs, ``implementation="autograd"``, ``"auto"`` off the C++ kernel)."""
        plastic = self.is_plastic
        if (
            self.implementation == "autograd"
            or self.input_mode != "add"
            or (plastic and not get_rule(self.rule).supports("torch"))
            or (
                self.implementation == "auto"
                and resolve_backend("auto", self.weight.device, self.weight.dtype, self.rule if plastic else None)
                != "cpp"
            )
        ):
            return None
        check_state(
            state.activation,
            state.hebbian_trace,
            state.activation.shape[0],
            self.hidden_size,
            plastic,
            state.eligibility_trace,
            self.has_eligibility_trace,
        )
        with torch.no_grad():
            return RecordedUnroll(
                self.weight,
                self.plasticity_coefficient,
                self.hebbian_learning_rate,
                self.bias,
                self._reset_activation(),
                state.activation,
                state.hebbian_trace,
                check_positive_int("steps", steps),
                rule=self.rule,
                trace_clip=self.trace_clip,
                bias_neuron=self.bias_neuron,
                watched=tuple(self.parameters()),
                eligibility=state.eligibility_trace,
                modulator=self._modulator(),
            )

    def recorded_step(self, inputs: Tensor, recording: RecordedUnroll, episode_starts: Tensor | None = None) -> Tensor:
        """The next step of ``recording`` on ``inputs`` ``(B, input_size)``, the episodes where ``episode_starts``
        ``(B,)`` is true reset first: its activation ``(B, N)``, without gradients. :meth:`forward` on the whole
        sequence with ``recorded=recording`` then gives these activations and differentiates them."""
        if inputs.dim() != 2 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"inputs must have shape (B, input_size={self.input_size}); got {tuple(inputs.shape)}")
        with torch.no_grad():
            return recording.step(self._drive(inputs), episode_starts)

    def forward(
        self,
        inputs: Tensor,
        state: PlasticState | None = None,
        episode_starts: Tensor | None = None,
        overwrite_state: bool = False,
        recorded: RecordedUnroll | None = None,
    ) -> tuple[Tensor, PlasticState]:
        """Unroll over a ``(T, B, input_size)`` sequence.

        Parameters
        ----------
        inputs : (T, B, input_size) inputs.
        state : the state before the first step; the initial state when ``None``.
        episode_starts : optional (T, B) booleans; the state is reset before step ``t`` where true.
        overwrite_state : when no gradient is recorded, the new trace may be written into ``state``'s trace
            (which then no longer holds the old one): a rollout that steps one state forward saves a ``B x N x N``
            allocation and copy per step.
        recorded : the finished :meth:`record` of this very sequence (same inputs, state and parameters): its
            activations are returned and differentiated instead of unrolling the sequence again.

        Returns
        -------
        The activations of every step, ``(T, B, N)``, and the final state.
        """
        _check_sequence("inputs", inputs, self.input_size, "input_size")
        if state is None:
            state = self.initial_state(inputs.shape[1])
        if episode_starts is not None:
            if tuple(episode_starts.shape) != tuple(inputs.shape[:2]):
                raise ValueError(
                    f"episode_starts must have shape (T, B) = {tuple(inputs.shape[:2])}; "
                    f"got {tuple(episode_starts.shape)}"
                )
            episode_starts = episode_starts.to(device=self.weight.device, dtype=torch.bool)
        outputs, activation, traces = functional.recurrent_unroll(
            self._drive(inputs),
            state.activation,
            state.hebbian_trace,
            self.weight,
            self.plasticity_coefficient,
            self.hebbian_learning_rate,
            self.bias,
            episode_starts,
            self._reset_activation(),
            **self._static_options(),
            implementation=self.implementation,
            eligibility_trace=state.eligibility_trace,
            overwrite_trace=overwrite_state,
            recorded=recorded,
        )
        return outputs, PlasticState(activation, *(traces or ()))


OUTPUT_ACTIVATIONS = ("softmax", "tanh", "identity")


class PlasticLinear(_PlasticParameters):
    """A feed-forward plastic layer: ``features -> outputs`` through ``w + alpha * Hebb``.

    The trace is carried across the steps of an episode, with ``pre`` the features and ``post`` the
    layer's output activation — or, on labelled steps, the label (``teacher``), so that the label
    shown with an example is what gets imprinted (the paper's Omniglot classifier).

    Parameters
    ----------
    in_features, out_features : sizes.
    plasticity, rule, hebbian_learning_rate, trace_clip, init_scale, modulation : as in
        :class:`PlasticRecurrentLayer`; a modulated rule's ``M(t)`` reads the post-synaptic activity (the output
        activation, or the label on labelled steps).
    output_activation : ``"softmax"``, ``"tanh"`` or ``"identity"``; applied to the logits to give
        the post-synaptic activity used by the Hebbian rule.
    bias : learn an output bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        plasticity: str = "full",
        rule: str = "hebb",
        hebbian_learning_rate: float = 0.01,
        trace_clip: float | None = None,
        init_scale: float = 0.01,
        output_activation: str = "softmax",
        bias: bool = True,
        modulation: str = "shared",
    ) -> None:
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
        super().__init__(
            in_features, out_features, plasticity, rule, hebbian_learning_rate, trace_clip, init_scale, modulation
        )
        self.output_activation = output_activation
        self.in_features = in_features
        self.out_features = out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def initial_state(self, batch_size: int) -> PlasticState:
        """The state at an episode start: zero traces (the layer has no activation to carry)."""
        check_positive_int("batch_size", batch_size)
        return PlasticState(
            self.weight.new_zeros(batch_size, 0), self.zero_trace(batch_size), self.zero_eligibility_trace(batch_size)
        )

    def _activate(self, logits: Tensor) -> Tensor:
        if self.output_activation == "softmax":
            return torch.softmax(logits, dim=-1)
        if self.output_activation == "tanh":
            return torch.tanh(logits)
        return logits

    def step(self, features: Tensor, state: PlasticState, teacher: Tensor | None = None) -> tuple[Tensor, PlasticState]:
        """One step: ``features`` ``(B, in_features)`` -> logits ``(B, out_features)`` and new state.

        Where a row of ``teacher`` (B, out_features) is non-zero, it replaces the output activation
        as the post-synaptic term of the Hebbian update.
        """
        if features.dim() != 2 or features.shape[-1] != self.in_features:
            raise ValueError(
                f"features must have shape (B, in_features={self.in_features}); got {tuple(features.shape)}"
            )
        self._check_trace_shapes(state, features.shape[0], ("hebbian_trace", "eligibility_trace"))
        if state.eligibility_trace is not None and not self.has_eligibility_trace:
            raise ValueError("the state's eligibility_trace must be None unless the layer's rule has one")
        state = self._full_traces(state)
        features = features.to(dtype=self.weight.dtype, device=self.weight.device)
        logits = functional.plastic_matvec(features, self.weight, self.plasticity_coefficient, state.hebbian_trace)
        if self.bias is not None:
            logits = logits + self.bias
        traces = state.traces()
        if traces is not None:
            post = self._activate(logits)
            if teacher is not None:
                teacher = teacher.to(dtype=post.dtype, device=post.device)
                post = torch.where((teacher != 0).any(dim=-1, keepdim=True), teacher, post)
            modulator = self._modulator()
            modulation = None if modulator is None else functional.neuromodulation(post, modulator)
            traces = functional.update_trace(
                traces, features, post, self.hebbian_learning_rate, self.rule, self.trace_clip, modulation
            )
        return logits, PlasticState(state.activation, *(traces or ()))

    def _check_trace_shapes(self, state: PlasticState, batch_size: int, names: tuple[str, ...]) -> None:
        expected_trace = (batch_size, self.in_features, self.out_features)
        for name in names:
            part = getattr(state, name)
            if part is not None and tuple(part.shape) != expected_trace:
                raise ValueError(f"the state's {name} must have shape {expected_trace}; got {tuple(part.shape)}")

    def read(self, features: Tensor, state: PlasticState) -> Tensor:
        """The logits ``(T, B, out_features)`` of ``(T, B, in_features)`` features through ``state``'s trace, which
        they do not change: every step reads the same memory (for instance the queries of an episode)."""
        _check_sequence("features", features, self.in_features, "in_features")
        self._check_trace_shapes(state, features.shape[1], ("hebbian_trace",))
        rows = features.to(dtype=self.weight.dtype, device=self.weight.device).transpose(0, 1)  # (B, T, in)
        logits = functional.plastic_matvec(rows, self.weight, self.plasticity_coefficient, state.hebbian_trace)
        if self.bias is not None:
            logits = logits + self.bias
        return logits.transpose(0, 1)

    def forward(
        self,
        features: Tensor,
        state: PlasticState | None = None,
        episode_starts: Tensor | None = None,
        teacher: Tensor | None = None,
    ) -> tuple[Tensor, PlasticState]:
        """Unroll over ``(T, B, in_features)``; ``teacher`` is an optional ``(T, B, out_features)``."""
        _check_sequence("features", features, self.in_features, "in_features")
        if teacher is not None:
            _check_sequence("teacher", teacher, self.out_features, "out_features")
        if state is None:
            state = self.initial_state(features.shape[1])
        outputs = []
        for t in range(features.shape[0]):
            if episode_starts is not None and state.hebbian_trace is not None:
                starts = episode_starts[t].to(device=self.weight.device, dtype=torch.bool)
                state = PlasticState(
                    state.activation,
                    *(None if part is None else reset_where(starts, part, 0.0) for part in state[1:]),
                )
            logits, state = self.step(features[t], state, None if teacher is None else teacher[t])
            outputs.append(logits)
        return torch.stack(outputs), state
