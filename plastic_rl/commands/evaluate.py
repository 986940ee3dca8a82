"""``plastic-rl evaluate``: a trained agent against a random policy on held-out episodes.

Loads the latest run (or ``--exp-id N``, or ``--model PATH``) of ``--env`` under ``LOGDIR/<algo>/<env>_<N>/``, or a
pretrained agent shipped with the package (``--pretrained maze``), runs it and a uniformly random policy on the same
held-out episodes (env seeds never used in training, see :mod:`plastic_rl.agents.evaluation`) — with ``--lesion``,
also the agent with its plasticity taken out (:func:`~plastic_rl.core.lesion.remove_plasticity`) —, prints the table and
writes the statistics (JSON; a pretrained agent's to ``pretrained_<name>_evaluation.json`` here) and every episode
(CSV).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from plastic_rl.agents.evaluation import (
    DEFAULT_EPISODES,
    HELD_OUT_FIRST_SEED,
    evaluate,
    format_table,
    held_out_seeds,
    write_results,
)
from plastic_rl.agents.hyperparameters import algorithm_class, parse_key_values
from plastic_rl.agents.run_folders import RUN_CONFIG, read_run_config
from plastic_rl.commands.run_selection import add_run_selection, selected_model
from plastic_rl.core.options import reported_as_bad_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_selection(parser, model_file=True)
    parser.add_argument("--n-episodes", type=int, default=DEFAULT_EPISODES, help="held-out episodes")
    parser.add_argument(
        "--first-seed", type=int, default=HELD_OUT_FIRST_SEED, help="env seeds are first-seed, first-seed + 1, ..."
    )
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        default=None,
        metavar="KEY:VALUE",
        help="env kwargs over the run's own, e.g. part:test (Omniglot's test classes)",
    )
    parser.add_argument("--deterministic", action="store_true", help="take the most likely actions")
    parser.add_argument("--no-random", action="store_true", help="skip the random policy")
    parser.add_argument(
        "--lesion",
        action="store_true",
        help="also the agent with its plasticity taken out (alpha = 0: the traces form but no longer act), on the same "
        "episodes: what its learning within the episode contributes",
    )
    parser.add_argument(
        "--out", default=None, metavar="PATH.json", help="statistics file (default: <run folder>/evaluation.json)"
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from plastic_rl.core.lesion import remove_plasticity

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with reported_as_bad_input():
        model_path, folder = selected_model(args)
        if not (folder / RUN_CONFIG).is_file():
            raise ValueError(f"no {RUN_CONFIG} beside {model_path}: evaluate a model of a plastic-rl train run")
        config = read_run_config(folder)
        model = algorithm_class(config["algo"]).load(model_path, device=args.device)
        if args.lesion:
            lesioned = algorithm_class(config["algo"]).load(model_path, device=args.device)
            if not remove_plasticity(lesioned.policy):
                raise ValueError(
                    f"--lesion needs a plastic policy; {model_path} ({config['policy']}) has no plasticity"
                )
        seeds = held_out_seeds(args.n_episodes, args.first_seed)
        env_kwargs = {
            **(config["hyperparameters"].get("env_kwargs") or {}),
            **parse_key_values(args.env_kwargs, "--env-kwargs"),
        }
    print(f"Evaluating {model_path} ({config['algo']}, policy {config['policy']}, seed {config['seed']})")
    results = [evaluate(model, config["env"], env_kwargs, seeds=seeds, deterministic=args.deterministic,
                        name="trained agent")]  # fmt: skip
    if args.lesion:
        results.append(evaluate(lesioned, config["env"], env_kwargs, seeds=seeds, deterministic=args.deterministic,
                                name="plasticity lesioned"))  # fmt: skip
    if not args.no_random:
        results.append(evaluate("random", config["env"], env_kwargs, seeds=seeds, name="random policy"))
    print(format_table(results))
    default_out = (
        Path(f"pretrained_{args.pretrained}_evaluation.json") if args.pretrained else folder / "evaluation.json"
    )
    out = Path(args.out) if args.out else default_out
    metadata = {"model": str(model_path), "algo": config["algo"], "env": config["env"], "env_kwargs": env_kwargs,
                "policy": config["policy"], "training_seed": config["seed"]}  # fmt: skip
    write_results(results, out, metadata)
    print(f"Saved {out} and {out.with_name(out.stem + '_episodes.csv')}")
    return 0
