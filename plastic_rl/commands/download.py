"""``plastic-rl download NAME``: fetch a dataset's official files into the data directory."""

from __future__ import annotations

import argparse
import importlib

from plastic_rl.data import DATASETS, resolve_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=sorted(DATASETS), help="the dataset to fetch")
    parser.add_argument("--data-dir", default=None, help="where to put it (default: $PLASTIC_RL_DATA or a user cache)")


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    importlib.import_module(DATASETS[args.dataset]).download(data_dir)  # a DataError is reported by the CLI
    print(f"{args.dataset}: ready in {data_dir}")
    return 0
