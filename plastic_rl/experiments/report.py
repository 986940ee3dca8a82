"""A study's summary: final scores with their statistics, and learning curves, as CSV, PNG and Markdown.

Writes into the study folder ``finals.csv`` (each run's final score), ``curves.csv`` and
``curves.png`` (median and interquartile range across seeds, per condition, like the paper's
figures) and ``summary.md`` (the table of medians and IQMs with 95% confidence intervals, and the
rank-sum tests between conditions).
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plastic_rl.core.files import atomic_write, atomic_write_text
from plastic_rl.experiments.adapter import Curve
from plastic_rl.experiments.statistics import (
    SIGNIFICANCE,
    Estimate,
    condition_statistics,
    rank_sum_tests,
    seeds_needed,
)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value: float) -> str:
    return f"{value:.4g}"


def _with_interval(estimate: Estimate) -> str:
    if np.isnan(estimate.low):
        return _number(estimate.value)
    return f"{_number(estimate.value)} [{_number(estimate.low)}, {_number(estimate.high)}]"


def aggregate_curves(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """The x of the runs' common prefix and the median, 25th and 75th percentiles of y there, ``(3, n)``."""
    length = min(len(curve.x) for curve in curves)
    x = curves[0].x[:length]
    values = np.stack([curve.y[:length] for curve in curves])
    return x, np.percentile(values, [50, 25, 75], axis=0)


def write_summary(
    root: Path,
    title: str,
    header_lines: list[str],
    labels: dict[str, str],
    higher_is_better: bool,
    log_scale: bool,
    runs: list[dict[str, Any]],
) -> str:
    """Write the summary files of ``runs`` into ``root``; returns ``summary.md``'s text.

    Each run is a dict with ``group`` (condition, with its overrides), ``seed``, ``score``,
    ``curve`` (a :class:`Curve`), ``wall_s`` and ``folder``.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["group"], []).append(run)
    scores = {group: [run["score"] for run in members] for group, members in groups.items()}

    finals = [[run["group"], run["seed"], f"{run['score']:.6g}", run["wall_s"], run["folder"]] for run in runs]
    atomic_write_text(root / "finals.csv", _csv_text(["condition", "seed", "final_score", "wall_s", "folder"], finals))
    curve_rows, aggregated = [], {}
    for group, members in groups.items():
        x, (median, q25, q75) = aggregated[group] = aggregate_curves([run["curve"] for run in members])
        for point in zip(x, median, q25, q75, strict=True):
            curve_rows.append([group, f"{point[0]:g}", *(f"{value:.6g}" for value in point[1:]), len(members)])
    curve_header = ["condition", "episodes", "median", "q25", "q75", "runs"]
    atomic_write_text(root / "curves.csv", _csv_text(curve_header, curve_rows))
    _plot(root / "curves.png", title, labels, log_scale, aggregated, max(len(members) for members in groups.values()))

    better = "higher" if higher_is_better else "lower"
    lines = [f"# {title}", "", *header_lines, "", f"Final score: {labels['score']} ({better} is better).", ""]
    lines += ["| condition | runs | median [95% CI] | IQM [95% CI] | mean | per seed |", "|---|---|---|---|---|---|"]
    for group, members in groups.items():
        statistics = condition_statistics(scores[group])
        per_seed = ", ".join(f"{run['seed']}: {_number(run['score'])}" for run in members)
        lines.append(
            f"| {group} | {statistics.runs} | {_with_interval(statistics.median)} | {_with_interval(statistics.iqm)} "
            f"| {_number(statistics.mean)} | {per_seed} |"
        )
    lines += ["", "95% CIs: percentile bootstrap over runs (rliable's method); IQM: mean of the middle 50% of runs."]
    tests = rank_sum_tests(scores)
    if tests:
        lines += ["", "Two-sided Mann-Whitney U (rank-sum) tests of the final scores:", ""]
        lines += ["| conditions | U | p | smallest possible p |", "|---|---|---|---|"]
        lines += [f"| {t.first} vs {t.second} | {t.statistic:g} | {t.p_value:.3g} | {t.smallest_p_value:.3g} |"
                  for t in tests]  # fmt: skip
        powerless = [t for t in tests if t.smallest_p_value >= SIGNIFICANCE]
        if powerless:
            lines += [
                "",
                f"**Warning:** {len(powerless)} of these {len(tests)} tests cannot reach p < {SIGNIFICANCE:g} "
                f"with so few runs (the smallest p they can give is in the last column), so they cannot show "
                f"a difference: use at least {seeds_needed()} seeds per condition.",
            ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(root / "summary.md", text)
    return text


def _plot(
    path: Path,
    title: str,
    labels: dict[str, str],
    log_scale: bool,
    aggregated: dict[str, tuple[np.ndarray, np.ndarray]],
    seeds: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.4), dpi=100)
    for group, (x, (median, q25, q75)) in aggregated.items():
        (line,) = axis.plot(x, median, label=group)
        axis.fill_between(x, q25, q75, color=line.get_color(), alpha=0.2)
    if log_scale:
        axis.set_yscale("log")
    axis.set_xlabel(labels["x"])
    axis.set_ylabel(labels["y"])
    axis.set_title("\n".join(textwrap.wrap(f"{title}: median and IQR over {seeds} seeds", 70)), fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    plt.close(figure)
