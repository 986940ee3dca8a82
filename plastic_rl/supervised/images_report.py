"""The image-completion report: trained models and the references on held-out test images, and the paper's
Figures 4-6 (``plastic-rl report images``).

Every model (a model file or a checkpoint of ``plastic-rl supervised images``) and the four
references that need no training (zero fill, mean of the shown images, nearest-image recall, each hidden pixel
from its visible neighbours) are
scored on the same test episodes per image count and erasure (by default the models' own; the models keep the
rest of the protocol they were trained on). Scores per episode: the
mean squared error on the hidden pixels, and whether the completion is closer there to the queried
image than to every other shown image; the table gives their means with 95% confidence intervals (normal approximation,
1.96 standard errors, over episodes). At the models' own protocol their scores are those of
:func:`~plastic_rl.supervised.model_files.cached_test_scores` (a study's ``--score test`` record, reused).
:func:`write_report` writes:

- ``summary.csv``: one row per image count, erasure and method;
- ``fig4_completions.png``: test episodes (the shown images, the degraded query, each model's
  completion, the truth), like the paper's Figure 4;
- ``fig5_matrices.png``: the first plastic model's ``w`` and ``alpha`` (all 1,025 neurons, a zoom
  on the first 96 pixels, where neighbouring pixels' connections show as diagonals at offsets 1 and
  32, and the mean connection by pixel offset), like Figure 5;
- ``fig6_curves.png``: the error on validation images during training of each curve file, a colour per
  label (Figure 6);
- ``fig7_erasures.png``: with two or more fractions of pixels hidden at random (``--erasures``), each model's and
  reference's error against the fraction, a panel per image count;
- an earlier report's figures that this one does not draw are removed from ``out``, and so are its TensorBoard
  events;
- ``tensorboard/``: the same figures for TensorBoard.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from plastic_rl.core.files import atomic_write_bytes, atomic_write_text
from plastic_rl.envs.image_completion import DEGRADATIONS, ImageCompletionProtocol
from plastic_rl.supervised.images import REFERENCE_COMPLETIONS, ImageCompletionTask, score_test_episodes
from plastic_rl.supervised.model_files import cached_test_scores, load_model, load_task
from plastic_rl.supervised.models import plastic_layers

Z_95 = 1.96


def _interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval."""
    return float(values.mean()), float(Z_95 * values.std(ddof=1) / np.sqrt(len(values)))


def _figure_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def completion_grid(task: ImageCompletionTask, models: dict[str, torch.nn.Module], seed: int, rows: int = 4):
    """Figure 4: per test episode, the shown images, the degraded query, each completion and the truth."""
    import matplotlib.pyplot as plt

    batch = task.sample_part("test", rows, np.random.default_rng([seed, 4]))
    side = task.protocol.image_side
    with torch.no_grad():
        completions = {label: model(batch.inputs)[-1] for label, model in models.items()}
    shown = task.protocol.schedule.first_showing(batch.inputs)
    columns = [f"shown {index + 1}" for index in range(len(shown))] + ["query", *completions, "truth"]
    figure, axes = plt.subplots(
        rows, len(columns), figsize=(1.4 * len(columns), 1.5 * rows), squeeze=False, layout="constrained"
    )
    for row in range(rows):
        pictures = [
            *shown[:, row],
            batch.inputs[-1, row],
            *(c[row] for c in completions.values()),
            batch.targets[-1, row],
        ]
        for column, (title, picture) in enumerate(zip(columns, pictures, strict=True)):
            axis = axes[row, column]
            axis.imshow(picture.reshape(side, side).numpy(), cmap="gray", vmin=-1, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
    figure.suptitle("Test images (never seen in training): completion of the hidden half", fontsize=9)
    return figure


def matrix_figure(model: torch.nn.Module, zoom: int = 96, offsets: int = 70):
    """Figure 5: ``w`` and ``alpha`` of the model's plastic layer: whole, zoomed, and by pixel offset.

    The third panel is the mean connection from pixel ``i`` to pixel ``i + d`` against ``d``: a
    neighbourhood structure shows as peaks at ``d = ±1`` (left/right neighbours) and ``±32`` (above/below).
    """
    import matplotlib.pyplot as plt

    layer = next(iter(plastic_layers(model).values()))
    parameters = {"w": layer.weight, "alpha": layer.plasticity_coefficient}
    matrices = {name: m.detach().float().numpy() for name, m in parameters.items() if m is not None and m.dim() == 2}
    figure, axes = plt.subplots(
        len(matrices), 3, figsize=(15, 4.5 * len(matrices)), squeeze=False, layout="constrained"
    )
    pixels = min(len(matrix) for matrix in matrices.values()) - 1  # without the bias neuron
    shifts = np.concatenate([np.arange(-offsets, 0), np.arange(1, offsets + 1)])  # d = 0 (self) left out
    for row, (name, matrix) in enumerate(matrices.items()):
        scale = np.percentile(np.abs(matrix), 99.5) or 1.0
        for column, (part, title) in enumerate(((matrix, "all neurons"), (matrix[:zoom, :zoom], f"first {zoom}"))):
            image = axes[row, column].imshow(part, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
            axes[row, column].set_title(f"{name} ({title}; from row to column)", fontsize=9)
            figure.colorbar(image, ax=axes[row, column], fraction=0.046)
        profile = [np.diagonal(matrix[:pixels, :pixels], offset=int(d)).mean() for d in shifts]
        axes[row, 2].plot(shifts, profile, marker=".", linestyle="none")
        axes[row, 2].axhline(0, color="grey", lw=0.5)
        axes[row, 2].set_title(f"mean {name} from pixel i to pixel i + d", fontsize=9)
        axes[row, 2].set_xlabel("d (±1: left/right neighbour, ±32: above/below)")
    return figure


def curve_figure(curves: dict[str, list[Path]]):
    """Figure 6: the hidden-pixel error on validation images during training, one line per run, a colour per label."""
    import csv

    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (label, paths) in enumerate(curves.items()):
        for run, path in enumerate(paths):
            with open(path) as file:
                rows = [row for row in csv.DictReader(file) if row.get("eval_hidden_mse")]
            episodes = [int(row["episodes"]) for row in rows]
            axis.plot(episodes, [float(row["eval_hidden_mse"]) for row in rows], color=f"C{index}",
                      label=label if run == 0 else None)  # fmt: skip
    axis.set_xlabel("training episodes")
    axis.set_ylabel("hidden-half MSE, validation images")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


ERASURE_FIELDS = ("degradation", "degraded_fraction", "degraded_fraction_max")


class ImageModels(NamedTuple):
    """The models of a report by label, each with the protocol it was trained on, and the first one's task."""

    task: ImageCompletionTask
    models: dict[str, torch.nn.Module]
    protocols: dict[str, ImageCompletionProtocol]


def load_image_models(paths: dict[str, Path], same_erasure: bool = True) -> ImageModels:
    """Every model by label; a ``ValueError`` unless all are image-completion models trained on one protocol (apart
    from the erasure, unless ``same_erasure``)."""
    tasks = {label: load_task(path) for label, path in paths.items()}
    if not all(isinstance(task, ImageCompletionTask) for task in tasks.values()):
        raise ValueError("--models must be image-completion models")
    protocols = {label: erasure_normalized(task.protocol) for label, task in tasks.items()}  # type: ignore[attr-defined]
    first = next(iter(protocols.values()))
    erasure = {field: getattr(first, field) for field in ERASURE_FIELDS}
    if any(replace(protocol, **erasure) != first for protocol in protocols.values()):
        raise ValueError("--models must have been trained on one protocol, apart from the erasure (--image-counts "
                         "and --erasures score them on others)")  # fmt: skip
    if same_erasure and any(protocol != first for protocol in protocols.values()):
        raise ValueError("--models were trained on different erasures: give --erasures to score them on the same ones")
    models = {label: load_model(path) for label, path in paths.items()}
    return ImageModels(next(iter(tasks.values())), models, protocols)  # type: ignore[arg-type]


def erasure_normalized(protocol: ImageCompletionProtocol) -> ImageCompletionProtocol:
    """``protocol`` with the fraction that a half-image erasure does not use at its default, so that two protocols
    that hide the same pixels compare equal."""
    if protocol.degradation == "random_pixels":
        return protocol
    return replace(protocol, degraded_fraction=ImageCompletionProtocol.degraded_fraction, degraded_fraction_max=None)


def erasure_label(protocol: ImageCompletionProtocol) -> str:
    """How ``protocol`` hides pixels: ``top_bottom``, ``left_right``, ``random_pixels 0.25`` or ``random_pixels
    0.25-0.75`` (a fraction drawn per query)."""
    if protocol.degradation != "random_pixels":
        return protocol.degradation
    if protocol.degraded_fraction_max is None:
        return f"random_pixels {protocol.degraded_fraction:g}"
    return f"random_pixels {protocol.degraded_fraction:g}-{protocol.degraded_fraction_max:g}"


def erasure_settings(text: str) -> dict[str, Any]:
    """The protocol's settings for an ``--erasures`` word: a half-image degradation's name, or a fraction of the
    pixels hidden at random."""
    if text in DEGRADATIONS and text != "random_pixels":
        return dict(degradation=text, degraded_fraction_max=None)
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ValueError(f"--erasures takes top_bottom, left_right or fractions in (0, 1) of pixels hidden at random; "
                         f"got {text!r}")  # fmt: skip
    return dict(degradation="random_pixels", degraded_fraction=fraction, degraded_fraction_max=None)


class Score(NamedTuple):
    """One method's test scores at one image count and erasure: means and the half-widths of their 95% CIs."""

    image_count: int
    erasure: str
    method: str
    episodes: int
    hidden_mse: float
    hidden_mse_ci95: float
    closer_fraction: float
    closer_fraction_ci95: float

    @property
    def kind(self) -> str:
        return "reference" if self.method in REFERENCE_COMPLETIONS else "model"


def score_protocols(
    models: ImageModels,
    paths: dict[str, Path],
    image_counts: list[int],
    erasures: list[dict[str, Any]],
    episodes: int,
    seed: int,
) -> Iterator[Score]:
    """The scores of the references and the models, per image count and erasure (:func:`erasure_settings`; ``{}``:
    the first model's), on the same ``episodes`` test episodes each (a model on the protocol it was trained on: those
    of its model file, measured once)."""
    task = models.task
    for count, erasure in itertools.product(image_counts, erasures):
        protocol = erasure_normalized(replace(task.protocol, image_count=count, **erasure))
        varied = (
            task if protocol == task.protocol else ImageCompletionTask(data_dir=task.data_dir, **protocol.as_dict())
        )
        own = {label for label, trained in models.protocols.items() if trained == protocol}
        fresh = {label: model for label, model in models.models.items() if label not in own}
        scored = score_test_episodes(varied, fresh, episodes, seed)
        for label in own:  # the scores a study's summary measured, if it did
            cached = cached_test_scores(paths[label], episodes, seed, task.data_dir)
            scored[label] = {"hidden_mse": cached["hidden_mse"], "closer": cached["closer_fraction"]}
        references = [label for label in scored if label not in models.models]
        for label in [*references, *models.models]:
            values = scored[label]
            mse, mse_ci = _interval(values["hidden_mse"])
            closer, closer_ci = _interval(values["closer"].astype(np.float64))
            yield Score(count, erasure_label(protocol), label, len(values["closer"]), mse, mse_ci, closer, closer_ci)


def _scattered_fraction(erasure: str) -> float | None:
    """The fraction of an :func:`erasure_label` of pixels hidden at random, one fraction (else None)."""
    kind, _, fraction = erasure.partition(" ")
    try:
        return float(fraction) if kind == "random_pixels" else None
    except ValueError:  # a range, "0.25-0.75"
        return None


def erasure_figure(scores: list[Score]):
    """Hidden-pixel error against the fraction of pixels hidden at random, a line per model and reference (95% CIs),
    a panel per image count with two or more fractions scored; None if there is none."""
    import matplotlib.pyplot as plt

    scattered = {s: _scattered_fraction(s.erasure) for s in scores}
    by_count: dict[int, list[tuple[float, Score]]] = {}
    for score, fraction in scattered.items():
        if fraction is not None:
            by_count.setdefault(score.image_count, []).append((fraction, score))
    counts = [count for count, points in by_count.items() if len({fraction for fraction, _ in points}) >= 2]
    if not counts:
        return None
    figure, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 4), squeeze=False, layout="constrained")
    for axis, count in zip(axes[0], counts, strict=True):
        for method in dict.fromkeys(score.method for _, score in by_count[count]):
            points = sorted(((f, s) for f, s in by_count[count] if s.method == method), key=lambda point: point[0])
            style = "--" if points[0][1].kind == "reference" else "-"
            axis.errorbar([f for f, _ in points], [s.hidden_mse for _, s in points],
                          yerr=[s.hidden_mse_ci95 for _, s in points], linestyle=style, marker="o", capsize=3,
                          label=method)  # fmt: skip
        axis.set_xlabel("fraction of pixels hidden at random")
        axis.set_ylabel("hidden-pixel MSE, test images")
        axis.set_title(f"{count} images per episode; dashed: references (no training)", fontsize=9)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return figure


def write_report(
    out: Path,
    scores: list[Score],
    task: ImageCompletionTask,
    models: dict[str, torch.nn.Module],
    curves: dict[str, list[Path]],
    seed: int,
) -> list[str]:
    """Write ``summary.csv``, the figures and their TensorBoard events into ``out``; returns the figures' names."""
    rows = [",".join(Score._fields)]
    rows += [f"{s.image_count},{s.erasure},{s.method},{s.episodes},{s.hidden_mse:.5f},{s.hidden_mse_ci95:.5f},"
             f"{s.closer_fraction:.4f},{s.closer_fraction_ci95:.4f}" for s in scores]  # fmt: skip
    atomic_write_text(out / "summary.csv", "\n".join(rows) + "\n")
    figures = {"fig4_completions": completion_grid(task, models, seed)}
    plastic = [model for model in models.values() if plastic_layers(model)]
    if plastic:
        figures["fig5_matrices"] = matrix_figure(plastic[0])
    if curves:
        figures["fig6_curves"] = curve_figure(curves)
    erasures = erasure_figure(scores)
    if erasures is not None:
        figures["fig7_erasures"] = erasures
    for stale in out.glob("fig*.png"):
        if stale.stem not in figures:
            stale.unlink()  # an earlier report's figure, which this one does not draw
    for events in (out / "tensorboard").glob("events.out.tfevents.*"):
        events.unlink()  # an earlier report's figures, which TensorBoard would show beside these
    writer = SummaryWriter(str(out / "tensorboard"))
    for name, figure in figures.items():
        atomic_write_bytes(out / f"{name}.png", _figure_bytes(figure))
        writer.add_figure(name, figure)
    writer.close()
    return list(figures)
