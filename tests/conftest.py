import os

import pytest

# pygame must never try to open a real display or audio device in tests.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


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
