"""Lesioning plasticity: a trained network with its plastic part taken out, to measure what the learning within an
episode contributes to what the network does."""

from __future__ import annotations

import torch
from torch import nn

from plastic_rl.core.layers import PlasticLinear, PlasticRecurrentLayer


@torch.no_grad()
def remove_plasticity(module: nn.Module) -> int:
    """Set alpha to zero in every plastic layer of ``module``, in place: the Hebbian traces still form but no longer
    act (each connection is its fixed weight ``w`` alone). Returns how many layers changed (0: no plasticity)."""
    changed = 0
    for layer in module.modules():
        if isinstance(layer, (PlasticRecurrentLayer, PlasticLinear)) and layer.plasticity_coefficient is not None:
            layer.plasticity_coefficient.zero_()
            changed += 1
    return changed
