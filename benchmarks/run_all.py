"""Run every benchmark in this folder, one after another, each in its own process, and end with one
line per benchmark: ``name: ratio=X.XX``, stmbench's wall time divided by its baseline's in the same
invocation (lower is better; aims: bench_vs_trainer <= 0.95, bench_vs_lm_eval <= 0.5).

    .venv/bin/python benchmarks/run_all.py [--quick] [NAME ...]

``--quick`` passes ``--quick`` to each (smaller data; under 10 minutes in all on 2 CPU cores).  Each
benchmark's own output is printed as it finishes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_vs_trainer", "bench_vs_lm_eval", "bench_lm_head", "bench_weights", "bench_scoring", "bench_features_cache",
              "bench_packing",
              "bench_executors", "bench_pruning", "bench_data_parallel", "bench_allocator",
              "bench_step"]
RATIO = re.compile(r"^(\w+): ratio=(\d+\.\d\d)$", re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    lines, failed = [], []
    total = time.perf_counter()
    for name in args.names or BENCHMARKS:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(f"== {name} ({seconds:.0f} s)")
        print(proc.stdout.rstrip())
        found = RATIO.findall(proc.stdout)
        if proc.returncode or not found:
            print(proc.stderr[-2000:].rstrip())
            failed.append(name)
            lines.append(f"{name}: failed (exit {proc.returncode})")
        else:
            lines.extend(f"{n}: ratio={r}" for n, r in found)
        print(flush=True)
    print(f"== all benchmarks in {time.perf_counter() - total:.0f} s")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
