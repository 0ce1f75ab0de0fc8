"""The ``hf`` backbone: any Hugging Face hub id or local directory.

Any name that no other backbone claims comes here (``--backbones Qwen/Qwen2.5-0.5B`` or a path).
Models load through ``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` /
``AutoModel``, safetensors preferred, ``trust_remote_code`` only with ``--trust-remote-code``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from stmbench import hookimpl
from stmbench.errors import StmbenchError
from stmbench.hub import from_pretrained
from stmbench.modeling import attach_pad_token, choose_pad_token
from stmbench.types import (
    HEAD_BASE,
    HEAD_CAUSAL_LM,
    HEAD_SEQUENCE_CLASSIFICATION,
    Backbone,
    BackboneInfo,
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


def load_pretrained(path: str, *, head: str, task: Any, session: Any, load_kwargs: dict[str, Any],
                    hint: str = "") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id or directory with the asked head."""
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    trust = session.settings.trust_remote_code
    tokenizer = from_pretrained(AutoTokenizer, path, what="tokenizer", hint=hint, trust_remote_code=trust)
    added = choose_pad_token(tokenizer)
    kwargs: dict[str, Any] = {"trust_remote_code": trust, **load_kwargs}
    if head == HEAD_SEQUENCE_CLASSIFICATION:
        cls = AutoModelForSequenceClassification
        kwargs.update(num_labels=len(task.labels),
                      id2label={i: lab.name for i, lab in enumerate(task.labels)},
                      label2id={lab.name: i for i, lab in enumerate(task.labels)})
    elif head == HEAD_CAUSAL_LM:
        cls = AutoModelForCausalLM
    elif head == HEAD_BASE:
        cls = AutoModel
    else:
        raise StmbenchError(f"unknown model head {head!r}")
    with quiet_transformers():
        model = from_pretrained(cls, path, what="model", hint=hint, **kwargs)
    if head == HEAD_SEQUENCE_CLASSIFICATION:
        log.info("%s: the classification head is new (randomly initialised), as expected", path)
    attach_pad_token(model, tokenizer, added)
    return model, tokenizer


class HFBackbone(Backbone):
    name = "hf"
    description = "any Hugging Face hub id or local directory (the catch-all backbone)"
    catch_all = True

    def claims(self, name: str) -> bool:
        return True

    def resolve(self, name: str, session: Any) -> BackboneInfo:
        from transformers import AutoConfig

        model_id = name.removeprefix("hf:")
        known = [n for n in session.catalogue.names("backbone") if n != self.name]
        hint = f"registered backbones: {', '.join(known)}"
        try:
            config = from_pretrained(AutoConfig, model_id, what="backbone", hint=hint,
                                     trust_remote_code=session.settings.trust_remote_code)
        except StmbenchError as exc:
            raise StmbenchError(f"unknown backbone {name!r}: {exc}") from None
        except ValueError as exc:  # e.g. a model type this transformers does not know
            raise StmbenchError(f"backbone {name!r}: {exc}") from None
        return info_from_config(name, config, backbone=self.name, source=model_id)

    def load(self, name: str, *, head: str, num_labels: int, task: Any, session: Any,
             load_kwargs: dict[str, Any], seed: int) -> tuple[Any, Any]:
        return load_pretrained(name.removeprefix("hf:"), head=head, task=task, session=session,
                               load_kwargs=load_kwargs)


@hookimpl
def register_backbones(register):
    register(HFBackbone())
