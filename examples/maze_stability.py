"""How stable each maze run of a study is, from its per-update log: one row per run, and its curves.

    python examples/maze_stability.py STUDY_DIR [STUDY_DIR ...] --out docs/results/maze/pilots

Reads every ``progress.csv`` under the study folders (``plastic-rl experiment maze``; finished or still running)
and writes into ``--out`` ``stability.csv`` (a row per run) and ``stability.png`` (training reward, entropy, gradient
norm before clipping, eta, mean |alpha|, trace norm and the held-out reward and signature against episodes, a line per
run). A row: updates done; the largest gradient norm before clipping and how many updates had one over 10 times the
run's median (spikes); collapses (the training reward, smoothed over 5 updates, below half its running peak once that
peak passed 20); the lowest policy entropy (nats); eta and mean |alpha| at the start and at the end; the largest trace
norm; and the held-out reward and later gap / first hit at each ``--heldout-freq`` measurement.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from plastic_rl.core.files import atomic_write, atomic_write_text  # noqa: E402

SPIKE_FACTOR = 10.0
SMOOTHING_UPDATES = 5
COLLAPSE_PEAK = 20.0
PANELS = {
    "rollout/ep_rew_mean": "training reward",
    "entropy": "policy entropy (nats)",
    "train/grad_norm_total": "gradient norm before clipping",
    "plasticity/eta": "eta",
    "plasticity/mean_abs_alpha": "mean |alpha|",
    "plasticity/trace_norm": "trace norm",
    "heldout/reward_mean": "held-out reward",
    "heldout/ratio_of_means": "held-out later gap / first hit",
}


def _column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(row[key]) if row.get(key) else math.nan for row in rows])


def read_run(path: Path) -> dict[str, np.ndarray]:
    """The per-update columns of a run's ``progress.csv`` (``x``: episodes) and its held-out rows (``heldout_x``)."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    updates = [row for row in rows if row.get("time/total_timesteps") and row.get("train/grad_norm_total")]
    held_out = [row for row in rows if row.get("heldout/total_timesteps")]
    length = _column(updates, "rollout/ep_len_mean")
    steps_per_episode = float(np.nanmedian(length)) if len(length) else 250.0
    run = {key: _column(updates, key) for key in PANELS if not key.startswith(("heldout/", "entropy"))}
    run["entropy"] = -_column(updates, "train/entropy_loss")
    run["x"] = _column(updates, "time/total_timesteps") / steps_per_episode
    for key in ("heldout/reward_mean", "heldout/ratio_of_means"):
        run[key] = _column(held_out, key)
    run["heldout_x"] = _column(held_out, "heldout/total_timesteps") / steps_per_episode
    return run


def collapses(reward: np.ndarray) -> int:
    """Times the smoothed training reward fell below half its running peak (after the peak passed 20)."""
    if len(reward) < SMOOTHING_UPDATES:
        return 0
    smooth = np.convolve(reward, np.ones(SMOOTHING_UPDATES) / SMOOTHING_UPDATES, mode="valid")
    peak, count, down = -math.inf, 0, False
    for value in smooth:
        peak = max(peak, value)
        below = peak > COLLAPSE_PEAK and value < peak / 2
        count += below and not down
        down = below
    return count


def row_of(name: str, run: dict[str, np.ndarray]) -> dict[str, str]:
    grad = run["train/grad_norm_total"]
    eta, alpha = run["plasticity/eta"], run["plasticity/mean_abs_alpha"]
    plastic = len(eta) and not np.isnan(eta).all()
    row = {
        "run": name,
        "updates": str(len(grad)),
        "episodes": f"{run['x'][-1]:.0f}" if len(grad) else "0",
        "grad_norm_max": f"{np.nanmax(grad):.3g}",
        "spikes": str(int((grad > SPIKE_FACTOR * np.nanmedian(grad)).sum())),
        "collapses": str(collapses(run["rollout/ep_rew_mean"])),
        "entropy_min": f"{np.nanmin(run['entropy']):.3f}",
        "entropy_end": f"{run['entropy'][-1]:.3f}",
        "eta_start_end": f"{eta[0]:.4g} -> {eta[-1]:.4g}" if plastic else "",
        "alpha_start_end": f"{alpha[0]:.4g} -> {alpha[-1]:.4g}" if len(alpha) and not np.isnan(alpha).all() else "",
        "trace_norm_max": f"{np.nanmax(run['plasticity/trace_norm']):.3g}" if plastic else "",
    }
    for x, reward, ratio in zip(
        run["heldout_x"], run["heldout/reward_mean"], run["heldout/ratio_of_means"], strict=True
    ):
        row[f"heldout_{x:.0f}"] = f"{reward:.1f} / {ratio:.2f}"
    return row


LINE_STYLES = ("-", "--", ":", "-.")


def plot(runs: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """A panel per quantity; a colour per study folder, a line style per condition, a line per seed."""
    studies = list(dict.fromkeys(name.split("/")[0] for name in runs))
    conditions = list(dict.fromkeys(name.split("/")[1] for name in runs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(2, 4, figsize=(18, 7.5), dpi=90)
    for axis, (key, label) in zip(axes.flat, PANELS.items(), strict=True):
        labelled = set()
        for name, run in runs.items():
            study, condition = name.split("/")[:2]
            x = run["heldout_x"] if key.startswith("heldout/") else run["x"]
            if len(x) and not np.isnan(run[key]).all():
                group = f"{study} {condition}"
                axis.plot(
                    x, run[key], label=None if group in labelled else group, lw=0.8, ms=3,
                    color=colours[studies.index(study) % len(colours)],
                    linestyle=LINE_STYLES[conditions.index(condition) % len(LINE_STYLES)],
                    marker="o" if key.startswith("heldout/") else None,
                )  # fmt: skip
                labelled.add(group)
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("training episodes", fontsize=8)
        if key in ("train/grad_norm_total", "plasticity/trace_norm"):
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders of plastic-rl experiment maze")
    parser.add_argument("--out", type=Path, required=True, help="folder for stability.csv and stability.png")
    args = parser.parse_args()
    runs = {}
    for study in args.studies:
        if not study.is_dir():
            parser.error(f"{study} is not a folder")
        for path in sorted(study.rglob("progress.csv")):
            name = f"{study.name}/{path.relative_to(study).parts[0]}/{path.relative_to(study).parts[1]}"
            run = read_run(path)
            if len(run["x"]):
                runs[name] = run
    if not runs:
        parser.error("no progress.csv with updates under the study folders")
    rows = [row_of(name, run) for name, run in runs.items()]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "stability.csv", buffer.getvalue())
    plot(runs, args.out / "stability.png")
    print(buffer.getvalue())
    print(f"Wrote {args.out / 'stability.csv'} and {args.out / 'stability.png'}")


if __name__ == "__main__":
    main()
