"""The fused unroll's C++ backend: building ``csrc/plastic_unroll.cpp`` and handing it the buffers.

The kernel is built with the machine's compiler on first use: one pass over the trace per step, the time loop in
C++, threads over slices of the batch (:func:`batch_slices`), or over the rows of each step for a single episode.
It runs the rules whose :class:`~plastic_rl.core.rules.DecayForm` has a ``kernel_code``; the kernel reports the
codes it was compiled with, and a kernel whose codes differ from the registry's is not used.
``PLASTIC_RL_NO_CPP=1`` forces the PyTorch backend.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from plastic_rl.core.files import atomic_write_bytes
from plastic_rl.core.fused.plan import StepRange, UnrollBuffers, UnrollGradients
from plastic_rl.core.rules import kernel_rule_codes

NO_CPP_ENVIRONMENT_VARIABLE = "PLASTIC_RL_NO_CPP"
# PLASTIC_RL_SANITIZE=address builds the kernel with AddressSanitizer (a separately cached build); run Python with
# LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0, so
# that the runtime comes first and finds the C++ exception functions it intercepts (TORCH_CHECK throws).
SANITIZE_ENVIRONMENT_VARIABLE = "PLASTIC_RL_SANITIZE"
SANITIZERS = ("address",)
KERNEL_SOURCE = Path(__file__).parent.parent / "csrc" / "plastic_unroll.cpp"
PLASTICITY_CODES = {"none": 0, "shared": 1, "full": 2}
MAX_BATCH_SLICES = 8
BUILD_LOCK_FILE = "plastic_rl.build.lock"
TORCH_BUILD_LOCK_FILE = "lock"  # torch.utils.cpp_extension's FileBaton in the build folder


@functools.cache
def cpp_extension_module() -> ModuleType | None:
    """The compiled C++ kernel, built on first use; ``None`` (after a one-line warning) when unavailable."""
    if os.environ.get(NO_CPP_ENVIRONMENT_VARIABLE, "") not in ("", "0"):
        return None
    try:
        from torch.utils import cpp_extension

        _put_pip_ninja_on_path()
        try:
            module = _build(cpp_extension, openmp=True)
        except Exception:  # a compiler without OpenMP (Apple's clang): the kernel runs on one thread
            module = _build(cpp_extension, openmp=False)
        compiled_codes = dict(module.rule_codes())
        if compiled_codes != kernel_rule_codes():
            raise RuntimeError(f"its rule codes {compiled_codes} differ from the registry's {kernel_rule_codes()}")
        return module
    except Exception as error:  # no compiler, no ninja, a failed build: all mean the PyTorch path
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        warnings.warn(f"plastic_rl: C++ plastic kernel unavailable, using the PyTorch path ({reason})", stacklevel=2)
        return None


def _build(cpp_extension: ModuleType, openmp: bool) -> ModuleType:
    # Without -fopenmp, at::parallel_for compiles to a plain loop: the kernel's threads come from this flag, and at
    # run time from torch's own OpenMP library (same soname, already loaded), so torch.set_num_threads applies.
    threads = ["-fopenmp"] if openmp else ["-fopenmp-simd"]
    name = "plastic_rl_plastic_unroll" if openmp else "plastic_rl_plastic_unroll_serial"
    sanitizer = os.environ.get(SANITIZE_ENVIRONMENT_VARIABLE, "")
    sanitize = []
    if sanitizer:
        if sanitizer not in SANITIZERS:
            raise ValueError(
                f"{SANITIZE_ENVIRONMENT_VARIABLE} must be one of {', '.join(SANITIZERS)}; got {sanitizer!r}"
            )
        sanitize = [f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer", "-g"]
        name += f"_{sanitizer}_sanitized"
    # torch rebuilds whenever the source's path changes (ninja sees a new command), so checkouts of the same kernel
    # in two places took turns rebuilding it (a minute each). One build per source text and flags instead: their hash
    # names the build, and the build compiles a copy kept in its own folder.
    source_text = KERNEL_SOURCE.read_bytes()
    cflags = ["-O3", "-march=native", "-ffp-contract=fast", *_vector_width(), *threads, *sanitize]
    name += "_" + hashlib.sha256(source_text + " ".join(cflags).encode()).hexdigest()[:12]
    build_directory = Path(cpp_extension._get_build_directory(name, verbose=False))
    source = build_directory / KERNEL_SOURCE.name
    if not source.exists() or source.read_bytes() != source_text:
        atomic_write_bytes(source, source_text)
    with _build_lock(build_directory, name):
        if not (build_directory / f"{name}.so").exists():
            print(f"plastic_rl: building the C++ plastic kernel {name} (first use, 1-3 minutes)", file=sys.stderr)
        return cpp_extension.load(
            name=name,
            sources=[str(source)],
            extra_cflags=cflags,
            extra_ldflags=(threads if openmp else []) + sanitize,
            verbose=False,
        )


@contextlib.contextmanager
def _build_lock(build_directory: Path, name: str) -> Iterator[None]:
    """Hold the build folder's lock, saying so when another process holds it.

    torch's own build lock is a file that a killed build leaves behind, and torch then waits for it forever, without
    a word. This one is an ``flock``, released by the OS however its process ends; every build of this kernel takes
    it first, so a torch lock file found while holding it was left by a killed build, and is removed.
    """
    import fcntl  # POSIX: here, not at the top, so that the core still imports where the kernel cannot be built

    descriptor = os.open(build_directory / BUILD_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"plastic_rl: waiting for another process to finish building the C++ kernel {name}", file=sys.stderr)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        stale = build_directory / TORCH_BUILD_LOCK_FILE
        if stale.exists():
            print(f"plastic_rl: removing {stale}, left by a build that was killed", file=sys.stderr)
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(descriptor)


def _vector_width() -> list[str]:
    """256-bit vectors on x86, where ``-march=native`` would take 512 on an AVX-512 machine: the backward ran 16-23%
    faster and the forward 7-9% on 256 (Zen 4, N = 200, B = 32, one and two threads, builds interleaved in one
    process; RESULTS.md). Measured, not modelled: the loops read and write several streams per element."""
    return ["-mprefer-vector-width=256"] if platform.machine().lower() in ("x86_64", "amd64") else []


def _put_pip_ninja_on_path() -> None:
    """Put the pip package's ``ninja`` first on PATH, where torch looks for it.

    Always the same ninja, whether or not the venv is activated: ninja 1.12 changed how its build log hashes
    commands, so a system ninja (1.11 on Debian 12) and the pip one (1.13) each read the other's log as "command
    line changed" and rebuilt the kernel in turns (a minute of CPU at every switch, measured).
    """
    try:
        import ninja
    except ImportError:
        return  # torch then uses whatever ninja is on PATH
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != ninja.BIN_DIR:
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path


def cpp_available() -> bool:
    """Whether the C++ kernel is (or can be) built on this machine."""
    return cpp_extension_module() is not None


def batch_slices(batch: int) -> int:
    """Into how many slices the C++ kernel cuts a batch, each unrolled whole by one thread (1: no cut; the threads
    share the rows of every step instead, which a single episode needs).

    Slices need no synchronisation between steps and keep each thread on its own traces; they re-read ``w``
    and ``alpha`` once per slice and step, which measured cheaper at every size from N = 200 to 1,001 on the
    development machine (RESULTS.md). The count depends on the batch size only, never on the number of
    threads, so that results do not either.
    """
    return min(batch, MAX_BATCH_SLICES)


def _or_empty(tensor: Tensor | None, like: Tensor) -> Tensor:
    """The kernels take an empty tensor for an absent buffer."""
    return like.new_empty(0) if tensor is None else tensor


def _kernel_options(
    buffers: UnrollBuffers,
) -> tuple[Tensor, Tensor, Tensor, float, float, int, int, bool, bool, int, int]:
    """The non-buffer arguments that the C++ forward and backward kernels share, in their order."""
    options, plan = buffers.options, buffers.plan
    # Without plasticity the kernel has no trace to update and ignores the rule: any code will do.
    rule_code = kernel_rule_codes()[options.rule] if options.plastic else 0
    return (
        torch.empty(0, dtype=torch.bool) if buffers.episode_starts is None else buffers.episode_starts,
        torch.empty(0, dtype=torch.int64) if plan.pre_reset_index is None else plan.pre_reset_index,
        torch.empty(0, dtype=torch.uint8) if buffers.clip_flags is None else buffers.clip_flags,
        buffers.hebbian_learning_rate,
        buffers.clip,
        PLASTICITY_CODES[options.plasticity],
        rule_code,
        options.input_mode == "clamp",
        options.bias_neuron,
        plan.every,
        batch_slices(buffers.drive.shape[1]),
    )


def forward_worker(batch: int) -> Any | None:
    """Background threads (all of torch's but the caller's) that run a recording's next product while the caller
    steps its envs, for a batch of ``batch``; ``None`` where there are none to spare or the batch is not sliced."""
    module = cpp_extension_module()
    threads = torch.get_num_threads() - 1
    if module is None or not module.multithreaded() or threads < 1 or batch_slices(batch) < 2:
        return None
    return module.ForwardWorker(min(threads, batch_slices(batch) - 1))


def forward_arguments(buffers: UnrollBuffers) -> tuple[Any, ...]:
    """The C++ forward kernel's arguments before its step range (the same while ``buffers`` hold the same tensors)."""
    like = buffers.drive
    tensors = [
        buffers.drive,
        buffers.initial_activation,
        _or_empty(buffers.initial_trace, like),
        buffers.weight,
        _or_empty(buffers.plasticity_coefficient, like),
        _or_empty(buffers.bias, like),
        buffers.reset_activation,
        buffers.outputs,
        buffers.presynaptic,
        _or_empty(buffers.trace_matvec, like),
        _or_empty(buffers.trace, like),
        _or_empty(buffers.checkpoints, like),
        _or_empty(buffers.pre_reset_traces, like),
        _or_empty(buffers.initial_eligibility, like),
        _or_empty(buffers.eligibility, like),
        _or_empty(buffers.eligibility_checkpoints, like),
        _or_empty(buffers.pre_reset_eligibility, like),
        _or_empty(buffers.modulator_weight, like),
        _or_empty(buffers.modulator_bias, like),
        _or_empty(buffers.modulation, like),
    ]
    return (tensors, *_kernel_options(buffers))


def cpp_forward(buffers: UnrollBuffers, steps: StepRange | None = None) -> None:
    """:func:`~plastic_rl.core.fused.torch_backend.torch_forward` in the C++ kernel."""
    steps = StepRange.whole(buffers.steps) if steps is None else steps
    module = cpp_extension_module()
    assert module is not None, "the C++ backend runs only where the kernel is built"
    module.forward(*forward_arguments(buffers), steps.first, steps.last, steps.pending, steps.settle)


def cpp_recorded_step(
    arguments: tuple[Any, ...],
    step: int,
    pending: bool,
    product_started: bool,
    redo: bool,
    start_next: bool,
    worker: Any,
) -> None:
    """Step ``step`` of a recording, whose buffers' :func:`forward_arguments` are ``arguments``, on ``worker``
    (:func:`forward_worker`): its product (unless ``product_started`` in the background after the previous step;
    ``redo``: again for the episodes that start at ``step``, which it did not know), its activation, and with
    ``start_next`` the next step's product started in the background (``worker.wait()`` before the buffers are
    touched). ``pending``: the previous step's trace update is to be done with this step's product."""
    worker.step(*arguments, step, pending, product_started, redo, start_next)


def cpp_backward(
    buffers: UnrollBuffers,
    gradients: UnrollGradients,
    workspace: Tensor | None,
    eligibility_workspace: Tensor | None = None,
) -> None:
    """:func:`~plastic_rl.core.fused.torch_backend.torch_backward` in the C++ kernel."""
    module = cpp_extension_module()
    assert module is not None, "the C++ backend runs only where the kernel is built"
    like = buffers.drive
    gradients.grad_hebbian_learning_rate = module.backward(
        [
            _or_empty(gradients.grad_outputs, like),
            like.new_empty(0),
            buffers.drive,
            buffers.outputs,
            buffers.presynaptic,
            _or_empty(buffers.initial_trace, like),
            _or_empty(buffers.trace, like),
            _or_empty(buffers.checkpoints, like),
            _or_empty(buffers.pre_reset_traces, like),
            buffers.weight,
            _or_empty(buffers.plasticity_coefficient, like),
            gradients.grad_pre_activation,
            gradients.grad_drive,
            gradients.grad_initial_activation,
            _or_empty(gradients.grad_trace, like),
            _or_empty(gradients.grad_plasticity_coefficient, like),
            _or_empty(workspace, like),
            _or_empty(buffers.initial_eligibility, like),
            _or_empty(buffers.eligibility, like),
            _or_empty(buffers.eligibility_checkpoints, like),
            _or_empty(buffers.pre_reset_eligibility, like),
            _or_empty(buffers.modulator_weight, like),
            _or_empty(buffers.modulation, like),
            _or_empty(gradients.grad_eligibility, like),
            _or_empty(gradients.grad_modulation, like),
            _or_empty(eligibility_workspace, like),
        ],
        *_kernel_options(buffers),
        buffers.plan.reverse,
    )
