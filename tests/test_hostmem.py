"""The host allocator settings of stmbench's processes (stmbench.common.hostmem): glibc's mallopt,
checked through glibc's own accounting (mallinfo2), each case in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux")
                           or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                           reason="the settings are glibc's (mallopt); other C libraries are left alone")

# allocate and free 16 MiB with the C library's malloc and read glibc's accounting (mallinfo2)
PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    from stmbench.common import hostmem

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    tuned = hostmem.tune()
    block = libc.malloc(16 * 2**20)
    ctypes.memset(block, 1, 16 * 2**20)
    mapped = libc.mallinfo2().hblkhd  # bytes in blocks of their own mmap
    libc.free(block)
    kept = libc.mallinfo2().keepcost  # free bytes at the top of the heap, not given back
    hostmem.release()
    after_release = libc.mallinfo2().keepcost
    print(json.dumps({"tuned": tuned, "mapped": mapped, "kept": kept, "after_release": after_release}))
""")


def _glibc_env(**env: str) -> dict[str, str]:
    """This environment without a preloaded allocator (the settings leave one alone), plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, **env}


def _probe(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env=_glibc_env(**env)).stdout
    return json.loads(out.splitlines()[-1])


@glibc
def test_a_tuned_process_serves_buffers_from_its_heap_keeps_them_and_gives_them_back_between_runs():
    tuned = _probe(STMBENCH_HOST_ALLOCATOR="")
    assert tuned["tuned"] == {"mallopt": True}
    assert tuned["mapped"] < 2**20  # 16 MiB came from the heap, not from a mapping of its own
    assert tuned["kept"] >= 16 * 2**20  # freed, it stays in the process for the next step
    assert tuned["after_release"] < 2**20  # release() hands it back (before a run's peak is measured)


@glibc
def test_default_leaves_glibcs_own_settings():
    default = _probe(STMBENCH_HOST_ALLOCATOR="default")
    assert default["tuned"] == {}
    assert default["mapped"] >= 16 * 2**20  # glibc maps a 16 MiB block on its own (threshold 128 KiB)


@glibc
def test_a_runs_peak_memory_does_not_count_what_an_earlier_run_left_in_the_heap():
    script = textwrap.dedent("""
        import json
        from stmbench.common import hostmem
        hostmem.tune()
        import torch
        from stmbench.core.memory import PeakMemory, _status_kb
        chunks = [torch.ones(2**20) for _ in range(100)]  # 400 MiB in 4 MiB tensors: from the heap
        del chunks  # freed, and kept in the process by the tuned heap
        before = _status_kb("VmRSS") / 1024
        peak = PeakMemory("cpu").start()
        small = torch.ones(2**20)
        print(json.dumps({"rss_before": before, "peak": peak.stop(), "method": peak.method}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=_glibc_env(STMBENCH_HOST_ALLOCATOR="")).stdout
    seen = json.loads(out.splitlines()[-1])
    if not seen["method"].startswith("VmHWM"):
        pytest.skip(f"peak memory is measured by {seen['method']} here")
    assert seen["rss_before"] > seen["peak"] + 200  # the 400 MiB left by the "earlier run" are not its peak
