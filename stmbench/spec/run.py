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

