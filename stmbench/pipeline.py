"""One run through the hooks: data -> backbone -> strategy head -> adapter -> Trainer -> predict -> score.

:func:`run_spec` never raises for a problem of the run itself: the result says ``failed`` with the
reason, so the rest of the grid goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import math
import platform
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from stmbench.errors import StmbenchError
from stmbench.modeling import IGNORE_INDEX
from stmbench.session import Session, tokenizer_fingerprint
from stmbench.spec import FULL, RunSpec
from stmbench.types import BackboneInfo

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from stmbench import __version__

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


def column(data: Any, name: str) -> list[Any]:
    """A column of a ``datasets.Dataset`` as a list, at once (iterating a column object converts row
    by row: seconds for a few thousand rows)."""
    return list(data[name][:])


def sequence_lengths(features: Any, name: str = "input_ids") -> list[int]:
    """The length of every row's ``name`` list, computed by Arrow."""
    import pyarrow.compute as pc

    return pc.list_value_length(features.with_format("arrow")[:].column(name)).to_pylist()


def stratified_split(labels: list[int], *, n_train: int, n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """``(train, test)`` indices exactly as ``Dataset.train_test_split(..., stratify_by_column="label",
    seed=seed)`` draws them (its own ``stratified_shuffle_split_generate_indices`` and generator),
    from a plain label list; raises ``ValueError`` where a class is too small to stratify.  (Through
    the ``Dataset`` the label column is converted row by row: seconds per run on a 6,000-row split,
    minutes on LCQMC's 240,000.)"""
    import numpy as np
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    train, test = next(stratified_shuffle_split_generate_indices(
        np.asarray(labels), n_train, n_test, rng=np.random.default_rng(seed)))
    return [int(i) for i in train], [int(i) for i in test]


def seeded_permutation(n: int, seed: int) -> list[int]:
    """The order ``Dataset.shuffle(seed=seed)`` (and an unstratified ``train_test_split``) draws."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def subsample_indices(data: Any, size: int | str, seed: int, task: str) -> list[int] | None:
    """Indices of a label-stratified, seeded subsample of ``size`` rows (``None``: use all)."""
    if size == FULL:
        return None
    n = len(data)
    if size > n:
        raise StmbenchError(f"train size {size} exceeds the {n} training examples of task {task!r}")
    if size == n:
        return None
    try:
        train, _ = stratified_split(column(data, "label"), n_train=size, n_test=n - size, seed=seed)
    except ValueError:  # a class too small to stratify (tiny sizes): fall back to a seeded shuffle
        train = seeded_permutation(n, seed)[:size]
    return sorted(train)


LIMIT_SEED = 0  # every --limit run sees the same sample, whatever its own seed


def limit_sample(data: Any, n: int) -> Any:
    """A fixed-seed sample of ``n`` examples of the eval split, in their original order."""
    import random

    return data.select(sorted(random.Random(LIMIT_SEED).sample(range(len(data)), n)))


def score(task: Any, gold: list[int], predicted: list[int]) -> dict[str, float]:
    if len(gold) != len(predicted):
        raise StmbenchError(f"{len(predicted)} predictions for {len(gold)} examples")
    labels = list(range(len(task.labels)))
    # the share of exact matches (sklearn's accuracy_score), without importing sklearn for it
    metrics = {"accuracy": sum(int(g) == int(p) for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0}
    if "macro_f1" in task.metrics:
        from sklearn.metrics import f1_score

        metrics["macro_f1"] = float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))
    return metrics


def _checkpointing(enabled: bool) -> dict[str, bool]:
    """transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    if not enabled:
        return {}
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": True}


def _save_args(save_steps: int | None) -> dict[str, Any]:
    """Checkpoint every ``save_steps`` steps, every epoch (``None``) or never (``0``); one kept."""
    if save_steps == 0:
        return {"save_strategy": "no"}
    if save_steps is None:
        return {"save_strategy": "epoch", "save_total_limit": 1}
    return {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 1}


def _selection_args(t: Any) -> dict[str, Any]:
    """Evaluate on dev every epoch or ``eval_steps``, save at the same times, and load the checkpoint
    with the best dev accuracy at the end (the Trainer's ``load_best_model_at_end``)."""
    steps = {"eval_steps": t.eval_steps, "save_steps": t.eval_steps} if t.eval_strategy == "steps" else {}
    return {"eval_strategy": t.eval_strategy, "save_strategy": t.eval_strategy, **steps, "save_total_limit": 1,
            "load_best_model_at_end": True, "metric_for_best_model": "accuracy", "greater_is_better": True}


def precision(spec: RunSpec, device: str) -> dict[str, Any]:
    """Mixed precision and matmul settings of a run: bf16 as asked, or chosen automatically on a
    CUDA device that supports it (``auto_bf16``, unless fp16 is asked); TF32 matmuls on CUDA
    devices that have them (Ampere and newer)."""
    import torch

    t = spec.training
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    auto = bool(cuda and t.auto_bf16 and not t.bf16 and not t.fp16 and torch.cuda.is_bf16_supported())
    tf32 = bool(cuda and torch.cuda.get_device_capability()[0] >= 8)
    bf16 = t.bf16 or auto
    return {"bf16": bf16, "fp16": t.fp16, "bf16_chosen_automatically": auto, "tf32": tf32,
            "dtype": "bfloat16" if bf16 else "float16" if t.fp16 else "float32"}


def _trainer_args(spec: RunSpec, output_dir: str, device: str, show_progress: bool,
                  save_steps: int | None = 0) -> Any:
    from transformers import TrainingArguments

    t = spec.training
    mixed = precision(spec, device)
    saving = _selection_args(t) if t.eval_strategy != "no" else {**_save_args(save_steps), "eval_strategy": "no"}
    return TrainingArguments(
        output_dir=output_dir, learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps, lr_scheduler_type=t.lr_scheduler_type, optim=t.optim,
        bf16=mixed["bf16"], fp16=t.fp16, tf32=mixed["tf32"] or None, **_checkpointing(t.gradient_checkpointing),
        seed=spec.seed, data_seed=spec.seed, **saving,
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        logging_nan_inf_filter=False,
        report_to="none", use_cpu=device.startswith("cpu"),
        dataloader_num_workers=0, disable_tqdm=not show_progress,
    )


def last_checkpoint(folder: Path) -> tuple[str, int] | None:
    """The newest complete Trainer checkpoint in ``folder`` and its step, or ``None``."""
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    path = get_last_checkpoint(str(folder))
    if path is None:
        return None
    return path, int(Path(path).name.rsplit("-", 1)[-1])


def health_callback() -> Any:
    """A ``TrainerCallback`` that stops training at the first step whose gradients (after clipping) or
    logged loss are NaN or infinite (the Trainer would go on with NaN weights) and remembers where."""
    import torch
    from transformers import TrainerCallback

    class HealthCallback(TrainerCallback):
        def __init__(self) -> None:
            self.diverged: tuple[int, str, float] | None = None

        def _stop(self, control: Any, step: int, key: str, value: float) -> None:
            if self.diverged is None:
                self.diverged = (step, key, value)
            control.should_training_stop = True
            control.should_save = False

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float())
                                                             for g in grads]))
                if not torch.isfinite(norm):
                    self._stop(control, state.global_step + 1, "grad_norm", float(norm))
            return control

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.global_step >= state.max_steps:  # the curve ends at the last step
                control.should_log = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if isinstance(value, (int, float)) and not math.isfinite(value):
                    self._stop(control, state.global_step, key, float(value))
            return control

    return HealthCallback()


def loss_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    """``[[step, loss], ...]`` of the Trainer's logged training losses."""
    return [[int(e["step"]), float(e["loss"])] for e in log_history if "loss" in e and "step" in e]


def _dev_trainer(strategy: Any, task: Any, tokenizer: Any, spec: RunSpec, session: Session) -> Any:
    """A ``Trainer`` whose ``evaluate`` scores the dev rows the way the run is tested: through the
    strategy's own ``predict`` (generation, label scoring or a head), not the training loss."""
    from transformers import Trainer

    class DevTrainer(Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):  # noqa: ANN001
            data = eval_dataset if eval_dataset is not None else self.eval_dataset
            was_training = self.model.training
            prediction = strategy.predict(self.model, data=data, task=task, tokenizer=tokenizer, spec=spec,
                                          session=session)
            self.model.train(was_training)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in score(task, column(data, "label"), prediction.labels).items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
            return metrics

    return DevTrainer


def labelled_positions(labels: Any) -> Any:
    """``[batch, length]`` booleans: the positions whose next token carries a label (the positions
    a causal LM's shifted loss reads)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def labelled_lm_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Next-token cross-entropy on logits computed only at :func:`labelled_positions` (``[kept,
    vocab]``, row-major): the value of transformers' ``ForCausalLMLoss`` on full logits."""
    import torch

    shifted = labels[:, 1:]
    targets = shifted[shifted != IGNORE_INDEX]
    logits = outputs.logits.float()
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = torch.nn.functional.cross_entropy(logits, targets.to(logits.device), reduction=reduction)
    if reduction == "sum":
        loss = loss / (num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch)
    return loss


class TrainingCollator:
    """A strategy's collator, counting real against padded tokens, and adding ``logits_to_keep``
    (the labelled positions) when the model need project only those."""

    def __init__(self, inner: Any, meter: Any, keep_labelled: bool):
        self.inner, self.meter, self.keep_labelled = inner, meter, keep_labelled

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        mask = batch.get("attention_mask")
        if mask is not None:
            self.meter.add_mask(mask)
        if self.keep_labelled:
            batch["logits_to_keep"] = labelled_positions(batch["labels"])
        return batch


def length_grouped_sampler(lengths: list[int], batch_size: int, seed: int) -> Any:
    """transformers' ``LengthGroupedSampler`` (random groups of 50 batches, each sorted by length,
    the longest batch first) drawn from a generator seeded with ``seed + epoch``: the same order for
    the same seed, and a resumed run (the Trainer calls ``set_epoch``) sees the order it left."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(seed + int(epoch))

    sampler = SeededLengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator())
    sampler.set_epoch(0)
    return sampler


def _trainer_class(strategy: Any, task: Any, tokenizer: Any, spec: RunSpec, session: Session,
                   lengths: list[int]) -> Any:
    from transformers import Trainer

    base = _dev_trainer(strategy, task, tokenizer, spec, session) if spec.training.eval_strategy != "no" else Trainer
    if not spec.training.group_by_length:
        return base

    class GroupedTrainer(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001
            return length_grouped_sampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                          spec.seed)

    return GroupedTrainer


def dev_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    """``[[step, dev accuracy], ...]`` of the evaluations during training."""
    return [[int(e["step"]), float(e["eval_accuracy"])] for e in log_history if "eval_accuracy" in e and "step" in e]


def train(model: Any, features: Any, *, strategy: Any, tokenizer: Any, spec: RunSpec, session: Session,
          dev: Any = None, task: Any = None) -> dict[str, Any]:
    """Train with ``transformers.Trainer``; return loss, seconds and tokens per second.

    Checkpoints go to :meth:`Session.checkpoint_dir` (every epoch, or every ``--save-steps``), and a
    run that finds one there (it was killed) resumes from it through ``resume_from_checkpoint``: the
    Trainer restores weights, optimizer, scheduler and RNG states and skips the batches it has seen.
    With ``eval_strategy`` epoch or steps, ``dev`` (rows of the task) is scored during training, and
    the checkpoint with the best dev accuracy is loaded at the end (``load_best_model_at_end``).
    """
    from transformers import EarlyStoppingCallback, PrinterCallback

    from stmbench.modeling import PaddingMeter, keeps_logits

    selecting = spec.training.eval_strategy != "no"
    if selecting and dev is None:
        raise StmbenchError("eval_strategy needs dev rows to select on")

    health = health_callback()
    callbacks: list[Any] = [health]
    for extra in session.hook.trainer_callbacks(run=spec):
        callbacks.extend(extra or [])
    if selecting and spec.training.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.training.early_stopping_patience))
    device = session.device
    save_steps = session.settings.save_steps
    with contextlib.ExitStack() as stack:
        if save_steps == 0:  # nothing to resume from; selection's checkpoints go to a folder removed with the run
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="stmbench-trainer-"))
            resume = None
        else:
            folder = session.checkpoint_dir(spec.run_id)
            out, resume = str(folder), last_checkpoint(folder)
        lengths = sequence_lengths(features)
        keep_labelled = strategy.lm_loss_on_labels and keeps_logits(model)
        meter = PaddingMeter()
        trainer_class = _trainer_class(strategy, task, tokenizer, spec, session, lengths)
        trainer = trainer_class(model=model, args=_trainer_args(spec, out, device, session.show_progress, save_steps),
                                train_dataset=features, eval_dataset=dev if selecting else None,
                                data_collator=TrainingCollator(strategy.data_collator(tokenizer, spec), meter,
                                                               keep_labelled),
                                compute_loss_func=labelled_lm_loss if keep_labelled else None, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        if resume is not None:
            log.info("resuming %s from %s (step %d)", spec.label(), resume[0], resume[1])
        start = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=resume[0] if resume else None)
        seconds = time.perf_counter() - start
        curve = loss_curve(trainer.state.log_history)
        selection = None
        if selecting:
            state = trainer.state
            selection = {"metric": "accuracy", "selected_step": state.best_global_step,
                         "dev_metric": state.best_metric, "dev_curve": dev_curve(state.log_history),
                         "stopped_early": state.global_step < state.max_steps}
    if health.diverged is None and not math.isfinite(output.training_loss):
        health.diverged = (int(output.global_step), "loss", float(output.training_loss))
    if health.diverged is not None:
        step, key, value = health.diverged
        shutil.rmtree(session.checkpoint_dir(spec.run_id), ignore_errors=True)  # resuming would diverge again
        raise Diverged(f"diverged at step {step}: {'loss' if key == 'loss' else 'gradient norm'} {value}",
                       loss_curve=curve)
    epochs = output.metrics.get("epoch") or spec.training.num_train_epochs
    done = 1.0 - (resume[1] / output.global_step if resume and output.global_step else 0.0)
    tokens = sum(lengths) * float(epochs) * done
    return {"padding": meter.report(), "logits": "labelled positions" if keep_labelled else "all positions",
            "real_tokens": meter.real, "train_loss": float(output.training_loss), "train_seconds": seconds,
            "train_steps": int(output.global_step), "epochs": float(epochs),
            "resumed_from_step": resume[1] if resume else None, "loss_curve": curve, "selection": selection,
            "tokens_per_second": tokens / seconds if seconds > 0 else None}


class Diverged(StmbenchError):
    """Training produced a NaN or infinite loss or gradient norm."""

    def __init__(self, message: str, loss_curve: list[list[float]]):
        super().__init__(message)
        self.loss_curve = loss_curve


# a run whose logged training loss rises to this many times its first is flagged ``diverged``
DIVERGED_RATIO = 2.0


def health(training: dict[str, Any] | None, gold: list[int], predicted: list[int]) -> dict[str, Any]:
    """Flags of a run that finished but should not be trusted: ``diverged`` (the training loss rose
    far above where it started) and ``degenerate`` (one class predicted where the gold has several)."""
    flags: list[str] = []
    out: dict[str, Any] = {}
    curve = (training or {}).get("loss_curve") or []
    if len(curve) >= 2:
        first, last = curve[0][1], curve[-1][1]
        peak_step, peak = max(curve[1:], key=lambda point: point[1])
        out.update(initial_loss=first, final_loss=last, peak_loss=peak, peak_step=int(peak_step))
        if first > 0 and peak > DIVERGED_RATIO * first:
            flags.append("diverged")
    gold_classes, predicted_classes = len(set(gold)), len(set(predicted))
    out.update(gold_classes=gold_classes, predicted_classes=predicted_classes)
    if gold_classes > 1 and predicted_classes <= 1:
        flags.append("degenerate")
    notes = []
    if "diverged" in flags:
        notes.append(f"the training loss rose to {out['peak_loss']:.4g} at step {out['peak_step']}, over "
                     f"{DIVERGED_RATIO:g}x the initial {out['initial_loss']:.4g} (final {out['final_loss']:.4g})")
    if "degenerate" in flags:
        notes.append(f"every prediction is one class ({predicted_classes} predicted, {gold_classes} in the gold)")
    return {"flags": flags, "notes": notes, **out}


HOLDOUT_SEED = 0  # the held-out dev rows are the same for every run of a task


def dev_rows(task: Any, train_data: Any, spec: RunSpec, session: Session) -> tuple[Any, dict[str, Any], list[int] | None]:
    """The rows to select on: the task's validation split when it is tested on another split, else a
    seeded, label-stratified share of train (``dev_holdout``), returned with the train rows left
    (``pool``).  The split the run is tested on is never used."""
    if task.eval_split != "validation":
        data = session.task_data(task, "validation", skip_bad_rows=spec.skip_bad_rows)
        return data.dataset, {"dev": "validation split", "dev_examples": len(data.dataset)}, None
    n = len(train_data.dataset)
    n_test = math.ceil(spec.training.dev_holdout * n)  # as train_test_split(test_size=<share>) counts
    try:
        pool, held = stratified_split(column(train_data.dataset, "label"), n_train=n - n_test, n_test=n_test,
                                      seed=HOLDOUT_SEED)
    except ValueError:  # a class too small to stratify
        order = seeded_permutation(n, HOLDOUT_SEED)
        held, pool = order[:n_test], order[n_test:]
    held, pool = sorted(held), sorted(pool)
    info = {"dev": f"held out from train ({spec.training.dev_holdout:g} of it, seeded, label-stratified): "
                   f"the eval split ({task.eval_split}) is the task's dev split",
            "dev_examples": len(held)}
    return train_data.dataset.select(held), info, pool


def _report_counts(prefix: str, data: Any) -> dict[str, int]:
    """What validation counted while loading a split: bad rows skipped, rows with an ignored label,
    duplicate pairs (kept)."""
    return {f"{prefix}_bad_rows": data.report.get("bad_rows", 0),
            f"{prefix}_ignored_labels": data.report.get("ignored", 0),
            f"{prefix}_duplicates": data.report.get("duplicates", 0)}


def execute(spec: RunSpec, session: Session, info: BackboneInfo | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one spec; return ``(result fields, predictions record)``.  Raises on failure.

    ``info`` is the backbone description the planner resolved (resolved again when not given)."""
    import transformers

    from stmbench.modeling import count_parameters, hardware_use, model_device, peak_memory_mb, reset_peak_memory

    task = session.get("task", spec.task)
    strategy = session.get("strategy", spec.strategy)
    adapter = session.get("adapter", spec.adapter)
    backbone = session.catalogue.backbone_for(spec.backbone)
    info = info or backbone.resolve(spec.backbone, session)
    device = session.device
    reset_peak_memory(device)
    transformers.set_seed(spec.seed)

    eval_data = session.task_data(task, task.eval_split, skip_bad_rows=spec.skip_bad_rows)
    partial = None
    if spec.limit is not None and spec.limit < len(eval_data.dataset):
        partial = {"limit": spec.limit, "of": len(eval_data.dataset)}
        eval_data = dataclasses.replace(eval_data, dataset=limit_sample(eval_data.dataset, spec.limit))
    counts: dict[str, Any] = {"eval_examples": len(eval_data.dataset), **_report_counts("eval", eval_data)}
    train_data = None
    if strategy.trains:
        train_data = session.task_data(task, "train", skip_bad_rows=spec.skip_bad_rows)
        counts.update(_report_counts("train", train_data),
                      train_eval_overlap=session.overlap(train_data, eval_data))
        if counts["train_eval_overlap"]:
            log.warning("task %s: %d evaluation pairs also occur in the training data",
                        task.name, counts["train_eval_overlap"])

    model, tokenizer = backbone.load(spec.backbone, head=strategy.head, num_labels=len(task.labels), task=task,
                                     session=session, load_kwargs=adapter.load_kwargs(spec.adapter_options, session),
                                     seed=spec.seed)
    transformers.set_seed(spec.seed)  # the same head / adapter init whatever loading consumed
    model = strategy.prepare_model(model, tokenizer=tokenizer, task=task, options=spec.strategy_options)
    model = adapter.wrap(model, head=strategy.head, info=info, options=spec.adapter_options)
    trainable, total = count_parameters(model)
    config = getattr(model, "config", None)
    out: dict[str, Any] = {
        "attention": getattr(config, "_attn_implementation", None),
        "backbone_info": info.__dict__,
        "parameters": {"trainable": trainable, "total": total,
                       "trainable_percent": round(100.0 * trainable / total, 4) if total else None},
        "times": {},
        "cache": {},
    }
    if train_data is not None:
        encode = strategy.feature_encoder(task=task, tokenizer=tokenizer, spec=spec, session=session)
        key = {"task": task.name, "data": train_data.fingerprint, "split": "train", "strategy": strategy.name,
               "tokenizer": tokenizer_fingerprint(tokenizer), **strategy.feature_key(spec, session)}
        features, hit = session.cached_features(key, train_data.dataset, encode)
        dev, dev_info, pool = None, None, None
        if spec.training.eval_strategy != "no":
            dev, dev_info, pool = dev_rows(task, train_data, spec, session)
        base = train_data.dataset if pool is None else train_data.dataset.select(pool)
        indices = subsample_indices(base, spec.train_size, spec.seed, task.name)
        if pool is not None:
            indices = [pool[i] for i in indices] if indices is not None else pool
        if indices is not None:
            features = features.select(indices)
        out["cache"]["features"] = "hit" if hit else "miss"
        counts["train_examples"] = len(features)
        trained = train(model, features, strategy=strategy, tokenizer=tokenizer, spec=spec, session=session,
                        dev=dev, task=task)
        out["times"].update({k: trained.pop(k) for k in ("train_seconds", "tokens_per_second")})
        out["padding"] = {"train": trained.pop("padding")}
        out["precision"] = precision(spec, device)
        out["hardware"] = hardware_use(model, real_tokens=trained.pop("real_tokens"),
                                       seconds=out["times"]["train_seconds"], device=device,
                                       dtype_name=out["precision"]["dtype"])
        if trained.get("selection") is not None:
            trained["selection"].update(dev_info)
        out["training"] = trained
    else:
        counts["train_examples"] = 0
        if str(model_device(model)) != device and not getattr(model, "hf_device_map", None):
            model.to(device)
    start = time.perf_counter()
    prediction = strategy.predict(model, data=eval_data.dataset, task=task, tokenizer=tokenizer, spec=spec,
                                  session=session)
    out["times"]["eval_seconds"] = time.perf_counter() - start
    out.setdefault("padding", {})["predict"] = prediction.extra.pop("padding", None)
    gold = column(eval_data.dataset, "label")
    metrics = score(task, gold, prediction.labels)
    metrics.update(prediction.extra.pop("metrics", {}))
    out["metrics"] = metrics
    if partial is not None:
        out["partial"] = partial
    out["health"] = health(out.get("training"), gold, list(prediction.labels))
    for note in out["health"]["notes"]:
        log.warning("run %s is flagged: %s", spec.label(), note)
    out["prediction_info"] = prediction.extra
    out["counts"] = counts
    out["peak_memory_mb"] = peak_memory_mb(device)
    predictions = {"run_id": spec.run_id, "eval_split": task.eval_split, "gold": gold,
                   "predicted": list(prediction.labels)}
    return out, predictions


def variant_labels(spec: RunSpec, session: Session) -> dict[str, str]:
    """Display names of the strategy and adapter with their non-default options (for tables)."""
    from stmbench.spec import axis_label

    out = {}
    for kind, name, options in (("strategy", spec.strategy, spec.strategy_options),
                                ("adapter", spec.adapter, spec.adapter_options)):
        entry = session.catalogue.entries[kind].get(name)
        try:
            defaults = entry.obj.options({}) if entry else {}
        except StmbenchError:
            defaults = {}
        out[kind] = axis_label(name, options, defaults)
    return out


def _base_result(spec: RunSpec, session: Session) -> dict[str, Any]:
    task = session.catalogue.entries["task"].get(spec.task)
    return {
        "run_id": spec.run_id,
        "status": "running",
        "spec": spec.to_dict(),
        "labels": variant_labels(spec, session),
        "task_info": {
            "synthetic": getattr(task.obj, "synthetic", False) if task else None,
            "eval_split": getattr(task.obj, "eval_split", None) if task else None,
            "eval_note": getattr(task.obj, "eval_note", "") if task else "",
        },
        "versions": versions(),
        "device": device_info(session.device),
        "seed": spec.seed,
        "started_at": _now(),
    }


def failed_result(spec: RunSpec, error: str, session: Session) -> dict[str, Any]:
    """The stored result of a run that could not report one itself (its process died)."""
    result = _base_result(spec, session)
    result.update(status="failed", error=error, traceback="", finished_at=_now())
    result["times"] = {}
    return result


def run_spec(spec: RunSpec, session: Session, info: BackboneInfo | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run one spec through the lifecycle hooks; never raises for the run's own failures.

    A run that ends ``ok`` removes its checkpoints; a failed one keeps them for the next try."""
    result = _base_result(spec, session)
    predictions = None
    start = time.perf_counter()
    session.hook.run_started(run=spec)
    try:
        fields, predictions = execute(spec, session, info)
        result.update(fields)
        result["status"] = "ok"
        shutil.rmtree(session.checkpoint_dir(spec.run_id), ignore_errors=True)
    except Exception as exc:  # noqa: BLE001 - any failure of a run is recorded, the grid goes on
        result["status"] = "failed"
        result["error"] = str(exc) if isinstance(exc, StmbenchError) else f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        if isinstance(exc, Diverged):
            result["training"] = {"loss_curve": exc.loss_curve}
        log.error("run %s failed: %s", spec.label(), result["error"])
        log.debug("%s", result["traceback"])
    result.setdefault("times", {})["total_seconds"] = time.perf_counter() - start
    result["finished_at"] = _now()
    try:
        session.hook.run_finished(run=spec, result=result)
    except Exception:  # a broken result sink must not lose the result
        log.exception("a run_finished hook failed for %s", spec.run_id)
    return result, predictions
