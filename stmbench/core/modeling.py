"""Model helpers shared by backbones, adapters and strategies (torch is imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.core.budget import TokenBudget

log = logging.getLogger(__name__)

PAD_TOKEN = "<|stmbench_pad|>"
IGNORE_INDEX = -100  # label of a position with no loss (transformers' convention)


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


#: transformers' names of the head modules on top of a model's body (classification or answer layer)
HEAD_MODULES = ("score", "classifier", "lm_head")


def head_modules(model: Any) -> list[str]:
    """Names of ``model``'s top-level head modules: what a model that brings its own head declares
    (``trainable_head_modules()``, see ``Strategy.prepare_model``), else transformers' head names
    (:data:`HEAD_MODULES`) that it has."""
    declared = getattr(model, "trainable_head_modules", None)
    if callable(declared):
        return list(declared())
    children = dict(model.named_children())
    return [name for name in HEAD_MODULES if name in children]


def transformers_model(model: Any) -> Any:
    """The transformers model inside a strategy's own wrapper (its ``transformers_model()``), or
    ``model`` itself."""
    inner = getattr(model, "transformers_model", None)
    return inner() if callable(inner) else model


def auto_class(head: str) -> Any:
    """The transformers ``AutoModel*`` class that loads a model with ``head`` (one of
    :data:`~stmbench.core.types.HEADS`)."""
    import transformers

    from stmbench.common.errors import StmbenchError
    from stmbench.core.types import HEAD_BASE, HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION

    names = {HEAD_CAUSAL_LM: "AutoModelForCausalLM", HEAD_SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
             HEAD_TOKEN_CLASSIFICATION: "AutoModelForTokenClassification", HEAD_BASE: "AutoModel"}
    if head not in names:
        raise StmbenchError(f"unknown model head {head!r}")
    return getattr(transformers, names[head])


def model_device(model: Any) -> Any:
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def pick_device(requested: str | None) -> str:
    """The device a run uses: the one asked for (``--device``), else CUDA when torch sees a GPU, else
    the CPU.  The one place that decides it (the session and the preflight checks ask here)."""
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


def sorted_batches(lengths: Sequence[int], size: int | TokenBudget) -> Iterator[list[int]]:
    """Batches of indices, longest first, so each batch pads to nearly its own rows' length; the
    caller puts each result back at its index (the original order).  ``size`` is a row count or a
    :class:`stmbench.core.budget.TokenBudget` (rows per batch by padded tokens)."""
    from stmbench.core.budget import as_budget

    return as_budget(size).batches(lengths)


class PaddingMeter:
    """Counts real tokens against the tokens a model processed (padding included)."""

    def __init__(self) -> None:
        self.real = 0
        self.processed = 0

    def add(self, real: int, processed: int) -> None:
        self.real += int(real)
        self.processed += int(processed)

    def add_mask(self, attention_mask: Any) -> None:
        self.add(attention_mask.sum(), attention_mask.numel())

    def efficiency(self) -> float | None:
        """Real tokens / processed tokens (1.0: no padding); ``None`` when nothing was counted."""
        return round(self.real / self.processed, 4) if self.processed else None

    def report(self) -> dict[str, Any]:
        return {"efficiency": self.efficiency(), "real_tokens": self.real, "processed_tokens": self.processed}


def prompt_learning(model: Any) -> bool:
    """Whether ``model`` runs a peft soft-prompt method (prompt, prefix or p-tuning), whose virtual
    tokens reach the model as embeddings or a key/value prefix before the input."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and bool(getattr(config, "is_prompt_learning", False))


def keeps_logits(model: Any) -> bool:
    """Whether ``model(..., logits_to_keep=positions)`` projects only the given positions onto the
    vocabulary (transformers' causal LMs).  Not for soft-prompt methods, whose virtual tokens shift
    every position."""
    import inspect

    if prompt_learning(model):
        return False
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def training_flops(model: Any, tokens: float) -> float:
    """Estimated FLOPs of training on ``tokens`` real tokens: per token, 6 per trainable and 4 per
    frozen parameter (forward 2; backward 2 for the activation gradients through every parameter,
    2 more for the weight gradients of trainable ones; Kaplan et al. 2020's 6N when all train).
    Input-embedding tables are lookups and not counted; attention's sequence-length term is left
    out, so this undercounts long sequences a little."""
    try:
        embeddings = model.get_input_embeddings()
        skip = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    except (AttributeError, NotImplementedError):
        skip = set()
    seen: set[int] = set()
    trainable = frozen = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return float(6 * trainable + 4 * frozen) * float(tokens)


#: dense bfloat16 tensor-core peaks from NVIDIA's datasheets (FLOP/s), matched in this order
DATASHEET_BF16_PEAK = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
)


def _measured_matmul_peak(device: str, dtype_name: str) -> float:
    import time

    import torch

    dtype = getattr(torch, dtype_name)
    n = 2048 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    best = 0.0
    for _ in range(3):  # the best of three ~0.1 s bursts
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            if count % 4 == 0:
                sync()
                elapsed = time.perf_counter() - start
                if elapsed > 0.1:
                    break
        best = max(best, 2.0 * n ** 3 * count / elapsed)
    return best


_PEAKS: dict[tuple[str, str, int], tuple[float, str]] = {}
PEAKS_FILE = "matmul-peaks.json"  #: in the cache folder: measured peaks, one per machine, device, dtype and threads


def machine_key(device: str, dtype_name: str, threads: int) -> str:
    """What a measured peak depends on: host, processor (or GPU), torch build, dtype and threads."""
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        chip = torch.cuda.get_device_name()
    else:
        chip = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                chip = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), chip)
        except OSError:
            pass
    return "|".join([platform.node(), chip, torch.__version__, device, dtype_name, str(threads)])


def machine_measures(cache_dir: Any, name: str) -> dict[str, float]:
    """The measurements kept in ``cache_dir/name`` (a JSON object of positive numbers keyed by
    :func:`machine_key`-style strings); anything else in the file (a link, over 1 MB, not numbers)
    is ignored, never trusted."""
    import json
    from pathlib import Path

    path = Path(cache_dir) / name
    try:
        if path.is_symlink() or path.stat().st_size > 1_000_000:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e18}


def keep_machine_measure(cache_dir: Any, name: str, key: str, value: float) -> None:
    """Add ``key: value`` to ``cache_dir/name`` (written atomically; a read-only cache: measured again)."""
    import json
    from pathlib import Path

    from stmbench.common.files import atomic_write_text

    data = {**machine_measures(cache_dir, name), key: value}
    try:
        atomic_write_text(Path(cache_dir) / name, json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:
        log.debug("could not keep %s in %s: %s", key, name, exc)


def peak_flops(device: str, dtype_name: str = "float32", cache_dir: Any = None) -> tuple[float, str]:
    """The device's peak FLOP/s for training in ``dtype_name`` and where the figure comes from: the
    datasheet's dense bf16 peak for known NVIDIA GPUs in bf16/fp16, else a matmul measured (the best of
    three bursts of square matmuls with torch's threads) once per process, and with ``cache_dir``
    once per machine: kept in ``cache_dir/matmul-peaks.json`` under the host, processor, torch build,
    dtype and thread count, and read from there by later processes."""
    import torch

    key = (device, dtype_name, torch.get_num_threads())
    if key not in _PEAKS:
        if device.startswith("cuda") and dtype_name in ("bfloat16", "float16") and torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            for part, flops in DATASHEET_BF16_PEAK:
                if part in name:
                    _PEAKS[key] = (flops, f"datasheet dense bf16 peak of {name}")
                    break
        if key not in _PEAKS:
            threads = f", {torch.get_num_threads()} threads" if not device.startswith("cuda") else ""
            source = f"measured {dtype_name} matmul on {device}{threads}"
            machine = machine_key(device, dtype_name, key[2]) if cache_dir is not None else ""
            cached = machine_measures(cache_dir, PEAKS_FILE).get(machine) if cache_dir is not None else None
            if cached is not None:
                _PEAKS[key] = (cached, source + " (once on this machine, cached)")
            else:
                flops = _measured_matmul_peak(device, dtype_name)
                _PEAKS[key] = (flops, source)
                if cache_dir is not None:
                    keep_machine_measure(cache_dir, PEAKS_FILE, machine, flops)
    return _PEAKS[key]


def hardware_use(model: Any, *, real_tokens: float, seconds: float, device: str, dtype_name: str,
                 cache_dir: Any = None) -> dict[str, Any]:
    """Achieved training FLOP/s (:func:`training_flops`) against :func:`peak_flops`: the MFU."""
    flops = training_flops(model, real_tokens)
    achieved = flops / seconds if seconds > 0 else None
    peak, source = peak_flops(device, dtype_name, cache_dir)
    return {"train_flops": flops, "achieved_flops_per_second": achieved, "peak_flops_per_second": peak,
            "peak_source": source, "mfu": round(achieved / peak, 5) if achieved and peak else None,
            "flops_estimate": "6 x trainable + 4 x frozen non-embedding parameters x real tokens"}
