"""stmbench against a hand-written ``transformers.Trainer`` script (``plain_trainer.py``), one run each,
in one invocation: generative and discriminative, full and LoRA, on the same ~20M-parameter
pretrained-style causal LM (Llama shapes with a 32,000-token vocabulary, random weights built offline
from a config), the same data (the synthetic ``sample`` task), seed and settings.  Both are timed end to
end as separate processes (start, imports, model load, tokenising, training, evaluation); prints the
wall times, the ratio stmbench / Trainer (aim: <= 0.95) and both accuracies, then where the time went.

    .venv/bin/python benchmarks/bench_vs_trainer.py [--quick] [--train-size 512] [--epochs 1]
    .venv/bin/python benchmarks/bench_vs_trainer.py --backbone path/to/SmolLM2-135M-Instruct.Q4_1.gguf \
        --quick --combos discriminative:lora,generative:lora

``--backbone`` runs both on a real model instead (a GGUF file is dequantised once, untimed, into
the cache both read); each line also shows peak memory (each process's own) and training tokens/s.

stmbench runs with ``--save-steps 0 --save-models none --no-leaderboard`` (the script writes no
checkpoint, keeps no model and builds no leaderboard: the same work), and with
``--no-group-by-length`` here so both train on the very same batches (the
Trainer's seeded random sampler) and their losses and accuracies can be compared; ``--grouped`` adds
a third column with stmbench's default length-grouped batches.
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import _profile
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMBOS = [("generative", "full", 1e-3), ("generative", "lora", 2e-3), ("discriminative", "full", 1e-3),
          ("discriminative", "lora", 2e-3)]


def timed(cmd: list[str], env: dict[str, str], profile: Path | None = None) -> tuple[float, str]:
    if profile is not None:
        cmd = _profile.command(profile) + cmd
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 training examples, 100 test examples")
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--grouped", action="store_true", help="also time stmbench with length-grouped batches")
    parser.add_argument("--backbone", help="a real model (.gguf file, folder); default: a 20M random Llama")
    parser.add_argument("--combos", help="strategy:adapter,... (default: all four)")
    parser.add_argument("--repeats", type=int, help="runs of each process; the median wall time is shown "
                        "(default 3, 1 with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="sample both processes with py-spy and print where each spent its time")
    args = parser.parse_args()
    train_size, test_size = (64, 100) if args.quick else (args.train_size, None)
    args.repeats = args.repeats or (1 if args.quick else 3)
    combos = COMBOS if not args.combos else [c for c in COMBOS if f"{c[0]}:{c[1]}" in args.combos.split(",")]

    from stmbench.run.splits import limit_sample, subsample_indices

    work, session, task, model_dir, params, described = _util.backbone_setup("bench-vs-trainer", args.backbone)
    backbone = args.backbone or str(model_dir)
    seed = 42
    train = session.task_data(task, "train").dataset
    indices = subsample_indices(train, train_size, seed, task.name)  # the rows stmbench's run trains on
    train = train.select(indices) if indices is not None else train
    test = session.task_data(task, task.eval_split).dataset
    if test_size:
        test = limit_sample(test, test_size)  # the rows stmbench's --limit evaluates on
    data_dir = work / "data"
    data_dir.mkdir()
    for name, rows in (("train", train), ("test", test)):
        with open(data_dir / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"prompt": task.render("concise", r), "label": int(r["label"]),
                                     "word": task.label_words[int(r["label"])]}, ensure_ascii=False) + "\n")
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    # the cache already holds the generated task data (as the script's JSON lines are already written);
    # each strategy's first run tokenises its features, a later run of the same strategy finds them
    print(f"model: {described}; data: "
          f"synthetic 'sample' task, {len(train)} train / {len(test)} test, prompt concise; "
          f"{args.epochs:g} epoch(s), batch 16, seed {seed}; CPU, {os.cpu_count()} cores, torch threads default")
    rows = []
    for strategy, adapter, lr in combos:
        common = ["--learning-rate", str(lr), "--num-train-epochs", str(args.epochs)]
        variants = [("plain", ["--no-group-by-length"])] + ([("grouped", [])] if args.grouped else [])
        plain_walls, ours_walls = [], {label: [] for label, _ in variants}
        ours = {}
        for repeat in range(args.repeats):  # alternating, so that a slow spell of the machine hits both
            profile = args.profile and repeat == 0
            wall, out = timed([sys.executable, str(HERE / "plain_trainer.py"), str(model_dir), str(data_dir),
                               "--strategy", strategy, "--adapter", adapter, "--seed", str(seed),
                               "--output", str(work / "plain-out"), *common], env,
                              work / f"plain-{strategy}-{adapter}.txt" if profile else None)
            plain_walls.append(wall)
            plain = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
            for label, extra in variants:
                results = work / f"results-{strategy}-{adapter}-{label}"
                shutil.rmtree(results, ignore_errors=True)  # a fresh run each time (the cache stays warm)
                cmd = _util.stmbench_run_command(backbone, strategy, adapter, train_size=train_size, results=results,
                                                 cache=work / "cache", seed=seed,
                                                 extra=["--max-seq-length", "128", *common, *extra])
                if test_size:
                    cmd += ["--limit", str(test_size)]
                wall, _ = timed(cmd, env, work / f"ours-{strategy}-{adapter}-{label}.txt" if profile else None)
                result = _util.only_result(results)
                ours_walls[label].append(wall)
                ours[label] = (statistics.median(ours_walls[label]), result)
        rows.append((strategy, adapter, statistics.median(plain_walls), plain, *ours["plain"], ours.get("grouped")))

    print(f"\n  wall times: the median of {args.repeats} process(es) each"
          + (" (the timers below: the last one's)" if args.repeats > 1 else ""))
    print(f"\n  {'run':<26} {'Trainer':>9} {'stmbench':>9} {'ratio':>6}   {'acc T / s':>11}   {'loss T / s':>15}"
          + ("   grouped" if args.grouped else ""))
    total_plain = total_ours = 0.0
    for strategy, adapter, plain_wall, plain, wall, result, grouped in rows:
        total_plain, total_ours = total_plain + plain_wall, total_ours + wall
        acc = result["metrics"]["accuracy"]
        line = (f"  {strategy + ' + ' + adapter:<26} {plain_wall:8.1f}s {wall:8.1f}s {wall / plain_wall:6.2f}"
                f"   {100 * plain['accuracy']:4.1f} / {100 * acc:4.1f}"
                f"   {plain['train_loss']:.4f} / {result['training']['train_loss']:.4f}")
        if grouped:
            line += f"   {grouped[0]:6.1f}s ({grouped[0] / plain_wall:.2f}), acc {100 * grouped[1]['metrics']['accuracy']:.1f}"
        print(line)
    print("\n  where the time went (seconds; Trainer script's own timers / stmbench's result times):")
    for strategy, adapter, plain_wall, plain, wall, result, _ in rows:
        t = result["times"]
        setup = t["total_seconds"] - t["train_seconds"] - t["eval_seconds"]
        print(f"  {strategy + ' + ' + adapter:<26} imports+start {plain['import_seconds']:.1f} / "
              f"{wall - t['total_seconds']:.1f}  load+tokenise {plain['load_seconds']:.1f} / {setup:.1f}  "
              f"train {plain['train_seconds']:.1f} / {t['train_seconds']:.1f}  "
              f"eval {plain['eval_seconds']:.1f} / {t['eval_seconds']:.1f}")
    print("  (stmbench's imports+start also holds planning, pre-flight checks and storing the result)")
    print("\n  fixed cost per process (wall - train - eval: start, imports, planning, loading, tokenising, storing,"
          " exit), Trainer / stmbench (aim: at most 1 s more):")
    for strategy, adapter, plain_wall, plain, wall, result, _ in rows:
        t = result["times"]
        theirs = plain_wall - plain["train_seconds"] - plain["eval_seconds"]
        mine = wall - t["train_seconds"] - t["eval_seconds"]
        print(f"  {strategy + ' + ' + adapter:<26} {theirs:5.1f}s / {mine:5.1f}s   {mine - theirs:+.1f}s")
    print("\n  peak memory (MiB, each process's own) and training tokens/s, Trainer / stmbench:")
    for strategy, adapter, plain_wall, plain, wall, result, _ in rows:
        print(f"  {strategy + ' + ' + adapter:<26} memory {plain['peak_memory_mb']:7.0f} / {result['peak_memory_mb']:7.0f}"
              f"   tokens/s {plain['tokens_per_second']:7.1f} / {result['times']['tokens_per_second']:7.1f}")
    if args.profile:
        print("\n  py-spy profile (seconds sampled per phase, Trainer script / stmbench; profiling slows both):")
        print(_profile.table([(f"{s} + {a}", _profile.phases(work / f"plain-{s}-{a}.txt"),
                               _profile.phases(work / f"ours-{s}-{a}-plain.txt")) for s, a, *_ in rows]))
    print()
    print(_util.ratio_line("bench_vs_trainer", total_ours, total_plain))


if __name__ == "__main__":
    main()
