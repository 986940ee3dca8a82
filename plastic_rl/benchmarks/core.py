"""``plastic-rl bench core``: time the plastic core's unroll (forward + backward) against autograd.

Each (configuration, implementation) runs in a fresh subprocess, so that its peak memory (the child's
``ru_maxrss``) is its own. Per configuration the command prints seconds per episode (batch time / B)
of the fused unroll and of the autograd reference, their ratio, the bandwidth floor measured on this
machine, the ratio to it, peak memory, and the issue's target where there is one. Autograd runs that
would not fit in memory (about 24 T B N^2 bytes) are skipped and said so.

The floor is the time to move the bytes that must move: per step, the trace read and written forward,
and the trace and its gradient read and written backward, ``w`` and ``alpha`` read each way and
``dL/dalpha`` read and written backward, at the streaming bandwidth measured here on a working set of
the backward's size (traces, their gradients and the three N x N parameter arrays), so that the L3
cache counts exactly when the unroll's own data fits in it. A rule with an eligibility trace (``retroneuromod``) moves
that trace and its gradient too; the neuromodulated rules run with their trace clipped at 1, as their policies do
(``--trace-clip`` clips every rule's: the C++ kernel inverts a clipped trace except where the clip acted, whose rows it
recomputes forward from checkpoints, work that the floor does not count).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

from plastic_rl.core.files import atomic_write_text
from plastic_rl.core.options import (
    check_choice,
    check_device,
    non_negative_int,
    positive_float,
    positive_int,
    reported_as_bad_input,
    select_device,
)

# (N, T, B) of the table, and its targets in seconds per episode
DEFAULT_CONFIGS = ("1001,200,1", "1001,200,16", "1025,210,1", "200,250,1", "200,250,16", "200,250,64")
TARGETS = {(1001, 200, 1): 0.15, (1001, 200, 16): 0.22, (200, 250, 16): 0.006, (200, 250, 1): 0.01}
MEMORY_TARGET_GB = {(1001, 200, 1): 1.5, (1001, 200, 16): 1.5}
MAZE_INPUT_SIZE = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        metavar="N,T,B",
        help="configurations: neurons, steps, batch (default: the issue's table)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=os.cpu_count() or 1, help="torch threads (default: all cores)"
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed episodes per run (median reported)")
    parser.add_argument(
        "--implementations", nargs="+", default=["fused", "autograd"], choices=["fused", "autograd"], metavar="IMPL"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "cpp", "torch"], help="backend of the fused unroll"
    )
    parser.add_argument(
        "--rules", nargs="+", default=["hebb"], metavar="RULE", help="plasticity rules, a row each (default: hebb)"
    )
    parser.add_argument(
        "--trace-clip",
        type=positive_float,
        default=None,
        help="clip every rule's trace at this (default: none, and 1 for the neuromodulated rules, as their policies)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=positive_float,
        default=None,
        help="skip autograd runs estimated above this (default: 60%% of MemAvailable)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def _parse_config(text: str) -> tuple[int, int, int]:
    try:
        n, t, b = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--configs entries must be N,T,B (three integers); got {text!r}") from None
    if min(n, t, b) <= 0:
        raise ValueError(f"--configs entries must be positive; got {text!r}")
    return n, t, b


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _problem(
    n: int,
    steps: int,
    batch: int,
    seed: int,
    implementation: str,
    device,
    rule: str = "hebb",
    clip: float | None = None,
):
    """The layer and inputs of a configuration: the pattern task above 500 neurons, the maze's core below."""
    import torch

    from plastic_rl.core import PlasticRecurrentLayer
    from plastic_rl.core.rules import get_rule

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if clip is None and get_rule(rule).modulated:
        clip = 1.0
    plasticity = dict(rule=rule, trace_clip=clip, implementation=implementation)
    if n > 500:  # pattern memorisation: identity-mapped, clamped, bias neuron
        layer = PlasticRecurrentLayer(n, input_mapping="identity", input_mode="clamp", bias="neuron", **plasticity)
        inputs = torch.sign(torch.randn(steps, batch, n - 1, generator=generator))
        inputs[torch.rand(inputs.shape, generator=generator) < 0.5] = 0.0
        inputs[-max(1, steps // 4) :] = 0.0
    else:  # the maze's recurrent core: a learned input projection, inputs added
        layer = PlasticRecurrentLayer(n, MAZE_INPUT_SIZE, input_mode="add", **plasticity)
        inputs = torch.randn(steps, batch, MAZE_INPUT_SIZE, generator=generator)
    return layer.to(device), inputs.to(device)


def _episode(layer, inputs) -> None:
    outputs, _ = layer(inputs)
    outputs[-1].square().sum().backward()


def _measure_bandwidth(n: int, batch: int, device) -> float:
    """Streaming bandwidth (bytes/s) of ``a += b`` on two arrays that together are the backward's working set:
    ``B x N x N`` trace and trace gradient, ``w``, ``alpha`` and ``dL/dalpha``; the best of 3 timings."""
    import torch

    from plastic_rl.benchmarks.measure import timed

    half = (2 * batch + 3) * n * n // 2
    a = torch.ones(half, device=device)
    b = torch.ones(half, device=device)
    repeats = max(5, int(2e9 // (12 * a.numel())))
    a.add_(b)
    best = min(timed(lambda: [a.add_(b, alpha=1e-9) for _ in range(repeats)], device)[0] for _ in range(3)) / repeats
    return 3 * a.numel() * a.element_size() / best


# Bandwidth probes before and after the timed episodes: a busy machine reads low in some of them, so the floor
# takes the best, and a large spread between them says the figures of that run are not to be trusted.
BANDWIDTH_PROBES = 3
PROBE_SPREAD_LIMIT = 1.5


def _bandwidth_probes(n: int, batch: int, device) -> list[float]:
    return [_measure_bandwidth(n, batch, device) / 1e9 for _ in range(BANDWIDTH_PROBES)]


def _worker(spec: dict) -> dict:
    import torch

    from plastic_rl.benchmarks.measure import timed
    from plastic_rl.core import fused
    from plastic_rl.core.memory import peak_bytes

    torch.set_num_threads(spec["threads"])
    device = select_device(spec["device"])
    if spec["backend"] != "auto":
        requested = spec["backend"]
        fused.resolve_backend = lambda backend, device, dtype=None, rule=None, _requested=requested: (  # type: ignore[misc]
            _requested
        )
    n, steps, batch = spec["n"], spec["steps"], spec["batch"]
    baseline_gb = peak_bytes() / 1e9
    layer, inputs = _problem(
        n, steps, batch, spec["seed"], spec["implementation"], device, spec["rule"], spec["trace_clip"]
    )
    first, _ = timed(lambda: _episode(layer, inputs), device)  # builds or loads the C++ kernel, warms the allocator
    probes = _bandwidth_probes(n, batch, device) if spec["implementation"] == "fused" else []
    times = []
    for _ in range(spec["repeats"]):
        layer.zero_grad(set_to_none=True)
        times.append(timed(lambda: _episode(layer, inputs), device)[0])
    result = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "first_s": first,
        "peak_gb": peak_bytes() / 1e9,
        "baseline_gb": baseline_gb,
        "backend": _backend_description(spec, device, batch),
    }
    if spec["implementation"] == "autograd" and spec.get("compare"):
        reference = [p.grad.detach().clone() for p in layer.parameters()]
        layer.implementation = "fused"
        layer.zero_grad(set_to_none=True)
        _episode(layer, inputs)
        result["gradient_difference"] = max(
            ((p.grad - r).norm() / r.norm().clamp_min(1e-30)).item()
            for p, r in zip(layer.parameters(), reference, strict=True)
        )
    if spec["implementation"] == "fused":
        probes += _bandwidth_probes(n, batch, device)
        result["bandwidth_gbs"] = max(probes)
        result["bandwidth_spread"] = max(probes) / min(probes)
    return result


def _backend_description(spec: dict, device, batch: int) -> str:
    from plastic_rl.core import fused

    if spec["implementation"] != "fused":
        return "-"
    backend = fused.resolve_backend(spec["backend"], device)
    if backend != "cpp":
        return backend
    module = fused.cpp_extension_module()
    assert module is not None, "resolve_backend gave cpp: the kernel is built"
    if not module.multithreaded():
        return "cpp, built without OpenMP: one thread"
    slices = fused.batch_slices(batch)
    return f"cpp, {slices} batch slices" if slices > 1 else "cpp, rows shared per step"


def _run_worker(spec: dict) -> dict:
    command = [sys.executable, "-m", "plastic_rl.benchmarks.core", "--worker", json.dumps(spec)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {completed.returncode}: {tail[0][:200]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _floor_bytes(n: int, steps: int, batch: int, traces: int = 1) -> int:
    """Bytes that must move per unroll (float32): the ``traces`` (Hebbian, and an eligibility trace) read and written
    forward; backward, the traces rebuilt in place and their gradients read and written; ``w`` and ``alpha`` read
    each way (once per step for the whole batch); ``dL/dalpha`` read and written backward."""
    trace, matrix = batch * n * n * 4, n * n * 4
    return steps * ((2 * traces * trace + 2 * matrix) + (4 * traces * trace + 4 * matrix))


def _format(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    if args.worker is not None:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    from plastic_rl.core.memory import available_bytes
    from plastic_rl.core.rules import rule_names

    with reported_as_bad_input():
        configs = [_parse_config(text) for text in args.configs]
        check_device("--device", args.device)
        for rule in args.rules:
            check_choice("--rules", rule, rule_names())
    free = available_bytes()
    limit_gb = args.memory_limit_gb if args.memory_limit_gb is not None else 0.6 * (free or float("inf")) / 1e9
    import torch

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"plastic-rl bench core: {stamp}, {_cpu_name()}, {os.cpu_count()} cores, "
        f"threads={args.threads}, torch {torch.__version__}, repeats={args.repeats} (median), float32, "
        f"forward + backward of one unroll, loss on the last step"
    )
    rows = []
    for (n, steps, batch), rule in itertools.product(configs, args.rules):
        row: dict[str, Any] = {"n": n, "steps": steps, "batch": batch, "rule": rule}
        spec = dict(
            rule=rule,
            trace_clip=args.trace_clip,
            n=n,
            steps=steps,
            batch=batch,
            threads=args.threads,
            repeats=args.repeats,
            backend=args.backend,
            seed=args.seed,
            device=args.device,
        )
        for implementation in args.implementations:
            if implementation == "autograd":
                estimate_gb = 24 * steps * batch * n * n / 1e9
                if estimate_gb > limit_gb:
                    row["autograd"] = {"skipped": f"needs about {estimate_gb:.0f} GB > limit {limit_gb:.1f} GB"}
                    continue
            row[implementation] = _run_worker(dict(spec, implementation=implementation, compare=True))
        rows.append(row)
        _print_row(row)
    if args.json:
        atomic_write_text(args.json, json.dumps({"date": stamp, "threads": args.threads, "rows": rows}, indent=2))
    return 0


def _print_row(row: dict) -> None:
    from plastic_rl.core.rules import get_rule

    n, steps, batch, rule = row["n"], row["steps"], row["batch"], row["rule"]
    key = (n, steps, batch) if rule == "hebb" else None  # the targets are the plain rule's
    fused, autograd = row.get("fused", {}), row.get("autograd", {})
    per = {}
    for name, result in (("fused", fused), ("autograd", autograd)):
        per[name] = None if "median_s" not in result else result["median_s"] / batch
    lines = [f"N={n} T={steps} B={batch} rule={rule}:"]
    if "error" in fused:
        lines.append(f"  fused: failed ({fused['error']})")
    elif per["fused"] is not None:
        floor_bytes = _floor_bytes(n, steps, batch, 2 if get_rule(rule).eligibility else 1)
        floor = floor_bytes / (fused["bandwidth_gbs"] * 1e9) / batch
        text = (
            f"  fused [{fused['backend']}]: {_format(per['fused'])} s/episode (min {_format(fused['min_s'] / batch)}, "
            f"first {fused['first_s']:.2f} s/batch), peak {fused['peak_gb']:.2f} GB "
            f"(process baseline {fused['baseline_gb']:.2f} GB)"
        )
        lines.append(text)
        lines.append(
            f"  floor: {_format(floor)} s/episode ({floor_bytes / 1e9:.2f} GB per batch at "
            f"{fused['bandwidth_gbs']:.0f} GB/s measured) -> fused / floor = {per['fused'] / floor:.1f}x "
            f"(the fused unroll moves them at {floor_bytes / fused['median_s'] / 1e9:.0f} GB/s; best of "
            f"{2 * BANDWIDTH_PROBES} probes, spread {fused['bandwidth_spread']:.2f}x)"
        )
        if per["fused"] < floor:
            lines.append(
                "  WARNING: faster than the floor, so the bandwidth probes read low: the machine was busy; "
                "this run's floor and ratios are not to be trusted"
            )
        if fused["bandwidth_spread"] > PROBE_SPREAD_LIMIT:
            lines.append(
                f"  WARNING: the bandwidth probes spread {fused['bandwidth_spread']:.2f}x (limit "
                f"{PROBE_SPREAD_LIMIT}x): the machine was busy; this run's timings are not to be trusted"
            )
        if key in TARGETS:
            target = TARGETS[key]
            status = "met" if per["fused"] <= target else f"NOT met (gap {per['fused'] / target:.2f}x)"
            memory = MEMORY_TARGET_GB.get(key)
            memory_text = ""
            if memory is not None:
                memory_text = f"; peak memory target {memory} GB: " + (
                    "met" if fused["peak_gb"] < memory else "NOT met"
                )
            lines.append(f"  target {target} s/episode: {status}{memory_text}")
    if "skipped" in autograd:
        lines.append(f"  autograd: skipped ({autograd['skipped']})")
    elif "error" in autograd:
        lines.append(f"  autograd: failed ({autograd['error']})")
    elif per["autograd"] is not None:
        lines.append(
            f"  autograd: {_format(per['autograd'])} s/episode, peak {autograd['peak_gb']:.2f} GB; "
            f"fused gradients differ by {autograd.get('gradient_difference', float('nan')):.1e} (relative)"
        )
        if per["fused"] is not None:
            lines.append(f"  speed-up over autograd: {per['autograd'] / per['fused']:.1f}x")
    print("\n".join(lines), flush=True)


def main() -> int:
    """The entry of the fresh process each measurement runs in (:func:`_run_worker`), and of the module run alone."""
    parser = argparse.ArgumentParser(prog="plastic-rl bench core")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
