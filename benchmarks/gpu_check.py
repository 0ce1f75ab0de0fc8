"""The device check of issue 26: one script for one GPU, under 8 minutes, needing only torch,
transformers and peft (plus ``gguf`` to read the SmolLM2 file and ``bitsandbytes`` for QLoRA, both
optional wheels to carry).  It does not import stmbench, so a bare GPU machine runs it as it is.

    python benchmarks/gpu_check.py [--model FILE.gguf|FOLDER] [--steps 40] [--cpu-smoke]

With no ``--model`` (or one that cannot load) it builds SmolLM2-135M's shapes (30 layers, width 576,
49,152-token vocabulary) randomly initialised from a config: the same FLOPs per token as the real one.
It measures, in bf16 on the GPU:

* training: LoRA (r 8 on every linear layer) and full fine-tuning through ``transformers.Trainer``
  on synthetic sentence pairs of LCQMC's lengths (20-40 tokens), batch 16, padded batches against
  padding-free packing (``DataCollatorWithFlattening``) with SDPA and, where it loads, flex attention:
  tokens/s (real tokens), MFU against the datasheet's dense bf16 peak (6 x trainable + 4 x frozen
  non-embedding parameters per token), peak memory;
* in-context scoring: forward passes over prompts of about 40 and 300 tokens at growing batch sizes,
  tokens/s and peak memory at each (where throughput stops growing is the batch worth planning);
* QLoRA: a few 4-bit LoRA steps when bitsandbytes is installed (else one line saying it was not).

``--cpu-smoke`` runs the same code paths tiny and in float32 on the CPU (to check the script).
"""

from __future__ import annotations

import argparse
import json
import warnings
import math
import os
import random
import sys
import tempfile
import time

DATASHEET_BF16 = [("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12),
                  ("A10", 125e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("RTX 4090", 165e12),
                  ("A6000", 155e12), ("V100", 125e12), ("T4", 65e12)]
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0,
                    tie_word_embeddings=True)
WORDS = ("bank card loan credit account money transfer phone number open close limit repay interest apply how "
         "why when can i my the a is do what where change password balance fee online app review").split()


def sentence(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def load_model(args, torch, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    note = None
    if args.model:
        try:
            kwargs = {"gguf_file": os.path.basename(args.model)} if args.model.endswith(".gguf") else {}
            where = os.path.dirname(args.model) if kwargs else args.model
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, attn_implementation=args.attn, **kwargs)
            return model, f"{args.model} (loaded)"
        except Exception as exc:  # noqa: BLE001  (the shapes below measure the same FLOPs)
            note = f"{args.model} did not load ({type(exc).__name__}: {str(exc)[:120]}); "
    shape = dict(SMOLLM2_135M)
    if args.cpu_smoke:
        shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=2048)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    model.config._attn_implementation = args.attn
    return model.to(dtype), (note or "") + "SmolLM2-135M shapes, random init" + (" (CPU smoke: tiny)" if args.cpu_smoke else "")


def peak_of(device: str, torch) -> tuple[float | None, str]:
    if not device.startswith("cuda"):
        return None, "no datasheet peak on CPU"
    name = torch.cuda.get_device_name()
    for part, flops in DATASHEET_BF16:
        if part in name:
            return flops, f"datasheet dense bf16 peak of {name}: {flops / 1e12:.0f} TFLOP/s"
    return None, f"{name}: no datasheet peak known here"


def train_once(args, torch, base_state, make_model, *, adapter: str, packed: bool, attn: str, device: str,
               dtype, peak: float | None, features: list[dict], quant: bool = False) -> dict:
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    model = make_model(attn, quant)
    if base_state is not None and not quant:
        model.load_state_dict(base_state, strict=False)
    if adapter in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        if quant:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    elif not quant:
        model = model.to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embed = model.get_input_embeddings().weight.numel()
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    frozen_non_embed = max(0, frozen - (embed if adapter != "full" else 0))
    trainable_non_embed = trainable - (embed if adapter == "full" else 0)
    collator = (DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=attn.startswith("flash"))
                if packed else PadCollator())
    tokens_seen: list[int] = []

    class Counting:
        def __call__(self, batch):
            out = collator(batch)
            tokens_seen.append(sum(len(f["input_ids"]) for f in batch))
            return out

    steps = args.steps
    warm = max(3, steps // 8)
    timer: dict[str, float] = {}
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            if state.global_step == warm:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                timer["start"], timer["tokens"] = time.perf_counter(), sum(tokens_seen)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, train_dataset=features, data_collator=Counting(), callbacks=[Clock()],
                          args=TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=16,
                                                 learning_rate=1e-4 if adapter == "full" else 1e-3,
                                                 bf16=dtype == torch.bfloat16, logging_steps=10, save_strategy="no",
                                                 report_to="none", use_cpu=not device.startswith("cuda"),
                                                 disable_tqdm=True, dataloader_num_workers=0, seed=0,
                                                 remove_unused_columns=False))
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        output = trainer.train()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - timer["start"]
    tokens = sum(tokens_seen) - timer["tokens"]
    flops = (6 * trainable_non_embed + 4 * frozen_non_embed) * tokens
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    del trainer, model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"tokens_per_second": tokens / seconds, "mfu": flops / seconds / peak if peak else None,
            "peak_memory_mib": memory, "loss": output.training_loss}


class PadCollator:
    """Right-padded batches with -100 labels on the padding (what a plain script does)."""

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        labels = [f["labels"] + [-100] * (width - len(f["labels"])) for f in features]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .gguf file or a model folder (default: SmolLM2-135M shapes, random)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    if device == "cpu" and not args.cpu_smoke:
        print("no GPU here: run with --cpu-smoke to check the script on the CPU")
        return 2
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.cpu_smoke:
        args.steps = min(args.steps, 8)
    model, described = load_model(args, torch, dtype)
    base_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    config = model.config
    del model

    def make_model(attn: str, quant: bool):
        from transformers import AutoModelForCausalLM

        if quant:
            from transformers import BitsAndBytesConfig

            with tempfile.TemporaryDirectory() as folder:
                fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
                fresh.load_state_dict(base_state, strict=False)
                fresh.save_pretrained(folder)
                return AutoModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype), device_map={"": 0})
        fresh = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
        return fresh

    peak, peak_source = peak_of(device, torch)
    rng = random.Random(0)
    vocab = config.vocab_size
    features = []
    for _ in range(16 * (args.steps + 2)):
        n = rng.randint(20, 40)  # LCQMC's pairs: about 20-40 tokens with the prompt
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        features.append({"input_ids": ids, "labels": [-100] * (n - 2) + ids[-2:]})
    real = sum(len(f["input_ids"]) for f in features[:16 * args.steps])
    widths = [max(len(f["input_ids"]) for f in features[i:i + 16]) for i in range(0, 16 * args.steps, 16)]
    padding_share = 1 - real / (16 * sum(widths))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}, transformers {transformers.__version__}; {dtype}")
    print(f"model: {described}; {sum(p.numel() for p in base_state.values()) / 1e6:.1f}M parameters")
    print(f"peak: {peak_source}")
    print(f"training data: synthetic pairs of 20-40 tokens, batch 16, {args.steps} steps (the first "
          f"{max(3, args.steps // 8)} untimed); padding share of padded batches {100 * padding_share:.1f}%\n")
    figures: dict = {"device": name, "model": described, "training": {}, "scoring": {}}
    attns = ["sdpa"] + (["flex_attention"] if device == "cuda" else [])
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    print(f"  {'training':<34} {'tokens/s':>10} {'MFU':>7} {'peak MiB':>9} {'loss':>8}")
    for adapter in ("lora", "full"):
        for packed, attn in [(False, "sdpa")] + [(True, a) for a in attns]:
            label = f"{precision} {adapter}, {'packed, ' + attn if packed else 'padded, sdpa'}"
            try:
                r = train_once(args, torch, base_state, make_model, adapter=adapter, packed=packed, attn=attn,
                               device=device, dtype=dtype, peak=peak, features=features)
            except Exception as exc:  # noqa: BLE001  (one failing path is a finding, not the end)
                print(f"  {label:<34} failed: {type(exc).__name__}: {str(exc)[:150]}")
                continue
            figures["training"][label] = r
            mfu = f"{100 * r['mfu']:6.2f}%" if r["mfu"] is not None else "    n/a"
            mem = f"{r['peak_memory_mib']:9.0f}" if r["peak_memory_mib"] is not None else "      n/a"
            print(f"  {label:<34} {r['tokens_per_second']:10.0f} {mfu} {mem} {r['loss']:8.4f}")
    print(f"\n  {'in-context scoring (forward only)':<34} {'batch':>6} {'tokens/s':>10} {'peak MiB':>9}")
    model = make_model("sdpa", False)
    model.load_state_dict(base_state, strict=False)
    model = model.to(device).eval()
    for length in (40, 300):
        best = 0.0
        for batch in (4, 16, 64, 256):
            ids = torch.randint(3, vocab, (batch, length), device=device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                with torch.inference_mode():
                    model(input_ids=ids, logits_to_keep=1)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start, runs = time.perf_counter(), 0
                    while time.perf_counter() - start < (0.3 if args.cpu_smoke else 2.0):
                        model(input_ids=ids, logits_to_keep=1)
                        runs += 1
                    if device == "cuda":
                        torch.cuda.synchronize()
                rate = batch * length * runs / (time.perf_counter() - start)
            except torch.OutOfMemoryError:
                print(f"  {'prompts of ' + str(length) + ' tokens':<34} {batch:6d}  out of memory")
                break
            mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
            figures["scoring"][f"{length}x{batch}"] = {"tokens_per_second": rate, "peak_memory_mib": mem}
            grows = "" if rate > best * 1.1 else "   (throughput stopped growing)"
            best = max(best, rate)
            print(f"  {'prompts of ' + str(length) + ' tokens':<34} {batch:6d} {rate:10.0f} {mem:9.0f}{grows}")
    del model
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        print("\nqlora: bitsandbytes is not installed here; not checked")
    else:
        if device != "cuda":
            print("\nqlora: bitsandbytes needs a GPU; not checked on the CPU")
        else:
            try:
                r = train_once(args, torch, base_state, make_model, adapter="qlora", packed=False, attn="sdpa",
                               device=device, dtype=dtype, peak=peak, features=features, quant=True)
                print(f"\nqlora: ran; {r['tokens_per_second']:.0f} tokens/s, peak {r['peak_memory_mib']:.0f} MiB, "
                      f"loss {r['loss']:.4f}" + ("" if math.isfinite(r["loss"]) else "  (NOT FINITE)"))
                figures["qlora"] = r
            except Exception as exc:  # noqa: BLE001
                print(f"\nqlora: failed: {type(exc).__name__}: {str(exc)[:200]}")
    print(f"\ngpu_check: {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
