"""``plastic-rl report images``: score image-completion models and the references on held-out test images, and draw
the paper's Figures 4-6.

    plastic-rl report images --models plastic=runs/.../model.pt [shared=...] \\
        --curves plastic=runs/.../curve.csv [shared=...] --episodes 1000 --out docs/results/images

Writes ``summary.csv``, the figures and their TensorBoard events into ``--out``; see
:mod:`plastic_rl.supervised.images_report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from plastic_rl.core.options import reported_as_bad_input


def _labelled(pairs: list[str], option: str) -> dict[str, list[Path]]:
    """``LABEL=PATH`` pairs as ``{label: [paths]}`` (a label may repeat: one run per seed)."""
    labelled: dict[str, list[Path]] = {}
    for pair in pairs:
        label, separator, path = pair.partition("=")
        if not separator or not label or not path:
            raise ValueError(f"{option} takes LABEL=PATH pairs; got {pair!r}")
        labelled.setdefault(label, []).append(Path(path))
    return labelled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", required=True, help="LABEL=PATH of trained model files or checkpoints")
    parser.add_argument(
        "--curves", nargs="*", default=[], help="LABEL=PATH of curve.csv files for Figure 6 (a label may repeat)"
    )
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per image count (at least 2)")
    parser.add_argument(
        "--image-counts", nargs="+", type=int, help="images per episode to score (at least 2; default: the models')"
    )
    parser.add_argument(
        "--erasures",
        nargs="+",
        metavar="ERASURE",
        help="pixels to hide: top_bottom, left_right, or a fraction in (0, 1) hidden at random (default: the models')",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test episodes")
    parser.add_argument("--data-dir", help="dataset folder (default: the one the first model was trained with)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="output folder")


def _check_once(option: str, words: list[Any], values: list[Any]) -> None:
    """Refuse a value given twice, however it is written (``0.5`` and ``0.50``)."""
    for index, value in enumerate(values):
        if value in values[:index]:
            first = words[values.index(value)]
            raise ValueError(f"{option} {first} and {words[index]} are the same; give each once")


def _model_paths(args: argparse.Namespace) -> dict[str, Path]:
    """``--models`` by label, each label once."""
    paths = {}
    for label, model_paths in _labelled(args.models, "--models").items():
        if len(model_paths) > 1:
            raise ValueError(f"--models label {label!r} is given more than once; each model needs its own label")
        paths[label] = model_paths[0]
    return paths


def _curve_paths(args: argparse.Namespace) -> dict[str, list[Path]]:
    """``--curves`` by label, each a curve file with evaluations."""
    curves = _labelled(args.curves, "--curves")
    for label, curve_paths in curves.items():
        for path in curve_paths:
            if not path.is_file() or "eval_hidden_mse" not in path.read_text().partition("\n")[0]:
                raise ValueError(f"--curves {label}={path}: not a curve.csv with evaluations (eval_hidden_mse); "
                                 "runs trained with --eval-interval 0 have none")  # fmt: skip
    return curves


def run(args: argparse.Namespace) -> int:
    import torch

    from plastic_rl.supervised.images import ImageCompletionTask
    from plastic_rl.supervised.images_report import erasure_settings, load_image_models, score_protocols, write_report

    torch.set_num_threads(args.threads)
    with reported_as_bad_input():
        if args.episodes < 2:
            raise ValueError(f"--episodes must be an integer >= 2; got {args.episodes}")
        if args.image_counts is not None and min(args.image_counts) < 2:
            raise ValueError(f"--image-counts must be integers >= 2 (one image leaves nothing to tell apart); "
                             f"got {args.image_counts}")  # fmt: skip
        erasures = [erasure_settings(text) for text in args.erasures or ()]
        _check_once("--image-counts", args.image_counts or [], args.image_counts or [])
        _check_once("--erasures", args.erasures or [], erasures)
        paths, curves = _model_paths(args), _curve_paths(args)
        loaded = load_image_models(paths, same_erasure=not erasures)
        protocol = loaded.task.protocol
        task = ImageCompletionTask(data_dir=args.data_dir or loaded.task.data_dir, **protocol.as_dict())
        models = loaded._replace(task=task)
        scores = []
        counts = args.image_counts or [protocol.image_count]
        for score in score_protocols(models, paths, counts, erasures or [{}], args.episodes, args.seed):
            scores.append(score)
            print(f"{score.image_count} images, {score.erasure}, {score.method:>8} ({score.kind}): hidden MSE "
                  f"{score.hidden_mse:.4f} ± {score.hidden_mse_ci95:.4f}, closer to the right image "
                  f"{score.closer_fraction:.3f} ± {score.closer_fraction_ci95:.3f}", flush=True)  # fmt: skip
    out = Path(args.out)
    figures = write_report(out, scores, task, models.models, curves, args.seed)
    print(f"written: {out / 'summary.csv'}, {', '.join(f'{name}.png' for name in figures)}, {out / 'tensorboard'}")
    return 0
