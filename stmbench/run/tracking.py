"""Experiment trackers (``--report-to tensorboard,mlflow,wandb,...``) through the Trainer's own
integrations (``TrainingArguments.report_to``).

Each run is one tracker run named by its display label and id (``TrainingArguments.run_name``); its
spec goes in as configuration, flattened onto the model's config while it trains
(``stmbench.strategy``, ``stmbench.training.learning_rate``, ...), which every integration logs
with the model's config (TensorBoard as text, MLflow as parameters, W&B as its config), and is
taken off again before anything is saved.  The trackers' end of training is held back until the
run has been tested, so the run's test metrics, health and cost are logged into the same tracker
run (``test_accuracy``, ``test_health_flagged``, ``test_cost_train_seconds``, ...: TensorBoard groups
them as ``test/...``) before it is closed.
TensorBoard writes under ``<results>/tensorboard/<run_id>/`` (under ``$TENSORBOARD_LOGGING_DIR``
where that is set); the others where their own settings say (``MLFLOW_TRACKING_URI``, ``WANDB_*``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPEC_PREFIX = "stmbench."
TENSORBOARD = "tensorboard"


def flat_spec(spec: Any) -> dict[str, Any]:
    """The run's spec as flat ``stmbench.<path>`` keys with scalar values (what trackers take as
    configuration), plus its id."""
    out: dict[str, Any] = {f"{SPEC_PREFIX}run_id": spec.run_id}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in sorted(value.items()):
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[f"{SPEC_PREFIX}{prefix}"] = value if value is not None else "none"
        else:
            out[f"{SPEC_PREFIX}{prefix}"] = json.dumps(value, sort_keys=True, default=str)

    for key, value in sorted(spec.to_dict().items()):
        walk(key, value)
    return out


class Tracking:
    """The tracker callbacks of one run's Trainer, their end of training held back (see the module)."""

    def __init__(self, trainer: Any, spec: Any, results_dir: Path, model: Any):
        from transformers.integrations import TensorBoardCallback

        self.trainer = trainer
        self.spec = spec
        self.closed = False
        handler = trainer.callback_handler
        for callback in handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                base = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(Path(results_dir) / TENSORBOARD)
                callback.logging_dir = os.path.join(os.path.expanduser(base), spec.run_id)
        self._end = handler.on_train_end
        self._held: tuple[Any, ...] | None = None

        def hold(args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self._held = (args, state, control)
            return control

        handler.on_train_end = hold
        self.config = getattr(model, "config", None)
        self.keys = flat_spec(spec)
        if self.config is not None:
            for key, value in self.keys.items():
                setattr(self.config, key, value)

    def forget_spec(self) -> None:
        """Take the spec off the model's config (before the model is saved or used further)."""
        if self.config is not None:
            for key in self.keys:
                self.config.__dict__.pop(key, None)

    def finish(self, final: dict[str, float] | None = None) -> None:
        """Log ``final`` (the run's test metrics, health and cost) and close the tracker runs."""
        if self.closed:
            return
        self.closed = True
        self.forget_spec()
        handler = self.trainer.callback_handler
        try:
            if final:
                self.trainer.log({k: float(v) for k, v in final.items()})
        finally:
            handler.on_train_end = self._end
            if self._held is not None:
                self._end(*self._held)


def final_metrics(out: dict[str, Any]) -> dict[str, float]:
    """What a tracker gets at a run's end, from the result's fields: ``test_<metric>``,
    ``test_health_flagged`` and each flag, ``test_cost_...`` (the ``test_`` prefix is what the
    Trainer's integrations group as ``test/``: TensorBoard shows ``test/accuracy``)."""
    final: dict[str, float] = {}
    for name, value in (out.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            final[f"test_{name}"] = value
    health = out.get("health") or {}
    flags = health.get("flags") or []
    final["test_health_flagged"] = float(bool(flags))
    for flag in flags:
        final[f"test_health_{flag}"] = 1.0
    times = out.get("times") or {}
    for key in ("train_seconds", "eval_seconds", "tokens_per_second"):
        if isinstance(times.get(key), (int, float)):
            final[f"test_cost_{key}"] = times[key]
    if isinstance(out.get("peak_memory_mb"), (int, float)):
        final["test_cost_peak_memory_mb"] = out["peak_memory_mb"]
    mfu = (out.get("hardware") or {}).get("mfu")
    if isinstance(mfu, (int, float)):
        final["test_cost_mfu"] = mfu
    trainable = (out.get("parameters") or {}).get("trainable")
    if isinstance(trainable, int):
        final["test_cost_trainable_parameters"] = trainable
    return final
