"""Sequence models for the supervised tasks, built on the shared plastic core.

Every model keeps its constructor keywords in ``self.config``, which is what lets a saved model be
rebuilt by :func:`plastic_rl.supervised.load_model` with one call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer
from plastic_rl.core.options import INPUT_MODES, check_choice, check_positive_float, check_positive_int
from plastic_rl.supervised.options import LSTM_OUTPUTS, MEMORY_MODELS

# The authors' code adds 20 x the input to the pre-activation; clamping needs no gain.
DEFAULT_INPUT_GAIN = {"clamp": 1.0, "add": 20.0}


class PlasticRecurrentNetwork(nn.Module):
    """A fully recurrent network whose first neurons are both its inputs and its outputs.

    Input element ``i`` drives neuron ``i`` one to one (``input_mapping="identity"``); neurons past
    ``input_size`` (the extra neurons of the non-plastic baseline) get no external input — the input
    is zero-padded — and the bias neuron, if any, is the last one. The output is the activation of
    the first ``output_size`` neurons at every step.

    Parameters
    ----------
    input_size, output_size : sizes of the input and the output (both at most the neuron count).
    hidden_size : number of neurons, the bias neuron included.
    input_gain : factor applied to the input; must be 1 with ``input_mode="clamp"`` (a clamped
        neuron outputs its input), 20 in the authors' code with ``input_mode="add"``.
    plasticity, rule, input_mode, bias, hebbian_learning_rate, trace_clip, init_scale :
        as in :class:`plastic_rl.core.PlasticRecurrentLayer`.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int,
        *,
        plasticity: str = "full",
        rule: str = "hebb",
        input_mode: str = "clamp",
        input_gain: float = 1.0,
        bias: str = "neuron",
        hebbian_learning_rate: float = 0.01,
        trace_clip: float | None = None,
        init_scale: float = 0.01,
    ) -> None:
        super().__init__()
        self.config = dict(
            input_size=input_size,
            output_size=output_size,
            hidden_size=hidden_size,
            plasticity=plasticity,
            rule=rule,
            input_mode=input_mode,
            input_gain=input_gain,
            bias=bias,
            hebbian_learning_rate=hebbian_learning_rate,
            trace_clip=trace_clip,
            init_scale=init_scale,
        )
        check_positive_int("input_size", input_size)
        check_positive_int("output_size", output_size)
        check_positive_float("input_gain", input_gain)
        if input_mode == "clamp" and input_gain != 1:
            raise ValueError(
                f"input_gain must be 1 with input_mode='clamp' (clamped neurons output it); got {input_gain}"
            )
        self.recurrent = PlasticRecurrentLayer(
            hidden_size,
            plasticity=plasticity,
            rule=rule,
            input_mapping="identity",
            input_mode=input_mode,
            bias=bias,
            hebbian_learning_rate=hebbian_learning_rate,
            trace_clip=trace_clip,
            init_scale=init_scale,
        )
        driven = self.recurrent.input_size
        if input_size > driven or output_size > driven:
            raise ValueError(
                f"hidden_size must leave at least max(input_size, output_size) = {max(input_size, output_size)} "
                f"neurons besides the bias neuron; got hidden_size={hidden_size} with bias={bias!r}"
            )
        self.input_size = input_size
        self.output_size = output_size
        self.input_gain = float(input_gain)

    def forward(self, inputs: Tensor) -> Tensor:
        """``(T, B, input_size)`` inputs of fresh episodes -> ``(T, B, output_size)`` outputs."""
        drive = inputs * self.input_gain if self.input_gain != 1 else inputs
        padding = self.recurrent.input_size - self.input_size
        if padding:
            drive = nn.functional.pad(drive, (0, padding))
        activations, _ = self.recurrent(drive)
        return activations[..., : self.output_size]


class SequenceLSTM(nn.Module):
    """An LSTM over a sequence: ``(T, B, input_size) -> (T, B, output_size)``.

    ``output="readout"``: a linear readout of every cell. ``output="clamped"``: the authors' baseline in their own
    comparison (Figure 3): the first ``output_size`` cells are the outputs, and like the recurrent networks' neurons
    they are clamped to the input where it is non-zero; they have no gates and no memory of their own (``h = tanh(c)``
    with ``c`` the input where it is shown, else the usual cell candidate from the input and the recurrent state),
    which the authors' code gets by fixing those cells' gate biases and input weights. So a shown ``±1`` outputs
    ``±tanh(1) = ±0.76`` and no output goes beyond it: signs (wrong bits) are unaffected, squared errors are not.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int, output: str = "readout") -> None:
        super().__init__()
        self.config = dict(input_size=input_size, output_size=output_size, hidden_size=hidden_size, output=output)
        for name in ("input_size", "output_size", "hidden_size"):
            check_positive_int(name, self.config[name])
        check_choice("output", output, LSTM_OUTPUTS)
        if output == "clamped" and not output_size == input_size <= hidden_size:
            raise ValueError(
                f"output 'clamped' needs output_size == input_size <= hidden_size; got {output_size}, {input_size}, "
                f"{hidden_size}"
            )
        self.lstm = nn.LSTM(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size) if output == "readout" else None

    def forward(self, inputs: Tensor) -> Tensor:
        inputs = inputs.to(self.lstm.all_weights[0][0].dtype)
        if self.readout is not None:
            hidden, _ = self.lstm(inputs)
            return self.readout(hidden)
        return self._clamped(inputs)

    def _clamped(self, inputs: Tensor) -> Tensor:
        weight_ih, weight_hh, bias_ih, bias_hh = self.lstm.all_weights[0]
        drive = nn.functional.linear(inputs, weight_ih, bias_ih + bias_hh)
        hidden = cell = inputs.new_zeros(inputs.shape[1], self.lstm.hidden_size)
        size, outputs = inputs.shape[-1], []
        for step, shown in zip(drive, inputs, strict=True):
            gate_in, forget, candidate, gate_out = (step + hidden @ weight_hh.T).chunk(4, dim=-1)
            candidate = candidate.tanh()
            cell = forget.sigmoid() * cell + gate_in.sigmoid() * candidate
            own = torch.where(shown != 0, shown, candidate[:, :size]).tanh()  # the clamped cells' output
            hidden = torch.cat([own, (gate_out.sigmoid() * cell.tanh())[:, size:]], dim=-1)
            outputs.append(own)
        return torch.stack(outputs)


def build_memory_model(
    model_name: str,
    size: int,
    *,
    input_mode: str = "clamp",
    input_gain: float | None = None,
    rule: str = "hebb",
    hebbian_learning_rate: float = 0.01,
    extra_neurons: int = 2000,
    lstm_hidden_size: int = 2000,
    lstm_output: str = "readout",
) -> nn.Module:
    """One of the paper's models for a memory task whose inputs and outputs have ``size`` elements.

    - ``"plastic"``: ``size + 1`` neurons (one per element and a bias neuron), per-connection
      plasticity (alpha), decaying Hebb, learned eta;
    - ``"shared"``: the same with one alpha shared by all connections (the paper's Figure 6);
    - ``"rnn"``: the same network without plasticity and with ``extra_neurons`` more neurons, which
      get no input; the output is still read from the first ``size``;
    - ``"lstm"``: an LSTM of ``lstm_hidden_size`` cells with a linear readout, or (``lstm_output="clamped"``) its
      first ``size`` cells clamped to the input as the recurrent networks' neurons are (:class:`SequenceLSTM`).
    """
    check_choice("model_name", model_name, MEMORY_MODELS)
    if model_name == "lstm":
        return SequenceLSTM(size, size, lstm_hidden_size, lstm_output)
    check_choice("input_mode", input_mode, INPUT_MODES)
    if isinstance(extra_neurons, bool) or not isinstance(extra_neurons, int) or extra_neurons < 0:
        raise ValueError(f"extra_neurons must be an integer >= 0; got {extra_neurons!r}")
    plasticity = {"plastic": "full", "shared": "shared", "rnn": "none"}[model_name]
    return PlasticRecurrentNetwork(
        size,
        size,
        size + 1 + (extra_neurons if plasticity == "none" else 0),
        plasticity=plasticity,
        rule=rule,
        input_mode=input_mode,
        input_gain=DEFAULT_INPUT_GAIN[input_mode] if input_gain is None else input_gain,
        bias="neuron",
        hebbian_learning_rate=hebbian_learning_rate,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def plastic_layers(model: nn.Module) -> dict[str, PlasticRecurrentLayer | PlasticLinear]:
    """The model's plastic-core layers (recurrent or feed-forward) by qualified name."""

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (PlasticRecurrentLayer, PlasticLinear))
    }
