"""One driver per study folder: two ``plastic-rl experiment`` commands on one folder would train the same runs at
once and interleave their files.

The lock is an ``flock`` on ``OUT/.lock``, which the operating system releases when its process ends however it ends
(a kill, a session's end), so a lock is never left stale. The file names its holder, for the second command's error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from plastic_rl.core.options import BadInputError

LOCK_FILE = ".lock"


class StudyLocked(BadInputError):
    """The study folder is held by another live command."""


@contextlib.contextmanager
def study_lock(root: Path, command: str | None) -> Iterator[None]:
    """Hold ``root``'s lock for the ``with`` block; :class:`StudyLocked`, naming the holder, if another process has
    it."""
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyLocked(f"{root} is in use by another plastic-rl experiment ({_holder(descriptor)}): "
                              "wait for it to finish or stop it, then run this again") from None  # fmt: skip
        holder = {"pid": os.getpid(), "host": platform.node(), "since": time.time(), "command": command}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _holder(descriptor: int) -> str:
    try:
        holder = json.loads(os.pread(descriptor, 65536, 0))
        since = datetime.fromtimestamp(holder["since"], timezone.utc)
    except (ValueError, KeyError, TypeError, OSError):
        return "its holder could not be read"
    command = f": {holder['command']}" if holder.get("command") else ""
    return f"pid {holder['pid']} on {holder['host']} since {since:%Y-%m-%d %H:%M} UTC{command}"
