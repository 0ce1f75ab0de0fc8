"""``generative``: supervised fine-tuning of a causal LM to answer with the task's verbalizer word.

Training: prompt -> answer word, the loss on the answer tokens only.  Prediction: no free
generation; the verbalizer words are scored at the answer position (one forward pass when every word
is one token, else each word's sequence log-likelihood, as lm-eval's ``multiple_choice`` does).
"""

from __future__ import annotations

from typing import Any

from stmbench import HEAD_CAUSAL_LM, IGNORE_INDEX, hookimpl, keeps_logits, PaddingMeter, Prediction, Strategy
from stmbench_plugins.strategies._common import argmax, encode_pairs, rows, score_choices


def seq2seq_collator(tokenizer: Any) -> Any:
    """Pads ``input_ids`` with the pad token and ``labels`` with -100 (right padding)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def lm_features(tokenizer: Any, contexts: list[str], targets: list[str], max_len: int) -> dict[str, list[Any]]:
    """``input_ids``/``labels`` for training on ``targets`` after ``contexts`` (context tokens masked)."""
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for ctx, cont in encode_pairs(tokenizer, contexts, targets, max_len):
        cont = cont[:max_len]
        ids = (ctx + cont)[-max_len:]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(([IGNORE_INDEX] * len(ctx) + cont)[-max_len:])
    return out


class GenerativeStrategy(Strategy):
    name = "generative"
    description = "causal LM answers with the verbalizer word; loss on the answer; scored, not generated"
    head = HEAD_CAUSAL_LM
    needs_decoder = True
    lm_loss_on_labels = True

    def feature_encoder(self, *, task: Any, tokenizer: Any, spec: Any, context: Any) -> Any:
        words = task.label_words
        max_len = spec.training.max_seq_length

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            examples = [dict(zip(batch, values)) for values in zip(*batch.values())]
            prompts = [task.render(spec.prompt, ex) for ex in examples]
            return lm_features(tokenizer, prompts, [words[ex["label"]] for ex in examples], max_len)

        return encode

    def data_collator(self, tokenizer: Any, spec: Any) -> Any:
        return seq2seq_collator(tokenizer)

    def predict(self, model: Any, *, data: Any, task: Any, tokenizer: Any, spec: Any, context: Any) -> Prediction:
        prompts = [task.render(spec.prompt, ex) for ex in rows(data)]
        meter = PaddingMeter()
        scores, mode = score_choices(model, tokenizer, prompts, task.label_words,
                                     max_len=spec.training.max_seq_length,
                                     batch_size=context.eval_budget(model, spec, full_logits=not keeps_logits(model)),
                                     meter=meter)
        return Prediction([argmax(r) for r in scores], padding=meter.report(), info={"scoring": mode})


@hookimpl
def register_strategies(register):
    register(GenerativeStrategy())
