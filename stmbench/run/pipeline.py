"""One run through the hooks: data -> backbone -> strategy head -> adapter -> Trainer -> predict -> score.

:func:`run_spec` never raises for a problem of the run itself: the :class:`~stmbench.store.result.RunResult`
says ``failed`` with the reason, so the rest of the grid goes on.  Which rows a run sees is
:mod:`stmbench.run.splits`, training :mod:`stmbench.run.training`, scoring :mod:`stmbench.run.scoring`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import platform
import shutil
import time
import traceback
from dataclasses import dataclass
from typing import Any

from stmbench.common.errors import StmbenchError
from stmbench.run.scoring import health, score
from stmbench.store.result import RunResult
from stmbench.core.budget import TokenBudget
from stmbench.core.session import Session, tokenizer_fingerprint
from stmbench.spec.run import RunSpec
from stmbench.run.splits import dev_rows, limit_sample, report_counts, subsample_indices
from stmbench.run.splits import gold as gold_answers
from stmbench.run.distributed import record as distributed_record
from stmbench.run.distributed import world
from stmbench.run.training import Diverged, TrainOutcome, precision, train
from stmbench.run.tuning import Paused
from stmbench.core.types import Adapter, Backbone, BackboneInfo, Prediction, Strategy
from stmbench.tasks.task import Task, TaskData

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from stmbench.common.version import __version__

    out = {"stmbench": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "peft", "lm_eval", "datasets", "accelerate"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = ""
    return out


def device_info(device: str) -> dict[str, Any]:
    import os

    import torch

    info: dict[str, Any] = {"type": device.split(":")[0], "platform": platform.machine(),
                            "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["name"] = torch.cuda.get_device_name()
        info["count"] = torch.cuda.device_count()
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


@dataclass
class RunParts:
    """Stage 0: the plugin objects of one run and their options, typed (what the hooks receive)."""

    spec: RunSpec
    task: Task
    strategy: Strategy
    adapter: Adapter
    backbone: Backbone
    info: BackboneInfo
    strategy_options: Any  #: an instance of the strategy's ``options_class`` (or ``None``)
    adapter_options: Any  #: an instance of the adapter's ``options_class`` (or ``None``)

    @classmethod
    def of(cls, spec: RunSpec, session: Session, info: BackboneInfo | None = None) -> RunParts:
        strategy, adapter = session.get("strategy", spec.strategy), session.get("adapter", spec.adapter)
        backbone = session.catalogue.backbone_for(spec.backbone)
        return cls(spec=spec, task=session.get("task", spec.task), strategy=strategy, adapter=adapter,
                   backbone=backbone, info=info or backbone.resolve(spec.backbone, session.context),
                   strategy_options=strategy.typed_options(spec.strategy_options),
                   adapter_options=adapter.typed_options(spec.adapter_options))


@dataclass
class RunData:
    """Stage 1: the rows one run reads, and what was counted on them."""

    eval: TaskData
    train: TaskData | None
    used: dict[str, TaskData]  #: every split read (``eval``, ``train``, ``dev``), for the result's data record
    counts: dict[str, Any]
    partial: dict[str, Any] | None  #: ``limit``, ``of``: evaluated on a ``--limit`` sample
    rows: TrainRows | None = None  #: the train rows a trained run uses (:func:`train_rows`)


@dataclass
class TrainRows:
    """Stage 1b: the train rows of a trained run, its dev rows, and the rationales it trains on."""

    indices: list[int] | None  #: ``None``: every row
    dev: Any
    dev_info: dict[str, Any] | None
    rationales: Any = None  #: :class:`stmbench.run.rationales.Selected` (a teacher's rationales)


@dataclass
class Loaded:
    """Stage 2: the model as the strategy and the adapter prepared it, and its tokenizer."""

    model: Any
    tokenizer: Any
    head: str


@dataclass
class Trained:
    """Stage 3: a trained run's outcome and the features it trained on."""

    outcome: TrainOutcome
    train_examples: int
    features_cache: str  #: ``hit`` or ``miss``


@dataclass
class Predicted:
    """Stage 4: the strategy's predictions, their gold labels, the metrics and how long it took."""

    prediction: Prediction
    gold: list[Any]
    metrics: dict[str, float]
    seconds: float
    budget: TokenBudget | None  #: the last budget the strategy's batches were planned by


def read_data(parts: RunParts, session: Session) -> RunData:
    spec, task = parts.spec, parts.task
    eval_data = session.task_data(task, task.eval_split, skip_bad_rows=spec.skip_bad_rows)
    partial = None
    if spec.limit is not None and spec.limit < len(eval_data.dataset):
        partial = {"limit": spec.limit, "of": len(eval_data.dataset)}
        eval_data = dataclasses.replace(eval_data, dataset=limit_sample(eval_data.dataset, spec.limit))
    counts: dict[str, Any] = {"eval_examples": len(eval_data.dataset), **report_counts("eval", eval_data)}
    train_data = None
    used: dict[str, TaskData] = {"eval": eval_data}
    if parts.strategy.trains:
        train_data = used["train"] = session.task_data(task, "train", skip_bad_rows=spec.skip_bad_rows)
        counts.update(report_counts("train", train_data), train_eval_overlap=session.overlap(train_data, eval_data))
        if counts["train_eval_overlap"]:
            log.warning("task %s: %d evaluation pairs also occur in the training data",
                        task.name, counts["train_eval_overlap"])
    return RunData(eval=eval_data, train=train_data, used=used, counts=counts, partial=partial)


def build_model(parts: RunParts, session: Session) -> Loaded:
    import transformers

    from stmbench.core.modeling import prompt_learning

    head = parts.strategy.head_for(parts.task)
    model, tokenizer = parts.backbone.load(parts.spec.backbone, head=head, task=parts.task, context=session.context,
                                           load_kwargs=parts.adapter.load_kwargs(parts.adapter_options, session.context))
    transformers.set_seed(parts.spec.seed)  # the same head / adapter init whatever loading consumed
    model = parts.strategy.prepare_model(model, tokenizer=tokenizer, task=parts.task, options=parts.strategy_options)
    model = parts.adapter.wrap(model, head=head, info=parts.info, options=parts.adapter_options)
    if prompt_learning(model):
        # a soft prompt reaches the model as inputs_embeds, where transformers cannot find pad ids and
        # pools a classification head at the last position: pad on the left so that is a real token
        tokenizer.padding_side = "left"
    return Loaded(model=model, tokenizer=tokenizer, head=head)


def train_rows(parts: RunParts, data: RunData, session: Session) -> TrainRows:
    """Which train rows the spec trains on (its subsample, the dev rows held out) and, for a strategy
    that trains on a teacher's rationales, those rationales (generated where the cache lacks them,
    before the model to train is loaded)."""
    spec, task, train_data = parts.spec, parts.task, data.train
    assert train_data is not None
    dev, dev_info, pool = None, None, None
    if spec.training.eval_strategy != "no":
        dev, dev_info, pool = dev_rows(task, train_data, spec, session)
        if pool is None:  # the task's validation split
            data.used["dev"] = session.task_data(task, "validation", skip_bad_rows=spec.skip_bad_rows)
    base = train_data.dataset if pool is None else train_data.dataset.select(pool)
    indices = subsample_indices(base, spec.train_size, spec.seed, task.name)
    if pool is not None:
        indices = [pool[i] for i in indices] if indices is not None else pool
    rationales = None
    if parts.strategy.uses_rationales and spec.teacher is not None:
        from stmbench.run.rationales import select

        rows = indices if indices is not None else list(range(len(train_data.dataset)))
        rationales = select(session, task, train_data, "train", rows, teacher=spec.teacher,
                            options=spec.teacher_settings, progress=session.show_progress)
    return TrainRows(indices=indices, dev=dev, dev_info=dev_info, rationales=rationales)


def train_feature_key(parts: RunParts, train_data: TaskData, tokenizer: Any, session: Session) -> dict[str, Any]:
    """What the cached training features of a run depend on (the key of :meth:`Session.cached_features`)."""
    return {"task": parts.task.name, "data": train_data.fingerprint, "split": "train", "strategy": parts.strategy.name,
            "tokenizer": tokenizer_fingerprint(tokenizer), **parts.strategy.feature_key(parts.spec, session.context)}


def train_run(parts: RunParts, data: RunData, loaded: Loaded, session: Session) -> Trained:
    """The cached features of the rows :func:`train_rows` chose, and the Trainer."""
    spec, task, strategy, train_data, rows = parts.spec, parts.task, parts.strategy, data.train, data.rows
    assert train_data is not None and rows is not None
    encode = strategy.feature_encoder(task=task, tokenizer=loaded.tokenizer, spec=spec, context=session.context)
    key = train_feature_key(parts, train_data, loaded.tokenizer, session)
    if rows.rationales is not None:  # only the rows kept, each with its teacher's rationale
        chosen = train_data.dataset.select(rows.rationales.rows)
        if "rationale" in chosen.column_names:
            chosen = chosen.remove_columns("rationale")
        chosen = chosen.add_column("rationale", rows.rationales.texts)
        key.update(rationales=rows.rationales.record["sha256"])
        features, hit = session.cached_features(key, chosen, encode)
    else:
        features, hit = session.cached_features(key, train_data.dataset, encode)
        if rows.indices is not None:
            features = features.select(rows.indices)
    outcome = train(loaded.model, features, strategy=strategy, tokenizer=loaded.tokenizer, spec=spec, session=session,
                    dev=rows.dev, task=task)
    if outcome.selection is not None:
        outcome.selection.update(rows.dev_info)
    return Trained(outcome=outcome, train_examples=len(features), features_cache="hit" if hit else "miss")


def predict_run(parts: RunParts, data: RunData, loaded: Loaded, session: Session) -> Predicted:
    start = time.perf_counter()
    budgets: list[TokenBudget] = []  # what the strategy's batches were planned by, for the result
    prediction = parts.strategy.predict(loaded.model, data=data.eval.dataset, task=parts.task,
                                        tokenizer=loaded.tokenizer, spec=parts.spec,
                                        context=session.context.recording_budgets(budgets))
    seconds = time.perf_counter() - start
    gold = gold_answers(parts.task, data.eval.dataset)
    metrics = score(parts.task, gold, prediction.labels, session.metrics_for(parts.task))
    metrics.update({k: v for k, v in prediction.metrics.items() if k not in metrics})
    return Predicted(prediction=prediction, gold=gold, metrics=metrics, seconds=seconds,
                     budget=budgets[-1] if budgets else None)  # the last plan (a strategy may plan once per pass)


def execute(spec: RunSpec, session: Session, info: BackboneInfo | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one spec through the stages (parts, data, model, training, prediction); return ``(result
    fields, predictions record)``.  Raises on failure.

    ``info`` is the backbone description the planner resolved (resolved again when not given)."""
    import transformers

    from stmbench.core.memory import PeakMemory
    from stmbench.core.modeling import count_parameters, hardware_use, model_device

    parts = RunParts.of(spec, session, info)
    device = session.device
    peak = PeakMemory(device).start()
    transformers.set_seed(spec.seed)
    data = read_data(parts, session)
    if data.train is not None:
        data.rows = train_rows(parts, data, session)
    loaded = build_model(parts, session)
    trainable, total = count_parameters(loaded.model)
    out: dict[str, Any] = {
        "attention": getattr(getattr(loaded.model, "config", None), "_attn_implementation", None),
        "backbone_info": parts.info.__dict__,
        "parameters": {"trainable": trainable, "total": total,
                       "trainable_percent": round(100.0 * trainable / total, 4) if total else None},
        "times": {}, "cache": {},
    }
    if data.train is not None:
        trained = train_run(parts, data, loaded, session)
        outcome = trained.outcome
        out["cache"]["features"] = trained.features_cache
        data.counts["train_examples"] = trained.train_examples
        out["times"].update(train_seconds=outcome.seconds, tokens_per_second=outcome.tokens_per_second)
        out["padding"] = {"train": outcome.padding}
        out["precision"] = precision(spec, device)
        out["hardware"] = hardware_use(loaded.model, real_tokens=outcome.real_tokens, seconds=outcome.seconds,
                                       device=device, dtype_name=out["precision"]["dtype"],
                                       cache_dir=session.settings.cache_dir)
        out["training"] = outcome.record()
        out["distributed"] = distributed_record(spec, session.settings, world().size, device)
    else:
        data.counts["train_examples"] = 0
        if str(model_device(loaded.model)) != device and not getattr(loaded.model, "hf_device_map", None):
            loaded.model.to(device)
    if not world().main:  # a rank of a launched run: it trained with the others; rank 0 predicts and writes
        return out, {}
    tracking = trained.outcome.tracking if data.train is not None else None
    try:
        return _tested(out, parts, data, loaded, session, peak, tracking, trainable=trainable, total=total)
    finally:
        if tracking is not None:
            tracking.finish()  # a run that failed after training still closes its tracker runs


def _tested(out: dict[str, Any], parts: RunParts, data: RunData, loaded: Loaded, session: Session, peak: Any,
            tracking: Any, *, trainable: int, total: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stages after training: prediction, scoring, health, the trackers' last entries and the
    trained model kept (a pruned trial: its record only)."""
    spec = parts.spec
    if out.get("training", {}).get("pruned_at_step") is not None:
        pruned = _pruned(out, parts, data, peak)
        if tracking is not None:
            from stmbench.run.tracking import final_metrics

            tracking.finish(final_metrics(pruned))
        return pruned, None
    predicted = predict_run(parts, data, loaded, session)
    out["times"]["eval_seconds"] = predicted.seconds
    out.setdefault("padding", {})["predict"] = predicted.prediction.padding
    out["metrics"] = predicted.metrics
    if data.partial is not None:
        out["partial"] = data.partial
    out["health"] = health(out.get("training"), predicted.gold, list(predicted.prediction.labels))
    for note in out["health"]["notes"]:
        log.warning("run %s is flagged: %s", session.run_label(spec), note)
    out["prediction_info"] = predicted.prediction.info
    out["counts"] = data.counts
    out["data"] = data_record(parts.task, spec, data.used)
    if data.rows is not None and data.rows.rationales is not None:
        out["data"]["rationales"] = data.rows.rationales.record
    out["peak_memory_mb"] = peak.stop()
    out["memory"] = {"peak_method": peak.method}
    if predicted.budget is not None:
        out["memory"]["eval_batching"] = predicted.budget.record()
    predictions = {"run_id": spec.run_id, "eval_split": parts.task.eval_split, "gold": predicted.gold,
                   "predicted": list(predicted.prediction.labels)}
    if tracking is not None:
        from stmbench.run.tracking import final_metrics

        tracking.finish(final_metrics(out))
    if data.train is not None:
        keep_model(parts, loaded, session, trainable=trainable, total=total)
    return out, predictions


def keep_model(parts: RunParts, loaded: Loaded, session: Session, *, trainable: int, total: int) -> None:
    """Save what the run trained where ``--save-models`` asks (:mod:`stmbench.run.keep`); a save
    that fails is a warning, never the run's failure (its result is what the grid needs)."""
    from stmbench.run.keep import models_dir, policy_for, save_trained

    policy = policy_for(session.settings.save_models, trainable=trainable, total=total)
    if policy == "none":
        return
    spec = parts.spec
    try:
        save_trained(loaded.model, loaded.tokenizer, models_dir(session.settings.results_dir) / spec.run_id,
                     {"run_id": spec.run_id, "spec": spec.to_dict(), "keep": policy,
                      "head": loaded.head, "backbone": session.backbone_display(spec.backbone)})
    except Exception as exc:  # noqa: BLE001 - a full disk costs the saved model, not the result
        log.warning("run %s: its trained model could not be saved: %s: %s", session.run_label(spec), type(exc).__name__, exc)


def _pruned(out: dict[str, Any], parts: RunParts, data: RunData, peak: Any) -> dict[str, Any]:
    """The result fields of a trial the pruner stopped: its training and dev curve, no test
    prediction (a pruned trial is never selected, so it is never tested)."""
    out.update(metrics={}, counts=data.counts, data=data_record(parts.task, parts.spec, data.used),
               health=health(out.get("training"), [], []), peak_memory_mb=peak.stop())
    out["memory"] = {"peak_method": peak.method}
    log.info("trial %s pruned at step %s", parts.spec.label(), out["training"]["pruned_at_step"])
    return out


def data_record(task: Any, spec: RunSpec, splits: dict[str, Any]) -> dict[str, Any]:
    """What a run's numbers depend on besides its spec: each split's data fingerprint and source, the
    prompt's text and the label set (results that differ here are never pooled on a leaderboard)."""
    import hashlib

    record: dict[str, Any] = {name: {"fingerprint": data.fingerprint, "source": data.source,
                                     "rows": len(data.dataset)}
                              for name, data in splits.items() if data is not None}
    record["eval"]["split"] = task.eval_split
    text = task.prompts.get(spec.prompt) if spec.prompt else None
    record["prompt"] = None if text is None else {"name": spec.prompt,
                                                  "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]}
    record["labels"] = [f"{lab.value}:{lab.word}" for lab in task.labels]
    return record


def variant_labels(spec: RunSpec, session: Session) -> dict[str, str]:
    """Display names of the backbone, and of the strategy and adapter with their non-default options
    (for tables)."""
    from stmbench.spec.axes import axis_label

    out = {"backbone": session.backbone_display(spec.backbone)}
    for kind, name, options in (("strategy", spec.strategy, spec.strategy_options),
                                ("adapter", spec.adapter, spec.adapter_options)):
        entry = session.catalogue.entries[kind].get(name)
        try:
            defaults = entry.obj.options({}) if entry else {}
        except StmbenchError:
            defaults = {}
        out[kind] = axis_label(name, options, defaults)
    if spec.teacher:
        entry = session.catalogue.entries["teacher"].get(spec.teacher)
        label = entry.obj.display(spec.teacher_options) if entry else spec.teacher
        out["teacher"] = label + (" keep=all" if spec.teacher_options.get("keep") == "all" else "")
    return out


def _base_result(spec: RunSpec, session: Session) -> RunResult:
    task = session.catalogue.entries["task"].get(spec.task)
    return RunResult(
        run_id=spec.run_id,
        status="running",
        spec=spec,
        labels=variant_labels(spec, session),
        task_info={
            "synthetic": task.obj.synthetic if task else None,
            "eval_split": task.obj.eval_split if task else None,
            "eval_note": task.obj.eval_note if task else "",
            "primary_metric": task.obj.primary_metric if task else None,
        },
        versions=versions(),
        device=device_info(session.device),
        seed=spec.seed,
        started_at=_now(),
    )


def failed_result(spec: RunSpec, error: str, session: Session) -> RunResult:
    """The stored result of a run that could not report one itself (its process died)."""
    return dataclasses.replace(_base_result(spec, session), status="failed", error=error, traceback="",
                               finished_at=_now())


def error_text(exc: BaseException) -> str:
    """What a failed run's result says of its exception: stmbench's own message, else the type too."""
    return str(exc) if isinstance(exc, StmbenchError) else f"{type(exc).__name__}: {exc}"


def run_spec(spec: RunSpec, session: Session, info: BackboneInfo | None = None) -> tuple[RunResult, dict[str, Any] | None]:
    """Run one spec through the lifecycle hooks; never raises for the run's own failures.

    A run that ends ``ok`` removes its checkpoints; a failed one keeps them for the next try."""
    result = _base_result(spec, session)
    predictions = None
    start = time.perf_counter()
    session.hook.run_started(run=spec)
    try:
        fields, predictions = execute(spec, session, info)
        result = dataclasses.replace(result, status="ok", **fields)
        shutil.rmtree(session.checkpoint_dir(spec.run_id), ignore_errors=True)
    except Paused as exc:  # a pruned sweep's trial waits for an earlier one: back into the queue
        result.status = "paused"
        result.error = str(exc)
        log.info("run %s %s", session.run_label(spec), exc)
    except Exception as exc:  # noqa: BLE001 - any failure of a run is recorded, the grid goes on
        result.status = "failed"
        result.error = error_text(exc)
        result.traceback = traceback.format_exc()
        if isinstance(exc, Diverged):
            result.training = {"loss_curve": exc.loss_curve}
        log.error("run %s failed: %s", session.run_label(spec), result.error)
        log.debug("%s", result.traceback)
    result.times["total_seconds"] = time.perf_counter() - start
    result.finished_at = _now()
    try:
        session.hook.run_finished(run=spec, result=result)
    except Exception:  # a broken result sink must not lose the result
        log.exception("a run_finished hook failed for %s", spec.run_id)
    return result, predictions
