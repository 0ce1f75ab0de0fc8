"""The settings of one ``stmbench`` invocation: plain data, no part of a run's identity.

They travel to worker processes and remote workers (:meth:`Settings.to_dict`) and are what a plugin
sees as ``context.settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    env = os.environ.get("STMBENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stmbench"


@dataclass
class Settings:
    """Where things are and what may be loaded; no part of a run's identity."""

    results_dir: Path = Path("results")
    leaderboard_dir: Path | None = Path("leaderboard")
    cache_dir: Path = field(default_factory=default_cache_dir)
    data_dir: Path | None = None
    task_dirs: list[Path] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: cuda when available
    debug: bool = False
    progress: bool | None = None  # progress bars; None: when stderr is a terminal
    save_steps: int | None = None  # checkpoint every N steps; None: every epoch; 0: never
    claim_timeout: float = 300.0  # seconds without a heartbeat after which another worker's claim is stale
    force: bool = False  # replace a leaderboard that was built from another results folder
    #: ``--backbone-name``: backbone (as given to ``--backbones``) -> the name shown for it
    backbone_names: dict[str, str] = field(default_factory=dict)
    #: ``--save-models``: ``auto`` | ``none`` | ``best`` | ``all`` (:mod:`stmbench.run.keep`)
    save_models: str = "auto"
    #: ``--report-to``: the Trainer integrations each run logs to (``tensorboard``, ``mlflow``, ``wandb``, ...)
    report_to: list[str] = field(default_factory=list)
    #: ``--devices-per-run``: processes (devices) one run trains on (:mod:`stmbench.run.distributed`)
    devices_per_run: int = 1
    #: ``--fsdp`` / ``--fsdp-config`` / ``--deepspeed``: TrainingArguments' sharding settings, passed through
    fsdp: str = ""
    fsdp_config: str | None = None
    deepspeed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list)
                    else dict(v) if isinstance(v, dict) else v)
                for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        data = dict(data)
        for key in ("results_dir", "cache_dir"):
            data[key] = Path(data[key])
        for key in ("leaderboard_dir", "data_dir"):
            data[key] = Path(data[key]) if data.get(key) else None
        data["task_dirs"] = [Path(p) for p in data.get("task_dirs", [])]
        return cls(**data)
