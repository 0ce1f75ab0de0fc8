"""The LM head only where it is needed: peak memory and time of answer scoring (a batch of 64 prompts)
and of a generative training step (LoRA, a batch of 32), projecting every position onto the
vocabulary (what the model does by default) against only the scored / labelled positions
(``logits_to_keep``, what stmbench does).  A ~80M-parameter Llama-shaped model with Qwen2.5's
151,936-token vocabulary (random weights built offline from a config), the synthetic ``sample`` task.
Each measurement runs in a fresh process; memory is the process's peak resident memory above what it
held after loading the model.

    .venv/bin/python benchmarks/bench_lm_head.py [--quick]
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151936
MODES = ("score", "train")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, kept: bool, model_dir: str, repeats: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import stmbench.core.modeling
    import stmbench_plugins.strategies._common as common
    from stmbench.run.training import labelled_lm_loss, labelled_positions
    from stmbench.core.session import Session, Settings
    from stmbench_plugins.strategies.generative import lm_features

    torch.manual_seed(0)
    work = Path(model_dir).parent  # pretrained_style_setup's folder: its cache holds the task data
    session = Session(Settings(results_dir=work / "results", leaderboard_dir=None, cache_dir=work / "cache",
                               progress=False, device="cpu"))
    task = session.get("task", "sample")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = session.task_data(task, "train").dataset.select(range(64))
    prompts = [task.render("complex", r) for r in rows]
    if not kept:
        common.keeps_logits = stmbench.core.modeling.keeps_logits = lambda m: False
    base = rss_mb()
    start = time.perf_counter()
    if mode == "score":
        for _ in range(repeats):
            scores, _ = common.score_choices(model, tok, prompts, task.label_words, max_len=128, batch_size=64)
        out = {"checksum": round(sum(s[0] for s in scores), 3)}
    else:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
        feats = lm_features(tok, prompts[:32], [task.label_words[r["label"]] for r in rows][:32], 128)
        ids, mask = stmbench.core.modeling.pad_batch(feats["input_ids"], tok.pad_token_id, "right")
        labels, _ = stmbench.core.modeling.pad_batch(feats["labels"], -100, "right")
        model.train()
        for _ in range(repeats):
            if kept:
                outputs = model(input_ids=ids, attention_mask=mask, logits_to_keep=labelled_positions(labels))
                loss = labelled_lm_loss(outputs, labels)
            else:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            model.zero_grad()
        out = {"checksum": round(float(loss), 5)}
    seconds = (time.perf_counter() - start) / repeats
    print(json.dumps({**out, "peak_above_model_mb": rss_mb() - base, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "KEPT", "DIR", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, kept, folder, repeats = args.child
        return child(mode, kept == "1", folder, int(repeats))

    work, _, _, model_dir, params = _util.pretrained_style_setup("bench-lm-head", vocab_size=VOCAB)
    repeats = "1" if args.quick else "3"
    print(f"model: Llama shapes, {params / 1e6:.1f}M parameters ({VOCAB:,}-token vocabulary), random init; "
          f"synthetic 'sample' task, prompt complex; CPU, {os.cpu_count()} cores; a fresh process each")
    numbers = {}
    for mode in MODES:
        for kept in (False, True):
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "1" if kept else "0", str(model_dir), repeats],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            numbers[mode, kept] = json.loads(proc.stdout.strip().splitlines()[-1])
    for mode, what in (("score", "scoring 64 prompts x 2 answers"), ("train", "LoRA training step, batch 32")):
        full, kept = numbers[mode, False], numbers[mode, True]
        same = "same result" if full["checksum"] == kept["checksum"] else f"results {full['checksum']} vs {kept['checksum']}"
        print(f"  {what:<34} every position: {full['peak_above_model_mb']:7.0f} MiB {full['seconds']:6.2f}s   "
              f"kept positions: {kept['peak_above_model_mb']:7.0f} MiB {kept['seconds']:6.2f}s   "
              f"memory {kept['peak_above_model_mb'] / max(full['peak_above_model_mb'], 1):.2f}x, "
              f"time {kept['seconds'] / full['seconds']:.2f}x ({same})")
    total_kept = sum(numbers[m, True]["seconds"] for m in MODES)
    total_full = sum(numbers[m, False]["seconds"] for m in MODES)
    print()
    print(_util.ratio_line("bench_lm_head", total_kept, total_full))


if __name__ == "__main__":
    main()
