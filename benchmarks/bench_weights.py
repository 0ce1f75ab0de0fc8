"""Weights read once per worker: loading a backbone for the next run of a grid from the in-memory copy
of its checkpoint (``stmbench_plugins.backbones.hf.WEIGHTS``) against reading the safetensors files
again (the baseline; a warm page cache, so this is the best case for the baseline).  An ~80M-parameter
Llama-shaped model with a 151,936-token vocabulary, random weights built offline from a config,
loaded with each head a strategy asks for.

    .venv/bin/python benchmarks/bench_weights.py [--quick]
"""

from __future__ import annotations

import _util  # noqa: F401  (progress bars off before the libraries load)

import argparse
import os


def can_drop_page_cache() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_page_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 loads per case instead of 5")
    args = parser.parse_args()

    import stmbench_plugins.backbones.hf as hf

    _, session, task, folder, params = _util.pretrained_style_setup("bench-weights", vocab_size=151936)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    repeats = 3 if args.quick else 5
    print(f"model: Llama shapes, {params / 1e6:.1f}M parameters, {size / 2**20:.0f} MiB of safetensors; "
          f"CPU, {os.cpu_count()} cores; median of {repeats} loads")

    def load(head: str):
        model, _ = hf.load_pretrained(str(folder), head=head, task=task, context=session.context, load_kwargs={})
        # touch every weight: tensors mapped from the files are read only when first used
        for p in model.parameters():
            p.detach().view(-1)[::1024].sum()
        return model

    cold_ok = can_drop_page_cache()
    if not cold_ok:
        print("  (not root on Linux: the page cache cannot be dropped, the cold-read case is left out)")
    total_memo = total_disk = 0.0
    for head in ("causal_lm", "sequence_classification", "base"):
        def from_disk(head=head):
            hf.WEIGHTS.key = hf.WEIGHTS.tensors = None  # forget: every load reads the files
            load(head)

        def cold(head=head):
            drop_page_cache()
            from_disk(head)

        load(head)  # fill the memo
        memo = _util.median_seconds(lambda head=head: load(head), repeats=repeats)
        disk = _util.median_seconds(from_disk, repeats=repeats)
        others = [("from stmbench's memory copy", memo)]
        if cold_ok:
            others.append(("read the files after dropping the page cache", _util.median_seconds(cold, repeats=repeats)))
        total_memo, total_disk = total_memo + memo, total_disk + disk
        _util.report(f"load with head {head}", ("read the files (warm page cache)", disk), others)
    print()
    print(_util.ratio_line("bench_weights", total_memo, total_disk))


if __name__ == "__main__":
    main()
