"""A maze study's comparison from its committed held-out points: endpoints, statistics over seeds, curves.

    python examples/maze_study_report.py docs/results/maze/study-200k/stability.csv [MORE.csv ...] \
        --out docs/results/maze/study-200k/report

Reads the held-out reward and later gap / first hit that ``examples/maze_stability.py`` recorded for each run at each
evaluation point (``heldout_EPISODES`` columns, "reward / signature"), so that a study is scored from what was
committed even when its run folders are gone. A run's endpoint is the mean of its points at ``--points`` (the main
study's primary endpoint: 160,000, 180,000 and 200,000 episodes); a run without all of them is listed as unfinished
and left out. A run in a later table replaces the same run (condition and seed) of an earlier one: a run restarted
after its folder was lost. Writes ``endpoints.csv`` (a row per run), ``summary.md`` (median and IQM with 95%
bootstrap intervals per condition, two-sided rank-sum tests between every pair, for the reward and the signature) and
``heldout.png`` (median and interquartile range over seeds at each grid point). With ``--lesions``, the summary adds
a row per ``plastic-rl evaluate --lesion`` file: the trained agent beside itself with alpha = 0 on the same episodes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from plastic_rl.core.files import atomic_write, atomic_write_text  # noqa: E402
from plastic_rl.experiments.statistics import Estimate, condition_statistics, rank_sum_tests  # noqa: E402

MEASURES = {"reward": "held-out reward per episode", "signature": "held-out later gap / first hit"}
DECIMALS = {"reward": 1, "signature": 2}  # as the stability tables record them


def read_points(paths: list[Path]) -> tuple[dict[tuple[str, int], dict[int, tuple[float, float]]], list[str]]:
    """``{(condition, seed): {episodes: (reward, signature)}}`` from stability tables, and the rows replaced.

    A run in a later table replaces the same run of an earlier one (a run restarted after its folder was lost).
    """
    runs: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
    replaced = []
    for path in paths:
        seen = set()
        with open(path, newline="") as file:
            for line, row in enumerate(csv.DictReader(file), start=2):
                try:
                    run, points = _parse_row(row)
                except (KeyError, ValueError) as error:
                    raise ValueError(f"{path}, line {line}: {error}") from None
                if run in seen:
                    raise ValueError(f"{run[0]} seed {run[1]} is in {path} twice")
                seen.add(run)
                if run in runs:
                    replaced.append(f"{run[0]} {run[1]} by {path}")
                runs[run] = points
    return runs, replaced


def _parse_row(row: dict[str, str]) -> tuple[tuple[str, int], dict[int, tuple[float, float]]]:
    """``(condition, seed)`` from a ``run`` like ``study/plastic/seed_3`` and its ``heldout_EPISODES`` points."""
    if row.get("run") is None:
        raise ValueError("no 'run' column (a table of examples/maze_stability.py has one)")
    parts = row["run"].split("/")
    if len(parts) < 2 or not parts[-1].startswith("seed_"):
        raise ValueError(f"run must be .../CONDITION/seed_N; got {row['run']!r}")
    points = {}
    for key, value in row.items():
        if key and key.startswith("heldout_") and value:
            reward, separator, signature = value.partition(" / ")
            if not separator:
                raise ValueError(f"{key} must be 'REWARD / SIGNATURE'; got {value!r}")
            points[int(key.removeprefix("heldout_"))] = (float(reward), float(signature))
    return (parts[-2], int(parts[-1].removeprefix("seed_"))), points


def endpoints(
    runs: dict[tuple[str, int], dict[int, tuple[float, float]]], points: list[int]
) -> tuple[list[dict[str, object]], list[tuple[str, int]]]:
    """A row per run with every point in ``points`` (mean reward and signature over them); the other runs."""
    rows, unfinished = [], []
    for (condition, seed), measured in sorted(runs.items()):
        if all(point in measured for point in points):
            reward, signature = np.mean([measured[point] for point in points], axis=0)
            rows.append({"condition": condition, "seed": seed, "reward": reward, "signature": signature})
        else:
            unfinished.append((condition, seed))
    return rows, unfinished


def _interval(estimate: Estimate, decimals: int) -> str:
    return f"{estimate.value:.{decimals}f} [{estimate.low:.{decimals}f}, {estimate.high:.{decimals}f}]"


def summary(
    rows: list[dict[str, object]],
    unfinished: list[tuple[str, int]],
    replaced: list[str],
    points: list[int],
    sources: str,
) -> str:
    conditions = list(dict.fromkeys(str(row["condition"]) for row in rows))
    lines = [
        f"# Maze study from its held-out points ({sources})",
        "",
        f"Endpoint: a run's mean over its held-out points at {', '.join(f'{p:,}' for p in points)} episodes "
        "(rewards recorded to 0.1, signatures to 0.01).",
        f"Runs scored: {len(rows)}"
        + (f"; unfinished, left out: {', '.join(f'{c} {s}' for c, s in unfinished)}." if unfinished else "."),
    ]
    if replaced:
        lines.append(f"Rows replaced by a later table's: {'; '.join(replaced)}.")
    for measure, label in MEASURES.items():
        scores = {c: [float(r[measure]) for r in rows if r["condition"] == c] for c in conditions}  # type: ignore[arg-type]
        lines += ["", f"## {label}", "", "| condition | runs | median [95% CI] | IQM [95% CI] | mean | per seed |"]
        lines.append("|---|---|---|---|---|---|")
        for condition, values in scores.items():
            stats = condition_statistics(values)
            seeds = [r["seed"] for r in rows if r["condition"] == condition]
            digits = DECIMALS[measure]
            lines.append(
                f"| {condition} | {stats.runs} | {_interval(stats.median, digits)} | {_interval(stats.iqm, digits)} | "
                f"{stats.mean:.{digits}f} | "
                + ", ".join(f"{seed}: {value:.{digits}f}" for seed, value in zip(seeds, values, strict=True))
                + " |"
            )
        lines += ["", "| A vs B | U (of A) | p (two-sided rank-sum) | smallest possible p |", "|---|---|---|---|"]
        for test in rank_sum_tests(scores):
            pair = f"{test.first} vs {test.second}"
            lines.append(f"| {pair} | {test.statistic:g} | {test.p_value:.3g} | {test.smallest_p_value:.3g} |")
    lines += ["", "95% CIs: percentile bootstrap over runs; IQM: mean of the middle 50% of runs."]
    return "\n".join(lines) + "\n"


LESION_COLUMNS = {
    "reward_mean": ("reward", 1),
    "first_hit_steps_mean": ("steps to first hit", 1),
    "later_gap_mean": ("later gap", 1),
    "ratio_of_means": ("later gap / first hit", 2),
    "no_hit_episodes": ("episodes with no hit", 0),
}


def lesion_table(paths: list[Path]) -> list[str]:
    """A row per lesion evaluation: each statistic as trained -> plasticity lesioned."""
    header = " | ".join(label for label, _ in LESION_COLUMNS.values())
    lines = ["", "## Plasticity lesion (alpha = 0 in the trained agent, same episodes)", ""]
    lines += [f"| run | episodes | {header} |", "|---" * (len(LESION_COLUMNS) + 2) + "|"]
    for path in paths:
        record = json.loads(path.read_text())
        trained, lesioned = record["policies"]["trained agent"], record["policies"]["plasticity lesioned"]
        cells = [
            f"{trained[key]:.{digits}f} → {lesioned[key]:.{digits}f}" for key, (_, digits) in LESION_COLUMNS.items()
        ]
        lines.append(f"| {record['policy']} {record['training_seed']} | {trained['episodes']} | {' | '.join(cells)} |")
    return lines


def plot(runs: dict[tuple[str, int], dict[int, tuple[float, float]]], path: Path) -> None:
    """Median and interquartile range over seeds per condition at each grid point, for both measures."""
    conditions = list(dict.fromkeys(condition for condition, _ in sorted(runs)))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=90)
    for index, (axis, label) in enumerate(zip(axes, MEASURES.values(), strict=True)):
        for condition in conditions:
            measured = [points for (name, _), points in runs.items() if name == condition]
            # Grid points are those every run of the condition has (a resumed run's extra point is off the grid).
            grid = sorted(set.intersection(*(set(points) for points in measured)))
            values = np.array([[points[x][index] for x in grid] for points in measured])
            low, median, high = np.percentile(values, [25, 50, 75], axis=0)
            axis.plot(grid, median, marker="o", ms=3, label=f"{condition} ({len(measured)} runs)")
            axis.fill_between(grid, low, high, alpha=0.2)
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("training episodes")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="+", type=Path, help="stability.csv files of examples/maze_stability.py")
    parser.add_argument("--points", nargs="+", type=int, default=[160_000, 180_000, 200_000], help="endpoint episodes")
    parser.add_argument(
        "--lesions", nargs="*", type=Path, default=[], help="JSON files of plastic-rl evaluate --lesion"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for endpoints.csv, summary.md, heldout.png")
    args = parser.parse_args()
    for option, paths in (("tables", args.tables), ("lesions", args.lesions)):
        for path in paths:
            if not path.is_file():
                parser.error(f"{option}: {path} is not a file")
    try:
        runs, replaced = read_points(args.tables)
    except ValueError as error:
        parser.error(f"tables: {error}")
    if not runs:
        parser.error("tables: no rows")
    rows, unfinished = endpoints(runs, args.points)
    if not rows:
        parser.error(f"points: no run has held-out points at every one of {args.points}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["condition", "seed", "reward", "signature"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "reward": f"{row['reward']:.2f}", "signature": f"{row['signature']:.3f}"} for row in rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "endpoints.csv", buffer.getvalue())
    text = summary(rows, unfinished, replaced, args.points, ", ".join(str(table) for table in args.tables))
    try:
        text += "\n".join(lesion_table(args.lesions)) + "\n" if args.lesions else ""
    except (KeyError, ValueError) as error:
        parser.error(f"lesions: not a file of plastic-rl evaluate --lesion ({error})")
    atomic_write_text(args.out / "summary.md", text)
    plot({run: points for run, points in runs.items() if run not in unfinished}, args.out / "heldout.png")
    print(text)
    print(f"Wrote endpoints.csv, summary.md and heldout.png in {args.out}")


if __name__ == "__main__":
    main()
