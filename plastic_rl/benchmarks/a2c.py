"""``plastic-rl bench a2c``: training throughput of PlasticA2C's whole ``learn()`` loop on the maze.

For each number of envs it times the training path (``make_training_env``: the batched maze, the lean rollout
step that records the core's forward, and ``train()`` differentiating the recording) and, in the same run, the
per-step path it replaced (``DummyVecEnv`` of single mazes, SB3's distribution object and ``RolloutBuffer.add`` at
every step, a fresh trace per step, ``train()`` unrolling the forward again:
:class:`~plastic_rl.benchmarks.a2c_runs.ReferencePlasticA2C`), and prints env steps per second, the ratio, where the
time goes and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
from typing import Any

from plastic_rl.agents.hyperparameters import POLICIES, check_env_id
from plastic_rl.core.options import (
    BadInputError,
    check_device,
    non_negative_int,
    positive_int,
    reported_as_bad_input,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        nargs="+",
        default=["plastic"],
        choices=list(POLICIES),
        help="policy conditions, timed in the same run (the ratios are to the first)",
    )
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument(
        "--n-envs", type=positive_int, nargs="+", default=[32, 64, 128], help="envs (episodes per update)"
    )
    parser.add_argument("--n-steps", type=positive_int, default=250, help="steps per env per update")
    parser.add_argument("--hidden-size", type=positive_int, default=200, help="recurrent neurons")
    parser.add_argument("--updates", type=positive_int, default=5, help="timed updates (the median is reported)")
    parser.add_argument("--warmup-updates", type=non_negative_int, default=1, help="untimed updates first")
    parser.add_argument(
        "--reference-updates", type=non_negative_int, default=2, help="timed updates of the previous path (0: skip it)"
    )
    parser.add_argument(
        "--autograd-updates",
        type=non_negative_int,
        default=0,
        help="timed updates with the plastic core on its autograd loop (0: skip it)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    import torch as th

    from plastic_rl.benchmarks.a2c_runs import TimedRun
    from plastic_rl.core.memory import peak_bytes

    with reported_as_bad_input():
        check_device("--device", args.device)
        check_env_id(args.env)
    if args.threads is not None:
        th.set_num_threads(args.threads)
    print(
        f"PlasticA2C on {args.env}, policies {', '.join(args.policy)}, hidden {args.hidden_size}, "
        f"n_steps {args.n_steps}, {th.get_num_threads()} torch thread(s), device {args.device}; median of "
        f"{args.updates} update(s) ({args.reference_updates} for the previous path, {args.autograd_updates} with the "
        "autograd core), the updates of every path interleaved"
    )
    if args.autograd_updates and "lstm" in args.policy:
        raise BadInputError("--autograd-updates times a plastic core's autograd loop: leave 'lstm' out of --policy")
    if args.autograd_updates and len(args.policy) > 1:
        # An autograd update holds about 24 T B N^2 bytes (twice that with an eligibility trace: 15 GB at the maze's
        # sizes), and the process keeps what it freed: two of them in one process ran a 24 GB machine out of memory.
        raise BadInputError("--autograd-updates times one policy at a time: give a single --policy")
    for n_envs in args.n_envs:
        runs, updates, first_peaks = {}, {}, {}
        for policy in args.policy:  # each new path's first update before any other path: its peak memory so far
            runs[policy] = TimedRun(args, policy, n_envs, reference=False)
            for _ in range(args.warmup_updates):
                runs[policy].update(record=False)
            runs[policy].update()
            updates[policy], first_peaks[policy] = args.updates - 1, peak_bytes() / 2**20
        for policy in args.policy:
            for name, count, options in (
                ("previous path", args.reference_updates, dict(reference=True)),
                ("autograd core", args.autograd_updates, dict(reference=False, autograd_core=True)),
            ):
                if count > 0:
                    runs[(policy, name)] = TimedRun(args, policy, n_envs, **options)
                    updates[(policy, name)] = count
                    for _ in range(args.warmup_updates):
                        runs[(policy, name)].update(record=False)
        # Interleaved, so that a busy spell of a shared machine slows every path rather than one.
        for index in range(max(updates.values())):
            for key, timed_run in runs.items():
                if index < updates[key]:
                    timed_run.update()
        for policy in args.policy:
            print(_line(n_envs, policy, runs, args.policy[0], first_peaks[policy]), flush=True)
        for timed_run in runs.values():
            timed_run.env.close()
        print(f"peak memory of the process so far {peak_bytes() / 2**20:,.0f} MiB", flush=True)
    return 0


def _line(n_envs: int, policy: str, runs: dict, first_policy: str, peak_mib: float) -> str:
    """One policy's figures: its steps per second, where the time goes, its peak memory, and its ratios to the
    other paths of the same policy and to the first policy's new path."""
    new = runs[policy].summary()
    line = (
        f"n_envs {n_envs:4d}, {policy}: {new['steps_per_second']:9,.0f} env steps/s "
        f"({new['seconds_per_update']:.3f} s per update, range {new['spread'][0]:.3f}-{new['spread'][1]:.3f}); "
        f"env {100 * new['env']:4.1f} %, policy + buffer {100 * (new['rollout'] - new['env']):4.1f} %, "
        f"train() {100 * (1 - new['rollout']):4.1f} %; peak memory (max RSS) after its first update {peak_mib:,.0f} MiB"
    )
    if policy != first_policy:
        first = runs[first_policy].summary()
        line += f"; {new['seconds_per_update'] / first['seconds_per_update']:.2f}x {first_policy}'s seconds per update"
    for name in ("previous path", "autograd core"):
        if (policy, name) in runs:
            other = runs[(policy, name)].summary()
            line += (
                f"; {name} {other['steps_per_second']:,.0f} env steps/s ({other['seconds_per_update']:.3f} s per "
                f"update): {new['steps_per_second'] / other['steps_per_second']:.2f}x, "
                f"{_outside_env(other) / _outside_env(new):.2f}x outside env stepping"
            )
    return line


def _outside_env(summary: dict[str, Any]) -> float:
    """Seconds per update spent outside the envs: the previous path steps single mazes, which now run the batched
    rules as a batch of one (several times slower than the batched form per maze), so its whole-update ratio
    credits the new path with env time it did not save."""
    return summary["seconds_per_update"] * (1 - summary["env"])
