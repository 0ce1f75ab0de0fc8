"""Specs: :class:`RunSpec` (one combination, with a stable id) and :class:`GridSpec` (the axes).

Training settings use the names of ``transformers.TrainingArguments`` where they mean the same; the
CLI flags are generated from the :class:`TrainingSettings` fields (``--learning-rate`` ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from stmbench.errors import StmbenchError

FULL = "full"


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(frozen=True)
class TrainingSettings:
    """Training hyper-parameters of one run (``transformers.TrainingArguments`` names)."""

    learning_rate: float = _help("peak learning rate (default: the backbone's or the adapter's)", default=2e-5)
    num_train_epochs: float = _help("training epochs", default=3.0)
    max_steps: int = _help("stop after this many optimizer steps (-1: use epochs)", default=-1)
    per_device_train_batch_size: int = _help("training batch size per device", default=16)
    per_device_eval_batch_size: int = _help("prediction rows per batch at most (see eval_batch_tokens)", default=64)
    gradient_accumulation_steps: int = _help("batches accumulated per optimizer step", default=1)
    max_seq_length: int = _help("truncate inputs to this many tokens", default=128)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    warmup_steps: float = _help("warmup steps, or a ratio of all steps when in [0, 1)", default=0.0)
    lr_scheduler_type: str = _help("learning-rate schedule (linear, cosine, constant, ...)", default="linear")
    optim: str = _help("optimizer name as in TrainingArguments", default="adamw_torch")
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
                             "dev_holdout", "group_by_length", "auto_bf16",
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


@dataclass(frozen=True)
class RunSpec:
    """One combination of the grid.  Its :attr:`run_id` is a stable hash of everything here."""

    backbone: str
    task: str
    strategy: str
    adapter: str
    prompt: str | None
    train_size: int | str  # a number of examples, or "full"
    seed: int
    shots: int | None = None  # in-context examples (in-context strategies only)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    adapter_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    skip_bad_rows: bool = False
    limit: int | None = None  # evaluate on a seeded sample of this many eval examples (a partial result)
    sweep: tuple[str, ...] = ()  # training settings swept in this run's cell: the run is one trial

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sweep"] = list(self.sweep)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["training"] = TrainingSettings(**data.get("training", {}))
        data["sweep"] = tuple(data.get("sweep") or ())
        return cls(**data)

    @property
    def run_id(self) -> str:
        data = {**self.to_dict(), "training": self.training.identity()}
        for name in ("limit", "sweep"):  # fields added later: stored runs keep their ids
            if not data[name]:
                del data[name]
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        """A short human-readable name for logs."""
        parts = [self.backbone, self.task, self.strategy, self.adapter]
        if self.prompt:
            parts.append(self.prompt)
        parts.append(f"n={self.train_size}")
        if self.shots is not None:
            parts.append(f"k={self.shots}")
        parts.append(f"seed={self.seed}")
        return " / ".join(parts)


def parse_train_size(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() in (FULL, "all"):
        return FULL
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise StmbenchError(f"train size {value!r} is neither a number nor 'full'") from None
    if n < 0:
        raise StmbenchError(f"train size must not be negative, got {n}")
    return n


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``[...]`` (so ``lora[r=4,lora_alpha=8],full`` is 2 items)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [v.strip() for v in out if v.strip()]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return _split_top_level(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def parse_assignment(item: str, usage: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with the value read as YAML (``r=16`` -> 16, ``x=true`` ->
    True); an empty value is ``""``.  ``usage`` is the error message for a malformed item."""
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise StmbenchError(usage)
    from stmbench.untrusted import parse_yaml  # bounded, no aliases
    return key.strip(), parse_yaml(value, usage) if value.strip() else ""


def parse_axis_entry(entry: Any) -> tuple[str, dict[str, Any]]:
    """A strategy / adapter axis entry -> ``(name, options)``.

    ``"lora"`` has no options of its own; ``"lora[r=4,use_dora=true]"`` and the YAML mapping
    ``{name: lora, r: 4, use_dora: true}`` carry options that override the grid-wide ones, so one
    grid can hold several variants of the same plugin.
    """
    if isinstance(entry, dict):
        options = dict(entry)
        name = options.pop("name", None)
        if not name:
            raise StmbenchError(f"an axis entry given as a mapping needs a 'name': {entry!r}")
        return str(name), options
    text = str(entry).strip()
    if text.endswith("]") and "[" in text:
        name, _, inner = text[:-1].partition("[")
        usage = f"axis entry {text!r}: expected NAME[KEY=VALUE,...]"
        return name.strip(), dict(parse_assignment(item, usage) for item in _split_top_level(inner))
    return text, {}


def axis_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``name`` plus the options that differ from the defaults, e.g. ``lora[r=12,lora_alpha=32]``."""
    changed = [f"{k}={_short(v)}" for k, v in sorted(options.items()) if defaults.get(k, object()) != v]
    return f"{name}[{','.join(changed)}]" if changed else name


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


AXES = ("backbones", "tasks", "strategies", "adapters", "prompts", "train_sizes", "seeds", "shots")


@dataclass
class GridSpec:
    """The axes of a study.  ``training`` holds only what the user set; the rest is resolved per
    run (user > backbone recommendation > adapter default > TrainingSettings default)."""

    backbones: list[str] = field(default_factory=lambda: ["tiny-llama"])
    tasks: list[str] = field(default_factory=lambda: ["sample"])
    strategies: list[str] = field(default_factory=lambda: ["generative", "discriminative"])
    adapters: list[str] = field(default_factory=lambda: ["full", "lora"])
    prompts: list[str] = field(default_factory=lambda: ["concise"])
    train_sizes: list[int | str] = field(default_factory=lambda: [FULL])
    seeds: list[int] = field(default_factory=lambda: [42])
    shots: list[int] = field(default_factory=lambda: [0])
    training: dict[str, Any] = field(default_factory=dict)
    adapter_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip_bad_rows: bool = False
    limit: int | None = None
    sweep: dict[str, list[Any]] = field(default_factory=dict)  # training setting -> values tried per cell
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("training", "adapter_options", "strategy_options", "executor_options", "sweep"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
            elif not isinstance(value, dict):
                raise StmbenchError(f"{name} must be a mapping of names to values, not {value!r}")
        for name in ("adapter_options", "strategy_options"):
            for key, value in getattr(self, name).items():
                if not isinstance(value, dict):
                    raise StmbenchError(f"{name}.{key} must be a mapping of option names to values, not {value!r}")
        for axis in AXES:
            values = _as_list(getattr(self, axis))
            if not values:
                raise StmbenchError(f"the {axis} axis is empty")
            setattr(self, axis, values)
        self.train_sizes = [parse_train_size(v) for v in self.train_sizes]
        try:
            self.seeds = [int(s) for s in self.seeds]
            self.shots = [int(s) for s in self.shots]
        except ValueError as exc:
            raise StmbenchError(f"seeds and shots must be integers: {exc}") from None
        if any(s < 0 for s in self.shots):
            raise StmbenchError("shots must not be negative")
        for seed in self.seeds:
            if not 0 <= seed <= 2**32 - 1:
                raise StmbenchError(f"seed {seed} is outside 0..{2**32 - 1} (numpy's and torch's seed range)")
        if self.limit is not None:
            try:
                self.limit = int(self.limit)
            except (TypeError, ValueError):
                raise StmbenchError(f"limit {self.limit!r} is not a number of examples") from None
            if self.limit < 1:
                raise StmbenchError(f"limit {self.limit}: evaluate on at least 1 example")
        for size in self.train_sizes:
            if size != FULL and size < 1:
                raise StmbenchError(f"train size {size}: a train size is a positive number of examples or 'full'")
        for axis in ("backbones", "tasks", "prompts"):
            setattr(self, axis, [str(v) for v in getattr(self, axis)])
        for axis in ("strategies", "adapters"):  # may carry options: validate the form now
            for entry in getattr(self, axis):
                parse_axis_entry(entry)
        TrainingSettings.resolve(self.training)  # validate names and types early
        sweep = {}
        for name, values in self.sweep.items():
            values = _as_list(values)
            if name not in TrainingSettings.field_names():
                raise StmbenchError(f"sweep: unknown training setting {name!r}; known: "
                                    f"{', '.join(TrainingSettings.field_names())}")
            if not values:
                raise StmbenchError(f"sweep: no values for {name}")
            for value in values:
                TrainingSettings.resolve(self.training, {name: value})  # each trial must be valid
            sweep[name] = values
        self.sweep = sweep

    def with_overrides(self, **overrides: Any) -> GridSpec:
        """A copy with the non-``None`` overrides applied (``training`` is merged, not replaced)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("training", "sweep"):
                values[key] = {**getattr(self, key), **value}
            elif key in ("adapter_options", "strategy_options"):
                merged = {k: dict(v) for k, v in values[key].items()}
                for name, opts in value.items():
                    merged.setdefault(name, {}).update(opts)
                values[key] = merged
            else:
                values[key] = value
        return GridSpec(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GridSpec:
        """Read a grid YAML: the axes as lists (or comma strings), ``training:`` settings,
        ``adapter_options: {lora: {r: 16}}``, ``strategy_options: {...}``, ``executor``."""
        from stmbench.untrusted import UntrustedFileError, read_yaml
        try:  # read as untrusted: size, nesting and nodes bounded, no aliases
            data, path = read_yaml(path) or {}, Path(path)
        except UntrustedFileError as exc:
            raise StmbenchError(f"cannot read grid config {exc}") from None
        if not isinstance(data, dict):
            raise StmbenchError(f"{path}: a grid config must be a YAML mapping")
        known = {f.name for f in dataclasses.fields(cls)} | {"description"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StmbenchError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        data.pop("description", None)
        try:
            return cls(**data)
        except (StmbenchError, TypeError, ValueError) as exc:
            raise StmbenchError(f"{path}: {exc}") from None
