"""A tuned grid with and without ``--pruner asha``, in one invocation: every cell (strategy x adapter x
prompt) tries the same learning rates (drawn from a log-uniform space by the seeded sampler) over the
same epochs, selected on dev.  Prints, per cell, the trial each run chose and its dev score, and in
all: the training steps and wall time of the pruned grid over the unpruned one, and in how many
cells the pruned grid chose the same trial or one within 1 dev point.

    .venv/bin/python benchmarks/bench_pruning.py [--quick] [--backbone NAME] [--train-size N]

Aims (issue 25): <= 0.5x the training steps, the same choice (or within 1 dev point) in >= 80% of
cells.  Defaults: tiny-llama on the generated ``sample`` task (synthetic), generative /
discriminative / label_supervised x full / lora, 6 trials, 4 epochs, evaluated every epoch.
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


def grid(args: argparse.Namespace, pruner: str | None) -> GridSpec:
    training = {"num_train_epochs": args.epochs, "eval_strategy": "epoch", "max_seq_length": args.max_seq_length}
    if args.eval_steps:
        training.update(eval_strategy="steps", eval_steps=args.eval_steps)
    return GridSpec(backbones=[args.backbone], tasks=[args.task], strategies=args.strategies, adapters=args.adapters,
                    prompts=args.prompts, train_sizes=[args.train_size], seeds=[args.seed], training=training,
                    sweep={"learning_rate": args.space}, trials=args.trials, pruner=pruner)


def cells(folder: Path) -> dict[tuple[str, ...], dict[float, object]]:
    out: dict[tuple[str, ...], dict[float, object]] = {}
    for r in ResultStore(folder).load_all():
        s = r.spec
        out.setdefault((s.strategy, s.adapter, s.prompt or "-"), {})[s.training.learning_rate] = r
    return out


def chosen(trials: dict[float, object]) -> tuple[float, float] | None:
    """The trial the leaderboard would keep: the completed one with the best dev score (ties: the
    first value in order)."""
    done = [(r.selection.get("dev_metric"), -lr, lr) for lr, r in trials.items()
            if r.ok and r.pruned_at_step is None and r.selection.get("dev_metric") is not None]
    if not done:
        return None
    dev, _, lr = max(done)
    return lr, 100.0 * dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="tiny-llama")
    parser.add_argument("--task", default="sample")
    parser.add_argument("--strategies", default="generative,discriminative,label_supervised")
    parser.add_argument("--adapters", default="full,lora")
    parser.add_argument("--prompts", default="concise")
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--eval-steps", type=int, help="evaluate every N steps instead of every epoch")
    parser.add_argument("--max-seq-length", type=int, default=96)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--space", default="loguniform:1e-4:1e-2")
    parser.add_argument("--pruner", default="asha")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="train size 600, 2 epochs, one strategy")
    args = parser.parse_args()
    if args.quick:
        args.train_size, args.epochs, args.strategies = 600, 2, "discriminative"
    logging.getLogger("stmbench").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="stmbench-bench-pruning-"))

    def session(name: str) -> Session:
        return Session(Settings(results_dir=work / name, leaderboard_dir=None, cache_dir=work / "cache",
                                progress=False, device="cpu"))

    # warm the caches both grids share (the model, the tokenised features), outside the timings
    run_study(grid(args, None).with_overrides(training={"max_steps": 1, "eval_strategy": "no"}, sweep={}, trials=None),
              session("warmup"))
    walls, steps = {}, {}
    for name, pruner in (("unpruned", None), ("pruned", args.pruner)):
        start = time.perf_counter()
        report = run_study(grid(args, pruner), session(name))
        walls[name] = time.perf_counter() - start
        assert report.failed == 0 or name == "pruned", f"{name}: {report.failed} run(s) failed"
        steps[name] = sum(int((r.training or {}).get("train_steps") or 0) for r in ResultStore(work / name).load_all())
    full, pruned = cells(work / "unpruned"), cells(work / "pruned")
    print(f"{len(full)} cells x {args.trials} trials ({args.space}, seed 0), {args.epochs:g} epochs, dev every "
          f"{'epoch' if not args.eval_steps else f'{args.eval_steps} steps'}; {args.backbone} on {args.task} "
          f"(train size {args.train_size}; {'SYNTHETIC data' if args.task.startswith('sample') else 'data'}); "
          f"this machine's CPU; pruner {args.pruner}")
    print(f"  {'cell':<36} {'unpruned: lr, dev':>20} {'pruned: lr, dev':>20} {'pruned trials':>14} {'agree':>6}")
    agree = 0
    for key in sorted(full):
        a, b = chosen(full[key]), chosen(pruned.get(key, {}))
        n_pruned = sum(r.pruned_at_step is not None for r in pruned.get(key, {}).values())
        same = a is not None and b is not None and (a[0] == b[0] or abs(a[1] - b[1]) <= 1.0)
        agree += same
        text = lambda c: "-" if c is None else f"{c[0]:.3g}, {c[1]:.1f}"  # noqa: E731
        print(f"  {' / '.join(key):<36} {text(a):>20} {text(b):>20} {n_pruned:>8} of {len(pruned.get(key, {}))} "
              f"{'yes' if same else 'no':>6}")
    print()
    print(f"training steps: {steps['pruned']:,} pruned / {steps['unpruned']:,} unpruned = "
          f"{steps['pruned'] / steps['unpruned']:.2f}x (aim <= 0.5x)")
    print(f"wall time: {walls['pruned']:.1f} s / {walls['unpruned']:.1f} s = {walls['pruned'] / walls['unpruned']:.2f}x")
    print(f"same choice or within 1 dev point: {agree} of {len(full)} cells ({100 * agree / len(full):.0f}%; aim >= 80%)")
    print()
    print(_util.ratio_line("bench_pruning", walls["pruned"], walls["unpruned"]))


if __name__ == "__main__":
    main()
