"""Padding-free packing (``--packing``) against padded batches, one run each in one process: generative,
discriminative and label_supervised (full fine-tuning) on the ~20M-parameter pretrained-style Llama
(32,000-token vocabulary, random weights built offline) and the synthetic ``sample`` task.  Padded
batches both ways stmbench can draw them: random (the Trainer's sampler, as a plain script would) and
length-grouped (stmbench's default).  Prints training tokens/s (real tokens), the share of processed
tokens that were padding, the final loss of each, and ends with packed / padded training time
against the random batches.

    .venv/bin/python benchmarks/bench_packing.py [--quick] [--train-size 768] [--backbone FILE_OR_FOLDER]
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 training examples instead of 768")
    parser.add_argument("--train-size", type=int, default=768)
    parser.add_argument("--strategies", default="generative,discriminative,label_supervised")
    parser.add_argument("--backbone", help="a real model (.gguf file, folder); default: a 20M random Llama")
    args = parser.parse_args()
    train_size = 256 if args.quick else args.train_size

    from stmbench.plan.grid import plan_grid
    from stmbench.run.pipeline import run_spec
    from stmbench.spec.grid_spec import GridSpec

    work, session, task, model_dir, params, described = _util.backbone_setup("bench-packing", args.backbone)
    backbone = args.backbone or str(model_dir)
    variants = [("padded, random batches", {"group_by_length": False}),
                ("padded, length-grouped", {"group_by_length": True}),
                ("packed", {"packing": True, "group_by_length": False})]

    def one(strategy: str, training: dict) -> dict:
        grid = GridSpec(backbones=backbone, tasks="sample", strategies=strategy, adapters="full", prompts="concise",
                        train_sizes=[train_size], seeds=[7], limit=32,
                        training={"learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 16,
                                  "max_seq_length": 128, **training})
        [spec] = plan_grid(grid, session).runs
        result, _ = run_spec(spec, session)
        assert result["status"] == "ok", result.get("error")
        return result

    one(args.strategies.split(",")[0], {"packing": True})  # warm: first-use costs of kernels and caches
    print(f"model: {described}; data: synthetic 'sample' task, {train_size} train examples, prompt concise, "
          f"1 epoch, batch 16, full fine-tuning; CPU, {os.cpu_count()} cores, torch threads default\n")
    print(f"  {'run':<44} {'train s':>8} {'tokens/s':>9} {'padding':>8} {'final loss':>11}")
    padded_total = packed_total = 0.0
    for strategy in args.strategies.split(","):
        for label, training in variants:
            r = one(strategy, training)
            seconds, pad = r["times"]["train_seconds"], r["padding"]["train"]
            share = 1 - pad["efficiency"]
            if label.startswith("padded, random"):
                padded_total += seconds
            if label == "packed":
                packed_total += seconds
            print(f"  {strategy + ' / ' + label:<44} {seconds:8.2f} {r['times']['tokens_per_second']:9.0f} "
                  f"{100 * share:7.1f}% {r['training']['loss_curve'][-1][1]:11.4f}")
    print("\n  (random batches and packed see the same sequences in the same batches: their losses agree;"
          " length-grouped batches are other batches)")
    print()
    print(_util.ratio_line("bench_packing", packed_total, padded_total))


if __name__ == "__main__":
    main()
