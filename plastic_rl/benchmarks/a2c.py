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

from plastic_rl.agents.configuration import POLICIES, check_env_id
from plastic_rl.core.options import check_device, non_negative_int, positive_int, reported_as_bad_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="plastic", choices=list(POLICIES), help="policy condition")
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
        f"PlasticA2C on {args.env}, policy {args.policy}, hidden {args.hidden_size}, n_steps {args.n_steps}, "
        f"{th.get_num_threads()} torch thread(s), device {args.device}; median of {args.updates} update(s) "
        f"({args.reference_updates} for the previous path), the two paths' updates interleaved"
    )
    for n_envs in args.n_envs:
        runs = {"new": TimedRun(args, n_envs, reference=False)}
        if args.reference_updates > 0:
            runs["previous"] = TimedRun(args, n_envs, reference=True)
        for timed_run in runs.values():
            for _ in range(args.warmup_updates):
                timed_run.update(record=False)
        # Interleaved, so that a busy spell of a shared machine slows both paths rather than one.
        for index in range(max(args.updates, args.reference_updates)):
            if index < args.updates:
                runs["new"].update()
            if "previous" in runs and index < args.reference_updates:
                runs["previous"].update()
        new = runs["new"].summary()
        line = (
            f"n_envs {n_envs:4d}: {new['steps_per_second']:9,.0f} env steps/s "
            f"({new['seconds_per_update']:.3f} s per update, range {new['spread'][0]:.3f}-{new['spread'][1]:.3f}); "
            f"env {100 * new['env']:4.1f} %, policy + buffer {100 * (new['rollout'] - new['env']):4.1f} %, "
            f"train() {100 * (1 - new['rollout']):4.1f} %"
        )
        if "previous" in runs:
            old = runs["previous"].summary()
            line += (
                f"; previous path {old['steps_per_second']:,.0f} env steps/s: "
                f"{new['steps_per_second'] / old['steps_per_second']:.2f}x"
            )
        for timed_run in runs.values():
            timed_run.env.close()
        peak_mib = peak_bytes() / 2**20
        print(f"{line}; peak memory so far (max RSS) {peak_mib:,.0f} MiB", flush=True)
    return 0
