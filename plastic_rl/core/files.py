"""Files that are never left half-written.

Everything the suite writes (models, checkpoints, caches, CSVs, figures) goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
only then replace the target with :func:`os.replace`, which is atomic on POSIX and Windows. A kill
at any moment leaves either the old file or the new one, never a truncated mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any


def _process_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


# Read once, at import: a new file gets the mode open() gives it (0666 less the umask), not mkstemp's 0600, so a
# result written on a shared machine is as readable as any other file there.
_NEW_FILE_MODE = 0o666 & ~_process_umask()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_abandoned_partials(path: Path) -> None:
    """Remove the temporary files of ``path`` left by processes that were killed while writing it."""
    prefix = f".{path.name}."
    for partial in path.parent.glob(f"{glob_escape(prefix)}*.partial*"):
        pid = partial.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                partial.unlink()


def _partial_file(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file beside ``path`` (its folder created if needed), with a new file's usual mode: its open
    descriptor and name. Its name holds the writer's process id, so that a later write of ``path`` removes what a
    killed writer left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(path)
    descriptor, partial = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.fchmod(descriptor, _NEW_FILE_MODE)
    return descriptor, partial


@contextlib.contextmanager
def _replaced_on_success(partial: str, path: str | os.PathLike) -> Iterator[None]:
    """Move ``partial`` over ``path`` when the block succeeds; when it fails, remove ``partial`` and re-raise,
    naming ``path`` in a file-system error that names no file (a full disk fails the flush, not an open)."""
    try:
        yield
        os.replace(partial, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        if isinstance(error, OSError) and error.filename in (None, partial):  # say which file the user asked for
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path:
        The final file. Its folder is created if needed.
    mode:
        ``"wb"`` (default) or ``"w"`` for text.

    On an exception inside the block the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w'; got {mode!r}")
    descriptor, partial = _partial_file(Path(path), ".partial")
    # surrogateescape: a path read from the file system (a non-UTF-8 folder name) is written back as its bytes
    text = mode == "w"
    with _replaced_on_success(partial, path):
        with os.fdopen(
            descriptor, mode, encoding="utf-8" if text else None, errors="surrogateescape" if text else None
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, for a library that writes a file by name; it replaces ``path`` on success.

    The temporary name ends with ``path``'s suffix (libraries such as SB3 and numpy add theirs when it
    is missing). The file is flushed to disk before the rename; on an exception it is removed.
    """
    path = Path(path)
    descriptor, partial = _partial_file(path, f".partial{path.suffix}")
    os.close(descriptor)
    with _replaced_on_success(partial, path):
        yield Path(partial)
        descriptor = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# Errors of writing a file, and what they mean for the path that was being written.
_WRITE_FAULTS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EEXIST: "a file is where a folder is needed",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, where a file is needed",
}


def file_fault_message(error: OSError) -> str:
    """What went wrong with a file, for an error line: ``cannot write PATH: <reason>`` for a write fault."""
    path = error.filename if error.filename is not None else "a file"
    if error.errno in _WRITE_FAULTS:
        return f"cannot write {path}: {_WRITE_FAULTS[error.errno]}"
    return f"{path}: {error.strerror or error}"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cached_json(path: str | os.PathLike, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-serialisable result, kept in ``path`` with ``key`` and reused while ``key`` matches.

    For measurements of a file that are costly to repeat (a model's held-out evaluation): put the
    file's :func:`file_sha256` in ``key``, so a retrained model is measured again. An unreadable
    record, or one with another key, is measured again and replaced (atomically).
    """
    path = Path(path)
    if path.exists():
        try:
            record = json.loads(path.read_text())
            if record["key"] == key:
                return record["value"]
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or for other inputs: measured again below
    value = compute()
    atomic_write_text(path, json.dumps({"key": key, "value": value}, indent=1) + "\n")
    return value
