"""``plastic-rl bench omniglot``: training episodes per second, peak memory, and where the time goes.

Each (ways, batch size) runs in a fresh process, so that its peak memory is its own (the process's
peak resident memory on CPU, PyTorch included; ``torch.cuda.max_memory_allocated`` on CUDA). After
one warm-up step, ``--repeats`` full training steps (sampling, forward, backward, Adam) are timed,
then the same number of each part alone: drawing the episodes (``data``), the embedding's forward
and backward (``embedding``) and the head's forward and backward on fixed features (``head``). The
parts do not add up to the step exactly (Adam and the loss are in neither).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from plastic_rl.core.options import EMBEDDINGS, select_device
from plastic_rl.supervised.options import OMNIGLOT_HEADS

# The authors' code, batch 1 on a laptop CPU, as reported on their issue tracker (about 45 s per 500 episodes).
AUTHORS_SECONDS_PER_EPISODE = 0.09


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32, 128], help="batch sizes to time")
    parser.add_argument("--ways-list", nargs="+", type=int, default=[5, 20], help="N of the N-way 1-shot episodes")
    parser.add_argument("--model", choices=OMNIGLOT_HEADS, default="plastic")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--data-dir", help="dataset folder (default: $PLASTIC_RL_DATA)")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="paper")
    parser.add_argument("--csv", help="also write the table to this CSV file")


def _mean_seconds(work: Any, repeats: int, device: Any) -> float:
    """Wall-clock seconds per call of ``work``, over ``repeats`` calls after a warm-up one."""
    from plastic_rl.benchmarks.measure import timed

    work()
    seconds, _ = timed(lambda: [work() for _ in range(repeats)], device)
    return seconds / repeats


def _measure(args: argparse.Namespace, ways: int, batch_size: int, results: Any) -> None:
    """Child process: time ``args.repeats`` training steps, and each part of one, at ``ways`` and ``batch_size``."""
    import torch

    from plastic_rl.core.memory import GIB, peak_bytes
    from plastic_rl.supervised.omniglot import PIXELS, OmniglotClassifier, OmniglotTask
    from plastic_rl.supervised.trainer import SupervisedTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = select_device(args.device)
    task = OmniglotTask(ways=ways, data_dir=args.data_dir)
    trainer = SupervisedTrainer(
        task,
        task.build_model(args.model, embedding=args.embedding),
        batch_size=batch_size,
        device=str(device),
        eval_interval=0,
        progress=False,
    )
    model, rng = trainer.model, trainer.train_rng
    assert isinstance(model, OmniglotClassifier)
    step = _mean_seconds(trainer.train_step, args.repeats, device)
    data = _mean_seconds(lambda: task.sample(batch_size, rng).to(device), args.repeats, device)
    episodes = task.sample(batch_size, rng).to(device)

    def embedding() -> None:
        model.features(episodes.inputs).sum().backward()

    features = model.features(episodes.inputs).detach().requires_grad_(True)

    def head() -> None:
        if model.output is None:
            return
        model.output(features, teacher=episodes.inputs[..., PIXELS:])[0].sum().backward()

    embedding_seconds, head_seconds = (_mean_seconds(part, args.repeats, device) for part in (embedding, head))
    peak = peak_bytes(device)
    results.put(
        dict(
            ways=ways,
            batch_size=batch_size,
            episodes_per_second=round(batch_size / step, 1),
            ms_per_episode=round(1000 * step / batch_size, 3),
            data_ms=round(1000 * data / batch_size, 3),
            embedding_ms=round(1000 * embedding_seconds / batch_size, 3),
            head_ms=round(1000 * head_seconds / batch_size, 3),
            peak_gib=round(peak / GIB, 3),
        )
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from plastic_rl.benchmarks.measure import in_fresh_process
    from plastic_rl.supervised.trainer import write_history_csv

    rows = []
    print(f"device {select_device(args.device)}, torch {torch.__version__}, threads {args.threads}, model {args.model}")
    for ways in args.ways_list:
        for batch_size in args.batch_sizes:
            row = in_fresh_process(_measure, args, ways, batch_size)
            if isinstance(row, int):
                print(f"{ways}-way, batch {batch_size}: failed (exit code {row})")
                continue
            rows.append(row)
            speedup = AUTHORS_SECONDS_PER_EPISODE * 1000 / row["ms_per_episode"]
            print(
                f"{ways}-way 1-shot, batch {batch_size}: {row['episodes_per_second']} episodes/s "
                f"({row['ms_per_episode']} ms/episode, {speedup:.0f}x the authors' 90 ms); per episode: data "
                f"{row['data_ms']} ms, embedding {row['embedding_ms']} ms, head {row['head_ms']} ms; "
                f"peak {row['peak_gib']} GiB",
                flush=True,
            )
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        write_history_csv(rows, args.csv)
    return 0
