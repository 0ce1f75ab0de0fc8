"""One run: :class:`RunSpec`, a combination of the grid with a stable id (the hash of what it computes)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from stmbench.spec.training import TrainingSettings


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
    #: the teacher that writes this run's rationales (strategies that train on rationales only) and its
    #: options; ``None``: the task data's own ``rationale`` column (or a ``generate_rationales`` plugin)
    teacher: str | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    #: the teacher's options that change nothing it writes (concurrency, timeouts, the API-key
    #: variable's name): stored, never part of the run id
    teacher_runtime: dict[str, Any] = field(default_factory=dict)
    #: the pruner that may stop this trial early on dev (``asha[...]``, canonical); ``None``: never pruned
    pruner: str | None = None
    #: where a pruned trial stands in its cell: ``{"study": name, "trials": [run ids in the order they
    #: run]}`` (the planner's; never part of the run id)
    tuning: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher_settings(self) -> dict[str, Any]:
        """Every option of the teacher: :attr:`teacher_options` and :attr:`teacher_runtime` together."""
        return {**self.teacher_options, **self.teacher_runtime}

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
        del data["teacher_runtime"], data["tuning"]
        for name in ("limit", "sweep", "teacher", "teacher_options", "pruner"):  # fields added later: stored runs keep their ids
            if not data[name]:
                del data[name]
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def names(self, variants: dict[str, str] | None = None) -> dict[str, str]:
        """The display name of each axis of this run, the one place runs are named: ``strategy`` and
        ``adapter`` are ``variants``' names where given (a result's ``labels``: with their non-default
        options, ``lora[r=4]``), and so is ``backbone`` (its display name: a GGUF file's name), the strategy with its shots (``in_context (5-shot)``) and its teacher
        (``cot ← hf[model.gguf]``)."""
        variants = variants or {}
        strategy = variants.get("strategy") or self.strategy
        return {"backbone": variants.get("backbone") or self.backbone, "task": self.task,
                "strategy": (f"{strategy} ({self.shots}-shot)" if self.shots is not None else strategy)
                + (f" \u2190 {variants.get('teacher') or teacher_label(self.teacher, self.teacher_options)}"
                   if self.teacher else ""),
                "adapter": variants.get("adapter") or self.adapter, "prompt": self.prompt or "-",
                "train_size": str(self.train_size), "seed": str(self.seed)}

    def label(self, variants: dict[str, str] | None = None) -> str:
        """A short human-readable name for logs and lists of runs (:meth:`names` joined)."""
        n = self.names(variants)
        parts = [n["backbone"], n["task"], n["strategy"], n["adapter"]]
        if self.prompt:
            parts.append(n["prompt"])
        trial = [f"{name}={getattr(self.training, name):g}" if isinstance(getattr(self.training, name), float)
                 else f"{name}={getattr(self.training, name)}" for name in self.sweep]
        return " / ".join([*parts, f"n={n['train_size']}", f"seed={n['seed']}", *trial])


def teacher_label(name: str, options: dict[str, Any]) -> str:
    """A teacher's short name for tables: ``hf[SmolLM2-135M-Instruct.Q4_1.gguf]`` (the last part of its
    ``model`` or ``path`` option), or its name."""
    model = options.get("model") or options.get("path")
    if isinstance(model, str) and model:
        return f"{name}[{model.replace(chr(92), '/').rstrip('/').rsplit('/', 1)[-1]}]"
    return name
