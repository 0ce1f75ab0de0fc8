"""``discriminative``: a sequence-classification head (``AutoModelForSequenceClassification``).

Decoders read the task's prompt and are pooled at the last token that is not padding (the pad token
is distinct from EOS and set on ``model.config``; inputs are cut from the left so the end survives,
and padded on the tokenizer's side, on the left under a soft prompt).
Encoders read a real sentence pair (``tokenizer(text_a, text_b)``, so segment ids are right) and
are pooled at ``[CLS]``; they ignore the prompt axis.  Tasks with a tag per token (kind ``tokens``)
get a token-classification head (``AutoModelForTokenClassification``), trained and read at the first
sub-token of every word.
"""

from __future__ import annotations

from typing import Any

from stmbench import (
    HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION, IGNORE_INDEX, hookimpl, Prediction, Strategy
)
from stmbench_plugins.strategies._common import argmax, rows
from stmbench_plugins.strategies._tokens import predict_tags, token_features


class PaddingCollator:
    """Pads a batch of features with ``tokenizer.pad`` on the given side; labels are kept as they are,
    or, one per token, padded with -100 on the same side."""

    def __init__(self, tokenizer: Any, side: str):
        self.tokenizer, self.side = tokenizer, side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features or not isinstance(features[0].get("labels"), list):
            return self.tokenizer.pad(features, padding=True, return_tensors="pt", padding_side=self.side)
        import torch

        labels = [f["labels"] for f in features]
        batch = self.tokenizer.pad([{k: v for k, v in f.items() if k != "labels"} for f in features], padding=True,
                                   return_tensors="pt", padding_side=self.side)
        width = batch["input_ids"].shape[1]
        pad = [[IGNORE_INDEX] * (width - len(row)) for row in labels]
        batch["labels"] = torch.tensor([p + row if self.side == "left" else row + p for p, row in zip(pad, labels)])
        return batch


class DiscriminativeStrategy(Strategy):
    name = "discriminative"
    description = "classification head on the last non-pad token (decoders) or [CLS] (encoders)"
    head = HEAD_SEQUENCE_CLASSIFICATION
    task_kinds = ("pair", "nli", "single", "tokens")

    def head_for(self, task: Any) -> str:
        return HEAD_TOKEN_CLASSIFICATION if task.is_tokens else self.head

    def normalize(self, spec: Any, info: Any) -> Any:
        spec = super().normalize(spec, info)
        return spec.replace(prompt=None) if not info.is_decoder else spec

    def encode_inputs(self, tokenizer: Any, task: Any, spec: Any, examples: list[dict[str, Any]]) -> dict[str, list[Any]]:
        max_len = spec.training.max_seq_length
        if spec.prompt is None:  # encoder: a real pair
            second = [ex["text_b"] for ex in examples] if task.is_pair else None
            return tokenizer([ex["text_a"] for ex in examples], second, truncation=True, max_length=max_len)
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            return tokenizer([task.render(spec.prompt, ex) for ex in examples], truncation=True, max_length=max_len)
        finally:
            tokenizer.truncation_side = side

    def feature_encoder(self, *, task: Any, tokenizer: Any, spec: Any, context: Any) -> Any:
        if task.is_tokens:
            return lambda batch: token_features(tokenizer, batch["tokens"], batch["tags"], spec.training.max_seq_length)

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            examples = [dict(zip(batch, values)) for values in zip(*batch.values())]
            features = dict(self.encode_inputs(tokenizer, task, spec, examples))
            features["labels"] = [ex["label"] for ex in examples]
            return features

        return encode

    def data_collator(self, tokenizer: Any, spec: Any) -> Any:
        # Decoders pad on the tokenizer's side, as transformers' DataCollatorWithPadding does (the
        # head pools the last token that is not padding); a soft-prompt adapter sets it to the left,
        # where the last position is a real token even though inputs_embeds hide the pad ids.
        # Encoders pad on the right: their [CLS] must stay at position 0.
        return PaddingCollator(tokenizer, "right" if spec.prompt is None else tokenizer.padding_side or "right")

    def predict(self, model: Any, *, data: Any, task: Any, tokenizer: Any, spec: Any, context: Any) -> Prediction:
        import torch

        from stmbench import PaddingMeter, model_device, sorted_batches

        if task.is_tokens:
            tags, padding = predict_tags(model, tokenizer, sentences=data["tokens"][:], task=task,
                                         max_len=spec.training.max_seq_length,
                                         batch_size=context.eval_budget(model, spec))
            return Prediction(tags, padding=padding)
        device = model_device(model)
        collate = self.data_collator(tokenizer, spec)
        enc = self.encode_inputs(tokenizer, task, spec, rows(data))
        preds: list[int] = [-1] * len(data)
        meter = PaddingMeter()
        model.eval()
        with torch.inference_mode():
            for idx in sorted_batches([len(ids) for ids in enc["input_ids"]], context.eval_budget(model, spec)):
                batch = collate([{k: enc[k][i] for k in enc} for i in idx])
                meter.add_mask(batch["attention_mask"])
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
                for i, row in zip(idx, logits.tolist()):
                    preds[i] = argmax(row)
        return Prediction(preds, padding=meter.report())


@hookimpl
def register_strategies(register):
    register(DiscriminativeStrategy())
