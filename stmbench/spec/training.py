"""Training settings: :class:`TrainingSettings`, the ``transformers.TrainingArguments`` names of one run, validated once,
and which of them name a run (:meth:`TrainingSettings.identity`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from stmbench.common.errors import StmbenchError


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(frozen=True)
class TrainingSettings:
    """Training hyper-parameters of one run (``transformers.TrainingArguments`` names)."""

    learning_rate: float = _help("peak learning rate (default: the backbone's or the adapter's)", default=2e-5)
    num_train_epochs: float = _help("training epochs", default=3.0)
    max_steps: int = _help("stop after this many optimizer steps (-1: use epochs)", default=-1)
    per_device_train_batch_size: int = _help("training batch of one step per device; with --devices-per-run K, of one step over all K (each takes 1/K)", default=16)
    per_device_eval_batch_size: int = _help("prediction rows per batch at most (see eval_batch_tokens)", default=64)
    gradient_accumulation_steps: int = _help("batches accumulated per optimizer step", default=1)
    max_seq_length: int = _help("truncate inputs to this many tokens", default=128)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    warmup_steps: float = _help("warmup steps, or a ratio of all steps when in [0, 1)", default=0.0)
    lr_scheduler_type: str = _help("learning-rate schedule (linear, cosine, constant, ...)", default="linear")
    optim: str = _help("optimizer name as in TrainingArguments (adamw_torch runs torch's fused AdamW kernel "
                       "where the device has one, as the Trainer's own default does)", default="adamw_torch")
    bf16: bool = _help("train in bfloat16 mixed precision", default=False)
    fp16: bool = _help("train in float16 mixed precision", default=False)
    gradient_checkpointing: bool = _help("trade compute for memory", default=False)
    logging_steps: int = _help("log the training loss (the loss curve kept in the result) every N steps",
                               default=10)
    eval_strategy: str = _help("evaluate on the dev split during training (no, epoch, steps) and test the "
                               "checkpoint with the best dev accuracy", default="no")
    eval_steps: int = _help("with eval_strategy steps: evaluate (and save) every N steps", default=50)
    early_stopping_patience: int = _help("stop after N dev evaluations without improvement (0: never)", default=0)
    dev_holdout: float = _help("share of train held out for selection where the eval split is the dev split",
                               default=0.1)
    packing: bool = _help("padding-free training batches: each batch's sequences concatenated into one row "
                          "with position ids restarting per sequence and attention kept within each "
                          "(decoders; measured in benchmarks/bench_packing.py)", default=False)
    group_by_length: bool = _help("training batches of similar lengths (seeded, shuffled in groups of 50 "
                                  "batches) so less of each batch is padding", default=True)
    eval_batch_tokens: int = _help("padded tokens per prediction batch (0: planned from the device's free "
                                   "memory and the model's sizes)", default=0)
    auto_bf16: bool = _help("on a CUDA device that supports bfloat16, train in bf16 mixed precision unless "
                            "fp16 is set (stated in the result)", default=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise StmbenchError(f"training setting {f.name} must be a finite number, not {value}")
        if self.learning_rate <= 0:
            raise StmbenchError("learning_rate must be positive")
        for name in ("weight_decay", "warmup_steps", "num_train_epochs"):
            if getattr(self, name) < 0:
                raise StmbenchError(f"{name} must not be negative")
        if self.max_steps < -1 or self.max_steps == 0:
            raise StmbenchError("max_steps must be positive, or -1 to use num_train_epochs")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise StmbenchError("num_train_epochs or max_steps must be positive")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_seq_length"):
            if getattr(self, name) < 1:
                raise StmbenchError(f"{name} must be at least 1")
        if self.eval_batch_tokens < 0:
            raise StmbenchError("eval_batch_tokens must be 0 (planned from free memory) or more")
        if self.bf16 and self.fp16:
            raise StmbenchError("choose one of bf16 and fp16")
        if self.logging_steps < 1:
            raise StmbenchError("logging_steps must be at least 1")
        if self.eval_strategy not in ("no", "epoch", "steps"):
            raise StmbenchError(f"eval_strategy {self.eval_strategy!r}: use no, epoch or steps")
        if self.eval_steps < 1:
            raise StmbenchError("eval_steps must be at least 1")
        if self.early_stopping_patience < 0:
            raise StmbenchError("early_stopping_patience must not be negative")
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise StmbenchError("early_stopping_patience needs eval_strategy epoch or steps")
        if not 0 < self.dev_holdout < 1:
            raise StmbenchError("dev_holdout must be between 0 and 1")

    def identity(self) -> dict[str, Any]:
        """What names a run: every setting, except those added later while they keep their default
        (so results stored before a setting existed keep their run ids)."""
        data = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in _LATER_SETTINGS and data[f.name] == f.default:
                del data[f.name]
        if self.eval_strategy == "no":  # what only selection uses changes nothing without it
            for name in ("eval_steps", "early_stopping_patience", "dev_holdout"):
                data.pop(name, None)
        return data

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(cls, *layers: dict[str, Any]) -> TrainingSettings:
        """Merge layers of settings, later ones winning, over the defaults."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update({k: v for k, v in layer.items() if v is not None})
        unknown = sorted(set(merged) - set(cls.field_names()))
        if unknown:
            raise StmbenchError(f"unknown training setting(s): {', '.join(unknown)}; known: "
                                f"{', '.join(cls.field_names())}")
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        typed = {k: _coerce(k, v, kinds[k]) for k, v in merged.items()}
        return cls(**typed)


# training settings that do not change what a run computes, or that were added after results were
# stored: left out of a run's identity while at their defaults (see TrainingSettings.identity)
_LATER_SETTINGS = frozenset({"logging_steps", "eval_strategy", "eval_steps", "early_stopping_patience",
                             "dev_holdout", "group_by_length", "auto_bf16", "packing",
                             "eval_batch_tokens"})


def _coerce(name: str, value: Any, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        raise StmbenchError(f"training setting {name}: {value!r} is not a {kind}") from None
    return value

