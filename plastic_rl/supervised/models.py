"""Sequence models for the supervised tasks, built on the shared plastic core.

Every model keeps its constructor keywords in ``self.config``, which is what lets a saved model be
rebuilt by :func:`plastic_rl.supervised.load_model` with one call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plastic_rl.core import PlasticLinear, PlasticRecurrentLayer
from plastic_rl.core.options import check_positive_float, check_positive_int


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
    """An LSTM with a linear readout: ``(T, B, input_size) -> (T, B, output_size)``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int) -> None:
        super().__init__()
        self.config = dict(input_size=input_size, output_size=output_size, hidden_size=hidden_size)
        for name, value in self.config.items():
            check_positive_int(name, value)
        self.lstm = nn.LSTM(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, inputs: Tensor) -> Tensor:
        hidden, _ = self.lstm(inputs.to(self.readout.weight.dtype))
        return self.readout(hidden)


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


def select_device(device: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` as a ``torch.device``."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' (or 'cuda:N'); got {device!r}")
    if device == "auto":
        from stable_baselines3.common.utils import get_device

        return get_device("auto")  # SB3's choice, as the RL side: CUDA when available
    # Unlike SB3's get_device, an explicit "cuda" without CUDA is an error rather than a silent CPU run.
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    return torch.device(device)
