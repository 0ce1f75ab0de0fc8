"""stmbench's ``in_context`` against ``lm_eval.simple_evaluate`` run directly, zero- and 5-shot, on the
same ~20M-parameter pretrained-style causal LM (Llama shapes, 32,000-token vocabulary, random weights
built offline from a config) and the same data (the synthetic ``sample`` task's test split), in one
invocation.  Prints both wall times (model load, prompts, scoring; imports excluded for both), the
ratio stmbench / lm-eval (aim: <= 0.5) and the number of per-example predictions that differ (aim: 0).

    .venv/bin/python benchmarks/bench_vs_lm_eval.py [--quick] [--shots 0,5] [--batch-size 64]
    .venv/bin/python benchmarks/bench_vs_lm_eval.py --backbone path/to/SmolLM2-135M-Instruct.Q4_1.gguf --quick

``--backbone`` runs both on a real model instead (a GGUF file is dequantised once, untimed, into the
folder lm-eval reads); the lines also show the peak resident memory each added and tokens/s.

lm-eval gets the task as ``stmbench export-lm-eval`` writes it (the same YAML stmbench's engine
loads) and ``model="hf"`` with the model folder, the few-shot seed equal to stmbench's run seed.
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import logging
import os
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="150 test examples instead of all 300")
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch at most (both engines)")
    parser.add_argument("--baseline-batch-size", type=int,
                        help="lm-eval's batch size, where --batch-size would not fit its full-vocabulary logits "
                        "(64 reviews of 2,000 tokens: 25 GB)")
    parser.add_argument("--backbone", help="a real model (.gguf file, folder); default: a 20M random Llama")
    parser.add_argument("--task", default="sample", help="sample (short synthetic pairs) or sample-long "
                        "(synthetic reviews of about 260-2,000 tokens)")
    args = parser.parse_args()
    shots = [int(s) for s in args.shots.split(",")]

    import lm_eval
    from lm_eval.tasks import TaskManager

    from stmbench.plan.grid import plan_grid
    from stmbench.tasks.lm_eval import task_config, write_jsonl
    from stmbench.core.memory import PeakMemory
    from stmbench.run.splits import limit_sample
    from stmbench.run.pipeline import run_spec
    from stmbench.spec.grid_spec import GridSpec

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    work, session, task, model_dir, params, described = _util.backbone_setup("bench-vs-lm-eval", args.backbone)
    backbone = args.backbone or str(model_dir)
    task = session.get("task", args.task)
    seed = 1234
    limit = 150 if args.quick else None
    test = session.task_data(task, task.eval_split).dataset
    if limit:
        test = limit_sample(test, limit)  # the rows stmbench's --limit evaluates on
    train = session.task_data(task, "train").dataset
    export = work / "export"
    export.mkdir()
    files = {"test": str(export / "test.jsonl"), "train": str(export / "train.jsonl")}
    write_jsonl(Path(files["test"]), test)
    write_jsonl(Path(files["train"]), train)
    (export / "stmbench_sample.yaml").write_text(yaml.safe_dump(
        task_config(task, prompt="concise", data_files=files, name="stmbench_sample"), allow_unicode=True,
        sort_keys=False), encoding="utf-8")

    real_tokens: list[int] = []

    def ours(n: int | None, which: list[int]) -> dict[int, list[int]]:
        grid = GridSpec(backbones=backbone, tasks=args.task, strategies="in_context", prompts="concise",
                        shots=which, seeds=[seed], limit=n,
                        training={"per_device_eval_batch_size": args.batch_size})
        out = {}
        for spec in plan_grid(grid, session).runs:
            result, predictions = run_spec(spec, session)
            assert result["status"] == "ok", result.get("traceback")
            out[spec.shots] = predictions["predicted"]
            real_tokens.append(result["padding"]["predict"]["real_tokens"])
        return out

    def theirs(n: int | None, which: list[int]) -> dict[int, list[int]]:
        out = {}
        for k in which:
            res = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": str(model_dir), "device": "cpu"}, tasks=["stmbench_sample"],
                num_fewshot=k, batch_size=args.baseline_batch_size or args.batch_size, log_samples=True, bootstrap_iters=0, limit=n,
                task_manager=TaskManager(include_path=str(export), include_defaults=False),
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
            samples = sorted(res["samples"]["stmbench_sample"], key=lambda s: s["doc_id"])
            out[k] = [max(range(len(s["filtered_resps"])), key=lambda i: float(s["filtered_resps"][i][0]))
                      for s in samples]
        return out

    ours(8, [0])  # warm both paths (first-use costs of kernels, tokenizers, lm-eval's registries)
    theirs(8, [0])
    real_tokens.clear()
    peak = PeakMemory("cpu").start()
    start = time.perf_counter()
    a = ours(limit, shots)
    ours_seconds = time.perf_counter() - start
    ours_peak = peak.stop()
    peak = PeakMemory("cpu").start()
    start = time.perf_counter()
    b = theirs(None, shots)
    theirs_seconds = time.perf_counter() - start
    theirs_peak = peak.stop()
    tokens = sum(real_tokens)  # the prompt tokens stmbench's runs scored (lm-eval scores the same requests)
    differing = {k: sum(x != y for x, y in zip(a[k], b[k])) for k in shots}
    assert all(len(a[k]) == len(b[k]) == len(test) for k in shots)
    print(f"model: {described}; data: "
          f"synthetic {args.task!r} task, {len(test)} test examples, prompt concise, shots {args.shots}, batch "
          f"{args.batch_size}" + (f" (lm-eval {args.baseline_batch_size})" if args.baseline_batch_size else "")
          + f"; CPU, {os.cpu_count()} cores")
    print(f"  lm_eval.simple_evaluate   {theirs_seconds:7.1f}s   1.00x (baseline)   peak RSS {theirs_peak:6.0f} MiB"
          f"   {tokens / theirs_seconds:7.1f} prompt tokens/s")
    print(f"  stmbench in_context       {ours_seconds:7.1f}s   {ours_seconds / theirs_seconds:.2f}x the time   "
          f"peak RSS {ours_peak:6.0f} MiB   {tokens / ours_seconds:7.1f} prompt tokens/s")
    print("  differing predictions: " + ", ".join(f"{k}-shot {differing[k]} of {len(test)}" for k in shots))
    print()
    print(_util.ratio_line("bench_vs_lm_eval", ours_seconds, theirs_seconds))


if __name__ == "__main__":
    main()
