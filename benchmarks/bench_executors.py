"""The same 8-run tiny grid through the ``local``, ``pool`` (2 workers) and ``ray`` (2 workers)
executors, in one invocation; prints each wall time, the speed-up over ``local``, and what each
executor costs per run beyond the runs themselves.  ``pool x4`` reuses each worker process for 4 runs
(``runs_per_worker=4``) instead of a fresh process per run.

    .venv/bin/python benchmarks/bench_executors.py [--train-size 2000] [--epochs 3]

Per-run overhead = (wall time x workers - the sum of the runs' own times) / runs: the slot time a
worker spent not running a spec (starting a process, importing torch, Ray's scheduling, storing).
The runs' own times are the results' ``times.total_seconds`` (model load, training, evaluation).
Needs ``pip install "stmbench[ray]"`` for the Ray part (skipped with a note otherwise).
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import importlib.util
import logging
import tempfile
import time
from pathlib import Path

from stmbench.core.session import Session, Settings
from stmbench.spec.grid_spec import GridSpec
from stmbench.run.study import run_study


def grid(train_size: int, epochs: float, **executor) -> GridSpec:
    return GridSpec(strategies="generative,discriminative", adapters="full,lora", seeds=[1, 2],
                    train_sizes=[train_size], training={"num_train_epochs": epochs, "max_seq_length": 96},
                    **executor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--quick", action="store_true", help="train size 300, 1 epoch, no ray")
    args = parser.parse_args()
    if args.quick:
        args.train_size, args.epochs = 300, 1
    logging.getLogger("stmbench").setLevel(logging.ERROR)  # not the health flags of the 1-step warm-up
    work = Path(tempfile.mkdtemp(prefix="stmbench-bench-executors-"))
    cache = work / "cache"

    def session(name: str) -> Session:
        return Session(Settings(results_dir=work / name, leaderboard_dir=None, cache_dir=cache, progress=False,
                                device="cpu", save_steps=0))

    # warm the caches every executor shares (the tiny model, tokenised features), outside the timings
    run_study(grid(args.train_size, args.epochs).with_overrides(training={"max_steps": 1}),
              session("warmup"))
    executors = [("local", {}), ("pool", {"workers": 2}), ("pool", {"workers": 2, "runs_per_worker": 4})]
    if args.quick:
        pass
    elif importlib.util.find_spec("ray"):
        executors.append(("ray", {"local_cpus": 2}))
    else:
        print('ray is not installed (pip install "stmbench[ray]"): measuring local and pool only')
    rows = []
    for name, options in executors:
        start = time.perf_counter()
        label = name + (f" x{options['runs_per_worker']}" if "runs_per_worker" in options else "")
        report = run_study(grid(args.train_size, args.epochs, executor=name, executor_options=options),
                           session(label.replace(" ", "-")))
        wall = time.perf_counter() - start
        assert report.ok == len(report.results) == 8, f"{name}: {report.failed} failed"
        run_seconds = sum(r["times"]["total_seconds"] for r in report.results)
        workers = 1 if name == "local" else 2
        rows.append((label, workers, wall, run_seconds, (wall * workers - run_seconds) / len(report.results)))
    base = rows[0][2]
    print(f"8 runs (tiny-llama, sample task, synthetic data; train size {args.train_size}, {args.epochs:g} epochs; "
          "generative/discriminative x full/lora x 2 seeds) on this machine's CPU")
    print(f"  {'executor':<9} {'workers':>7} {'wall':>9} {'speed-up':>9} {'sum of runs':>12} {'overhead/run':>13}")
    for name, workers, wall, run_seconds, overhead in rows:
        print(f"  {name:<9} {workers:>7} {wall:>8.1f}s {base / wall:>8.2f}x {run_seconds:>11.1f}s {overhead:>12.2f}s")
    print()
    print(_util.ratio_line("bench_executors", rows[1][2], base))  # pool (a fresh process per run) / local


if __name__ == "__main__":
    main()
