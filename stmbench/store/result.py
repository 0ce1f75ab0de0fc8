"""The stored result of one run: :class:`RunResult`, the one record between a run and the leaderboard.

The pipeline builds it, :class:`stmbench.store.results.ResultStore` writes it as JSON (``to_dict``) and
reads it back (``from_dict``), the leaderboard and ``ResultStore.frame()`` read its fields.  Every
file carries ``schema_version``; one written before the schema had a number is version 1 (the same
fields).  A file of a newer schema, or one that is not a run result, is an error that says so: it is
never half-read.

Like transformers' ``ModelOutput``, a result reads as a mapping too (``result["metrics"]``,
``result.get("error")``): its JSON record, without the fields that are ``None``.  Attributes are
typed: ``result.spec`` is the :class:`~stmbench.spec.run.RunSpec` (old files are read into one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.spec.run import RunSpec

#: 4: ``memory`` (how the peak was measured, the prediction batch budget); 3: ``data`` (fingerprints, prompt text hash, labels); 2: ``schema_version`` written; 1: unnumbered
SCHEMA_VERSION = 4
STATUSES = ("running", "ok", "failed", "paused")  #: ``paused``: a pruned sweep's trial back in the queue (never stored)
STORED = ("running", "ok", "failed")  #: what a results folder holds


class ResultSchemaError(StmbenchError):
    """A stored result that this version of stmbench cannot read."""


@dataclass(eq=True)
class RunResult(Mapping):
    """One run: what was run, on what, how it went and what it scored.

    Dict-valued fields keep the shape the JSON has; their keys are listed in each comment."""

    run_id: str
    status: str  #: ``ok``, ``failed`` or (while a run is going) ``running``
    spec: RunSpec  #: what was run (stored as :meth:`RunSpec.to_dict`)
    labels: dict[str, str] = field(default_factory=dict)  #: display names: ``strategy``, ``adapter``
    task_info: dict[str, Any] = field(default_factory=dict)  #: ``synthetic``, ``eval_split``, ``eval_note``, ``primary_metric``
    versions: dict[str, str] = field(default_factory=dict)  #: package versions (stmbench, torch, ...)
    device: dict[str, Any] = field(default_factory=dict)  #: ``type``, ``name``, ``count``, ``cpus``, ...
    seed: int | None = None
    started_at: str = ""
    finished_at: str | None = None
    error: str | None = None  #: why a run failed (one line)
    traceback: str | None = None
    times: dict[str, Any] = field(default_factory=dict)  #: ``train_seconds``, ``eval_seconds``, ``total_seconds``, ``tokens_per_second``
    metrics: dict[str, Any] = field(default_factory=dict)  #: ``accuracy``, ``macro_f1``, a strategy's own
    counts: dict[str, Any] = field(default_factory=dict)  #: examples, bad rows, duplicates, overlap
    health: dict[str, Any] = field(default_factory=dict)  #: ``flags`` (``diverged``, ``degenerate``), ``notes``, losses
    training: dict[str, Any] | None = None  #: loss, steps, ``loss_curve``, ``selection`` (trained runs)
    partial: dict[str, Any] | None = None  #: ``limit``, ``of``: evaluated on a ``--limit`` sample
    padding: dict[str, Any] = field(default_factory=dict)  #: ``train``, ``predict``: real / processed tokens
    precision: dict[str, Any] | None = None  #: bf16 / fp16 / tf32 and the dtype (trained runs)
    hardware: dict[str, Any] | None = None  #: FLOPs, peak, ``mfu`` (trained runs)
    #: how a trained run was spread: ``world_size``, ``sharding`` (ddp / fsdp / deepspeed), ``backend``,
    #: ``per_device_train_batch_size``, ``effective_batch`` (:mod:`stmbench.run.distributed`); ``None``
    #: for runs stored before it was recorded
    distributed: dict[str, Any] | None = None
    attention: str | None = None  #: the model's attention implementation
    backbone_info: dict[str, Any] = field(default_factory=dict)  #: :class:`stmbench.core.types.BackboneInfo`
    parameters: dict[str, Any] = field(default_factory=dict)  #: ``trainable``, ``total``, ``trainable_percent``
    cache: dict[str, Any] = field(default_factory=dict)  #: ``features``: ``hit`` or ``miss``
    prediction_info: dict[str, Any] = field(default_factory=dict)  #: :attr:`stmbench.core.types.Prediction.info`
    #: what the numbers depend on besides the spec: ``train`` / ``eval`` / ``dev`` (``fingerprint``,
    #: ``source``, ``rows``), ``prompt`` (``name``, ``sha256`` of its text), ``labels``, and for a run
    #: trained on a teacher's rationales ``rationales`` (teacher, set, counts, ``keep``, ``kept``,
    #: ``sha256`` of the rationales); ``None`` before schema 3
    data: dict[str, Any] | None = None
    peak_memory_mb: float | None = None  #: this run's own peak (see ``memory.peak_method``)
    #: ``peak_method`` (how ``peak_memory_mb`` was measured), ``eval_batching`` (the token budget of
    #: the prediction batches: :class:`stmbench.core.budget.TokenBudget`); ``None`` before schema 4
    memory: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.spec, dict):  # built from its JSON form
            self.spec = RunSpec.from_dict(self.spec)

    # --- reading ----------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    @property
    def primary_metric(self) -> str:
        """The metric the task ranks by (``task_info.primary_metric``; ``accuracy`` before it was recorded)."""
        return self.task_info.get("primary_metric") or "accuracy"

    @property
    def score(self) -> float | None:
        """The value of :attr:`primary_metric` (accuracy for classification, entity F1 for NER)."""
        return self.metrics.get(self.primary_metric)

    @property
    def pruned_at_step(self) -> int | None:
        """Where the pruner stopped this trial of a pruned sweep (``None``: it trained to its end)."""
        value = (self.training or {}).get("pruned_at_step")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def flags(self) -> list[str]:
        return list(self.health.get("flags") or [])

    @property
    def provenance(self) -> str:
        """A short id of the data, prompt text and labels the numbers came from (``""`` when the
        result predates the record): results with different ones are never pooled."""
        if not self.data:
            return ""
        import hashlib
        import json

        parts = {k: (v or {}).get("fingerprint") if k in ("train", "eval", "dev") else
                 (v or {}).get("sha256") if k == "rationales" else v  # a teacher's rationales trained on
                 for k, v in self.data.items() if k in ("train", "eval", "dev", "prompt", "labels", "rationales")}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:6]

    @property
    def selection(self) -> dict[str, Any]:
        """Dev selection of a trained run (``dev_metric``, ``selected_step``, ...); empty without one."""
        return (self.training or {}).get("selection") or {}

    # --- the mapping view (the stored JSON's keys) --------------------------------------------

    def __getitem__(self, key: str) -> Any:
        """The stored JSON's value of ``key`` (``result["spec"]`` is the spec's JSON form;
        ``result.spec`` the :class:`RunSpec`)."""
        if key in _FIELDS:
            value = getattr(self, key)
            if value is not None:
                return value.to_dict() if key == "spec" else value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name in _FIELDS if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # --- conversion --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (fields that are ``None`` left out)."""
        data = {name: value for name, value in dataclasses.asdict(self).items() if value is not None}
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "result") -> RunResult:
        """Read a stored record of any schema up to :data:`SCHEMA_VERSION`; raise
        :class:`ResultSchemaError` naming ``where`` for anything else."""
        if isinstance(data, RunResult):
            return data
        if not isinstance(data, dict):
            raise ResultSchemaError(f"{where}: not a run result (a JSON {type(data).__name__}, not an object)")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ResultSchemaError(f"{where}: schema_version {version!r} is not a version number")
        if version > SCHEMA_VERSION:
            from stmbench.common.version import __version__

            raise ResultSchemaError(
                f"{where}: written with result schema {version} by a newer stmbench; this stmbench "
                f"({__version__}) reads schemas up to {SCHEMA_VERSION}: upgrade stmbench to read it")
        missing = [name for name in ("run_id", "status", "spec") if name not in data]
        if missing:
            raise ResultSchemaError(f"{where}: not a run result (no {', '.join(missing)})")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ResultSchemaError(f"{where}: fields that result schema {version} does not have: "
                                    f"{', '.join(unknown)}")
        if data["status"] not in STATUSES or not isinstance(data["spec"], dict):
            raise ResultSchemaError(f"{where}: status {data['status']!r} / spec of type "
                                    f"{type(data['spec']).__name__}: not a run result")
        try:
            spec = RunSpec.from_dict(data["spec"])
        except (StmbenchError, TypeError, ValueError) as exc:
            raise ResultSchemaError(f"{where}: its spec is not a run spec ({type(exc).__name__}: {str(exc)[:120]})") from None
        return cls(**{**data, "spec": spec, "schema_version": SCHEMA_VERSION})  # versions 1 and 2: no ``data``


_FIELDS = tuple(f.name for f in dataclasses.fields(RunResult))


def shown_backbones(results: list[RunResult]) -> dict[str, str]:
    """Each backbone of ``results`` (as its spec names it: a path, a hub id) -> the name to show for
    it: its display name (``labels.backbone``) where that names no other backbone of these results,
    else the full name, so two models never share a row because their files share a name."""
    shown: dict[str, str] = {}
    for r in results:
        shown.setdefault(r.spec.backbone, r.labels.get("backbone") or r.spec.backbone)
    owners: dict[str, set[str]] = {}
    for real, name in shown.items():
        owners.setdefault(name, set()).add(real)
    for real in shown:  # a display name equal to another backbone's full name is no name either
        owners.setdefault(real, set()).add(real)
    return {real: name if len(owners[name]) == 1 else real for real, name in shown.items()}
