"""A study's summary: final scores with their statistics, and learning curves, as CSV, PNG and Markdown.

Writes into the study folder ``finals.csv`` (each run's final score), ``curves.csv`` and
``curves.png`` (median and interquartile range across seeds, per condition, like the paper's
figures), the same for each further curve of the task (``curves_<label>.csv/png``: the maze's held-out
reward and signature, a supervised task's evaluations) and ``summary.md`` (the table of medians and IQMs with
95% confidence intervals, and the rank-sum tests between conditions).
"""

from __future__ import annotations

import csv
import io
import re
import textwrap
import warnings
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
    estimate,
    median_score,
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
    """The x of the runs' common prefix and the median, 25th and 75th percentiles of y there, ``(3, n)``, over the
    runs whose y is not NaN at that point (NaN where none is)."""
    length = min(len(curve.x) for curve in curves)
    x = curves[0].x[:length]
    values = np.stack([curve.y[:length] for curve in curves])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point where every run is NaN: NaN, said by the plot
        return x, np.nanpercentile(values, [50, 25, 75], axis=0)


def _write_curves(
    root: Path, stem: str, title: str, labels: dict[str, str], log_scale: bool, groups: dict[str, list[Curve]]
) -> None:
    """``<stem>.csv`` and ``<stem>.png``: the median and IQR over each group's runs of their curves."""
    rows, aggregated = [], {}
    for group, curves in groups.items():
        x, (median, q25, q75) = aggregated[group] = aggregate_curves(curves)
        for point in zip(x, median, q25, q75, strict=True):
            rows.append([group, f"{point[0]:g}", *(f"{value:.6g}" for value in point[1:]), len(curves)])
    header = ["condition", "episodes", "median", "q25", "q75", "runs"]
    atomic_write_text(root / f"{stem}.csv", _csv_text(header, rows))
    _plot(root / f"{stem}.png", title, labels, log_scale, aggregated, max(len(curves) for curves in groups.values()))


def curve_file_stem(label: str) -> str:
    """The file name (without suffix) of the further curve whose y axis is ``label``."""
    return "curves_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


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
    ``curve`` (a :class:`Curve`), ``wall_s``, ``folder`` and optionally ``details`` (``{label: value}``:
    tabulated per condition, and as columns of ``finals.csv``) and ``further_curves`` (``{y label: Curve}``: each
    label's curves aggregated per condition in :func:`curve_file_stem` ``.csv`` and ``.png``).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["group"], []).append(run)
    scores = {group: [run["score"] for run in members] for group, members in groups.items()}

    detail_labels = list(dict.fromkeys(label for run in runs for label in run.get("details", {})))
    finals = [
        [run["group"], run["seed"], f"{run['score']:.6g}", run["wall_s"], run["folder"]]
        + [f"{run['details'][label]:.6g}" if label in run.get("details", {}) else "" for label in detail_labels]
        for run in runs
    ]
    finals_header = ["condition", "seed", "final_score", "wall_s", "folder", *detail_labels]
    atomic_write_text(root / "finals.csv", _csv_text(finals_header, finals))
    _write_curves(
        root,
        "curves",
        title,
        labels,
        log_scale,
        {group: [run["curve"] for run in members] for group, members in groups.items()},
    )
    for label in dict.fromkeys(label for run in runs for label in run.get("further_curves", {})):
        further: dict[str, list[Curve]] = {}
        for group, members in groups.items():
            curves = [run["further_curves"][label] for run in members if label in run.get("further_curves", {})]
            if curves and min(len(curve.x) for curve in curves) > 0:
                further[group] = curves
        if further:
            _write_curves(root, curve_file_stem(label), title, {**labels, "y": label}, log_scale, further)

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
    if detail_labels:
        lines += _details_table(groups, detail_labels)
    text = "\n".join(lines) + "\n"
    atomic_write_text(root / "summary.md", text)
    return text


def _details_table(groups: dict[str, list[dict[str, Any]]], labels: list[str]) -> list[str]:
    """The runs' further measurements per condition (median over runs [95% CI]) and their rank-sum p-values."""
    values = {
        label: {group: [run["details"][label] for run in members if label in run.get("details", {})]
                for group, members in groups.items()}
        for label in labels
    }  # fmt: skip
    lines = ["", "Further measurements of each run: median over runs [95% CI].", ""]
    lines += ["| condition | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for group in groups:
        cells = [_with_interval(estimate(values[label][group], median_score)) if values[label][group] else "—"
                 for label in labels]  # fmt: skip
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    tests = {label: rank_sum_tests(values[label]) for label in labels}
    pairs = [f"{test.first} vs {test.second}" for test in tests[labels[0]]]
    if pairs:
        lines += ["", "Their two-sided rank-sum p-values:", ""]
        lines += ["| conditions | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for index, pair in enumerate(pairs):
            lines.append(f"| {pair} | " + " | ".join(f"{tests[label][index].p_value:.3g}" for label in labels) + " |")
    return lines


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
    if log_scale:  # errors over training episodes on log-log axes, as in the paper's Figure 3
        axis.set_xscale("log")
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
