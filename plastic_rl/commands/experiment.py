"""``plastic-rl experiment TASK``: a resumable grid of runs of any task (maze, patterns, ...), local or on Ray, and
its statistics.

Re-running the same command skips finished runs and resumes the others; ``--status`` says what is done, running and
left; the summary is rebuilt from the finished runs. See :mod:`plastic_rl.experiments.study`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from plastic_rl.core.options import reported_as_bad_input
from plastic_rl.experiments.adapter import TaskAdapter
from plastic_rl.experiments.options import StudyOptions
from plastic_rl.experiments.tasks import adapter_for, task_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(task_names()))
    for task in task_names():
        adapter = adapter_for(task)
        task_parser = tasks.add_parser(
            task,
            help=f"a study of {task!r} runs",
            description=f"A resumable grid of {task!r} runs (conditions x seeds, x --sweep), local or on Ray, "
            "with statistics: re-running the same command picks up where it stopped.",
        )
        group = task_parser.add_argument_group("study")
        group.add_argument(
            "--seeds",
            type=int,
            default=StudyOptions.seeds,
            help="seeds per condition (at least 4 for p < 0.05 to be possible)",
        )
        group.add_argument(
            "--first-seed", type=int, default=StudyOptions.first_seed, help="seeds are first-seed, first-seed + 1, ..."
        )
        group.add_argument(
            "--sweep",
            nargs="+",
            action="append",
            default=[],
            metavar=("KEY", "VALUE"),
            help="KEY VALUE [VALUE ...]: a run per value of the hyperparameter KEY (repeat for a grid)",
        )
        group.add_argument(
            "--condition-set",
            nargs=3,
            action="append",
            default=[],
            metavar=("CONDITION", "KEY", "VALUE"),
            help="a hyperparameter of one condition's runs only (e.g. lstm learning_rate 3e-5), named in their folder "
            "and condition label like a --sweep value; repeat for more",
        )
        group.add_argument("-f", "--out", default=f"runs/experiment/{task}", help="study folder")
        group.add_argument("--jobs", type=int, default=None, help="runs at a time (default: one per CPU)")
        group.add_argument(
            "--launcher", default=StudyOptions.launcher, choices=["local", "ray"], help="process pool or Ray"
        )
        group.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
        group.add_argument("--status", action="store_true", help="print what is done, running and left; run nothing")
        group.add_argument("--summarize-only", action="store_true", help="only rebuild the summary of finished runs")
        adapter.add_arguments(task_parser)


def _command_line() -> str | None:
    """The ``plastic-rl`` command line of this process, when it is one (for the study's records)."""
    if Path(sys.argv[0]).name in ("plastic-rl", "cli.py"):
        return shlex.join(["plastic-rl", *sys.argv[1:]])
    return None


def parsed_study(args: argparse.Namespace) -> tuple[TaskAdapter, StudyOptions]:
    """The task's adapter and the study that the parsed command line ``args`` asks for."""
    adapter = adapter_for(args.task)
    return adapter, StudyOptions.from_parsed(vars(args), adapter.task_options(vars(args)))


def run(args: argparse.Namespace) -> int:
    from plastic_rl.experiments.statistics import SIGNIFICANCE, seeds_needed
    from plastic_rl.experiments.study import check_groups, plan, recorded_jobs, run_study, status_text, summarize

    root = Path(args.out)
    with reported_as_bad_input():
        adapter, study = parsed_study(args)
        runs = plan(adapter, study)
        jobs = args.jobs or recorded_jobs(root) or os.cpu_count() or 1
        if not (args.status or args.summarize_only):
            check_groups(adapter, runs)
    if len({run.group for run in runs}) > 1 and args.seeds < seeds_needed():
        print(
            f"warning: with {args.seeds} seeds per condition no rank-sum test can reach p < {SIGNIFICANCE:g}; "
            f"use --seeds {seeds_needed()} or more to compare conditions",
            file=sys.stderr,
        )
    if args.status:
        print(status_text(adapter, runs, jobs))
        return 0
    command = _command_line()
    failures = [] if args.summarize_only else run_study(adapter, runs, study, command)
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
