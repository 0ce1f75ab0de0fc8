"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

for _var in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
    os.environ.setdefault(_var, "1")  # before datasets / transformers are imported


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(title: str, baseline: tuple[str, float], others: list[tuple[str, float]]) -> None:
    name, base = baseline
    print(title)
    print(f"  {name:<40} {base * 1000:10.1f} ms   1.00x (baseline)")
    for label, seconds in others:
        print(f"  {label:<40} {seconds * 1000:10.1f} ms   {base / seconds:5.2f}x faster" if seconds < base
              else f"  {label:<40} {seconds * 1000:10.1f} ms   {seconds / base:5.2f}x slower")
