"""Where a CPU training step goes, on batches like those ``bench_vs_trainer`` trains: the ``sample``
task's concise prompts in random batches of 16, each padded to its longest row, through the
sequence-classification model that both the hand-written script and stmbench's ``discriminative``
strategy train, fully fine-tuned with fused AdamW (``TrainingArguments``' default), in a process with
stmbench's host-memory settings.

It prints, for the steps after warm-up, the forward, backward and optimizer seconds, the minor page
faults (``--allocator``: stmbench's host-memory settings, glibc's defaults, or stmbench's
with mmap off), and the rate of the matrix products (6 x non-embedding parameters x processed tokens, divided
by forward + backward seconds). It also prints prediction tokens/s by batch size. Then it tries one
change that keeps the arithmetic's result: each batch is split into length-sorted micro-batches with
no padding, and their logits are put back in order before the loss, so the loss and gradients stay
the same (checked). The baseline is the whole padded batch (forward + backward, the two alternating).
The last line is ``bench_step: ratio=X.XX`` (split / whole).

    .venv/bin/python benchmarks/bench_step.py [--quick] [--backbone path/to/model.gguf] [--parts 2] \
        [--allocator stmbench|glibc|no-mmap]
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import random
import resource
import shutil
import statistics
import time


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _mmap_off() -> bool:
    """glibc's ``mallopt(M_MMAP_MAX, 0)``: every buffer from the heap, none mapped afresh."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-4, 0) == 1  # -4: M_MMAP_MAX
    except (OSError, AttributeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 timed steps after 2 warm-up ones (default 8 after 3)")
    parser.add_argument("--backbone", help="a real model (.gguf file, folder); default: bench_vs_trainer's 20M random Llama")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--parts", type=int, default=2, help="micro-batches per batch in the split variant")
    parser.add_argument("--allocator", choices=["stmbench", "glibc", "no-mmap"], default="stmbench",
                        help="stmbench's host-memory settings (default), glibc's defaults, or stmbench's with "
                        "mmap turned off (M_MMAP_MAX=0: every buffer from the heap, none mapped afresh)")
    args = parser.parse_args()
    warmup, steps = (2, 4) if args.quick else (3, 8)

    from stmbench.common import hostmem

    if args.allocator != "glibc":
        hostmem.tune()  # as every stmbench process does
    if args.allocator == "no-mmap" and not _mmap_off():
        raise SystemExit("--allocator no-mmap: glibc's mallopt is not available here")
    work, session, task, model_dir, _, described = _util.backbone_setup("bench-step", args.backbone)
    try:
        measure(args, session, task, model_dir, described, warmup, steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, session, task, model_dir, described: str, warmup: int, steps: int) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(task.labels))
    model.config.pad_token_id = tokenizer.pad_token_id
    embedding = model.get_input_embeddings().weight
    matmul_params = sum(p.numel() for p in model.parameters() if p is not embedding)

    def encode(split: str) -> list[tuple[list[int], int]]:
        data = session.task_data(task, split).dataset
        return [(tokenizer(task.render("concise", r), truncation=True, max_length=128)["input_ids"], int(r["label"]))
                for r in data]

    train = encode("train")
    rng = random.Random(42)
    batches = [[train[i] for i in rng.sample(range(len(train)), args.batch_size)] for _ in range(warmup + steps)]
    processed = [len(b) * max(len(ids) for ids, _ in b) for b in batches]
    real = [sum(len(ids) for ids, _ in b) for b in batches]

    def pad(ids: list[list[int]]) -> dict[str, torch.Tensor]:
        return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")

    def loss_of(batch, parts: int) -> torch.Tensor:
        labels = torch.tensor([label for _, label in batch])
        if parts == 1:
            return F.cross_entropy(model(**pad([ids for ids, _ in batch])).logits, labels)
        order = sorted(range(len(batch)), key=lambda i: len(batch[i][0]))
        size = -(-len(batch) // parts)
        chunks = [order[at:at + size] for at in range(0, len(order), size)]
        logits = torch.cat([model(**pad([batch[i][0] for i in chunk])).logits for chunk in chunks])
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))
        return F.cross_entropy(logits[back], labels)

    def gradients(batch, parts: int) -> tuple[float, list[torch.Tensor]]:
        loss = loss_of(batch, parts)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return loss.item(), grads

    model.train()
    whole_loss, whole_grads = gradients(batches[0], 1)
    split_loss, split_grads = gradients(batches[0], args.parts)
    grad_diff = max((a - b).abs().max().item() for a, b in zip(whole_grads, split_grads))
    del whole_grads, split_grads

    times: dict[int, list[float]] = {1: [], args.parts: []}
    for at, batch in enumerate(batches):  # alternating, so that a slow spell of the machine hits both
        for parts in ((1, args.parts) if at % 2 == 0 else (args.parts, 1)):
            start = time.perf_counter()
            loss_of(batch, parts).backward()
            model.zero_grad(set_to_none=True)
            if at >= warmup:
                times[parts].append(time.perf_counter() - start)
    whole, split = sum(times[1]), sum(times[args.parts])

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    anatomy = []
    for batch in batches:
        marks = [time.perf_counter()]
        before = _faults()
        loss = loss_of(batch, 1)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        anatomy.append([b - a for a, b in zip(marks, marks[1:])] + [_faults() - before])
    timed = anatomy[warmup:]
    forward, backward, step = (statistics.median(s[k] for s in timed) for k in range(3))
    rate = statistics.median(6 * matmul_params * n / (s[0] + s[1]) for s, n in zip(timed, processed[warmup:]))

    model.eval()
    test = sorted(encode(task.eval_split)[:64], key=lambda r: len(r[0]))
    predict = {}
    with torch.inference_mode():
        model(**pad([ids for ids, _ in test[:8]]))  # warm-up
        for size in (4, 8, 16, 32, 64):
            start = time.perf_counter()
            for at in range(0, len(test), size):
                model(**pad([ids for ids, _ in test[at:at + size]]))
            predict[size] = sum(len(ids) for ids, _ in test) / (time.perf_counter() - start)

    print(f"model: {described}; {matmul_params / 1e6:.1f}M non-embedding parameters; data: synthetic 'sample' "
          f"task, concise prompts, random batches of {args.batch_size} ({warmup} warm-up + {steps} timed); "
          f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; allocator {args.allocator}")
    print(f"  padding: {1 - sum(real[warmup:]) / sum(processed[warmup:]):.1%} of the processed tokens")
    print(f"  one step (median after warm-up): forward {forward:.2f} s, backward {backward:.2f} s, "
          f"optimizer {step:.2f} s; matrix products at about {rate / 1e9:.0f} GFLOP/s")
    print(f"  first step: forward {anatomy[0][0]:.2f} s, backward {anatomy[0][1]:.2f} s, optimizer {anatomy[0][2]:.2f} s "
          f"(its state allocated), {anatomy[0][3]:,} minor page faults")
    print("  minor page faults per step after it: " + ", ".join(f"{s[3]:,}" for s in anatomy[1:]))
    print(f"  the {steps} timed steps: {sum(sum(s[:3]) for s in timed):.2f} s in all, "
          f"{sum(s[3] for s in timed):,} minor page faults")
    print("  prediction tokens/s by batch size (64 test rows, sorted by length): "
          + ", ".join(f"{size}: {value:,.0f}" for size, value in predict.items()))
    print(f"  split into {args.parts} length-sorted micro-batches: loss {split_loss:.6f} (whole {whole_loss:.6f}), "
          f"largest gradient difference {grad_diff:.1e}")
    print(f"  forward + backward over the {steps} timed batches: whole {whole:.2f} s, split {split:.2f} s")
    print()
    print(_util.ratio_line("bench_step", split, whole))


if __name__ == "__main__":
    main()
