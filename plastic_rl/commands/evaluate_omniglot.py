"""``plastic-rl evaluate omniglot MODEL``: a trained model's accuracy on its own split's test classes, with a 95% CI.

Prints a short table; ``--out FILE.json`` also writes the full report (the task's settings and each score).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from plastic_rl.core.files import atomic_write_text
from plastic_rl.core.options import reported_as_bad_input
from plastic_rl.data.omniglot import PARTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model.pt or checkpoint.pt of a `plastic-rl supervised omniglot` run")
    parser.add_argument("--part", choices=PARTS, default="test", help="which classes of the model's split")
    parser.add_argument("--episodes", type=int, default=1000, help="fresh episodes (one query each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument(
        "--ways", type=int, help="classes per episode (default: the model's; a plastic or linear head: at most its own)"
    )
    parser.add_argument("--shots", type=int, help="labelled drawings per class (default: the model's)")
    parser.add_argument("--nearest-neighbour", action="store_true", help="also score nearest neighbour on its features")
    parser.add_argument("--data-dir", help="dataset folder (default: the one the model was trained with)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", metavar="FILE.json", help="also write the full report as JSON")


def _report(args: argparse.Namespace) -> dict[str, Any]:
    """The model's scores on the options' episodes, with the task's settings: the JSON report of ``--out``."""
    from plastic_rl.supervised.model_files import load_model, load_task
    from plastic_rl.supervised.omniglot import OmniglotClassifier, OmniglotTask, evaluate

    task = load_task(args.model)
    model = load_model(args.model, args.device)
    if not isinstance(task, OmniglotTask) or not isinstance(model, OmniglotClassifier):
        raise ValueError(f"{args.model} is not an Omniglot model")
    if args.data_dir is not None:
        task.data_dir = args.data_dir
    task = task.like(args.ways, args.shots, queries=1)  # test scores use one query per episode
    options = dict(part=args.part, episodes=args.episodes, seed=args.seed)
    report: dict[str, Any] = {"model": args.model, **task.config(), **options}
    try:
        report["head"] = evaluate(model, task, **options)
    except ValueError as error:  # more classes than the head has units: the nearest neighbour may still score
        if not args.nearest_neighbour:
            raise
        report["head_skipped"] = str(error)
    if args.nearest_neighbour:
        report["nearest_neighbour"] = evaluate(model, task, nearest_neighbour=True, **options)
    return report


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    with reported_as_bad_input():
        report = _report(args)
    print(
        f"{args.model}: {report['ways']}-way {report['shots']}-shot, {args.episodes:,} episodes of the {args.part} "
        f"classes (seed {args.seed})"
    )
    if "head_skipped" in report:
        print(f"  head not scored: {report['head_skipped']}")
    for name in ("head", "nearest_neighbour"):
        if name in report:
            score = report[name]
            label = "plastic head" if name == "head" else "nearest neighbour"
            print(f"  {label:<18} {score['accuracy']:.1%} ± {score['ci95']:.1%} (95% CI)")
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")  # a fault is reported by the CLI
        print(f"Saved {args.out}")
    return 0
