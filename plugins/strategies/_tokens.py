"""A label per token (tasks of kind ``tokens``, e.g. NER), shared by the strategies that do them:
features aligned to the first sub-token of every word (the other sub-tokens and special tokens get
-100, transformers' token-classification convention) and tag predictions read back at those
positions."""

from __future__ import annotations

from typing import Any

from stmbench import IGNORE_INDEX, model_device, PaddingMeter, sorted_batches, TokenBudget


def first_subtokens(word_ids: list[int | None]) -> dict[int, int]:
    """word index -> the position of its first sub-token."""
    out: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in out:
            out[word] = position
    return out


def encode_words(tokenizer: Any, sentences: list[list[str]], max_len: int) -> Any:
    return tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_len)


def token_features(tokenizer: Any, sentences: list[list[str]], tags: list[list[int]], max_len: int) -> dict[str, list[Any]]:
    """Model inputs with ``labels``: each word's tag at its first sub-token, -100 elsewhere."""
    enc = encode_words(tokenizer, sentences, max_len)
    labels = []
    for i, sentence_tags in enumerate(tags):
        firsts = first_subtokens(enc.word_ids(i))
        row = [IGNORE_INDEX] * len(enc["input_ids"][i])
        for word, position in firsts.items():
            row[position] = sentence_tags[word]
        labels.append(row)
    return {**dict(enc), "labels": labels}


def outside_index(task: Any) -> int:
    """The index of the ``O`` tag (words cut off by truncation are predicted as outside)."""
    values = [lab.value for lab in task.labels]
    return values.index("O") if "O" in values else 0


def predict_tags(model: Any, tokenizer: Any, *, sentences: list[list[str]], task: Any, max_len: int,
                 batch_size: int | TokenBudget) -> tuple[list[list[int]], dict[str, Any]]:
    """A tag index per word of every sentence (length-sorted batches, right padding), and the
    padding report."""
    import torch

    device = model_device(model)
    enc = encode_words(tokenizer, sentences, max_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    outside = outside_index(task)
    predicted: list[list[int]] = [[outside] * len(s) for s in sentences]
    meter = PaddingMeter()
    model.eval()
    with torch.inference_mode():
        for idx in sorted_batches([len(ids) for ids in enc["input_ids"]], batch_size):
            batch = tokenizer.pad([{k: enc[k][i] for k in keys} for i in idx], padding=True, return_tensors="pt",
                                  padding_side="right")
            meter.add_mask(batch["attention_mask"])
            best = model(**{k: v.to(device) for k, v in batch.items()}).logits.argmax(-1).tolist()
            for row, i in zip(best, idx):
                for word, position in first_subtokens(enc.word_ids(i)).items():
                    predicted[i][word] = row[position]
    return predicted, meter.report()
