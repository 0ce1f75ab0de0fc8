"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

for _var in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
    os.environ.setdefault(_var, "1")  # before datasets / transformers are imported


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(title: str, baseline: tuple[str, float], others: list[tuple[str, float]],
           ratio_name: str | None = None, ratio_of: int = 0) -> None:
    """Print each timing against the baseline; with ``ratio_name``, end with ``ratio_line`` of
    ``others[ratio_of]`` (the way stmbench does it) against the baseline."""
    name, base = baseline
    print(title)
    print(f"  {name:<40} {base * 1000:10.1f} ms   1.00x (baseline)")
    for label, seconds in others:
        print(f"  {label:<40} {seconds * 1000:10.1f} ms   {base / seconds:5.2f}x faster" if seconds < base
              else f"  {label:<40} {seconds * 1000:10.1f} ms   {seconds / base:5.2f}x slower")
    if ratio_name:
        print()
        print(ratio_line(ratio_name, others[ratio_of][1], base))


def ratio_line(name: str, ours: float, baseline: float) -> str:
    """``name: ratio=X.XX`` (stmbench's wall time / the baseline's; lower is better)."""
    return f"{name}: ratio={ours / baseline:.2f}"


def build_pretrained_style(folder, task, session, *, vocab_size: int = 32000, hidden: int = 256,
                           layers: int = 4, intermediate: int = 768, heads: int = 4):
    """A Llama-architecture causal LM at ~20M parameters, randomly initialised from a config (seed 0),
    saved with ``save_pretrained`` into ``folder`` with the character tokenizer that the ``tiny-llama``
    backbone builds for ``task``: the shapes of a small pretrained model (a 32,000-token vocabulary as
    Llama 2's, so the LM head costs what it costs there), made offline.  Returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from stmbench_plugins.backbones.tiny import build_tokenizer, task_characters

    tokenizer = build_tokenizer(task_characters(task, session.context), "llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def pretrained_style_setup(name: str, **shape):
    """A fresh work folder, a CPU session whose cache is in it, the ``sample`` task, and
    :func:`build_pretrained_style` saved in ``work/model``: ``(work, session, task, model_dir, params)``."""
    work, session, task = work_session(name)
    model_dir = work / "model"
    return work, session, task, model_dir, build_pretrained_style(model_dir, task, session, **shape)


def work_session(name: str):
    """A fresh work folder and a CPU session whose results and cache are in it, and the ``sample``
    task: ``(work, session, task)``."""
    import tempfile
    from pathlib import Path

    from stmbench.core.session import Session, Settings

    work = Path(tempfile.mkdtemp(prefix=f"stmbench-{name}-"))
    session = Session(Settings(results_dir=work / "results", leaderboard_dir=None, cache_dir=work / "cache",
                               progress=False, device="cpu", save_steps=0))
    return work, session, session.get("task", "sample")


def backbone_setup(name: str, backbone: str | None):
    """``(work, session, task, model_dir, params, description)``: with ``backbone`` (a ``.gguf`` file,
    ``org/repo::file.gguf``, a model folder or a cached hub id), that model, a GGUF file dequantised
    once into the work cache by stmbench's ``gguf`` backbone (untimed; the stmbench runs then find it
    in the same cache) so the baselines read the same checkpoint folder; without it the ~20M-parameter
    pretrained-style model of :func:`pretrained_style_setup`."""
    if not backbone:
        work, session, task, model_dir, params = pretrained_style_setup(name)
        return (work, session, task, model_dir, params,
                f"Llama shapes, {params / 1e6:.1f}M parameters (32,000-token vocabulary), random init")
    from pathlib import Path

    work, session, task = work_session(name)
    plugin = session.catalogue.backbone_for(backbone)
    info = plugin.resolve(backbone, session.context)
    if info.backbone == "gguf":
        from stmbench_plugins.backbones.gguf import converted_folder, locate

        model_dir = converted_folder(locate(backbone), session.settings.cache_dir)
        what = f"{Path(info.details['file']).name} ({info.details['quantization']}, dequantised to float32)"
    else:
        model_dir, what = Path(backbone), backbone
    from safetensors import safe_open

    params = 0
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), "pt") as fh:
            params += sum(_numel(fh.get_slice(k).get_shape()) for k in fh.keys())
    return work, session, task, Path(model_dir), params, f"{what}, {params / 1e6:.1f}M parameters, pretrained"


def stmbench_run_command(backbone: str, strategy: str, adapter: str, *, train_size: int, results, cache,
                         seed: int = 42, extra=()) -> list[str]:
    """``stmbench run`` of one run as the benchmarks time it: the synthetic ``sample`` task, prompt
    concise, batch 16, no checkpoints, no kept model, no leaderboard, no progress bars (the work a
    hand-written script does), then ``extra`` flags."""
    import sys

    return [sys.executable, "-m", "stmbench.cli.main", "run", "--backbones", backbone, "--tasks", "sample",
            "--strategies", strategy, "--adapters", adapter, "--prompts", "concise",
            "--train-sizes", str(train_size), "--seeds", str(seed), "--results-dir", str(results),
            "--cache-dir", str(cache), "--no-leaderboard", "--no-progress", "--per-device-train-batch-size", "16",
            "--save-steps", "0", "--save-models", "none", *extra]


def only_result(results) -> dict:
    """The one result in the folder ``results``, which must be ``ok``."""
    import json
    from pathlib import Path

    [result] = [json.loads(p.read_text()) for p in Path(results).glob("*.json")
                if not p.name.endswith(".predictions.json")]
    assert result["status"] == "ok", result.get("error")
    return result


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
