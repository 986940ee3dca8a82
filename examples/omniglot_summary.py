"""Summarise `plastic-rl supervised omniglot` runs: test accuracy with 95% CI, and validation accuracy against time.

    python examples/omniglot_summary.py RUN_DIR [RUN_DIR ...] --out docs/results/omniglot --episodes 1000

For each run folder (holding model.pt and curve.csv) the final model is scored on ``--episodes``
fresh episodes of its own split's test classes (and, for plastic models, nearest neighbour on its
features); the validation curves (the trainer's evaluations) are drawn against training seconds.
Writes ``summary.csv``, ``curves.csv`` and ``validation_accuracy.png`` into ``--out``. With
``--settings 5x5 20x1 ...`` (WAYSxSHOTS) every model is also scored in those settings, where its head can
take them (a plastic head trained on N-way episodes scores up to N ways), into ``settings.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from plastic_rl.core.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from plastic_rl.core.options import positive_int  # noqa: E402
from plastic_rl.data import DataError  # noqa: E402
from plastic_rl.supervised import load_model, load_task  # noqa: E402
from plastic_rl.supervised.omniglot import evaluate  # noqa: E402

VALIDATION_LEVELS = (0.90, 0.95, 0.97, 0.98)


def _csv_text(rows: list[dict]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _setting(text: str) -> tuple[int, int]:
    ways, _, shots = text.partition("x")
    if not (ways.isdigit() and shots.isdigit()):
        raise argparse.ArgumentTypeError(f"a setting is WAYSxSHOTS, e.g. 20x5; got {text!r}")
    return int(ways), int(shots)


def _load_runs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple]:
    """Every run's task, model, curve and the settings it can take, checked before any scoring starts."""
    runs = []
    for run in args.runs:
        try:
            task, model = load_task(run / "model.pt"), load_model(run / "model.pt")
            with open(run / "curve.csv") as file:
                history = [line for line in csv.DictReader(file)]
            own = (task.ways, task.shots)
            settings = {}
            for ways, shots in args.settings:
                if (ways, shots) == own:
                    continue  # already its summary.csv row
                try:
                    model.check_ways(ways)
                except ValueError as refusal:
                    print(f"{run}: {ways}x{shots} skipped: {refusal}")
                    continue
                settings[ways, shots] = task.like(ways, shots, queries=1)
                settings[ways, shots].check_data()
        except (OSError, ValueError, DataError) as error:
            parser.error(f"{run}: {error}")
        if not history:
            parser.error(f"{run}: its curve.csv has no rows")
        runs.append((run, task, model, history, settings))
    return runs


def run_labels(runs: list[Path]) -> dict[Path, str]:
    """Each run's folder name, or, where names repeat (a study's seed_0, seed_1, ...), its path below the runs' common
    folder."""
    if len({run.name for run in runs}) == len(runs):
        return {run: run.name for run in runs}
    common = Path(os.path.commonpath([run.resolve() for run in runs]))
    return {run: run.resolve().relative_to(common).as_posix() for run in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=positive_int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="*", default=[], type=_setting, help="WAYSxSHOTS, e.g. 5x5 20x1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary, curves, other_settings = [], [], []
    figure, axes = plt.subplots(figsize=(6, 4))
    labels = run_labels(args.runs)
    for run, task, model, history, settings in _load_runs(parser, args):
        row = {"run": labels[run], "model": model.config["head"], "embedding": model.config["embedding"]}
        row.update({name: task.config().get(name, 1) for name in ("split", "ways", "shots", "queries")})
        evaluated = [line for line in history if line.get("eval_accuracy")]
        row["train_s"] = float(history[-1]["train_s"])
        for level in VALIDATION_LEVELS:  # time to reach each accuracy (first evaluation at or above it)
            reached = [float(line["train_s"]) for line in evaluated if float(line["eval_accuracy"]) >= level]
            row[f"s_to_validation_{level:.2f}"] = reached[0] if reached else ""
        row["episodes"] = int(history[-1]["episodes"])
        scores = evaluate(model, task, episodes=args.episodes, seed=args.seed)
        row.update(test_accuracy=round(scores["accuracy"], 4), test_ci95=round(scores["ci95"], 4))
        if model.config["head"] == "plastic":
            neighbour = evaluate(model, task, episodes=args.episodes, seed=args.seed, nearest_neighbour=True)
            row.update(nn_test_accuracy=round(neighbour["accuracy"], 4), nn_test_ci95=round(neighbour["ci95"], 4))
        summary.append(row)
        nearest = f", nearest neighbour {row['nn_test_accuracy']:.1%}" if "nn_test_accuracy" in row else ""
        setting = f"{row['ways']}-way {row['shots']}-shot, {row['episodes']:,} episodes in {row['train_s']:.0f} s"
        test = f"test {row['test_accuracy']:.1%} +/- {row['test_ci95']:.1%}{nearest}"
        print(f"{labels[run]} ({row['model']}, {setting}): {test}", flush=True)
        for (ways, shots), setting_task in settings.items():
            other = evaluate(model, setting_task, episodes=args.episodes, seed=args.seed)
            other_settings.append(
                {**{name: row[name] for name in ("run", "model", "split")}, "trained_ways": row["ways"],
                 "ways": ways, "shots": shots, "test_accuracy": round(other["accuracy"], 4),
                 "test_ci95": round(other["ci95"], 4)}
            )  # fmt: skip
            setting = other_settings[-1]
            print(f"  {ways}-way {shots}-shot: test {setting['test_accuracy']:.1%} +/- {setting['test_ci95']:.1%}")
        for line in evaluated:
            curves.append(
                {
                    "run": labels[run],
                    "step": line["step"],
                    "episodes": line["episodes"],
                    "train_s": line["train_s"],
                    "validation_accuracy": line["eval_accuracy"],
                }  # fmt: skip
            )
        axes.plot(
            [float(line["train_s"]) for line in evaluated],
            [float(line["eval_accuracy"]) for line in evaluated],
            marker="o",
            label=f"{labels[run]} (test {scores['accuracy']:.3f})",
        )
    settings_label = sorted({f"{row['ways']}-way {row['shots']}-shot" for row in summary})
    axes.set_xlabel("training seconds (the trainer's train_s)")
    axes.set_ylabel(f"validation accuracy, {', '.join(settings_label)}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.csv", _csv_text(summary))
    atomic_write_text(args.out / "curves.csv", _csv_text(curves))
    if other_settings:
        atomic_write_text(args.out / "settings.csv", _csv_text(other_settings))
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(args.out / "validation_accuracy.png", buffer.getvalue())


if __name__ == "__main__":
    main()
