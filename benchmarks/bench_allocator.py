"""stmbench's host allocator settings (glibc's mallopt, ``stmbench.common.hostmem``) against glibc's
defaults (``STMBENCH_HOST_ALLOCATOR=default``): the same ``stmbench run`` process each way, alternating,
on the ~20M-parameter Llama of ``bench_vs_trainer`` (or ``--backbone``).  Prints the median training
time, the process's system time and minor page faults (``resource.getrusage`` of the child), and the
ratio of training times (tuned / default; lower is better).  The losses must be equal.

    .venv/bin/python benchmarks/bench_allocator.py [--quick] [--repeats 3] [--backbone X.gguf]
"""

from __future__ import annotations

import _util  # progress bars off before the libraries load

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """``(system seconds, minor page faults)`` of one ``stmbench run`` child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 training examples, 2 repeats")
    parser.add_argument("--repeats", type=int, help="processes each way (default 3, 2 with --quick)")
    parser.add_argument("--backbone", help="a real model (.gguf file, folder); default: a 20M random Llama")
    parser.add_argument("--combos", default="discriminative:full,discriminative:lora",
                        help="strategy:adapter,... (default: discriminative full and LoRA)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    train_size = 64 if args.backbone else (256 if args.quick else 512)
    work, session, task, model_dir, params, described = _util.backbone_setup("bench-allocator", args.backbone)
    backbone = args.backbone or str(model_dir)
    print(f"model: {described}; data: synthetic 'sample' task, {train_size} train rows, 1 epoch, batch 16; "
          f"CPU, {os.cpu_count()} cores; {repeats} process(es) each way, alternating")
    rows, total = [], {"default": 0.0, "tuned": 0.0}
    for combo in args.combos.split(","):
        strategy, adapter = combo.split(":")
        seen: dict[str, list[tuple[float, float, float, float]]] = {"default": [], "tuned": []}
        for _ in range(repeats):
            for way in ("default", "tuned"):
                results = work / f"results-{strategy}-{adapter}-{way}"
                shutil.rmtree(results, ignore_errors=True)
                cmd = _util.stmbench_run_command(backbone, strategy, adapter, train_size=train_size, results=results,
                                                 cache=work / "cache",
                                                 extra=["--limit", "50", "--learning-rate", "1e-3",
                                                        "--num-train-epochs", "1", "--no-group-by-length"])
                env = {**os.environ, "TQDM_DISABLE": "1", "STMBENCH_HOST_ALLOCATOR": way}
                system, faults = run_once(cmd, env)
                result = _util.only_result(results)
                seen[way].append((result["times"]["train_seconds"], system, faults, result["training"]["train_loss"]))
        med = {way: [statistics.median(v[i] for v in seen[way]) for i in range(3)] for way in seen}
        losses = {way: seen[way][-1][3] for way in seen}
        for way in total:
            total[way] += med[way][0]
        rows.append((f"{strategy} + {adapter}", med, losses))
    print(f"\n  {'run':<26} {'train s':>15} {'system s':>15} {'minor faults':>21}  {'ratio':>6}  same loss")
    print(f"  {'':<26} {'default/tuned':>15} {'default/tuned':>15} {'default / tuned':>21}")
    for name, med, losses in rows:
        (t0, s0, f0), (t1, s1, f1) = med["default"], med["tuned"]
        print(f"  {name:<26} {t0:6.2f} / {t1:5.2f} {s0:6.2f} / {s1:5.2f} {f0:10,.0f} / {f1:8,.0f}  {t1 / t0:6.2f}"
              f"  {losses['default'] == losses['tuned']} ({losses['tuned']:.4f})")
    print()
    print(_util.ratio_line("bench_allocator", total["tuned"], total["default"]))


if __name__ == "__main__":
    main()
