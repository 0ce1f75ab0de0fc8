"""Tokenised training features: encoding the whole training split (the baseline, what a cache miss
costs) against the session's memory cache and the on-disk Arrow cache a new process finds."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import median_seconds, report  # noqa: E402


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all.py; this one is quick anyway")
    parser.parse_args()

    from stmbench.plan.grid import plan_grid
    from stmbench.core.session import Session, Settings, tokenizer_fingerprint
    from stmbench.spec.grid_spec import GridSpec

    root = Path(tempfile.mkdtemp())
    try:
        settings = Settings(cache_dir=root / "cache", progress=False, device="cpu")
        session = Session(settings)
        spec = plan_grid(GridSpec(strategies="generative", adapters="full"), session).runs[0]
        task, strategy = session.get("task", "sample"), session.get("strategy", "generative")
        _, tok = session.catalogue.backbone_for("tiny-llama").load(
            "tiny-llama", head="causal_lm", task=task, context=session.context, load_kwargs={})
        data = session.task_data(task, "train")
        encode = strategy.feature_encoder(task=task, tokenizer=tok, spec=spec, context=session.context)
        key = {"task": task.name, "data": data.fingerprint, "split": "train", "strategy": strategy.name,
               "tokenizer": tokenizer_fingerprint(tok), **strategy.feature_key(spec, session.context)}

        def cold():
            shutil.rmtree(settings.cache_dir / "features", ignore_errors=True)
            fresh = Session(settings)  # a new session: nothing in memory
            fresh.cached_features(key, data.dataset, encode)

        def disk():
            Session(settings).cached_features(key, data.dataset, encode)

        def memory():
            session.cached_features(key, data.dataset, encode)

        memory()  # fill the session's memory cache and the disk cache
        print(f"generative features of the sample task's {len(data.dataset)} training pairs (tiny tokenizer)")
        report("feature cache", ("tokenise (cache miss)", median_seconds(cold, repeats=3)),
               [("load from disk (new session)", median_seconds(disk, repeats=3)),
                ("memory (same session)", median_seconds(memory))], ratio_name="bench_features_cache")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
