"""Where the runs of a study execute: a local process pool (the default) or a Ray cluster.

Both run :func:`execute_run`, which launches one run into its folder and then marks it finished
with ``result.json``. A Ray task needs nothing but the package on its node: it receives the run's
folder as a tarball (empty for a new run, the checkpoints so far for an interrupted one), runs in
a temporary folder, and returns the folder as a tarball that the driver unpacks in place of its
copy, so no shared filesystem is needed and runs resume on a cluster as they do locally.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for_futures
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plastic_rl.core.files import atomic_write_text
from plastic_rl.core.options import BadInputError
from plastic_rl.experiments.tasks import adapter_for

RESULT, LOG = "result.json", "log.txt"


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too, for C++ and subprocesses) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def execute_run(task: str, config: Any, folder: str) -> dict[str, Any]:
    """Launch (or resume) the run of ``task`` configured by ``config`` into ``folder``, its output in ``log.txt``;
    write ``result.json``."""
    run_folder = Path(folder)
    run_folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    adapter = adapter_for(task)
    with _output_to(run_folder / LOG):
        now = datetime.now(timezone.utc)
        command = " ".join(adapter.command(config))
        print(f"== {now:%Y-%m-%d %H:%M:%S} UTC on {platform.node()}: plastic-rl {command}", flush=True)
        try:
            adapter.launch(config, run_folder)
        except BaseException:
            traceback.print_exc()  # into the run's log; the driver reports the error's message
            raise
    result = {
        "wall_s": round(time.perf_counter() - started, 2),
        "finished_utc": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}",
        "host": platform.node(),
    }
    atomic_write_text(run_folder / RESULT, json.dumps(result, indent=2) + "\n")
    return result


class Launcher(ABC):
    """Runs :func:`execute_run` for many runs, ``jobs`` at a time."""

    jobs: int

    @abstractmethod
    def submit(self, task: str, config: Any, folder: Path) -> Any:
        """Start the run of ``config`` (the task adapter's configuration object); returns a handle for :meth:`wait`."""

    @abstractmethod
    def wait(self, handles: list[Any]) -> list[tuple[Any, str | None]]:
        """Block until a run ends; ``(handle, error message)`` for each that ended (None if it finished)."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers."""


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: one torch thread, and exit as soon as the driver is gone (killed or not)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # an orphan would keep writing into run folders that a new driver resumes

    threading.Thread(target=watch, daemon=True).start()


class LocalLauncher(Launcher):
    """A pool of ``jobs`` fresh (spawned) processes on this machine, one torch thread each."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing

        self.jobs = jobs
        # Spawned, not forked: a fork of a process that has started torch's threads can deadlock.
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
        )

    def submit(self, task: str, config: Any, folder: Path) -> Future:
        return self.pool.submit(execute_run, task, config, str(folder))

    def wait(self, handles: list[Future]) -> list[tuple[Future, str | None]]:
        done, _ = wait_for_futures(handles, return_when=FIRST_COMPLETED)
        ended: list[tuple[Future, str | None]] = []
        for future in done:
            exception = future.exception()
            ended.append((future, None if exception is None else _describe(exception)))
        return ended

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def pack_folder(folder: Path) -> bytes:
    """The folder's files as a gzipped tarball (empty when the folder does not exist)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    """Make ``folder`` hold exactly the files of the tarball ``data``, never a mix of old and new files.

    The tarball is unpacked beside ``folder``; then the old folder is moved aside, the new one moved
    in, and the old one removed. :func:`recover_folder` finishes the swap after a kill in between.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=f".{folder.name}.incoming.", dir=folder.parent))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(incoming, filter="data")
    replaced = folder.with_name(folder.name + ".replaced")
    if folder.exists():
        os.replace(folder, replaced)
    os.replace(incoming, folder)
    shutil.rmtree(replaced, ignore_errors=True)


def recover_folder(folder: Path) -> None:
    """Finish an :func:`unpack_folder` that was killed between its two renames."""
    replaced = folder.with_name(folder.name + ".replaced")
    if replaced.exists():
        if folder.exists():
            shutil.rmtree(replaced)
        else:
            os.replace(replaced, folder)
    for incoming in folder.parent.glob(f".{folder.name}.incoming.*"):
        shutil.rmtree(incoming, ignore_errors=True)


def _execute_shipped_run(task: str, config: Any, archive: bytes) -> tuple[bytes, str | None]:
    """A Ray task: unpack the run folder, run it, and return the folder (also when the run failed)."""
    with tempfile.TemporaryDirectory(prefix="plastic_rl_run_") as scratch:
        folder = Path(scratch, "run")
        unpack_folder(archive, folder)
        try:
            execute_run(task, config, str(folder))
            error = None
        except Exception as exception:  # the files so far still go back, to resume from
            error = _describe(exception)
        return pack_folder(folder), error


class RayLauncher(Launcher):
    """Ray tasks of one CPU each, on the cluster at ``address`` (or a new local instance when None).

    ``jobs`` (default: the cluster's CPUs) caps the runs in flight, so that a run's folder is
    shipped only when it is about to start.
    """

    def __init__(self, jobs: int | None, address: str | None) -> None:
        try:
            import ray
        except ImportError as error:
            raise BadInputError("--launcher ray needs Ray: pip install 'plastic-rl[ray]'") from error
        self.ray = ray
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            ray.init(address=address, num_cpus=jobs if address is None else None, log_to_driver=False)
        self.jobs = jobs or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self.remote = ray.remote(num_cpus=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})(_execute_shipped_run)
        self.folders: dict[Any, Path] = {}

    def submit(self, task: str, config: Any, folder: Path) -> Any:
        handle = self.remote.remote(task, config, pack_folder(folder))
        self.folders[handle] = folder
        return handle

    def wait(self, handles: list[Any]) -> list[tuple[Any, str | None]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        ended: list[tuple[Any, str | None]] = []
        for handle in done:
            folder = self.folders.pop(handle)
            try:
                archive, error = self.ray.get(handle)
            except Exception as exception:  # the task or its node died: nothing came back
                ended.append((handle, _describe(exception)))
                continue
            unpack_folder(archive, folder)
            ended.append((handle, error))
        return ended

    def close(self) -> None:
        for handle in self.folders:
            self.ray.cancel(handle)
        if self.started_ray:
            self.ray.shutdown()
