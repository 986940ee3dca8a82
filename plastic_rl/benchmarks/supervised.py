"""What ``plastic-rl bench patterns`` and ``bench images`` share: seconds per episode and peak memory of a supervised
task's training.

Each batch size runs in a fresh process, so that its peak memory is its own: one warm-up step, then
``--repeats`` timed training steps (sampling, forward, backward, Adam), each timed on its own; the median
step is reported in wall-clock seconds and in CPU seconds of the process (all its threads; less sensitive to
other jobs on a shared machine). On CPU the peak is the process's peak resident memory (``ru_maxrss``, which
includes PyTorch itself: the ``base`` column is the resident memory once the model is built); on CUDA it is
``torch.cuda.max_memory_allocated``. A batch size whose memory, extrapolated from the largest batch
measured so far, would not fit in the available memory is skipped and reported as such.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from plastic_rl.core.options import (
    IMPLEMENTATIONS,
    check_choice,
    config_from,
    non_negative_int,
    positive_int,
    reported_as_bad_input,
    select_device,
)
from plastic_rl.supervised.task import get_task_class, registered_task


def add_task_arguments(parser: argparse.ArgumentParser, task_name: str) -> None:
    """All the options of ``plastic-rl bench <task_name>``."""
    task = registered_task(task_name)
    parser.set_defaults(task=task_name)
    parser.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8, 32], help="batch sizes to time")
    parser.add_argument("--model", choices=task.model_names, default=task.model_names[0])
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="timed steps per batch size (the median is reported)"
    )
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--implementation",
        choices=IMPLEMENTATIONS,
        help="the core's unroll for the recurrent layer (default: the layer's own)",
    )
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--data-dir", help="dataset folder of the image and Omniglot tasks (default: $PLASTIC_RL_DATA)")
    task.add_arguments(parser)


def _build(args: argparse.Namespace) -> tuple[Any, Any]:
    """The task and the model of the options (with ``--implementation`` set on its recurrent layer)."""
    registered, options = registered_task(args.task), vars(args)
    task = get_task_class(args.task).from_options(config_from(registered.options, options), args.data_dir)
    model = task.build_model(args.model, **config_from(registered.model_options, options).keywords())
    if args.implementation is not None:
        layer = getattr(model, "recurrent", None)
        if layer is None or not hasattr(layer, "implementation"):
            raise ValueError("--implementation needs a recurrent model on a core that offers implementations")
        layer.implementation = check_choice("--implementation", args.implementation, IMPLEMENTATIONS)
    return task, model


def _measure(args: argparse.Namespace, batch_size: int, results: Any) -> None:
    """Child process: time ``args.repeats`` training steps at ``batch_size``."""
    import torch

    from plastic_rl.benchmarks.measure import bytes_in_use, synchronize, timed
    from plastic_rl.core.memory import GIB, peak_bytes
    from plastic_rl.supervised.runs import describe
    from plastic_rl.supervised.trainer import SupervisedTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = select_device(args.device)
    task, model = _build(args)
    trainer = SupervisedTrainer(
        task,
        model,
        model_name=args.model,
        batch_size=batch_size,
        seed=args.seed,
        device=str(device),
        eval_interval=0,
        progress=False,
    )
    description = describe(trainer)
    base = bytes_in_use(device)
    trainer.train_step()
    synchronize(device)
    # Each step timed on its own and the median reported, as the other benches do: one disturbed step moves a
    # mean, not a median.
    wall_times, cpu_times = zip(*(timed(trainer.train_step, device) for _ in range(args.repeats)), strict=True)
    seconds, cpu_seconds = statistics.median(wall_times), statistics.median(cpu_times)
    peak = peak_bytes(device)
    results.put(
        dict(
            batch_size=batch_size,
            seconds_per_step=round(seconds, 4),
            seconds_per_episode=round(seconds / batch_size, 4),
            cpu_seconds_per_episode=round(cpu_seconds / batch_size, 4),
            peak_gib=round(peak / GIB, 3),
            base_gib=round(base / GIB, 3),
            describe=description,
            implementation=getattr(getattr(model, "recurrent", None), "implementation", "n/a"),
        )
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from plastic_rl.benchmarks.measure import in_fresh_process
    from plastic_rl.core.memory import GIB, available_bytes
    from plastic_rl.supervised.trainer import write_history_csv

    with reported_as_bad_input():
        device = select_device(args.device)
        _build(args)  # bad options fail here, once, rather than in every child process
    rows: list[dict[str, Any]] = []
    base_bytes, per_episode_bytes = 0.0, None
    for batch_size in sorted(args.batch_sizes):
        if per_episode_bytes is not None:
            needed = base_bytes + per_episode_bytes * batch_size
            available = available_bytes(device)
            if available is not None and needed > 0.9 * available:
                print(
                    f"batch {batch_size}: skipped, needs ~{needed / GIB:.1f} GiB; {available / GIB:.1f} GiB available"
                )
                rows.append(dict(batch_size=batch_size, skipped=f"needs ~{needed / GIB:.1f} GiB"))
                continue
        row = in_fresh_process(_measure, args, batch_size)
        if isinstance(row, int):
            print(f"batch {batch_size}: failed (exit code {row}; out of memory?)")
            rows.append(dict(batch_size=batch_size, skipped=f"exit code {row}"))
            continue
        if not any("seconds_per_step" in measured for measured in rows):
            print(row["describe"])
            print(
                f"device {device}, torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
                f"core implementation {row['implementation']}"
            )
        row.pop("describe")
        rows.append(row)
        # Extrapolate from the largest batch measured: fixed costs weigh less there.
        base_bytes = row["base_gib"] * GIB
        per_episode_bytes = (row["peak_gib"] - row["base_gib"]) * GIB / batch_size
        print(
            f"batch {batch_size}: {row['seconds_per_episode']:.3f} s/episode (median of {args.repeats} steps: "
            f"{row['seconds_per_step']:.3f} s/step, "
            f"{row['cpu_seconds_per_episode']:.3f} CPU s/episode), "
            f"peak {row['peak_gib']:.2f} GiB (base {row['base_gib']:.2f} GiB)",
            flush=True,
        )
    if args.csv:
        write_history_csv(rows, args.csv)
    return 0
