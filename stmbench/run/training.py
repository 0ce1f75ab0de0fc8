"""Training one run with ``transformers.Trainer``: its arguments, checkpoints and resume, dev selection,
length-grouped batches, the loss on labelled positions only, and the health callback that stops a
diverging run."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmbench.common.errors import StmbenchError
from stmbench.run.distributed import NODES_APART, RUN_FOLDER, world
from stmbench.run.scoring import score
from stmbench.core.modeling import IGNORE_INDEX
from stmbench.run.splits import gold, sequence_lengths

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.core.session import Session
    from stmbench.spec.run import RunSpec

log = logging.getLogger(__name__)


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


def optimizer_kernel(optim: str, device: str) -> str:
    """The ``TrainingArguments.optim`` a run passes: ``adamw_torch`` (torch's AdamW) runs as
    ``adamw_torch_fused``, the same algorithm in one fused kernel per step, where torch has that
    kernel for the device (CPU and CUDA here): the Trainer's own default in transformers 5, and on
    full fine-tuning of a small model 4x faster in the optimizer step than the per-tensor loop
    (benchmarks/README.md).  The run's id names the algorithm, so stored runs keep their ids."""
    if optim != "adamw_torch" or not (device.startswith("cpu") or device.startswith("cuda")):
        return optim
    import inspect

    import torch

    return "adamw_torch_fused" if "fused" in inspect.signature(torch.optim.AdamW).parameters else optim


def _trainer_args(spec: RunSpec, output_dir: str, device: str, show_progress: bool,
                  save_steps: int | None = 0, report_to: list[str] | None = None, run_name: str | None = None,
                  settings: Any = None) -> Any:
    from transformers import TrainingArguments

    from stmbench.run.distributed import per_device_batch

    t = spec.training
    size = world().size
    scale: dict[str, Any] = {}
    if size > 1 and device.startswith("cpu"):
        scale["ddp_backend"] = "gloo"
    if settings is not None and settings.fsdp:
        scale["fsdp"] = settings.fsdp
        if settings.fsdp_config:
            scale["fsdp_config"] = settings.fsdp_config
    if settings is not None and settings.deepspeed:
        scale["deepspeed"] = settings.deepspeed
    if size > 1 and os.environ.get(NODES_APART):  # ranks on machines that share no folder
        scale["save_on_each_node"] = True
    mixed = precision(spec, device)
    saving = _selection_args(t) if t.eval_strategy != "no" else {**_save_args(save_steps), "eval_strategy": "no"}
    return TrainingArguments(
        output_dir=output_dir, learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=per_device_batch(t.per_device_train_batch_size, size),
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps, lr_scheduler_type=t.lr_scheduler_type, optim=optimizer_kernel(t.optim, device),
        bf16=mixed["bf16"], fp16=t.fp16, tf32=mixed["tf32"] or None, **_checkpointing(t.gradient_checkpointing),
        seed=spec.seed, data_seed=spec.seed, **saving,
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        logging_nan_inf_filter=False,
        report_to=list(report_to) if report_to else "none", run_name=run_name, use_cpu=device.startswith("cpu"),
        dataloader_num_workers=0, disable_tqdm=not show_progress, **scale,
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
            self.trainer: Any = None  #: set once the Trainer is built (its gradient norms are read)

        def _stop(self, control: Any, step: int, key: str, value: float) -> None:
            if self.diverged is None:
                self.diverged = (step, key, value)
            control.should_training_stop = True
            control.should_save = False

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            norm = self.trainer_norm()
            if norm is None:  # not the Trainer's: one fused pass over the gradients, as clipping does
                grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
                norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else None
            if norm is not None and not math.isfinite(float(norm)):
                self._stop(control, state.global_step + 1, "grad_norm", float(norm))
            return control

        def trainer_norm(self) -> Any:
            """The gradient norm the Trainer computed for this step (it clips with it), if it kept it."""
            norm = getattr(self.trainer, "step_grad_norm", None)
            if norm is not None:
                self.trainer.step_grad_norm = None  # read once: a later step without one computes its own
            return norm

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
                                          context=session.context)
            self.model.train(was_training)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in score(task, gold(task, data), prediction.labels,
                                                                             session.metrics_for(task)).items()}
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
        elif "input_ids" in batch:  # packed: every position is a real token
            self.meter.add(batch["input_ids"].numel(), batch["input_ids"].numel())
        if self.keep_labelled:
            batch["logits_to_keep"] = labelled_positions(batch["labels"])
        return batch


class PackingCollator:
    """Padding-free batches: transformers' ``DataCollatorWithFlattening`` concatenates a batch's
    sequences into one row of ``input_ids`` with ``position_ids`` restarting at 0 for each and no
    ``attention_mask``, from which transformers' masks keep attention within each sequence (and,
    with ``flash``, FlashAttention's ``cu_seq_lens`` kwargs).  Token labels are flattened with the
    ids (the first label of each sequence becomes -100: it would be predicted from the sequence
    before); a label per sequence stays one per sequence, in order."""

    def __init__(self, flash: bool = False):
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=flash)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if features and isinstance(features[0].get("labels"), list):
            return self.flatten([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
        batch = self.flatten([{"input_ids": f["input_ids"]} for f in features])
        batch["labels"] = torch.tensor([int(f["labels"]) for f in features])
        return batch


def sequence_ends(position_ids: Any) -> Any:
    """The last position of each sequence packed into the one row of ``position_ids``."""
    import torch

    row = position_ids[0]
    starts = torch.nonzero(row == 0).flatten()
    return torch.cat([starts[1:] - 1, torch.tensor([row.numel() - 1], device=row.device)])


def _packing_plan(model: Any, strategy: Any, task: Any, spec: RunSpec) -> tuple[Any, str]:
    from stmbench.core.modeling import prompt_learning

    """How a run trains packed: ``(classification head to read per position or None, why not)``;
    the reason is empty when packing works.  Token labels and models that pack themselves (a head
    of their own that reads ``position_ids``) need no head; a transformers sequence-classification
    model is read at its per-position ``score`` head, at each sequence's last token."""
    if task is not None and task.is_tokens:
        return None, "a tag per token is not packed (its first sub-token would lose its label)"
    if spec.prompt is None:  # strategies clear the prompt for encoders, which read a real sentence pair
        return None, "an encoder reads a padded sentence pair; packing is for decoders"
    if prompt_learning(model):
        return None, "a soft prompt's virtual tokens cannot be packed"
    if strategy.lm_loss_on_labels:
        return None, ""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner, "packs_sequences", False):
        return None, ""
    heads = sorted((name for name, _ in model.named_modules() if name == "score" or name.endswith(".score")), key=len)
    if not heads:
        return None, f"{type(inner).__name__} has no per-position 'score' head to read each sequence from"
    return model.get_submodule(heads[0]), ""


def _packed_classification(base: Any, head: Any) -> Any:
    """``base`` computing a packed batch's classification loss: the model's ``score`` head is read at
    every position (a forward hook) and taken at each sequence's last token, the token a padded
    batch pools; cross-entropy over the sequences, as the model's own loss."""
    import torch

    class PackedClassificationTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            labels = inputs.pop("labels")
            ends = sequence_ends(inputs["position_ids"])
            seen: list[Any] = []
            handle = head.register_forward_hook(lambda module, args, out: seen.append(out))
            try:
                outputs = model(**inputs)
            finally:
                handle.remove()
            logits = seen[-1][0, ends]
            loss = torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
            outputs["logits"] = logits
            return (loss, outputs) if return_outputs else loss

    return PackedClassificationTrainer


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


def _norm_keeping(base: Any) -> Any:
    """``base`` keeping each step's gradient norm (``step_grad_norm``), the one it computes to clip and
    log, so the health callback checks it without a second pass over the gradients."""
    if not hasattr(base, "_get_grad_norm"):  # another transformers: the callback computes its own
        return base

    class NormKeepingTrainer(base):  # type: ignore[misc, valid-type]
        step_grad_norm: Any = None

        def _get_grad_norm(self, model, grad_norm=None):  # noqa: ANN001
            norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            self.step_grad_norm = norm
            return norm

    return NormKeepingTrainer


def _trainer_class(strategy: Any, task: Any, tokenizer: Any, spec: RunSpec, session: Session,
                   lengths: list[int], packed_head: Any = None) -> Any:
    from transformers import Trainer

    base = _dev_trainer(strategy, task, tokenizer, spec, session) if spec.training.eval_strategy != "no" else Trainer
    base = _norm_keeping(base)
    if packed_head is not None:
        base = _packed_classification(base, packed_head)
    if not spec.training.group_by_length:
        return base

    class GroupedTrainer(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001
            # groups of the batch of one optimizer step over every rank: k ranks take consecutive
            # shares of it (accelerate's batch sampler shards), so the steps are a one-process run's
            step = self.args.train_batch_size * self.args.gradient_accumulation_steps * max(1, self.args.world_size)
            return length_grouped_sampler(lengths, step, spec.seed)

    return GroupedTrainer


def dev_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    """``[[step, dev accuracy], ...]`` of the evaluations during training."""
    return [[int(e["step"]), float(e["eval_accuracy"])] for e in log_history if "eval_accuracy" in e and "step" in e]


@dataclass
class TrainOutcome:
    """What training hands the pipeline: :meth:`record` is stored as the result's ``training``; the
    seconds, speed and padding go to its ``times`` and ``padding``, the real tokens to its FLOPs."""

    train_loss: float
    train_steps: int
    epochs: float
    seconds: float
    tokens_per_second: float | None
    real_tokens: int  #: tokens that were not padding, over every epoch trained here
    padding: dict[str, Any]  #: :meth:`stmbench.core.modeling.PaddingMeter.report` of the training batches
    logits: str  #: ``labelled positions`` (only those projected onto the vocabulary) or ``all positions``
    loss_curve: list[list[float]] = field(default_factory=list)
    resumed_from_step: int | None = None
    planned_steps: int | None = None  #: the steps of the full budget (what the schedule was planned for)
    pruned_at_step: int | None = None  #: where the pruner stopped this trial (``None``: it trained to the end)
    optimizer: str = ""  #: the ``TrainingArguments.optim`` that ran (:func:`optimizer_kernel`)
    #: dev selection (``metric``, ``selected_step``, ``dev_metric``, ``dev_curve``, ``stopped_early``,
    #: and where the dev rows came from); ``None`` without ``eval_strategy``
    selection: dict[str, Any] | None = None
    #: the run's :class:`stmbench.run.tracking.Tracking` (``--report-to``), closed by the pipeline
    #: once the run is tested; not stored
    tracking: Any = None

    def record(self) -> dict[str, Any]:
        """The result's ``training`` field."""
        return {"logits": self.logits, "train_loss": self.train_loss, "train_steps": self.train_steps,
                "epochs": self.epochs, "resumed_from_step": self.resumed_from_step, "loss_curve": self.loss_curve,
                "selection": self.selection, **({"planned_steps": self.planned_steps} if self.planned_steps else {}),
                **({"optimizer": self.optimizer} if self.optimizer else {}),
                **({"pruned_at_step": self.pruned_at_step} if self.pruned_at_step is not None else {})}


def train(model: Any, features: Any, *, strategy: Any, tokenizer: Any, spec: RunSpec, session: Session,
          dev: Any = None, task: Any = None) -> TrainOutcome:
    """Train with ``transformers.Trainer``; return what it did (:class:`TrainOutcome`).

    Checkpoints go to :meth:`Session.checkpoint_dir` (every epoch, or every ``--save-steps``), and a
    run that finds one there (it was killed) resumes from it through ``resume_from_checkpoint``: the
    Trainer restores weights, optimizer, scheduler and RNG states and skips the batches it has seen.
    With ``eval_strategy`` epoch or steps, ``dev`` (rows of the task) is scored during training, and
    the checkpoint with the best dev accuracy is loaded at the end (``load_best_model_at_end``).
    """
    from transformers import EarlyStoppingCallback, PrinterCallback

    from stmbench.core.modeling import PaddingMeter, keeps_logits

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
    reporter = pruning = None
    if spec.pruner and spec.tuning and selecting:  # a pruned trial: its dev scores go to its cell's study
        from stmbench.run.tuning import TuningBook, pruning_callback

        reporter = TuningBook(session.settings.results_dir, claim_timeout=session.settings.claim_timeout).trial(spec)
        pruning = pruning_callback(reporter)
        callbacks.append(pruning)
        save_steps = None if save_steps == 0 else save_steps  # a paused trial resumes from its checkpoint
    with contextlib.ExitStack() as stack:
        shared = os.environ.get(RUN_FOLDER) if world().size > 1 else None
        if save_steps == 0 and shared:  # the ranks of one launched run share the folder its launcher removes
            out, resume = os.path.join(shared, "trainer"), None
        elif save_steps == 0:  # nothing to resume from; selection's checkpoints go to a folder removed with the run
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="stmbench-trainer-"))
            resume = None
        else:
            folder = session.checkpoint_dir(spec.run_id)
            out, resume = str(folder), last_checkpoint(folder)
        lengths = sequence_lengths(features)
        keep_labelled = strategy.lm_loss_on_labels and keeps_logits(model)
        meter = PaddingMeter()
        packed_head, collator = None, strategy.data_collator(tokenizer, spec)
        if spec.training.packing:
            packed_head, why_not = _packing_plan(model, strategy, task, spec)
            if why_not:
                raise StmbenchError(f"--packing: {why_not}; train this run without it")
            flash = str(getattr(getattr(model, "config", None), "_attn_implementation", "")).startswith("flash")
            collator = PackingCollator(flash=flash)
        trainer_class = _trainer_class(strategy, task, tokenizer, spec, session, lengths, packed_head)
        report_to = session.settings.report_to
        run_name = f"{session.run_label(spec)} [{spec.run_id}]"
        trainer = trainer_class(model=model, args=_trainer_args(spec, out, device, session.show_progress, save_steps,
                                                                report_to, run_name, session.settings),
                                train_dataset=features, eval_dataset=dev if selecting else None,
                                data_collator=TrainingCollator(collator, meter, keep_labelled),
                                compute_loss_func=labelled_lm_loss if keep_labelled else None, callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        if not _loss_counts_items(model):
            # the Trainer takes a forward with **kwargs to normalise its loss by the items of the whole
            # step (num_items_in_batch); a classification head averages its own batch instead, so that
            # loss must be divided for accumulation and not multiplied by the ranks (it would be k x)
            trainer.model_accepts_loss_kwargs = False
        health.trainer = trainer
        tracking = None
        if report_to:
            from stmbench.run.tracking import Tracking

            tracking = Tracking(trainer, spec, session.settings.results_dir, model)
            stack.callback(lambda: tracking.forget_spec())  # nothing trained or saved keeps the spec in its config
        if resume is not None:
            log.info("resuming %s from %s (step %d)", session.run_label(spec), resume[0], resume[1])
        if reporter is not None and resume is not None:
            stopped = _pending_decision(reporter, resume)
            if stopped is not None:
                if tracking is not None:
                    tracking.finish()
                return stopped
        start = time.perf_counter()
        try:
            output = trainer.train(resume_from_checkpoint=resume[0] if resume else None)
        except BaseException:
            if tracking is not None:
                tracking.finish()
            raise
        seconds = time.perf_counter() - start
        if pruning is not None and pruning.paused is not None:
            if tracking is not None:
                tracking.finish()
            raise pruning.paused
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
        if tracking is not None:
            tracking.finish({"test_health_diverged": 1.0})
        step, key, value = health.diverged
        shutil.rmtree(session.checkpoint_dir(spec.run_id), ignore_errors=True)  # resuming would diverge again
        raise Diverged(f"diverged at step {step}: {'loss' if key == 'loss' else 'gradient norm'} {value}",
                       loss_curve=curve)
    epochs = output.metrics.get("epoch") or spec.training.num_train_epochs
    done = 1.0 - (resume[1] / output.global_step if resume and output.global_step else 0.0)
    tokens = sum(lengths) * float(epochs) * done
    pruned_at = pruning.pruned_at if pruning is not None else None
    if reporter is not None and pruned_at is None:
        reporter.finish(selection.get("dev_metric") if selection else None)
    return TrainOutcome(train_loss=float(output.training_loss), train_steps=int(output.global_step),
                        epochs=float(epochs), seconds=seconds, tokens_per_second=tokens / seconds if seconds > 0 else None,
                        real_tokens=meter.real, padding=meter.report(),
                        logits="labelled positions" if keep_labelled else "all positions", loss_curve=curve,
                        resumed_from_step=resume[1] if resume else None, selection=selection,
                        planned_steps=int(trainer.state.max_steps) or None, pruned_at_step=pruned_at,
                        optimizer=str(getattr(trainer.args.optim, "value", trainer.args.optim)), tracking=tracking)


def _loss_counts_items(model: Any) -> bool:
    """Whether ``model``'s own loss is normalised by the ``num_items_in_batch`` the Trainer passes (a
    causal LM's is; transformers' classification heads and stmbench's take the mean of their batch)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForCausalLM")


def _pending_decision(reporter: Any, resume: tuple[str, int]) -> TrainOutcome | None:
    """A trial resumed from the checkpoint of an evaluation whose decision is still to make (it paused
    there, or was killed): make it now.  ``continue``: ``None`` (training goes on from the checkpoint);
    ``prune``: the trial's outcome as its checkpoint recorded it, with nothing trained here."""
    import json

    pending = reporter.pending()
    if pending is None or pending[1] != resume[1]:
        return None
    if reporter.decide(pending[0], pending[1], None) == "continue":
        return None
    state = json.loads((Path(resume[0]) / "trainer_state.json").read_text(encoding="utf-8"))
    history = state.get("log_history", [])
    losses = [e["loss"] for e in history if "loss" in e]
    selection = {"metric": "accuracy", "selected_step": state.get("best_global_step"),
                 "dev_metric": state.get("best_metric"), "dev_curve": dev_curve(history), "stopped_early": True}
    return TrainOutcome(train_loss=float(sum(losses) / len(losses)) if losses else 0.0,
                        train_steps=resume[1], epochs=float(state.get("epoch") or 0.0), seconds=0.0,
                        tokens_per_second=None, real_tokens=0, padding={}, logits="", loss_curve=loss_curve(history),
                        resumed_from_step=resume[1], selection=selection,
                        planned_steps=int(state.get("max_steps") or 0) or None, pruned_at_step=resume[1])


class Diverged(StmbenchError):
    """Training produced a NaN or infinite loss or gradient norm."""

    def __init__(self, message: str, loss_curve: list[list[float]]):
        super().__init__(message)
        self.loss_curve = loss_curve
