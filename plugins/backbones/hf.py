"""The ``hf`` backbone: any Hugging Face hub id or local directory.

Any name that no other backbone claims comes here (``--backbones Qwen/Qwen2.5-0.5B`` or a path).
Models load through ``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` /
``AutoModelForTokenClassification`` / ``AutoModel``, safetensors preferred, ``trust_remote_code`` only with ``--trust-remote-code``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from stmbench import (
    HEAD_BASE, HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION, attach_pad_token,
    Backbone, BackboneInfo, choose_pad_token, from_pretrained, hookimpl, StmbenchError
)

log = logging.getLogger(__name__)


def info_from_config(name: str, config: Any, *, backbone: str, source: str) -> BackboneInfo:
    """Decide from a config whether a model is a causal LM or a bidirectional encoder."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "") or ""
    archs = " ".join(getattr(config, "architectures", None) or [])
    is_encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and "ForCausalLM" not in archs
    is_decoder = not is_encoder and (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "ForCausalLM" in archs)
    return BackboneInfo(name=name, backbone=backbone, model_type=model_type, is_decoder=is_decoder,
                        is_encoder=is_encoder, source=source)


@contextlib.contextmanager
def quiet_transformers():
    """Hide the load report that lists a fresh classification head as MISSING: it is expected
    when a head is put on a checkpoint that was saved without one."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


#: checkpoints up to this size (MiB; environment ``STMBENCH_WEIGHTS_MEMO_MB``, 0 turns the memo off)
#: are kept in memory for the next run of the same backbone
MEMO_MAX_MB = 4096


class WeightsMemo:
    """The last backbone's checkpoint tensors, kept in memory from its second load in a process on:
    consecutive runs of one backbone (the planner orders a grid by backbone first) take a copy from
    memory instead of reading the files again, from the third run on; a process that loads a
    checkpoint once (one run) reads it once and copies nothing.  Only local safetensors checkpoints
    (a folder, or a hub snapshot in the cache) up to :data:`MEMO_MAX_MB`, loaded without quantisation or a device map.  It costs a
    second copy of the weights in host memory; it saves the file reads (on a local disk with a warm
    page cache they cost about what the copy does: see ``benchmarks/bench_weights.py``)."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.tensors: dict[str, Any] | None = None
        self.reads = 0  # how many times checkpoint files were read (for tests and benchmarks)

    @staticmethod
    def files(folder: str) -> list[str] | None:
        import json
        import os

        single = os.path.join(folder, "model.safetensors")
        if os.path.isfile(single):
            return [single]
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
            return [os.path.join(folder, shard) for shard in shards]
        return None

    def get(self, folder: str) -> dict[str, Any] | None:
        """A private copy of the checkpoint's tensors, or ``None`` where the memo does not apply or on a
        checkpoint's first load (``from_pretrained`` then maps the files as it would without stmbench:
        frozen weights stay in the page cache, nothing is copied; ``load_file`` would copy them all)."""
        import os

        from safetensors.torch import load_file

        files = self.files(folder)
        limit = float(os.environ.get("STMBENCH_WEIGHTS_MEMO_MB", MEMO_MAX_MB)) * 2**20
        if not files or limit <= 0:
            return None
        stats = [os.stat(f) for f in files]
        if sum(st.st_size for st in stats) > limit:
            return None
        key = (os.path.realpath(folder), tuple((f, st.st_size, st.st_mtime_ns) for f, st in zip(files, stats)))
        if key == self.key and self.tensors is not None:
            return {name: t.clone() for name, t in self.tensors.items()}  # the model may train in place
        self.reads += 1
        if key != self.key:  # a first load: from_pretrained(folder) maps the files itself, nothing is kept
            self.key, self.tensors = key, None  # (a process that runs once copies nothing)
            return None
        tensors: dict[str, Any] = {}
        for f in files:
            tensors.update(load_file(f))
        self.tensors = tensors  # a second load of the same checkpoint (a grid): kept from now on
        return {name: t.clone() for name, t in tensors.items()}


WEIGHTS = WeightsMemo()


def _local_folder(path: str) -> str | None:
    """The folder holding ``path``'s files: the path itself, or a hub id's snapshot in the cache."""
    import os

    if os.path.isdir(path):
        return path
    try:
        from transformers.utils import cached_file

        found = cached_file(path, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return os.path.dirname(found) if found else None


def _from_memo(cls: Any, path: str, *, config_kwargs: dict[str, Any], load_kwargs: dict[str, Any],
               trust: bool) -> Any | None:
    """``cls.from_pretrained(path, ...)`` with the weights from :data:`WEIGHTS`: the same config, the
    same loading code (key renaming, missing-head initialisation), no file read; ``None`` when the
    memo does not apply."""
    if {"quantization_config", "device_map", "gguf_file"} & set(load_kwargs):
        return None
    folder = _local_folder(path)
    if folder is None:
        return None
    from transformers import AutoConfig
    from transformers.models.auto.auto_factory import _get_model_class

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust, **config_kwargs)
    if getattr(config, "auto_map", None) and trust:  # remote code: its own class resolution
        return None
    tensors = WEIGHTS.get(folder)
    if tensors is None:
        return None
    model_class = _get_model_class(config, cls._model_mapping)
    model = model_class.from_pretrained(None, config=config, state_dict=tensors, **load_kwargs)
    model.config.name_or_path = model.name_or_path = path  # as from_pretrained(path) names it
    return model


def load_pretrained(path: str, *, head: str, task: Any, context: Any, load_kwargs: dict[str, Any],
                    hint: str = "") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id or directory with the asked head."""
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    trust = context.trust_remote_code
    tokenizer = from_pretrained(AutoTokenizer, path, what="tokenizer", hint=hint, trust_remote_code=trust)
    added = choose_pad_token(tokenizer)
    config_kwargs: dict[str, Any] = {}
    if head in (HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION):
        cls = AutoModelForSequenceClassification if head == HEAD_SEQUENCE_CLASSIFICATION else AutoModelForTokenClassification
        config_kwargs.update(num_labels=len(task.labels),
                             id2label={i: lab.name for i, lab in enumerate(task.labels)},
                             label2id={lab.name: i for i, lab in enumerate(task.labels)})
    elif head == HEAD_CAUSAL_LM:
        cls = AutoModelForCausalLM
    elif head == HEAD_BASE:
        cls = AutoModel
    else:
        raise StmbenchError(f"unknown model head {head!r}")
    with quiet_transformers():
        model = _from_memo(cls, path, config_kwargs=config_kwargs, load_kwargs=load_kwargs, trust=trust)
        if model is None:
            model = from_pretrained(cls, path, what="model", hint=hint, trust_remote_code=trust, **config_kwargs,
                                    **load_kwargs)
    if head in (HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION):
        log.info("%s: the classification head is new (randomly initialised), as expected", path)
    attach_pad_token(model, tokenizer, added)
    return model, tokenizer


class HFBackbone(Backbone):
    name = "hf"
    description = "any Hugging Face hub id or local directory (the catch-all backbone)"
    catch_all = True

    def claims(self, name: str) -> bool:
        return True

    def resolve(self, name: str, context: Any) -> BackboneInfo:
        from transformers import AutoConfig

        model_id = name.removeprefix("hf:")
        known = [n for n in context.names("backbone") if n != self.name]
        hint = f"registered backbones: {', '.join(known)}"
        try:
            config = from_pretrained(AutoConfig, model_id, what="backbone", hint=hint,
                                     trust_remote_code=context.trust_remote_code)
        except StmbenchError as exc:
            raise StmbenchError(f"unknown backbone {name!r}: {exc}") from None
        except ValueError as exc:  # e.g. a model type this transformers does not know
            raise StmbenchError(f"backbone {name!r}: {exc}") from None
        return info_from_config(name, config, backbone=self.name, source=model_id)

    def empty_model(self, name: str, *, head: str, task: Any, context: Any) -> tuple[Any, Any]:
        """The model of ``name``'s config on the meta device (no weights read, none allocated), and
        its tokenizer where one is at hand."""
        import torch
        from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                                  AutoModelForTokenClassification, AutoTokenizer)

        path = name.removeprefix("hf:")
        trust = context.trust_remote_code
        config = from_pretrained(AutoConfig, path, what="backbone", trust_remote_code=trust)
        classes = {HEAD_CAUSAL_LM: AutoModelForCausalLM, HEAD_BASE: AutoModel,
                   HEAD_SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
                   HEAD_TOKEN_CLASSIFICATION: AutoModelForTokenClassification}
        if head not in classes:
            raise StmbenchError(f"unknown model head {head!r}")
        if head in (HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION):
            config.num_labels = len(task.labels)
        with torch.device("meta"), quiet_transformers():
            model = classes[head].from_config(config, trust_remote_code=trust)
        try:
            tokenizer = from_pretrained(AutoTokenizer, path, what="tokenizer", trust_remote_code=trust)
            attach_pad_token(model, tokenizer, choose_pad_token(tokenizer))
        except (StmbenchError, OSError, ValueError):
            tokenizer = None
        return model, tokenizer

    def load(self, name: str, *, head: str, task: Any, context: Any, load_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        return load_pretrained(name.removeprefix("hf:"), head=head, task=task, context=context,
                               load_kwargs=load_kwargs)


@hookimpl
def register_backbones(register):
    register(HFBackbone())
