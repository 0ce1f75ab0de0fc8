"""Checking a stored result before anything shows it: its fields' types and ranges, its identity
(``run_id`` = the hash of its own spec = its file's name), its predictions, and its numbers
re-derived from those predictions (and, where the task's data with the same fingerprint is at hand,
from that data's gold labels).

A result is ``verified`` (its metrics recomputed and equal), ``unverified`` (no predictions to
recompute from: shown, flagged, kept out of marks and findings unless trusted) or ``refused`` (never
shown, copied or counted; listed with why).  :class:`Verdict` is what ``stmbench results verify``
prints and what the leaderboard lists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from stmbench.store.result import STORED, ResultSchemaError, RunResult
from stmbench.common.untrusted import UntrustedFileError

RUN_ID = re.compile(r"[0-9a-f]{16}")
#: metrics that are shares: within [0, 1]
RATIO_METRICS = ("accuracy", "macro_f1", "entity_f1", "entity_precision", "entity_recall", "token_accuracy",
                 "lm_eval_acc", "unparsable_rate")
#: metrics recomputed from the predictions (the others are a strategy's own, checked for range only)
MAX_NAME = 1000  #: the longest name (backbone, task, ...) a result may carry


@dataclass
class Verdict:
    """What was decided about one file."""

    path: str
    status: str  #: ``verified``, ``unverified`` or ``refused``
    reason: str = ""

    def line(self) -> str:
        from stmbench.common.untrusted import term_text

        return term_text(f"{self.status:<10} {self.path}" + (f": {self.reason}" if self.reason else ""))


class Refused(Exception):
    """A reason to refuse a result (turned into a :class:`Verdict`)."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise Refused(reason)


def _check_spec(spec: dict[str, Any]) -> None:
    for key in ("backbone", "task", "strategy", "adapter"):
        value = spec.get(key)
        _need(isinstance(value, str) and 0 < len(value) <= MAX_NAME, f"spec.{key} must be a non-empty name")
    _need(spec.get("prompt") is None or (isinstance(spec["prompt"], str) and len(spec["prompt"]) <= MAX_NAME),
          "spec.prompt must be a name or null")
    size = spec.get("train_size")
    _need(size == "full" or _int(size), f"spec.train_size must be a count or 'full', not {size!r}")
    _need(_int(spec.get("seed"), -(2 ** 63)), f"spec.seed must be an integer, not {spec.get('seed')!r}")
    _need(spec.get("shots") is None or _int(spec["shots"]), "spec.shots must be a count or null")
    _need(spec.get("limit") is None or _int(spec["limit"], 1), "spec.limit must be a positive count or null")
    for key in ("training", "adapter_options", "strategy_options"):
        _need(isinstance(spec.get(key, {}), dict), f"spec.{key} must be a mapping")
    _need(isinstance(spec.get("skip_bad_rows", False), bool), "spec.skip_bad_rows must be true or false")
    _need(isinstance(spec.get("sweep", []), list) and all(isinstance(s, str) for s in spec.get("sweep", [])),
          "spec.sweep must be a list of setting names")


def _check_fields(data: dict[str, Any]) -> None:
    _need(data.get("status") in STORED, f"status {str(data.get('status'))[:40]!r} is not one of {', '.join(STORED)}")
    _need(isinstance(data.get("spec"), dict) and data["spec"], "spec must be a non-empty mapping")
    _check_spec(data["spec"])
    _need(data.get("seed") is None or data["seed"] == data["spec"]["seed"], "seed differs from spec.seed")
    for key in ("labels", "task_info", "versions", "device", "times", "metrics", "counts", "health", "padding",
                "backbone_info", "parameters", "cache", "prediction_info"):
        _need(isinstance(data.get(key, {}), dict), f"{key} must be a mapping")
    for key in ("training", "partial", "precision", "hardware", "distributed", "data", "memory"):
        _need(data.get(key) is None or isinstance(data[key], dict), f"{key} must be a mapping or null")
    for key in ("started_at", "finished_at", "error", "traceback", "attention"):
        _need(data.get(key) is None or isinstance(data[key], str), f"{key} must be text")
    for key, value in (data.get("labels") or {}).items():
        _need(isinstance(value, str) and len(value) <= MAX_NAME, f"labels.{key} must be a name")
    metrics = data.get("metrics") or {}
    for key, value in metrics.items():
        _need(_number(value), f"metrics.{key} = {value!r} is not a finite number")
        if key in RATIO_METRICS:
            _need(0 <= value <= 1, f"metrics.{key} = {value!r} is outside [0, 1]")
    for key, value in (data.get("counts") or {}).items():
        _need(value is None or _int(value), f"counts.{key} = {value!r} is not a non-negative integer")
    for key, value in (data.get("times") or {}).items():
        _need(value is None or (_number(value) and value >= 0), f"times.{key} = {value!r} is not a duration")
    params = data.get("parameters") or {}
    for key in ("trainable", "total"):
        _need(params.get(key) is None or _int(params[key]), f"parameters.{key} must be a non-negative integer")
    _need(params.get("trainable_percent") is None or (_number(params["trainable_percent"])
                                                      and 0 <= params["trainable_percent"] <= 100),
          "parameters.trainable_percent must be within [0, 100]")
    peak = data.get("peak_memory_mb")
    _need(peak is None or (_number(peak) and peak >= 0), "peak_memory_mb must be a non-negative number")
    info = data.get("task_info") or {}
    _need(info.get("primary_metric") in (None, "accuracy", "macro_f1", "entity_f1"),
          "task_info.primary_metric must be accuracy, macro_f1 or entity_f1")
    _need(info.get("synthetic") in (None, True, False), "task_info.synthetic must be true or false")
    _need(info.get("eval_split") in (None, "train", "validation", "test"), "task_info.eval_split is not a split")
    flags = (data.get("health") or {}).get("flags", [])
    _need(isinstance(flags, list) and all(isinstance(f, str) for f in flags), "health.flags must be a list of names")
    for part in ("train", "predict"):
        eff = ((data.get("padding") or {}).get(part) or {})
        _need(isinstance(eff, dict), f"padding.{part} must be a mapping")
        _need(eff.get("efficiency") is None or (_number(eff["efficiency"]) and 0 <= eff["efficiency"] <= 1),
              f"padding.{part}.efficiency must be within [0, 1]")
    mfu = (data.get("hardware") or {}).get("mfu")
    _need(mfu is None or (_number(mfu) and mfu >= 0), "hardware.mfu must be a non-negative number")
    selection = ((data.get("training") or {}).get("selection") or {})
    _need(isinstance(selection, dict), "training.selection must be a mapping")
    dev = selection.get("dev_metric")
    _need(dev is None or (_number(dev) and 0 <= dev <= 1), "training.selection.dev_metric must be within [0, 1]")
    pruned = (data.get("training") or {}).get("pruned_at_step")
    _need(pruned is None or _int(pruned), "training.pruned_at_step must be a step")
    _need(pruned is None or not metrics, "a pruned trial has no test metrics (it was never tested)")
    if data["status"] == "ok" and pruned is None:
        primary = info.get("primary_metric") or "accuracy"
        _need(primary in metrics, f"an ok result needs metrics.{primary}")


def check_result(data: Any, file_name: str, where: str) -> RunResult:
    """The :class:`RunResult` of a stored record, once its fields, ranges and identity are checked;
    :class:`Refused` (or :class:`ResultSchemaError` for a newer schema) with the reason otherwise."""
    _need(isinstance(data, dict), f"not a run result (a JSON {type(data).__name__})")
    run_id = data.get("run_id")
    _need(isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None,
          "run_id is not 16 hexadecimal digits")
    _need(file_name == f"{run_id}.json", f"its file name is not its run id ({run_id}.json)")
    _check_fields(data)
    try:
        result = RunResult.from_dict(data, where)
        computed = result.spec.run_id
    except ResultSchemaError as exc:
        if "newer stmbench" in str(exc):
            raise
        raise Refused(str(exc).split(": ", 1)[-1]) from None
    except Exception as exc:  # noqa: BLE001 - a spec this stmbench cannot read is refused, not a crash
        raise Refused(f"its spec is not a run spec ({type(exc).__name__}: {str(exc)[:120]})") from None
    _need(computed == run_id, f"run_id {run_id} is not the hash of its spec ({computed})")
    return result


def _labels(values: Any, minimum: int = 0) -> bool:
    return isinstance(values, list) and all(_int(v, minimum) for v in values)


def check_predictions(data: Any, result: RunResult) -> tuple[list[Any], list[Any]]:
    """The gold and predicted labels of a predictions record, checked against its result."""
    _need(isinstance(data, dict), "its predictions file is not a mapping")
    _need(data.get("run_id") == result.run_id, "its predictions file names another run")
    gold, predicted = data.get("gold"), data.get("predicted")
    tokens = isinstance(gold, list) and bool(gold) and isinstance(gold[0], list)
    # a prediction may be -1: an answer that could not be parsed (cot)
    ok = (all(_labels(g) for g in gold) and all(_labels(p, -1) for p in predicted)
          if tokens and isinstance(predicted, list) else _labels(gold) and _labels(predicted, -1))
    _need(ok, "its predictions are not lists of label indices")
    _need(len(gold) == len(predicted) and len(gold) > 0,
          f"its predictions hold {len(predicted)} predictions for {len(gold)} examples")
    if tokens:
        _need(all(len(g) == len(p) for g, p in zip(gold, predicted)), "its predictions tag tokens that are not there")
    counts = result.counts
    if result.partial is None and _int(counts.get("eval_examples")):
        _need(counts["eval_examples"] == len(gold),
              f"its predictions hold {len(gold)} examples, its counts {counts['eval_examples']}")
    return gold, predicted


def label_values(result: RunResult) -> list[str] | None:
    labels = (result.data or {}).get("labels")
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels) or len(labels) < 2:
        return None
    return [v.partition(":")[0] for v in labels]


__all__ = ["Refused", "Verdict", "UntrustedFileError", "check_predictions", "check_result", "label_values"]
