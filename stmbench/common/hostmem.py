"""Host memory for CPU training: fewer page faults per step.

A CPU training step allocates its activations and gradients afresh (PyTorch has no caching allocator
for host memory).  With glibc's defaults an allocation above its mmap threshold (128 KiB at first,
adapting to what was freed before) is a new ``mmap`` that the kernel zeroes page by page on first
touch, and memory freed at the top of the heap goes back to the kernel, to be faulted in again at
the next step.  On a 2-core CPU, LoRA training of a 20M-parameter model takes a quarter of the page
faults, half the system time and 12% less time with the settings below
(``benchmarks/bench_allocator.py``; ``benchmarks/README.md``).

A process stmbench starts (the console command, the ranks of a launched run, the pool's workers and
Ray's tasks) calls :func:`tune`, which sets glibc's ``mallopt``: the largest ``M_MMAP_THRESHOLD``
glibc accepts (32 MiB), so buffers up to that size are reused from the heap instead of mapped
afresh, and a ``M_TRIM_THRESHOLD`` / ``M_TOP_PAD`` that keep freed memory in the process while it
trains.  :func:`release` (``malloc_trim``) hands the free memory back between runs, before each
run's peak memory is measured, so a run's peak is its own.  (PyTorch's own
``THP_MEM_ALLOC_ENABLE=1``, huge pages for tensors of 2 MB and more, was tried too and left off:
with the kernel's default ``defrag=madvise`` each huge-page fault compacts memory, and full
fine-tuning got slower.)

``STMBENCH_HOST_ALLOCATOR=default`` leaves glibc's defaults.  Other C libraries (musl, macOS) are left
alone; so is an allocator preloaded by the user (jemalloc, tcmalloc: ``mallopt`` does not reach them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "STMBENCH_HOST_ALLOCATOR"  #: ``default`` turns :func:`tune` off
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20  #: glibc's largest accepted value on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  #: keep freed memory while a run trains; :func:`release` hands it back
TOP_PAD = 64 * 2**20  #: grow the heap in steps of 64 MiB, not page by page

_STATE: dict[str, object] = {}


def _glibc() -> ctypes.CDLL | None:
    if "libc" not in _STATE:
        lib = None
        if sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                lib = None
        _STATE["libc"] = lib
    return _STATE["libc"]  # type: ignore[return-value]


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("default", "off", "0", "no", "false")


def tune() -> dict[str, object]:
    """Apply the settings above to this process (once; safe to call again); ``{"mallopt": True}``
    where they were set."""
    if "tuned" in _STATE:
        return _STATE["tuned"]  # type: ignore[return-value]
    done: dict[str, object] = {}
    if enabled():
        libc = _glibc()
        if libc is not None and "LD_PRELOAD" not in os.environ:
            done["mallopt"] = all(libc.mallopt(param, value) == 1 for param, value in (
                (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    _STATE["tuned"] = done
    return done


def release() -> None:
    """Hand the heap's free memory back to the kernel (``malloc_trim``), where :func:`tune` kept it."""
    tuned = _STATE.get("tuned") or {}
    libc = _glibc()
    if libc is not None and tuned.get("mallopt"):  # type: ignore[union-attr]
        libc.malloc_trim(0)

