"""``plastic-rl experiment TASK``: a resumable grid of runs of any task, and its statistics.

A study is every (condition, overrides, seed) of the command line, each an independent run in its
own folder ``OUT/<condition>[__<overrides>]/seed_<S>/`` that records its full configuration in
``run.json`` (with the ``plastic-rl`` command line that re-runs or resumes it alone). Runs go to
the local process pool (``--jobs`` at a time, one torch thread each) or to Ray (``--launcher
ray``). Re-running the same command skips finished runs and resumes the others from their last
checkpoint; a folder whose recorded configuration differs from the command's is an error that says
what differs. ``--status`` prints what is done, running and left, with a time estimate. The summary
(see :mod:`plastic_rl.experiments.report`) is rebuilt from the finished runs of the grid.

Tasks: ``maze`` (``plastic-rl train`` runs on ``--env``, any Gymnasium env id) and every supervised
task registered in :data:`plastic_rl.supervised.task.TASKS`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plastic_rl.core.files import atomic_write_text
from plastic_rl.experiments.adapter import TaskAdapter
from plastic_rl.experiments.launchers import LOG, RESULT, Launcher, LocalLauncher, RayLauncher, recover_folder
from plastic_rl.experiments.lock import study_lock
from plastic_rl.experiments.statistics import SIGNIFICANCE, seeds_needed
from plastic_rl.supervised.task import TASKS

RL_TASK = "maze"
RUN_RECORD, RUNNING, STUDY = "run.json", "running.json", "study.json"


def task_names() -> list[str]:
    """The tasks of ``plastic-rl experiment``."""
    return [RL_TASK, *TASKS]


def adapter_for(task: str) -> TaskAdapter:
    """How to launch and read back the runs of ``task``."""
    if task == RL_TASK:
        from plastic_rl.experiments.rl import RLAdapter

        return RLAdapter(task)
    from plastic_rl.experiments.supervised import SupervisedAdapter

    return SupervisedAdapter(task)


@dataclass(frozen=True, eq=False)
class Run:
    """One run of the grid."""

    condition: str
    overrides: tuple[tuple[str, str], ...]
    seed: int
    folder: Path
    argv: tuple[str, ...]
    options: dict[str, Any]

    def extends(self) -> bool:
        """Whether the folder holds a shorter run of this one (:func:`plan` allows no other difference)."""
        path = self.folder / RUN_RECORD
        return path.exists() and json.loads(path.read_text())["options"] != self.options

    @property
    def group(self) -> str:
        """The condition with its overrides: the runs of a group differ only in their seed."""
        if not self.overrides:
            return self.condition
        return f"{self.condition} [{', '.join(f'{key}={value}' for key, value in self.overrides)}]"

    def state(self) -> str:
        """``finished``, ``running`` (by a live driver), ``started`` (interrupted) or ``new``."""
        if (self.folder / RESULT).exists() and not self.extends():
            return "finished"
        if (self.folder / RUNNING).exists() and _driver_alive(json.loads((self.folder / RUNNING).read_text())):
            return "running"
        return "started" if (self.folder / RUN_RECORD).exists() else "new"


def _driver_alive(marker: dict[str, Any]) -> bool:
    if marker.get("host") != platform.node():
        return True  # another machine's driver, on a shared folder: it cannot be checked from here
    try:
        os.kill(marker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(task_names()))
    for task in task_names():
        adapter = adapter_for(task)
        task_parser = tasks.add_parser(task, help=f"a study of {task!r} runs")
        group = task_parser.add_argument_group("study")
        group.add_argument(
            "--seeds", type=int, default=10, help="seeds per condition (at least 4 for p < 0.05 to be possible)"
        )
        group.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
        group.add_argument(
            "--sweep",
            nargs="+",
            action="append",
            default=[],
            metavar=("KEY", "VALUE"),
            help="KEY VALUE [VALUE ...]: a run per value of the hyperparameter KEY (repeat for a grid)",
        )
        group.add_argument("-f", "--out", default=f"runs/experiment/{task}", help="study folder")
        group.add_argument("--jobs", type=int, default=None, help="runs at a time (default: one per CPU)")
        group.add_argument("--launcher", default="local", choices=["local", "ray"], help="process pool or Ray")
        group.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
        group.add_argument("--status", action="store_true", help="print what is done, running and left; run nothing")
        group.add_argument("--summarize-only", action="store_true", help="only rebuild the summary of finished runs")
        adapter.add_arguments(task_parser)


def _check_positive(option: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or value < minimum):
        raise ValueError(f"{option} must be an integer >= {minimum}; got {value}")


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def plan(adapter: TaskAdapter, args: argparse.Namespace) -> list[Run]:
    """Every run of the study, checked against the configuration recorded in its folder."""
    _check_positive("--seeds", args.seeds)
    _check_positive("--first-seed", args.first_seed, minimum=0)
    _check_positive("--jobs", args.jobs)
    _check_positive(f"--{adapter.budget_option}", adapter.budget(args))
    if args.address and args.launcher != "ray":
        raise ValueError("--address needs --launcher ray")
    for sweep in args.sweep:
        if len(sweep) < 2:
            raise ValueError(f"--sweep takes a key and at least one value; got {' '.join(sweep)!r}")
    adapter.check_options(args)
    sweeps = [[(sweep[0], value) for value in sweep[1:]] for sweep in args.sweep]
    root = Path(args.out)
    runs, mismatches = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for condition in args.conditions:
            for overrides in itertools.product(*sweeps):
                name = condition + "".join(f"__{key}={value}" for key, value in overrides).replace(os.sep, "_")
                folder = root / name / f"seed_{seed}"
                argv = adapter.command(args, condition, seed, dict(overrides))
                options = adapter.options([*argv, *adapter.location(folder)])
                options = _json({k: v for k, v in options.items() if k not in adapter.location_options})
                run = Run(condition, overrides, seed, folder, tuple(argv), options)
                differences = _differences(run)
                if differences and not _extends(adapter, run, differences):
                    mismatches += [
                        f"{run.folder}: {key} is {old!r} there, {new!r} now" for key, old, new in differences
                    ]
                runs.append(run)
    if mismatches:
        raise ValueError(
            "runs in the study folder were made with other settings (use another --out, or remove those runs):\n  "
            + "\n  ".join(mismatches[:10])
            + (f"\n  ... and {len(mismatches) - 10} more" if len(mismatches) > 10 else "")
        )
    return runs


def _differences(run: Run) -> list[tuple[str, Any, Any]]:
    """``(option, recorded value, value now)`` for each option that differs from the run folder's record."""
    path = run.folder / RUN_RECORD
    if not path.exists():
        return []
    recorded = json.loads(path.read_text())["options"]
    keys = sorted(set(recorded) | set(run.options))
    return [(key, recorded.get(key), run.options.get(key)) for key in keys if recorded.get(key) != run.options.get(key)]


def _extends(adapter: TaskAdapter, run: Run, differences: list[tuple[str, Any, Any]]) -> bool:
    """Whether the only difference is a larger budget, which an extendable run reaches by resuming."""
    if not adapter.extendable or len(differences) != 1:
        return False
    key, old, new = differences[0]
    return key == adapter.budget_key and new > old


def _record(adapter: TaskAdapter, run: Run, task: str) -> None:
    record = {
        "task": task,
        "condition": run.condition,
        "overrides": dict(run.overrides),
        "seed": run.seed,
        "command": adapter.shell_command(list(run.argv), run.folder),
        "argv": list(run.argv),
        "options": run.options,
        "created_utc": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}",
    }
    atomic_write_text(run.folder / RUN_RECORD, json.dumps(record, indent=2) + "\n")


def _wall_seconds(run: Run) -> float:
    return json.loads((run.folder / RESULT).read_text())["wall_s"]


def status_text(adapter: TaskAdapter, runs: list[Run], jobs: int) -> str:
    """Counts of finished, running and left runs and the estimated time left at ``jobs`` runs at a time."""
    states = {run: run.state() for run in runs}
    finished = [run for run in runs if states[run] == "finished"]
    running = [run for run in runs if states[run] == "running"]
    left = [run for run in runs if states[run] in ("started", "new")]
    started = sum(states[run] == "started" for run in runs)
    lines = [
        f"{len(finished)} finished, {len(running)} running, {len(left)} left ({started} of them partly done) "
        f"of {len(runs)} runs"
    ]
    for run in running:
        lines.append(f"  running: {run.folder} ({adapter.progress(run.folder, run.options):.0%})")
    if finished and (running or left):
        by_group: dict[str, list[float]] = {}
        for run in finished:
            by_group.setdefault(run.group, []).append(_wall_seconds(run))
        overall = sum(map(sum, by_group.values())) / len(finished)
        seconds = sum(
            (sum(by_group[run.group]) / len(by_group[run.group]) if run.group in by_group else overall)
            * (1 - adapter.progress(run.folder, run.options))
            for run in running + left
        )
        lines.append(
            f"estimated time left: {seconds / max(jobs, 1) / 60:.1f} min at {jobs} runs at a time "
            "(from the finished runs' wall times)"
        )
    elif running or left:
        lines.append("estimated time left: unknown until a run has finished")
    return "\n".join(lines)


def execute(adapter: TaskAdapter, runs: list[Run], launcher: Launcher, task: str) -> list[tuple[Run, str]]:
    """Run every unfinished run of ``runs`` that no live driver is running; returns the failures."""
    pending = []
    for run in runs:
        state = run.state()
        if state == "running":
            print(f"{run.folder}: being run by another driver; skipped", flush=True)
        elif state != "finished":
            pending.append(run)
    print(f"{len(runs) - len(pending)} of {len(runs)} runs finished or running elsewhere; {len(pending)} to run")
    in_flight: dict[Any, tuple[Run, float]] = {}
    failures = []
    marker = json.dumps({"host": platform.node(), "pid": os.getpid(), "since": time.time()})
    try:
        while pending or in_flight:
            while pending and len(in_flight) < launcher.jobs:
                run = pending.pop(0)
                if run.extends():  # unfinished first, so that a kill in between leaves a shorter run to resume
                    (run.folder / RESULT).unlink(missing_ok=True)
                if run.extends() or not (run.folder / RUN_RECORD).exists():
                    _record(adapter, run, task)
                done = adapter.progress(run.folder, run.options)
                atomic_write_text(run.folder / RUNNING, marker)
                in_flight[launcher.submit(task, list(run.argv), run.folder)] = (run, time.perf_counter())
                print(f"started {run.folder}" + (f" (resuming, {done:.0%} done)" if done else ""), flush=True)
            for handle, error in launcher.wait(list(in_flight)):
                run, started = in_flight.pop(handle)
                (run.folder / RUNNING).unlink(missing_ok=True)
                if error is None:
                    print(f"finished {run.folder} in {time.perf_counter() - started:.0f} s", flush=True)
                else:
                    failures.append((run, error))
                    message = f"FAILED {run.folder}: {error} (traceback in {run.folder / LOG})"
                    print(message, file=sys.stderr, flush=True)
    finally:
        for run, _ in in_flight.values():
            (run.folder / RUNNING).unlink(missing_ok=True)
        launcher.close()
    return failures


def summarize(adapter: TaskAdapter, runs: list[Run], root: Path, header_lines: list[str]) -> str | None:
    """Write the study's summary files from its finished runs; returns ``summary.md``'s text (None: no run)."""
    from plastic_rl.experiments.report import write_summary

    finished = [run for run in runs if run.state() == "finished"]
    if not finished:
        return None
    records = [
        {
            "group": run.group,
            "seed": run.seed,
            "score": adapter.final_score(run.folder, run.options),
            "details": adapter.final_details(run.folder, run.options),
            "curve": adapter.curve(run.folder, run.options),
            "further_curves": adapter.further_curves(run.folder, run.options),
            "wall_s": _wall_seconds(run),
            "folder": str(run.folder),
        }
        for run in finished
    ]
    groups = list(dict.fromkeys(run.group for run in runs))
    seeds = sorted({run.seed for run in runs})
    example = json.loads((finished[0].folder / RUN_RECORD).read_text())["command"]
    header = [
        *header_lines,
        f"Runs: {len(finished)} of {len(runs)} finished; seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} per condition).",
        f"A run's command line (each run's `run.json` has its own): `{example}`",
    ]
    walls: dict[str, list[float]] = {}
    for record in records:
        walls.setdefault(str(record["group"]), []).append(float(record["wall_s"]))  # type: ignore[arg-type]
    header.append(
        "Mean wall time per run (one torch thread; the last session of resumed runs): "
        + ", ".join(f"{group} {sum(values) / len(values):.0f} s" for group, values in walls.items())
    )
    swept = {key for run in runs for key, _ in run.overrides}
    title = f"{adapter.describe(finished[0].options, swept)}: {' vs '.join(groups)}"
    return write_summary(root, title, header, adapter.labels(), adapter.higher_is_better, adapter.log_scale, records)


def _command_line() -> str | None:
    if Path(sys.argv[0]).name in ("plastic-rl", "cli.py"):
        return shlex.join(["plastic-rl", *sys.argv[1:]])
    return None


def run(args: argparse.Namespace) -> int:
    adapter = adapter_for(args.task)
    root = Path(args.out)
    try:
        runs = plan(adapter, args)
        study_path = root / STUDY
        recorded_jobs = json.loads(study_path.read_text())["jobs"] if study_path.exists() else None
        if len({run.group for run in runs}) > 1 and args.seeds < seeds_needed():
            print(
                f"warning: with {args.seeds} seeds per condition no rank-sum test can reach p < {SIGNIFICANCE:g}; "
                f"use --seeds {seeds_needed()} or more to compare conditions",
                file=sys.stderr,
            )
        if args.status:
            print(status_text(adapter, runs, args.jobs or recorded_jobs or os.cpu_count() or 1))
            return 0
        failures = []
        if not args.summarize_only:
            with study_lock(root, _command_line()):
                for run in runs:
                    recover_folder(run.folder)
                if args.launcher == "ray":
                    launcher: Launcher = RayLauncher(args.jobs, args.address)
                else:
                    launcher = LocalLauncher(args.jobs or os.cpu_count() or 1)
                study = {
                    "task": args.task,
                    "command": _command_line(),
                    "jobs": launcher.jobs,
                    "launcher": args.launcher,
                }
                atomic_write_text(study_path, json.dumps(study, indent=2) + "\n")
                failures = execute(adapter, runs, launcher, args.task)
    except ValueError as error:
        print(f"plastic-rl experiment: error: {error}", file=sys.stderr)
        return 2
    command = _command_line()
    header = [f"Command: `{command}`"] if command else []
    header.append(f"Summarized: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, in {root}.")
    text = summarize(adapter, runs, root, header)
    if text is None:
        print(f"no finished runs in {root}")
    else:
        print(text)
        print(f"Wrote {root}/summary.md, finals.csv and curves.csv/png (more curves_*.csv/png beside them if any)")
    if failures:
        print(f"plastic-rl experiment: {len(failures)} runs failed; re-run the command to retry them", file=sys.stderr)
        return 1
    return 0
