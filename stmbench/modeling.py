"""Model helpers shared by backbones, adapters and strategies (torch is imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

PAD_TOKEN = "<|stmbench_pad|>"


def choose_pad_token(tokenizer: Any) -> bool:
    """Give ``tokenizer`` a pad token that is not EOS.  Returns True when a new token was added
    (the model's embeddings must then be resized).

    Sequence-classification models pool the rightmost token that is not ``pad_token_id``; when pad
    equals EOS an input ending with EOS would be pooled at the wrong place, and generative training
    would never learn to emit EOS.  Preference: the existing pad token if distinct from EOS, then
    UNK, then a new special token.
    """
    pad, eos, unk = tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id
    if pad is not None and pad != eos:
        return False
    if unk is not None and unk != eos:
        tokenizer.pad_token = tokenizer.unk_token
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return True


def attach_pad_token(model: Any, tokenizer: Any, added: bool) -> None:
    """Set ``model.config.pad_token_id`` (and the generation config's) from the tokenizer."""
    if added:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = tokenizer.pad_token_id


def count_parameters(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` parameters; peft models report their own (4-bit weights counted right)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def model_device(model: Any) -> Any:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` tensors for a list of token-id lists."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if side == "right":
            ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, :len(seq)] = 1
        else:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids, mask


def peak_memory_mb(device: str) -> float | None:
    """Peak accelerator memory of this process in MiB, or peak resident memory on CPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)
    except (ImportError, OSError):  # pragma: no cover - not on POSIX
        return None


def reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
