"""A resumable grid of runs of any task, and its statistics (``plastic-rl experiment TASK``).

A study is every (condition, overrides, seed) of the command line, each an independent run in its
own folder ``OUT/<condition>[__<overrides>]/seed_<S>/`` (the overrides: the condition's own
``--condition-set`` settings, then its ``--sweep`` values) that records its full configuration in
``run.json`` (with the ``plastic-rl`` command line that re-runs or resumes it alone). Runs go to
the local process pool (``--jobs`` at a time, one torch thread each) or to Ray (``--launcher
ray``). Re-running the same command skips finished runs and resumes the others from their last
checkpoint; a folder whose recorded configuration differs from the command's is an error that says
what differs. ``--status`` prints what is done, running and left, with a time estimate. The summary
(see :mod:`plastic_rl.experiments.summary`) is rebuilt from the finished runs of the grid.

Tasks: see :mod:`plastic_rl.experiments.tasks`.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
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
from plastic_rl.experiments.options import StudyOptions
from plastic_rl.experiments.summary import write_summary

RUN_RECORD, RUNNING, STUDY = "run.json", "running.json", "study.json"


@dataclass(frozen=True, eq=False)
class Run:
    """One run of the grid."""

    condition: str
    overrides: tuple[tuple[str, str], ...]
    seed: int
    folder: Path
    config: Any  # the adapter's configuration object, which its launch trains
    argv: tuple[str, ...]  # the plastic-rl command line of the run, without its folder
    options: dict[str, Any]
    # Every option's default (TaskAdapter.option_defaults): what a record made before an option existed stands for.
    option_defaults: dict[str, Any]

    def recorded_options(self) -> dict[str, Any] | None:
        """The options recorded in the run's folder (``None`` if none are), those added since at their default."""
        path = self.folder / RUN_RECORD
        if not path.exists():
            return None
        return {**self.option_defaults, **json.loads(path.read_text())["options"]}

    def extends(self) -> bool:
        """Whether the folder holds a shorter run of this one (:func:`plan` allows no other difference)."""
        recorded = self.recorded_options()
        return recorded is not None and recorded != self.options

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


def _check_positive(option: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or value < minimum):
        raise ValueError(f"{option} must be an integer >= {minimum}; got {value}")


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def plan(adapter: TaskAdapter, study: StudyOptions) -> list[Run]:
    """Every run of the study, checked against the configuration recorded in its folder."""
    _check_positive("--seeds", study.seeds)
    _check_positive("--first-seed", study.first_seed, minimum=0)
    _check_positive("--jobs", study.jobs)
    _check_positive(f"--{adapter.budget_option}", adapter.budget(study.task_options))
    if study.address and study.launcher != "ray":
        raise ValueError("--address needs --launcher ray")
    for sweep in study.sweep:
        if len(sweep) < 2:
            raise ValueError(f"--sweep takes a key and at least one value; got {' '.join(sweep)!r}")
        if sweep[0] in adapter.scoring_options:
            raise ValueError(f"--sweep {sweep[0]}: it decides how runs are scored, so it is one value for the study")
        ignoring = [condition for condition in study.conditions if sweep[0] in adapter.unused_options(condition)]
        if ignoring and len(sweep) > 2:
            raise ValueError(
                f"--sweep {sweep[0]}: {', '.join(ignoring)} runs do not use {sweep[0]}, so each of its values would "
                f"repeat the same runs; sweep it without {', '.join(ignoring)}, or set it per condition "
                "(--condition-set)"
            )
    root = Path(study.out)
    adapter.check_options(study.task_options, root)
    defaults = _json(adapter.options(adapter.default_config()))
    sweeps = [[(sweep[0], value) for value in sweep[1:]] for sweep in study.sweep]
    settings = _condition_settings(study, adapter)
    runs, mismatches = [], []
    for seed in range(study.first_seed, study.first_seed + study.seeds):
        for condition in study.conditions:
            for swept in itertools.product(*sweeps):
                overrides = (*settings.get(condition, ()), *swept)
                name = condition + "".join(f"__{key}={value}" for key, value in overrides).replace(os.sep, "_")
                folder = root / name / f"seed_{seed}"
                config = adapter.config(study.task_options, condition, seed, dict(overrides))
                options = _json(adapter.options(config))
                argv = tuple(adapter.command(config))
                run = Run(condition, overrides, seed, folder, config, argv, options, defaults)
                differences = _differences(run)
                if differences and not _extends(adapter, run, differences):
                    mismatches += [
                        f"{run.folder}: {key} is {old!r} there, {new!r} now" for key, old, new in differences
                    ]
                runs.append(run)
    _check_distinct(adapter, runs)
    if mismatches:
        raise ValueError(
            "runs in the study folder were made with other settings (use another --out, or remove those runs):\n  "
            + "\n  ".join(mismatches[:10])
            + (f"\n  ... and {len(mismatches) - 10} more" if len(mismatches) > 10 else "")
        )
    return runs


def _check_distinct(adapter: TaskAdapter, runs: list[Run]) -> None:
    """Refuse two groups of identical runs: one value written two ways (``3e-3`` and ``0.003``) reads the same."""
    groups: dict[str, Run] = {}
    for run in runs:
        earlier = groups.setdefault(json.dumps(adapter.read_options(run.options), sort_keys=True), run)
        if earlier is not run:
            raise ValueError(
                f"{earlier.group} and {run.group} are the same runs: their values are equal once read; "
                "give each value once"
            )


def _condition_settings(study: StudyOptions, adapter: TaskAdapter) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each condition's ``--condition-set`` settings, ``(key, value)`` in the command line's order, checked."""
    swept = {sweep[0] for sweep in study.sweep}
    settings: dict[str, dict[str, str]] = {}
    for condition, key, value in study.condition_set:
        if condition not in study.conditions:
            raise ValueError(
                f"--condition-set CONDITION must be one of the study's conditions ({', '.join(study.conditions)}); "
                f"got {condition!r}"
            )
        if key in swept:
            raise ValueError(f"--condition-set {condition} {key}: {key} is also swept (--sweep {key}); set it one way")
        if key in settings.get(condition, {}):
            raise ValueError(f"--condition-set {condition} {key} is given twice; give it once")
        if key in adapter.scoring_options:
            raise ValueError(f"--condition-set {condition} {key}: it decides how runs are scored, so it is one value "
                             "for the study")  # fmt: skip
        if key in adapter.unused_options(condition):
            raise ValueError(f"--condition-set {condition} {key}: {condition} runs do not use {key}")
        settings.setdefault(condition, {})[key] = value
    return {condition: tuple(values.items()) for condition, values in settings.items()}


def _differences(run: Run) -> list[tuple[str, Any, Any]]:
    """``(option, recorded value, value now)`` for each option that differs from the run folder's record."""
    recorded = run.recorded_options()
    if recorded is None:
        return []
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
        "command": adapter.shell_command(run.config, run.folder),
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


def check_groups(adapter: TaskAdapter, runs: list[Run]) -> None:
    """Start no run unless every group's unfinished runs could start (:meth:`TaskAdapter.check_run`, one run per
    group): a condition that cannot run on the task is refused once, not as a failure per run."""
    checked = set()
    for run in runs:
        if run.group in checked or run.state() == "finished":
            continue
        checked.add(run.group)
        try:
            adapter.check_run(run.config)
        except ValueError as error:
            raise ValueError(f"{run.group} cannot run: {error}") from error


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
                in_flight[launcher.submit(task, run.config, run.folder)] = (run, time.perf_counter())
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


def recorded_jobs(root: Path) -> int | None:
    """The runs at a time of the study's last execution (``study.json``), if it ran."""
    path = root / STUDY
    return json.loads(path.read_text())["jobs"] if path.exists() else None


def run_study(adapter: TaskAdapter, runs: list[Run], study: StudyOptions, command: str | None) -> list[tuple[Run, str]]:
    """Run the study's unfinished runs under its lock, on its launcher; returns the failures.

    ``command`` is the command line that runs the study, recorded in ``study.json`` and the lock for the next driver.
    """
    root = Path(study.out)
    with study_lock(root, command):
        for run in runs:
            recover_folder(run.folder)
        if study.launcher == "ray":
            launcher: Launcher = RayLauncher(study.jobs, study.address)
        else:
            launcher = LocalLauncher(study.jobs or os.cpu_count() or 1)
        record = {"task": study.task, "command": command, "jobs": launcher.jobs, "launcher": study.launcher}
        atomic_write_text(root / STUDY, json.dumps(record, indent=2) + "\n")
        return execute(adapter, runs, launcher, study.task)
