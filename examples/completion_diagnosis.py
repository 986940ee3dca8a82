"""Where a trained image-completion network's answer comes from, per erased fraction: the cue or the free neurons.

    python examples/completion_diagnosis.py MODEL.pt --erasures 0.25 0.5 0.75 top_bottom [--part validation]

The paper's network clamps every neuron whose input is non-zero to that input, so at the query the visible pixels
carry the cue and the hidden ones run free, starting from the activity that the gap before the query left them. For
each erasure (a fraction of pixels scattered at random, or ``top_bottom``: the top or bottom half) this prints, on
the same episodes of ``--part`` (validation images by default: a diagnosis is not a result), the hidden-pixel mean
squared error of

- the model, as trained;
- the model with the hidden neurons' activity set to zero when the query starts (an intervention on the trained
  network, no retraining: how much the free neurons' left-over state costs);
- the model without plastic self-connections (alpha's diagonal set to zero, as the authors' pattern code keeps it;
  their image code does not): whether a free neuron's own trace keeps its left-over activity going;
- the references that need no training: the mean of the shown images, each hidden pixel from its nearest visible
  pixels (no memory), zero fill;
- an idealised one-step Hebbian read-out: the shown images weighted by their overlap with the query's visible pixels
  (what ``sum_i Hebb[i, j] x_i`` over the clamped pixels gives for decaying Hebb), times one gain fitted by least
  squares over the episodes scored (so slightly optimistic): whether the cue holds the answer for such a memory;

and, at the scored step, the mean absolute drive that the hidden pixels receive from the visible (clamped) pixels and
from the other hidden (free) ones, through the effective weights ``w + alpha * Hebb`` of that step.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch import nn

from plastic_rl.core.layers import PlasticState
from plastic_rl.supervised.images import ImageCompletionTask
from plastic_rl.supervised.images_report import erasure_label, erasure_settings
from plastic_rl.supervised.model_files import load_model, load_task
from plastic_rl.supervised.models import PlasticRecurrentNetwork

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("model", help="model.pt or checkpoint.pt of `plastic-rl supervised images` (plastic, shared, rnn)")
parser.add_argument(
    "--erasures", nargs="+", default=["0.25", "0.5", "0.75", "top_bottom"], help="fractions, top_bottom or left_right"
)
parser.add_argument("--part", choices=["validation", "test"], default="validation", help="which images")
parser.add_argument("--episodes", type=int, default=256, help="episodes per erasure (the same for every method)")
parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
parser.add_argument("--data-dir", help="dataset folder (default: the one the model was trained with)")
parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
args = parser.parse_args()
torch.set_num_threads(args.threads)

try:
    model, trained = load_model(args.model), load_task(args.model, args.data_dir)
except (OSError, ValueError) as error:
    parser.error(f"model: {error}")
try:
    erasures = [erasure_settings(text) for text in args.erasures]
except ValueError as error:
    parser.error(str(error))
if not isinstance(model, PlasticRecurrentNetwork) or not isinstance(trained, ImageCompletionTask):
    parser.error(f"model must be a plastic, shared or rnn model of `plastic-rl supervised images`; got {args.model}")
layer, pixels = model.recurrent, model.input_size
no_autapses = copy.deepcopy(model)
if no_autapses.recurrent.plasticity_coefficient is not None and no_autapses.recurrent.plasticity_coefficient.dim() == 2:
    with torch.no_grad():
        no_autapses.recurrent.plasticity_coefficient.diagonal().zero_()
REFERENCES = {"mean": "mean of shown", "neighbours": "neighbours", "zero": "zero fill"}


@torch.no_grad()
def diagnose(task: ImageCompletionTask, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    episodes = task.sample_part(args.part, batch_size, rng)
    hidden, start = episodes.mask[-1], task.protocol.query_start
    drive = nn.functional.pad(episodes.inputs, (0, layer.input_size - pixels))
    _, at_query = layer(drive[:start])
    quiet = at_query.activation.clone()
    quiet[:, :pixels][hidden] = 0.0
    zeroed, _ = layer(drive[start:], PlasticState(quiet, at_query.hebbian_trace, at_query.eligibility_trace))
    _, before_scored = layer(drive[:-1])
    weights = layer.weight
    if before_scored.hebbian_trace is not None:
        weights = weights + layer.plasticity_coefficient * before_scored.hebbian_trace
    activity = before_scored.activation[:, :pixels]
    to_hidden = weights[..., :pixels, :pixels].expand(len(activity), pixels, pixels)  # one matrix per episode

    def drive_from(sources: torch.Tensor) -> torch.Tensor:
        received = torch.einsum("bi,bij->bj", activity * sources, to_hidden)
        return (received.abs() * hidden).sum(-1) / hidden.sum(-1)

    completions = {"model": model(episodes.inputs)[-1], "free neurons zeroed": zeroed[-1, :, :pixels]}
    completions["no plastic autapses"] = no_autapses(episodes.inputs)[-1]
    completions.update({name: task.reference_completions(episodes)[key] for key, name in REFERENCES.items()})
    scores = {name: task.episode_scores(completion, episodes)["hidden_mse"] for name, completion in completions.items()}
    shown, target = task.protocol.schedule.first_showing(episodes.inputs), episodes.targets[-1]
    overlaps = torch.einsum("kbp,bp->kb", shown, episodes.inputs[-1])  # the query's hidden pixels are zero
    blend = torch.einsum("kb,kbp->bp", overlaps, shown) * hidden
    scores.update(blend_target=(blend * target).sum(-1), blend_blend=blend.square().sum(-1))
    scores.update(target_target=(target.square() * hidden).sum(-1), hidden_pixels=hidden.sum(-1).to(target.dtype))
    scores["drive from cue"] = drive_from((~hidden).to(activity.dtype))
    scores["drive from free"] = drive_from(hidden.to(activity.dtype))
    return {name: values.numpy() for name, values in scores.items()}


columns = ["model", "free neurons zeroed", "no plastic autapses", *REFERENCES.values(), "one-step Hebb"]
columns += ["drive from cue", "drive from free"]
protocol = trained.protocol
print(f"{args.model}: trained on {erasure_label(protocol)}; {args.episodes} {args.part} "
      f"episodes per erasure (seed {args.seed}); hidden-pixel MSE, then mean |drive|")  # fmt: skip
print(f"{'erasure':>10} " + " ".join(f"{name:>19}" for name in columns))
for text, erasure in zip(args.erasures, erasures, strict=True):
    task = ImageCompletionTask(**{**trained.config(), **erasure})
    rng = np.random.default_rng([args.seed, 35])
    parts = [diagnose(task, min(32, args.episodes - done), rng) for done in range(0, args.episodes, 32)]
    values = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    gain = values["blend_target"].sum() / values["blend_blend"].sum()
    squared_error = gain**2 * values["blend_blend"] - 2 * gain * values["blend_target"] + values["target_target"]
    values["one-step Hebb"] = squared_error / values["hidden_pixels"]
    means = {name: values[name].mean() for name in columns}
    print(f"{text:>10} " + " ".join(f"{means[name]:>19.4f}" for name in columns), flush=True)
