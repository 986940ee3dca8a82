"""``plastic-rl experiment patterns``: the paper's Figure 3 comparison, several models and seeds.

Each (model, seed) run trains in its own folder under ``--out`` (TensorBoard, checkpoint, model file,
``curve.csv`` and ``run.json``); an interrupted experiment continues from its checkpoints when run
again, runs that have reached ``--steps`` are skipped, and a larger ``--steps`` extends them (a
resumed run keeps its own settings). The summary is rebuilt from every finished run in ``--out``, so
runs made by separate processes (e.g. one per condition) end up in one table and one plot:

- ``summary.csv``: per run, the episodes and training seconds at which the primary metric (the
  mean over a curve row's ``--log-interval`` training episodes) first reaches each threshold, and
  the final evaluation;
- ``curves.csv``: every run's curve, one row per logged step;
- ``curves.png``: the primary metric against episodes, per run.

``--summarize-only --include DIR [DIR ...]`` gathers the runs of other experiment folders (e.g. both
protocols) into ``--out``'s table and plot, each run labelled with its folder's name.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from plastic_rl.supervised.command import add_trainer_arguments, build_trainer, describe
from plastic_rl.supervised.task import get_task_class
from plastic_rl.supervised.trainer import write_history_csv

TASK_NAME = "patterns"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    task_class = get_task_class(TASK_NAME)
    parser.set_defaults(task=TASK_NAME)
    parser.add_argument(
        "--conditions",
        nargs="+",
        choices=task_class.model_names,
        default=list(task_class.model_names),
        help="models to compare",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per model and seed")
    parser.add_argument("--baseline-steps", type=int, help="steps for the non-default models (default: --steps)")
    parser.add_argument("--out", default=f"runs/experiment/{TASK_NAME}", help="experiment folder")
    parser.add_argument(
        "--thresholds", nargs="+", type=float, default=[0.05, 0.01], help="levels of the primary metric to time"
    )
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild the summary, table and plot")
    parser.add_argument(
        "--include", nargs="*", default=[], help="other experiment folders whose runs join the summary and plot"
    )
    add_trainer_arguments(parser, single_seed=False)
    task_class.add_arguments(parser)


def _steps(args: argparse.Namespace, condition: str) -> int:
    default_model = get_task_class(args.task).model_names[0]
    return args.steps if condition == default_model or args.baseline_steps is None else args.baseline_steps


def _run_one(args: argparse.Namespace, condition: str, seed: int, run_dir: Path, steps: int) -> None:
    checkpoint = run_dir / "checkpoint.pt"
    run_args = argparse.Namespace(**vars(args), seed=seed, resume=str(checkpoint) if checkpoint.exists() else None)
    trainer = build_trainer(run_args, run_dir, condition)
    print(f"\n== {condition}, seed {seed} -> {run_dir}\n{describe(trainer)}", flush=True)
    trainer.train(steps)
    trainer.save_model(run_dir / "model.pt")
    trainer.close()
    record = {
        "condition": condition,
        "seed": seed,
        "steps": trainer.step,
        "episodes": trainer.episodes,
        "train_s": round(trainer.train_seconds, 2),
        "wall_s": round(trainer.wall_seconds, 2),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "command": "plastic-rl " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("plastic-rl") else None,
        "device": str(trainer.device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "task_config": trainer.task.config(),
        "model_config": trainer.model.config,
        "settings": trainer.settings,
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))


def _read_curve(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as file:
        return [{name: float(value) for name, value in row.items() if value != ""} for row in csv.DictReader(file)]


def summarize(out: Path, metric: str, thresholds: list[float], included: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``curves.csv`` and ``curves.png`` into ``out`` from the finished runs in
    ``out`` and in the ``included`` experiment folders (each run labelled with its folder's name)."""
    summary: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for folder in [out, *included]:
        for record_path in sorted(Path(folder).glob("*/run.json")):
            record = json.loads(record_path.read_text())
            curve = _read_curve(record_path.parent / "curve.csv")
            run = {"experiment": Path(folder).resolve().name, "condition": record["condition"], "seed": record["seed"]}
            row: dict[str, Any] = {**run, **{name: record[name] for name in ("episodes", "train_s", "wall_s")}}
            for threshold in thresholds:
                reached = next((point for point in curve if point.get(metric, float("inf")) <= threshold), None)
                row[f"episodes_to_{threshold:g}"] = None if reached is None else int(reached["episodes"])
                row[f"train_s_to_{threshold:g}"] = None if reached is None else reached["train_s"]
            evaluated = [point for point in curve if f"eval_{metric}" in point]
            row[f"final_eval_{metric}"] = evaluated[-1][f"eval_{metric}"] if evaluated else None
            summary.append(row)
            curves.extend({**run, **point} for point in curve)
    if not summary:
        print(f"no finished runs in {out}")
        return summary
    out.mkdir(parents=True, exist_ok=True)
    write_history_csv(summary, out / "summary.csv")
    write_history_csv(curves, out / "curves.csv")
    _plot(curves, metric, out / "curves.png", label_experiments=bool(included))
    for row in summary:
        print(", ".join(f"{name}={value}" for name, value in row.items()))
    return summary


def _plot(curves: list[dict[str, Any]], metric: str, path: Path, label_experiments: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=90)
    runs = list(dict.fromkeys((point["experiment"], point["condition"], point["seed"]) for point in curves))
    for index, run in enumerate(runs):
        points = [point for point in curves if (point["experiment"], point["condition"], point["seed"]) == run]
        trained = [point for point in points if metric in point]
        evaluated = [point for point in points if f"eval_{metric}" in point]
        color = f"C{index % 10}"
        label = f"{run[1]} (seed {run[2]})" if not label_experiments else f"{run[0]}: {run[1]} (seed {run[2]})"
        axis.plot([p["episodes"] for p in trained], [p[metric] for p in trained], color=color, lw=1, label=label)
        axis.plot([p["episodes"] for p in evaluated], [p[f"eval_{metric}"] for p in evaluated], "o", color=color, ms=3)
    axis.set_yscale("log")
    axis.set_xlabel("training episodes")
    axis.set_ylabel(f"{metric} (line: training mean; dots: evaluation)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    metric = get_task_class(args.task).primary_metric
    if not args.summarize_only:
        started = time.perf_counter()
        try:
            for condition in args.conditions:
                for seed in args.seeds:
                    run_dir = out / f"{condition}-seed{seed}"
                    steps = _steps(args, condition)
                    record = run_dir / "run.json"
                    if record.exists() and json.loads(record.read_text())["steps"] >= steps:
                        print(f"{run_dir} has run {steps} steps; skipped")
                        continue
                    _run_one(args, condition, seed, run_dir, steps)
        except ValueError as error:
            print(f"plastic-rl experiment {args.task}: error: {error}", file=sys.stderr)
            return 2
        print(f"\nexperiment wall time {time.perf_counter() - started:.0f} s")
    summarize(out, metric, args.thresholds, [Path(folder) for folder in args.include])
    return 0
