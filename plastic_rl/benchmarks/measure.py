"""What the benchmarks share: timings that count a device's queued work, memory read the same way on every device,
and a fresh process per measurement, so that its peak memory is its own.

The device is :func:`plastic_rl.core.options.select_device`'s; peak memory is
:func:`plastic_rl.core.memory.peak_bytes` (the process's peak resident size on CPU, torch's peak allocation on CUDA).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import torch

from plastic_rl.core.memory import peak_bytes


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA), so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all the process's threads) of one call of ``work``, its queued work included."""
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    work()
    synchronize(device)
    return time.perf_counter() - started, time.process_time() - cpu_started


def bytes_in_use(device: torch.device) -> int:
    """The baseline that a later :func:`~plastic_rl.core.memory.peak_bytes` is read against: torch's allocation now
    on CUDA, else the process's peak resident size so far."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else peak_bytes()


def in_fresh_process(measure: Callable[..., None], *args: Any) -> dict[str, Any] | int:
    """Run ``measure(*args, results)`` in a fresh (spawned) process, so that its peak memory is its own; returns the
    dict it put in the queue ``results``, or the process's exit code when it failed (e.g. out of memory)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=measure, args=(*args, results))
    child.start()
    child.join()
    if child.exitcode != 0:
        return child.exitcode if child.exitcode is not None else -1
    return results.get()
