"""Answer scoring for the generative strategy: one forward pass per prompt, reading every
verbalizer word's log-probability at the answer position (``first_token``), against scoring each
(prompt, word) sequence separately as lm-eval does (``sequence``, the baseline).  Both give the same
scores when every word is one token; the benchmark checks that too."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import median_seconds, report  # noqa: E402


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all.py; this one is quick anyway")
    parser.parse_args()

    from stmbench.core.session import Session, Settings
    from stmbench_plugins.strategies._common import score_choices

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as cache:
        session = Session(Settings(cache_dir=Path(cache), progress=False, device="cpu"))
        task = session.get("task", "sample")
        model, tok = session.catalogue.backbone_for("tiny-llama").load(
            "tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
        data = session.task_data(task, "test").dataset
        prompts = [task.render("concise", ex) for ex in data]

        def run(mode: str):
            return score_choices(model, tok, prompts, task.label_words, max_len=256, batch_size=64, mode=mode)

        first, _ = run("auto")
        seq, _ = run("sequence")
        worst = max(abs(a - b) for x, y in zip(first, seq) for a, b in zip(x, y))
        print(f"{len(prompts)} prompts x {len(task.label_words)} answer words, tiny-llama on CPU "
              f"({torch.get_num_threads()} threads); max |difference| between modes: {worst:.2e}")
        report("answer scoring", ("sequence (one pass per choice)", median_seconds(lambda: run("sequence"))),
               [("first_token (one pass per prompt)", median_seconds(lambda: run("auto")))],
               ratio_name="bench_scoring")


if __name__ == "__main__":
    main()
