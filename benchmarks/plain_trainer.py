"""The hand-written baseline of ``bench_vs_trainer.py``: what a user would write for one combination
with ``transformers.Trainer`` (and ``peft`` for LoRA) instead of stmbench.  Reads JSON lines with
``prompt``, ``label`` and ``word`` (the verbalizer word of the label), trains, predicts, and prints
one JSON line with its timings, training loss and accuracy.

    python benchmarks/plain_trainer.py MODEL_DIR DATA_DIR --strategy generative --adapter lora ...
"""

from __future__ import annotations

import argparse
import json
import time

start = time.perf_counter()

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--strategy", choices=["generative", "discriminative"], required=True)
    parser.add_argument("--adapter", choices=["full", "lora"], required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--learning-rate", type=float, required=True)
    parser.add_argument("--num-train-epochs", dest="epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--output", default="/tmp/plain-trainer-out")
    args = parser.parse_args()
    imported = time.perf_counter()

    data = load_dataset("json", data_files={"train": f"{args.data}/train.jsonl", "test": f"{args.data}/test.jsonl"})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    words = sorted({(r["label"], r["word"]) for r in data["train"]})
    set_seed(args.seed)
    if args.strategy == "discriminative":
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(words))
        model.config.pad_token_id = tokenizer.pad_token_id
        tokenizer.truncation_side = "left"

        def encode(batch):
            out = tokenizer(batch["prompt"], truncation=True, max_length=args.max_length)
            out["labels"] = batch["label"]
            return out

        collator = DataCollatorWithPadding(tokenizer)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)

        def encode(batch):
            out = {"input_ids": [], "attention_mask": [], "labels": []}
            for prompt, word in zip(batch["prompt"], batch["word"]):
                ctx = tokenizer(prompt)["input_ids"]
                answer = tokenizer(prompt + word)["input_ids"][len(ctx):]
                ids = (ctx + answer)[-args.max_length:]
                out["input_ids"].append(ids)
                out["attention_mask"].append([1] * len(ids))
                out["labels"].append(([-100] * len(ctx) + answer)[-args.max_length:])
            return out

        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    set_seed(args.seed)
    if args.adapter == "lora":
        from peft import LoraConfig, get_peft_model

        task_type = "SEQ_CLS" if args.strategy == "discriminative" else "CAUSAL_LM"
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                 target_modules=["q_proj", "v_proj"], task_type=task_type))
    features = data["train"].map(encode, batched=True, remove_columns=data["train"].column_names)
    real_tokens = sum(len(ids) for ids in features["input_ids"]) * args.epochs
    loaded = time.perf_counter()

    trainer = Trainer(model=model, data_collator=collator, train_dataset=features, args=TrainingArguments(
        output_dir=args.output, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, seed=args.seed, data_seed=args.seed, save_strategy="no",
        logging_steps=10, report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=True))
    output = trainer.train()
    trained = time.perf_counter()

    model.eval()
    device = next(model.parameters()).device
    prompts, gold = data["test"]["prompt"], data["test"]["label"]
    predicted = []
    with torch.inference_mode():
        for at in range(0, len(prompts), args.eval_batch_size):
            batch = tokenizer(prompts[at:at + args.eval_batch_size], padding=True, truncation=True,
                              max_length=args.max_length, return_tensors="pt").to(device)
            logits = model(**batch).logits
            if args.strategy == "generative":  # the verbalizer words' first tokens at the last prompt position
                last = batch["attention_mask"].sum(1) - 1
                word_ids = [tokenizer(p + w)["input_ids"][len(tokenizer(p)["input_ids"])] for _, w in words
                            for p in prompts[at:at + 1]]
                logits = logits[torch.arange(len(last)), last][:, word_ids]
            predicted += logits.argmax(-1).tolist()
    accuracy = sum(int(p == g) for p, g in zip(predicted, gold)) / len(gold)
    done = time.perf_counter()
    import resource

    print(json.dumps({"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "tokens_per_second": real_tokens / (trained - loaded),"import_seconds": imported - start, "load_seconds": loaded - imported,
                      "train_seconds": trained - loaded, "eval_seconds": done - trained,
                      "train_loss": output.training_loss, "accuracy": accuracy, "predicted": predicted}))


if __name__ == "__main__":
    main()
