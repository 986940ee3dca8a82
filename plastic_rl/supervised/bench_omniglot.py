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
import multiprocessing
import time
from pathlib import Path

import torch

from plastic_rl.core.memory import GIB, peak_bytes
from plastic_rl.core.options import select_device
from plastic_rl.supervised.omniglot import PIXELS, OmniglotClassifier, OmniglotTask
from plastic_rl.supervised.trainer import SupervisedTrainer, write_history_csv

# The authors' code, batch 1 on a laptop CPU, as reported on their issue tracker (about 45 s per 500 episodes).
AUTHORS_SECONDS_PER_EPISODE = 0.09


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32, 128], help="batch sizes to time")
    parser.add_argument("--ways-list", nargs="+", type=int, default=[5, 20], help="N of the N-way 1-shot episodes")
    parser.add_argument("--model", choices=OmniglotTask.model_names, default="plastic")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--data-dir", help="dataset folder (default: $PLASTIC_RL_DATA)")
    parser.add_argument("--embedding", choices=("paper", "conv4"), default="paper")
    parser.add_argument("--csv", help="also write the table to this CSV file")


def _timed(device: torch.device, repeats: int, work) -> float:
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats


def _measure(args: argparse.Namespace, ways: int, batch_size: int, results) -> None:
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
    step = _timed(device, args.repeats, trainer.train_step)
    data = _timed(device, args.repeats, lambda: task.sample(batch_size, rng).to(device))
    episodes = task.sample(batch_size, rng).to(device)

    def embedding() -> None:
        model.features(episodes.inputs).sum().backward()

    features = model.features(episodes.inputs).detach().requires_grad_(True)

    def head() -> None:
        if model.output is None:
            return
        model.output(features, teacher=episodes.inputs[..., PIXELS:])[0].sum().backward()

    timings = {"embedding": _timed(device, args.repeats, embedding), "head": _timed(device, args.repeats, head)}
    peak = peak_bytes(device)
    results.put(
        dict(
            ways=ways,
            batch_size=batch_size,
            episodes_per_second=round(batch_size / step, 1),
            ms_per_episode=round(1000 * step / batch_size, 3),
            data_ms=round(1000 * data / batch_size, 3),
            embedding_ms=round(1000 * timings["embedding"] / batch_size, 3),
            head_ms=round(1000 * timings["head"] / batch_size, 3),
            peak_gib=round(peak / GIB, 3),
        )
    )


def run(args: argparse.Namespace) -> int:
    context = multiprocessing.get_context("spawn")
    rows = []
    print(f"device {select_device(args.device)}, torch {torch.__version__}, threads {args.threads}, model {args.model}")
    for ways in args.ways_list:
        for batch_size in args.batch_sizes:
            results = context.Queue()
            child = context.Process(target=_measure, args=(args, ways, batch_size, results))
            child.start()
            child.join()
            if child.exitcode != 0:
                print(f"{ways}-way, batch {batch_size}: failed (exit code {child.exitcode})")
                continue
            row = results.get()
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
