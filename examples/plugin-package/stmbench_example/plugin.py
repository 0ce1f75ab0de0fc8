"""The plugin module the entry point names: one strategy, one adapter, one task and one metric.

Written from ``stmbench``'s public contract alone (the base classes and ``hookimpl`` it re-exports,
the ``context`` it hands over): no built-in plugin is imported or subclassed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stmbench import HEAD_SEQUENCE_CLASSIFICATION, Adapter, Metric, Prediction, Strategy, head_modules, hookimpl


class PromptClassifier(Strategy):
    """Reads the task's prompt and classifies it with a sequence-classification head."""

    name = "prompt_classifier"
    description = "example: the prompt text through a classification head (left-padded, cut from the left)"
    head = HEAD_SEQUENCE_CLASSIFICATION

    def _encode(self, tokenizer, task, spec, examples):
        tokenizer.truncation_side = "left"  # the end of the prompt (the question) must survive
        texts = [task.render(spec.prompt or next(iter(task.prompts)), ex) for ex in examples]
        return tokenizer(texts, truncation=True, max_length=spec.training.max_seq_length)

    def feature_encoder(self, *, task, tokenizer, spec, context):
        def encode(batch):
            examples = [dict(zip(batch, values)) for values in zip(*batch.values())]
            features = dict(self._encode(tokenizer, task, spec, examples))
            features["labels"] = [ex["label"] for ex in examples]
            return features

        return encode

    def data_collator(self, tokenizer, spec):
        from transformers import DataCollatorWithPadding

        tokenizer.padding_side = "left"  # the head reads the last position
        return DataCollatorWithPadding(tokenizer)

    def predict(self, model, *, data, task, tokenizer, spec, context):
        import torch

        collate = self.data_collator(tokenizer, spec)
        rows = [dict(zip(data.column_names, values)) for values in zip(*(data[c] for c in data.column_names))]
        encoded = self._encode(tokenizer, task, spec, rows)
        device = next(model.parameters()).device
        # batches within the token budget stmbench plans from the free memory (longest first)
        batches = list(context.eval_budget(model, spec).batches([len(ids) for ids in encoded["input_ids"]]))
        labels: list[int] = [-1] * len(rows)
        model.eval()
        with torch.inference_mode():
            for idx in batches:
                batch = collate([{k: encoded[k][i] for k in encoded} for i in idx])
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                for i, label in zip(idx, logits.argmax(-1).tolist()):
                    labels[i] = label
        return Prediction(labels, info={"batches": len(batches)})


@dataclass
class TopLayersOptions:
    layers: int = field(default=1, metadata={"help": "how many of the top transformer layers train (with the head)"})

    def __post_init__(self) -> None:
        if self.layers < 0:
            raise ValueError("layers must be 0 or more")


class TopLayers(Adapter):
    """Trains the head and the top ``layers`` transformer layers; the rest stays frozen."""

    name = "top_layers"
    description = "example: the head and the top N transformer layers train"
    options_class = TopLayersOptions
    default_learning_rate = 1e-3

    def wrap(self, model, *, head, info, options):
        import re

        indices = {int(m.group(1)) for n, _ in model.named_parameters() if (m := re.search(r"\.(\d+)\.", n))}
        top = {f".{i}." for i in sorted(indices)[-options.layers:]} if options.layers else set()
        heads = tuple(f"{h}." for h in head_modules(model))
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(heads) or any(t in name for t in top))
        return model


@hookimpl
def register_strategies(register):
    register(PromptClassifier())


@hookimpl
def register_adapters(register):
    register(TopLayers())


@hookimpl
def register_tasks(register):
    from stmbench import load_task_file

    register(load_task_file(Path(__file__).with_name("example_pairs.yaml")))


class MatthewsCorrelation(Metric):
    """Matthews' correlation coefficient: -1 to 1, 0 for a constant or random answer, whatever the
    label balance (sklearn's ``matthews_corrcoef``)."""

    name = "mcc"
    title = "MCC"
    description = "example: Matthews' correlation coefficient of the predicted labels (sklearn)"

    def compute(self, gold, predicted, *, labels):
        from sklearn.metrics import matthews_corrcoef

        return float(matthews_corrcoef(list(gold), list(predicted)))


@hookimpl
def register_metrics(register):
    register(MatthewsCorrelation())
