"""Learning-curve PNGs: written beside a run's CSVs, so a run can be judged without opening TensorBoard.

:func:`write_learning_curve` plots a ``plastic-rl train`` run from its monitor CSVs; :func:`plot_curves` is the
drawing both it and the experiment command use.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from plastic_rl.core.files import atomic_write_bytes

LEARNING_CURVE_FILE = "learning_curve.png"
ROLLING_EPISODES = 100


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of the last ``window`` values (fewer at the start) at each position."""
    sums = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot_curves(
    path: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    raw: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Draw labelled curves ``{label: (x, y)}`` into the PNG ``path`` (written atomically) and return it.

    ``bands`` (``{label: (low, high)}``, at the curve's x) shades an interval around a curve, e.g. a confidence
    interval over seeds; ``raw`` (``{label: (x, y)}``) draws the unsmoothed values faintly behind it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    for index, (label, (x, y)) in enumerate(curves.items()):
        colour = f"C{index}"
        if raw and label in raw:
            axes.plot(*raw[label], color=colour, alpha=0.2, linewidth=0.6)
        if bands and label in bands:
            axes.fill_between(x, *bands[label], color=colour, alpha=0.2, linewidth=0)
        axes.plot(x, y, color=colour, label=label, linewidth=1.8)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    if len(curves) > 1 or raw:
        axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def monitor_episodes(run_folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The env steps at which each episode of a run ended (summed over its envs) and the episode rewards, in the
    order the episodes ended, from the SB3 monitor CSVs in the run's folder and below (read directly: SB3's reader
    needs pandas); a ValueError that names a file that does not read."""
    episodes = []
    for path in sorted(Path(run_folder).rglob("*.monitor.csv")):
        with open(path, newline="") as file:
            next(file, None)  # the JSON header line
            try:
                episodes += [(float(row["t"]), int(row["l"]), float(row["r"])) for row in csv.DictReader(file)]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path} is not a readable monitor file ({error}); delete its run to train it again"
                ) from error
    episodes.sort(key=lambda episode: episode[0])
    lengths = np.array([length for _, length, _ in episodes], dtype=np.int64)
    return np.cumsum(lengths), np.array([reward for _, _, reward in episodes])


def write_learning_curve(run_folder: str | Path, title: str | None = None) -> Path | None:
    """Plot the episode rewards of a run's monitor CSVs (all envs, in time order) against the env steps, with
    their mean over the last :data:`ROLLING_EPISODES` episodes, into ``run_folder/learning_curve.png``.

    Returns the PNG's path, or ``None`` when no episode has ended yet (nothing to plot).
    """
    folder = Path(run_folder)
    steps, rewards = monitor_episodes(folder)
    if len(rewards) == 0:
        return None
    window = min(ROLLING_EPISODES, len(rewards))
    label = f"mean of the last {window} episodes"
    return plot_curves(
        folder / LEARNING_CURVE_FILE,
        {label: (steps, rolling_mean(rewards, window))},
        raw={label: (steps, rewards)},
        xlabel="env steps",
        ylabel="reward per episode",
        title=title or folder.name,
    )
