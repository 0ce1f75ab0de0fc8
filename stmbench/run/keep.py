"""Keeping what a run trained: its adapter or model, saved with the real libraries' own formats.

A run that trains saves, where ``--save-models`` asks it to, what it trained under
``<results>/models/<run_id>/`` once it has predicted: a peft adapter (``adapter_config.json``,
``adapter_model.safetensors``, with the classification head in peft's ``modules_to_save``), or the
whole transformers model (``config.json``, ``model.safetensors``), and for a strategy that brings its
own head around the transformers model (``label_supervised``) that model plus the head's weights in
``stmbench-head.safetensors``; always the tokenizer, and ``stmbench-model.json`` (the run's spec and
what was saved).  :func:`load_saved` loads such a folder back with ``peft`` / ``transformers``.
Which of the saved runs are kept (the cell-best of each leaderboard cell, chosen on dev) is decided
after a study, by :mod:`stmbench.report.winners`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stmbench.common.errors import StmbenchError

log = logging.getLogger(__name__)

#: ``--save-models``: ``auto`` (the default) keeps the best run of each cell for adapters that train
#: at most :data:`SMALL_SHARE` of the weights and nothing for full fine-tuning; ``best`` / ``all`` /
#: ``none`` ask for that whatever the adapter
SAVE_CHOICES = ("auto", "none", "best", "all")
SMALL_SHARE = 0.10
MODELS = "models"  #: the folder under the results folder
RECORD = "stmbench-model.json"
HEAD_FILE = "stmbench-head.safetensors"
KIND_PEFT, KIND_MODEL, KIND_HEAD = "peft", "transformers", "transformers+head"


def models_dir(results_dir: Path) -> Path:
    return Path(results_dir) / MODELS


def policy_for(setting: str, *, trainable: int, total: int) -> str:
    """What a run of ``trainable`` of ``total`` parameters keeps under ``--save-models setting``:
    ``none``, ``best`` or ``all``."""
    if setting not in SAVE_CHOICES:
        raise StmbenchError(f"--save-models {setting!r}: choose one of {', '.join(SAVE_CHOICES)}")
    if setting != "auto":
        return setting
    return "best" if total and trainable / total <= SMALL_SHARE else "none"


def save_trained(model: Any, tokenizer: Any, folder: Path, record: dict[str, Any]) -> Path:
    """Write ``model`` (as trained) and ``tokenizer`` to ``folder``, atomically: into a sibling
    temporary folder first, renamed into place when complete (a run that is killed while saving
    leaves no half-written model)."""
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import PreTrainedModel

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".saving-{folder.name}-"))
    try:
        if isinstance(model, PeftModel):
            kind = KIND_PEFT
            model.save_pretrained(tmp)  # the adapter and peft's modules_to_save (the head)
        elif isinstance(model, PreTrainedModel):
            kind = KIND_MODEL
            model.save_pretrained(tmp)
        else:  # a strategy's own head around a transformers model
            from stmbench.core.modeling import transformers_model

            inner = transformers_model(model)
            prefix = next(name for name, module in model.named_modules() if module is inner)
            kind = KIND_HEAD
            inner.save_pretrained(tmp)
            head = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
                    if not k.startswith(prefix + ".")}
            save_file(head, str(tmp / HEAD_FILE))
            record = {**record, "inner_prefix": prefix}
        tokenizer.save_pretrained(tmp)
        with open(tmp / RECORD, "w", encoding="utf-8") as fh:
            json.dump({**record, "kind": kind}, fh, indent=2, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_record(folder: Path) -> dict[str, Any]:
    """A saved model's ``stmbench-model.json``, checked (a folder that did not come from here is
    refused with the reason)."""
    from stmbench.common.untrusted import read_json

    path = Path(folder) / RECORD
    if not path.is_file() or path.is_symlink():
        raise StmbenchError(f"{folder}: no {RECORD} here: not a model that stmbench saved")
    data, _ = read_json(path, limit=1 << 20)
    if not isinstance(data, dict) or data.get("kind") not in (KIND_PEFT, KIND_MODEL, KIND_HEAD) \
            or not isinstance(data.get("spec"), dict) or not isinstance(data.get("run_id"), str):
        raise StmbenchError(f"{path}: not a record of a saved model (kind, run_id, spec)")
    return data


def load_saved(folder: Path, session: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, spec)`` of a saved run, loaded back with peft / transformers: a peft
    adapter onto the backbone as the run loaded it (``PeftModel.from_pretrained``), a whole model
    with ``AutoModelFor*.from_pretrained``, a strategy's own head around it from its weights."""
    from transformers import AutoTokenizer

    from stmbench.spec.run import RunSpec

    folder = Path(folder)
    record = read_record(folder)
    spec = RunSpec.from_dict(record["spec"])
    task, strategy, adapter = (session.get(kind, name) for kind, name in
                               (("task", spec.task), ("strategy", spec.strategy), ("adapter", spec.adapter)))
    backbone = session.catalogue.backbone_for(spec.backbone)
    strategy_options = strategy.typed_options(spec.strategy_options)
    head = strategy.head_for(task)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))  # the run's tokenizer, as saved
    if record["kind"] == KIND_PEFT:
        from peft import PeftModel

        load_kwargs = adapter.load_kwargs(adapter.typed_options(spec.adapter_options), session.context)
        model, _ = backbone.load(spec.backbone, head=head, task=task, context=session.context, load_kwargs=load_kwargs)
        model = strategy.prepare_model(model, tokenizer=tokenizer, task=task, options=strategy_options)
        model = PeftModel.from_pretrained(model, str(folder))
    else:
        from stmbench.core.modeling import auto_class

        model = auto_class(head).from_pretrained(str(folder))
        if record["kind"] == KIND_HEAD:
            from safetensors.torch import load_file

            model = strategy.prepare_model(model, tokenizer=tokenizer, task=task, options=strategy_options)
            missing, unexpected = model.load_state_dict(load_file(str(folder / HEAD_FILE)), strict=False)
            prefix = record.get("inner_prefix", "")
            if unexpected or any(not k.startswith(prefix + ".") for k in missing):
                raise StmbenchError(f"{folder}: the saved head does not fit the strategy's "
                                    f"(unexpected {unexpected[:3]}, missing {missing[:3]})")
    model.eval()
    return model, tokenizer, spec
