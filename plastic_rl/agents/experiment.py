"""``plastic-rl experiment maze``: the paper's Figure 8 — plastic vs homogeneous vs non-plastic (and LSTM).

Every (condition, seed) is one ``plastic-rl train`` run with the same budget and hidden size, run as
parallel processes with one thread each. The monitor CSVs then give the reward of every training episode:
the command writes a PNG and a CSV of reward per episode against episodes (median and interquartile range
across seeds), a CSV of each run's final reward, and ``summary.md`` with the table of final rewards and
Mann-Whitney rank-sum tests between conditions.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from plastic_rl.agents.configuration import ALGORITHMS, POLICIES

CONDITION_LABELS = {
    "plastic": "plastic (full)",
    "homogeneous": "homogeneous plasticity",
    "rnn": "non-plastic RNN",
    "lstm": "LSTM",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="seeds per condition")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="env steps per run")
    parser.add_argument(
        "--conditions", nargs="+", default=list(POLICIES), choices=list(POLICIES), help="conditions to train"
    )
    parser.add_argument("--algo", default="plastic_a2c", choices=list(ALGORITHMS), help="algorithm of every run")
    parser.add_argument("--env", default="PlasticMaze-v0", help="Gymnasium env id")
    parser.add_argument("--n-envs", type=int, default=None, help="episodes per update (default: from the YAML)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("-f", "--log-folder", default="logs/experiment_maze", help="runs and results go here")
    parser.add_argument(
        "-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="passed to every run"
    )
    parser.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="passed to every run")
    parser.add_argument("--bin-episodes", type=int, default=None, help="episodes per curve point (default: auto)")
    parser.add_argument("--final-fraction", type=float, default=0.1, help="last fraction of episodes = final reward")
    parser.add_argument("--analyze-only", action="store_true", help="only redo the figures from existing runs")


def _run_folder(root: Path, condition: str, seed: int) -> Path:
    return root / condition / f"seed_{seed}"


def _train_command(args: argparse.Namespace, condition: str, seed: int, root: Path) -> list[str]:
    command = [sys.executable, "-m", "plastic_rl.cli", "train", "--algo", args.algo, "--env", args.env]
    command += ["--policy", condition, "--seed", str(seed), "-n", str(args.timesteps), "--device", args.device]
    command += ["-f", str(_run_folder(root, condition, seed)), "--no-progress-bar"]
    if args.n_envs:
        command += ["--n-envs", str(args.n_envs)]
    if args.hyperparams:
        command += ["-params", *args.hyperparams]
    if args.env_kwargs:
        command += ["--env-kwargs", *args.env_kwargs]
    return command


def _train_all(args: argparse.Namespace, root: Path, seeds: list[int]) -> dict[tuple[str, int], float]:
    """Train every (condition, seed), ``args.jobs`` at a time; returns each run's wall time in seconds."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending = [(condition, seed) for seed in seeds for condition in args.conditions]
    running: dict[tuple[str, int], tuple[subprocess.Popen, float]] = {}
    wall_times = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            key = pending.pop(0)
            log_path = root / f"{key[0]}_seed_{key[1]}.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    _train_command(args, *key, root), stdout=log, stderr=subprocess.STDOUT, env=environment
                )
            running[key] = (process, time.perf_counter())
            print(f"started {key[0]} seed {key[1]} (log {log_path})", flush=True)
        time.sleep(0.2)
        for key, (process, start) in list(running.items()):
            if process.poll() is not None:
                del running[key]
                wall_times[key] = time.perf_counter() - start
                if process.returncode != 0:
                    raise RuntimeError(
                        f"run {key} failed (exit {process.returncode}); see {root}/{key[0]}_seed_{key[1]}.log"
                    )
                print(f"finished {key[0]} seed {key[1]} in {wall_times[key]:.0f} s", flush=True)
    return wall_times


def episode_rewards(run_folder: Path) -> np.ndarray:
    """Rewards of all training episodes of a run, in the order they ended, from its monitor CSVs."""
    episodes = []
    for path in sorted(run_folder.rglob("*.monitor.csv")):
        with open(path) as file:
            next(file)  # the JSON header line
            episodes += [(float(row["t"]), float(row["r"])) for row in csv.DictReader(file)]
    if not episodes:
        raise ValueError(f"no monitor CSV with episodes under {run_folder}")
    episodes.sort(key=lambda episode: episode[0])
    return np.array([reward for _, reward in episodes])


def _binned(rewards: np.ndarray, bin_episodes: int) -> np.ndarray:
    n_bins = len(rewards) // bin_episodes
    return rewards[: n_bins * bin_episodes].reshape(n_bins, bin_episodes).mean(axis=1)


def analyze(
    root: Path,
    conditions: list[str],
    seeds: list[int],
    bin_episodes: int | None,
    final_fraction: float,
) -> dict:
    """Curves (median, quartiles across seeds) and final rewards of every condition."""
    rewards = {(c, s): episode_rewards(_run_folder(root, c, s)) for c in conditions for s in seeds}
    shortest = min(len(r) for r in rewards.values())
    bin_episodes = bin_episodes or max(shortest // 40, 1)
    n_final = max(int(shortest * final_fraction), 1)
    curves, finals = {}, {}
    for condition in conditions:
        binned = np.stack([_binned(rewards[condition, s][:shortest], bin_episodes) for s in seeds])
        curves[condition] = np.percentile(binned, [50, 25, 75], axis=0)
        finals[condition] = [float(rewards[condition, s][shortest - n_final : shortest].mean()) for s in seeds]
    episodes = bin_episodes * np.arange(1, curves[conditions[0]].shape[1] + 1)
    return dict(episodes=episodes, curves=curves, finals=finals, n_final=n_final, bin_episodes=bin_episodes)


def rank_sum_tests(finals: dict[str, list[float]]) -> list[tuple[str, str, float, float]]:
    """Two-sided Mann-Whitney U tests of the final rewards between every pair of conditions."""
    from scipy.stats import mannwhitneyu

    tests = []
    for first, second in itertools.combinations(finals, 2):
        result = mannwhitneyu(finals[first], finals[second], alternative="two-sided")
        tests.append((first, second, float(result.statistic), float(result.pvalue)))
    return tests


def write_results(root: Path, results: dict, tests: list, seeds: list[int], header_lines: list[str]) -> None:
    """``maze_curves.csv``, ``maze_final_rewards.csv``, ``maze_rewards.png`` and ``summary.md`` in ``root``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes, curves, finals = results["episodes"], results["curves"], results["finals"]
    with open(root / "maze_curves.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["condition", "episodes", "median_reward", "q25_reward", "q75_reward"])
        for condition, (median, q25, q75) in curves.items():
            for row in zip(episodes, median, q25, q75, strict=True):
                writer.writerow([condition, int(row[0]), *(f"{value:.3f}" for value in row[1:])])
    with open(root / "maze_final_rewards.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["condition", "seed", "final_reward"])
        for condition, values in finals.items():
            writer.writerows([condition, seed, f"{value:.3f}"] for seed, value in zip(seeds, values, strict=True))

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for condition, (median, q25, q75) in curves.items():
        (line,) = axis.plot(episodes, median, label=CONDITION_LABELS.get(condition, condition))
        axis.fill_between(episodes, q25, q75, color=line.get_color(), alpha=0.2)
    axis.set_xlabel("episodes")
    axis.set_ylabel(f"reward per episode (mean of {results['bin_episodes']})")
    axis.set_title(f"PlasticMaze-v0: median and IQR over {len(seeds)} seeds")
    axis.legend()
    figure.tight_layout()
    figure.savefig(root / "maze_rewards.png")
    plt.close(figure)

    lines = [*header_lines, "", f"Final reward: mean reward of the last {results['n_final']} training episodes.", ""]
    lines += ["| condition | median | IQR | per seed |", "|---|---|---|---|"]
    for condition, values in finals.items():
        q25, q75 = np.percentile(values, [25, 75])
        per_seed = ", ".join(f"{value:.1f}" for value in values)
        lines.append(f"| {condition} | {np.median(values):.1f} | {q25:.1f} - {q75:.1f} | {per_seed} |")
    lines += ["", "Mann-Whitney U (two-sided) on the final rewards:", ""]
    lines += ["| conditions | U | p |", "|---|---|---|"]
    lines += [f"| {first} vs {second} | {u:.1f} | {p:.3g} |" for first, second, u, p in tests]
    (root / "summary.md").write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> int:
    root = Path(args.log_folder)
    root.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    command = " ".join(["plastic-rl", *sys.argv[1:]])
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    wall_times = {} if args.analyze_only else _train_all(args, root, seeds)
    total = time.perf_counter() - start
    results = analyze(root, args.conditions, seeds, args.bin_episodes, args.final_fraction)
    tests = rank_sum_tests(results["finals"])
    header = [
        "# PlasticMaze-v0: plastic vs homogeneous vs non-plastic",
        "",
        f"Command: `{command}`",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; seeds {seeds}; curves and finals over the first "
        f"{len(results['episodes']) * results['bin_episodes']} episodes of every run.",
    ]
    if wall_times:
        per_condition = {c: np.mean([wall_times[c, s] for s in seeds]) for c in args.conditions}
        header.append(
            f"Wall time: {total / 60:.1f} min in all, {args.jobs} runs at a time with one thread each; mean per run: "
            + ", ".join(f"{c} {t:.0f} s" for c, t in per_condition.items())
        )
    write_results(root, results, tests, seeds, header)
    print((root / "summary.md").read_text())
    print(f"Wrote {root}/maze_rewards.png, maze_curves.csv, maze_final_rewards.csv and summary.md")
    return 0
