import argparse
import os

import pytest
import torch

from plastic_rl.agents.config import TrainConfig
from plastic_rl.commands import train

# pygame must never try to open a real display or audio device in tests.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Give every test torch's thread count back: the commands set it for their process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (a module asks for it with ``pytestmark``)."""
    torch.set_num_threads(1)


class _CodeCarrier:
    """Unpickled, it runs a shell command that creates ``marker``: what a crafted file would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def code_carrier():
    """Make an object whose unpickling creates the file ``marker`` (tests that loading a file runs no code)."""
    return _CodeCarrier


@pytest.fixture
def train_config():
    """Make the :class:`TrainConfig` that ``plastic-rl train`` builds from its options ``argv`` (for the library's
    training functions, which take one)."""

    def build(*argv: str) -> TrainConfig:
        parser = argparse.ArgumentParser(prog="plastic-rl train")
        train.add_arguments(parser)
        return TrainConfig.from_options(vars(parser.parse_args(argv)))

    return build
