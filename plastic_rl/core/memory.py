"""Memory (and open files) checked before they are taken: a size that cannot fit is refused with its estimate.

Without this, an impossible size (``hidden_size`` 10**6, ``n_steps`` 10**9, a maze of 100,001 squares a side) ends
in an allocator traceback, or in minutes of swapping. Each check is on one allocation whose size is known exactly
(or a lower bound of it), against all the memory the device has (RAM and swap, or the GPU's): what it refuses could
not fit on this machine whatever else was running.
"""

from __future__ import annotations

import os
import sys

import torch

GIB = 2**30
OPEN_FILES_MARGIN = 256  # files kept for torch, SB3, TensorBoard and the interpreter itself


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """The memory free on ``device`` now: the GPU's free memory, or the RAM the kernel says is available
    (``MemAvailable``); ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as file:
            fields = dict(line.split(":", 1) for line in file)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def peak_bytes(device: torch.device | str = "cpu") -> int:
    """The most memory this process has held: on CUDA the most torch allocated, else the peak resident size."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource  # POSIX only, as the benchmarks that ask

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def device_bytes(device: torch.device | str = "cpu") -> int | None:
    """All the memory of ``device``: the GPU's, or RAM and swap; ``None`` where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as file:
            fields = dict(line.split(":", 1) for line in file)
        return (int(fields["MemTotal"].split()[0]) + int(fields["SwapTotal"].split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        return _sysconf_bytes()


def _sysconf_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_fits(what: str, needed_bytes: int, device: torch.device | str = "cpu") -> None:
    """Raise ``ValueError`` when ``needed_bytes`` (what ``what`` allocates) exceed all the memory of ``device``."""
    total = device_bytes(device)
    if total is not None and needed_bytes > total:
        raise ValueError(
            f"{what} needs {needed_bytes / GIB:,.1f} GiB of memory, more than this machine's {total / GIB:,.1f} GiB "
            f"({torch.device(device).type}); choose a smaller size"
        )


def check_open_files(what: str, files: int) -> None:
    """Raise ``ValueError`` when ``what`` needs more files open at once than this process may have (``ulimit -n``,
    less a margin for the libraries' own): making that many would take minutes and then fail."""
    try:
        import resource
    except ImportError:  # not on POSIX: no limit to read
        return
    limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limit != resource.RLIM_INFINITY and files > limit - OPEN_FILES_MARGIN:
        raise ValueError(
            f"{what} needs {files:,} files open at once; this process may have {limit:,} (ulimit -n), "
            f"{OPEN_FILES_MARGIN} of them kept for the libraries: choose a smaller size or raise the limit"
        )
