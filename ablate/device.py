"""Where and how a fold trains: the device, its precision, loader processes, and which GPU each
study worker uses. Every choice is made from facts about the hardware, never from a timing, so
the same machine always makes the same choice (and so gives the same numbers).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ablate.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a device; 'auto' and 'cuda' mean the current GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available")
        index = int(name.split(":", 1)[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", index)
    return torch.device(name)


def use_device(device: torch.device) -> None:
    """Make `device` the current one, so nothing (pinned-memory threads, capability checks, cuBLAS
    handles) touches GPU 0 when the fold trains on another."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # cuDNN's fused attention builds a graph for every new shape (219 ms per call on new frame
        # counts, 0.6 ms on seen ones; the memory-efficient kernel 0.8 ms either way: H100, torch
        # 2.11, batch 64, 16 heads, 2026-11-26), and our batches bring new frame counts for epochs:
        # the baseline trainer ran 4,957 sequences/s with it, 6,695-8,047 without
        torch.backends.cuda.enable_cudnn_sdp(False)


@functools.lru_cache(maxsize=1)
def _cpu_bf16_helps() -> bool:
    """bf16 autocast pays on CPUs with AMX tiles; with AVX512-BF16 alone it measured no faster here
    (253 vs 260 samples/s on the quick preset), so fp32 keeps full precision there."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read().split()
    except OSError:
        return False


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware on this GPU (compute capability 8.0, Ampere, or later). Not
    torch.cuda.is_bf16_supported(), which also counts bf16 emulated in software (slow on a T4) and
    looks at the current device rather than the training one."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp(name: str, device: torch.device, rnn: bool = False) -> torch.dtype | None:
    """Autocast dtype, or None for full fp32. `rnn`: the model has LSTM layers, which autocast runs
    in fp16 on cuDNN even under bf16; then fp16 it is, with a GradScaler (the trainer adds one for
    fp16), so that small gradients do not underflow."""
    if name == "off":
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16":
        return torch.float16 if rnn and device.type == "cuda" else torch.bfloat16
    if name != "auto":
        raise UserError(f"amp {name!r}: expected auto, off, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) and not rnn else torch.float16
    return torch.bfloat16 if _cpu_bf16_helps() else None


def release_memory() -> None:
    """Between trials: give back the GPU memory the last one reserved at its peak, so the next trial
    (or another worker on the same GPU) can have it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()  # tensors held only by reference cycles (a fold that stopped with an error) first
        torch.cuda.empty_cache()


def from_host(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. To a GPU through page-locked memory and without blocking: a copy
    from ordinary memory would make the host wait for the device's queued work."""
    if t.device == device:
        return t
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else ""


def compiled(fn: Any, dynamic: bool | None = None) -> Any:
    """torch.compile(fn), for `compile: true`. Inductor's coalescing analysis of tilings is
    switched off: on torch 2.11 with CUDA it failed an assertion (tiling_utils.get_pw_red_splits)
    compiling the baseline transformer on an H100, 2026-11-26. With it off the model compiled
    there, and then a backward kernel failed for a batch with another frame count (see README)."""
    import torch._inductor.config as inductor

    if hasattr(inductor.triton, "coalesce_tiling_analysis"):
        inductor.triton.coalesce_tiling_analysis = False
    return torch.compile(fn, dynamic=dynamic)


_CUBLAS_STARTED: set[str] = set()  # CUDA devices that trained without CUBLAS_WORKSPACE_CONFIG in this process


def set_deterministic(on: bool, device: torch.device) -> None:
    """Deterministic algorithms for a fold on `device` (GPU runs are not bit-reproducible without
    them, and are slower with them). cuBLAS reads its workspace setting when it creates a handle:
    set before the first use. A process whose earlier fold trained on that GPU without it (a study
    worker's earlier trial without `deterministic`) may have started cuBLAS there: that is warned,
    as the matrix products may then not repeat."""
    configured = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    if device.type == "cuda" and not configured:
        if not on:
            _CUBLAS_STARTED.add(str(device))
        elif str(device) in _CUBLAS_STARTED:
            warnings.warn(f"deterministic: an earlier fold in this process trained on {device} without "
                          "CUBLAS_WORKSPACE_CONFIG, so cuBLAS may have started without it and its products may not "
                          "repeat; set CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting ablate", RuntimeWarning,
                          stacklevel=2)
    if on and not configured:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(on)


# glibc's malloc gives blocks over its mmap threshold (128 KiB at first, raised as they are freed,
# to 32 MiB at most) back to the OS when they are freed, and trims the heap's free top: a training
# batch's tensors of a few MB then come back as fresh pages, each faulted in and zeroed by the
# kernel (a 6.4 MB batch of features: median 2.9 ms to allocate and fill, 0.2 ms with these
# settings; 40 MB: 20 ms and 2 ms; this box, glibc 2.36, 1 thread, 2026-11-27). Blocks up to
# MMAP_THRESHOLD (or MMAP_THRESHOLD_MAX) come from the heap instead, and up to TRIM_THRESHOLD of its
# free top is kept for the next batch.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 256 << 20  # bytes
MMAP_THRESHOLD_MAX = 32 << 20  # bytes: the most that glibc's manual allows (some versions refuse more)
TRIM_THRESHOLD = 512 << 20  # bytes: at most this much freed memory kept by the process at its heap's top


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Once per process, for folds on the CPU: set glibc's thresholds above (whether they were set).
    Nothing where the user set them (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_) or where the
    C library is not glibc. It changes no number, only where memory comes from."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) or bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and mmap


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, else all of the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Placement:
    """The device of each study worker on this machine."""

    devices: tuple[str, ...]

    def of(self, worker: int) -> str:
        return self.devices[worker % len(self.devices)]


def place(requested: str | None, cuda_count: int) -> Placement:
    """Worker i trains on GPU i mod G (G GPUs on this machine), or on the i-th of `requested`
    ('cuda:0,cuda:2', '0,2', 'cpu'), cyclically: listing a GPU twice puts two workers on it."""
    if not requested:
        return Placement(tuple(f"cuda:{g}" for g in range(cuda_count)) or ("cpu",))
    out = []
    for item in (s.strip() for s in requested.split(",")):
        name = f"cuda:{item}" if item.isdigit() else item
        if not (name == "cpu" or (name.startswith("cuda:") and name[5:].isdigit())):
            raise UserError(f"--devices: {item!r} is not a device; expected e.g. 0,1 or cuda:0,cuda:1 or cpu")
        if name.startswith("cuda:") and int(name[5:]) >= cuda_count:
            raise UserError(f"--devices: {name} is not on this machine ({cuda_count} GPU(s))")
        out.append(name)
    if not out:
        raise UserError("--devices: expected a comma-separated list, e.g. 0,1")
    return Placement(tuple(out))


# a CUDA error after which this process's context is broken (the study's worker stops: queue.py)
_FATAL_CUDA = ("device-side assert", "illegal memory access", "unspecified launch failure", "CUDA error: an illegal",
               "misaligned address", "CUBLAS_STATUS_EXECUTION_FAILED", "cudaErrorLaunchFailure")


def device_failure(e: BaseException) -> str | None:
    """'oom' or 'fatal' for a failure of the device rather than of the configuration."""
    if isinstance(e, torch.OutOfMemoryError):
        return "oom"
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _FATAL_CUDA):
        return "fatal"
    return None
