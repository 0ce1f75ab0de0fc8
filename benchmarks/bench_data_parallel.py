"""One run on 1 and on k processes (``--devices-per-run k``, torchrun, the Trainer's DDP), in one
invocation: wall time, training time, tokens/s, the scaling efficiency against the one-process run
measured here, the fixed costs outside training, and how far the loss curves are apart.

    .venv/bin/python benchmarks/bench_data_parallel.py [--devices 2] [--train-size 2000] [--epochs 1]

On a CPU the k processes share the machine's cores (each gets cores / k threads), so the efficiency
says what data parallelism costs on the same hardware (gradient all-reduce over gloo, k imports,
smaller per-process matmuls), not what k more devices would add; on a machine with k GPUs (``--device
cuda``) it is the real scaling.  Fixed costs = wall - training: launching the processes, imports,
reading data, loading the model, prediction (on rank 0) and storing.
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import logging
import tempfile
import time
from pathlib import Path

from stmbench.core.session import Session, Settings
from stmbench.run.study import run_study
from stmbench.spec.grid_spec import GridSpec
from stmbench.store.results import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2, help="k: processes of the parallel run")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch", type=int, default=16, help="the step batch (split over the k processes)")
    parser.add_argument("--strategy", default="discriminative")
    parser.add_argument("--adapter", default="full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating; medians are shown")
    parser.add_argument("--quick", action="store_true", help="train size 512, 1 epoch, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.train_size, args.epochs, args.repeats = 512, 1, 1
    logging.getLogger("stmbench").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="stmbench-bench-dp-"))
    cache = work / "cache"
    grid = GridSpec(strategies=args.strategy, adapters=args.adapter, train_sizes=[args.train_size],
                    training={"num_train_epochs": args.epochs, "per_device_train_batch_size": args.batch,
                              "max_seq_length": 96, "logging_steps": 10}, limit=200)

    def session(name: str, k: int) -> Session:
        return Session(Settings(results_dir=work / name, leaderboard_dir=None, cache_dir=cache, progress=False,
                                device=args.device, save_steps=0, devices_per_run=k))

    run_study(grid.with_overrides(training={"max_steps": 1}), session("warmup", 1))  # the shared caches
    measured: dict[int, list[tuple[float, object]]] = {1: [], args.devices: []}
    for repeat in range(args.repeats):  # alternating, so a slow spell of a shared machine hits both
        for k in (1, args.devices):
            start = time.perf_counter()
            run_study(grid, session(f"k{k}-{repeat}", k))
            wall = time.perf_counter() - start
            [result] = ResultStore(work / f"k{k}-{repeat}").load_all()
            if result.status != "ok":
                raise SystemExit(f"k={k}: the run failed: {result.error}")
            measured[k].append((wall, result))
    rows = []
    for k, runs in measured.items():  # the median run by training time
        wall, result = sorted(runs, key=lambda item: item[1].times["train_seconds"])[len(runs) // 2]
        rows.append((k, wall, result))
    base = rows[0][2]
    curve = [loss for _, loss in base.training["loss_curve"]]
    print(f"one run: tiny-llama / sample (synthetic) / {args.strategy} / {args.adapter}, {args.train_size} rows, "
          f"{args.epochs:g} epoch(s), step batch {args.batch}, device {args.device}; the median of {args.repeats} run(s) each")
    shared = args.device.startswith("cpu")  # k CPU processes share the cores one process had
    print(f"{'processes':>9}  {'wall s':>7}  {'train s':>7}  {'tokens/s':>9}  {'vs 1':>6}  {'efficiency':>10}  "
          f"{'fixed s':>7}  {'launch s':>8}  {'max |loss diff|':>15}  {'same preds':>10}")
    for k, wall, result in rows:
        tps = result.times["tokens_per_second"]
        ratio = tps / base.times["tokens_per_second"]
        other = [loss for _, loss in result.training["loss_curve"]]
        diff = max(abs(a - b) for a, b in zip(curve, other))
        print(f"{k:>9}  {wall:7.1f}  {result.times['train_seconds']:7.1f}  {tps:9,.0f}  {ratio:5.2f}x  "
              f"{ratio / (1 if shared else k):10.2f}  {wall - result.times['train_seconds']:7.1f}  "
              f"{wall - result.times['total_seconds']:8.1f}  {diff:15.2e}  {str(result.metrics == base.metrics):>10}")
    print("efficiency: tokens/s against the one-process run on the same hardware (" +
          ("the same cores, shared by the processes)" if shared else f"{args.devices} devices against 1)") +
          "; fixed: wall - training; launch: wall - the run's own total (torchrun, k imports, the session)")
    print(f"(world size recorded: {[r.distributed['world_size'] for _, _, r in rows]}; "
          f"effective batch {[r.distributed['effective_batch'] for _, _, r in rows]})")
    # the ratio run_all collects: the k-process run's training time over the one-process run's
    print(f"bench_data_parallel: ratio={rows[1][2].times['train_seconds'] / base.times['train_seconds']:.2f}")


if __name__ == "__main__":
    main()
