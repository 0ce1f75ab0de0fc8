"""peft adapters: ``lora`` (and DoRA), ``qlora``, ``ia3``, ``prompt_tuning``, ``prefix_tuning``.

Each has one options dataclass (peft's own field names where they mean the same).  Target modules
default to peft's per-architecture tables; ``--adapter-option lora.target_modules=all-linear``
overrides them.  With a sequence-classification head the peft task type is ``SEQ_CLS``, which puts
the head into ``modules_to_save`` so it trains and is saved; with a strategy's own head (``base``)
the head module is named explicitly.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any

from stmbench import (
    HEAD_BASE, HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION, Adapter,
    BackboneInfo, Combination, head_modules, hookimpl, StmbenchError, transformers_model
)

log = logging.getLogger(__name__)


def _task_type(head: str) -> str | None:
    return {HEAD_CAUSAL_LM: "CAUSAL_LM", HEAD_SEQUENCE_CLASSIFICATION: "SEQ_CLS",
            HEAD_TOKEN_CLASSIFICATION: "TOKEN_CLS"}.get(head)


def _targets(value: Any) -> Any:
    if isinstance(value, str) and value != "all-linear":
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def default_targets(table: str, info: BackboneInfo) -> Any:
    """peft's default target modules for ``info.model_type`` from one of its tables."""
    import peft.utils as pu

    mapping = getattr(pu, table)
    return list(mapping[info.model_type]) if info.model_type in mapping else "all-linear"


@dataclass
class LoraOptions:
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: Any = field(default=None, metadata={
        "help": "module names (comma list) or 'all-linear'; default: peft's table for the architecture"})
    use_dora: bool = field(default=False, metadata={"help": "DoRA: weight-decomposed LoRA"})
    bias: str = field(default="none", metadata={"help": "none, all or lora_only"})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError("r must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_dropout must be in [0, 1)")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError("bias must be none, all or lora_only")
        self.target_modules = _targets(self.target_modules)


class PeftAdapter(Adapter):
    """Common wrapping: build the peft config, call ``get_peft_model``."""

    @abc.abstractmethod
    def peft_config(self, model: Any, head: str, info: BackboneInfo, options: Any) -> Any:
        """The peft config of this method for ``model`` with ``head``."""

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        import warnings

        from peft import get_peft_model

        config = self.peft_config(model, head, info, options)
        if head == HEAD_BASE:
            config.modules_to_save = head_modules(model) or None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            return get_peft_model(model, config)


class LoraAdapter(PeftAdapter):
    name = "lora"
    description = "LoRA low-rank adapters (option use_dora=true for DoRA)"
    options_class = LoraOptions
    default_learning_rate = 1e-4

    def lora_config(self, head: str, info: BackboneInfo, options: Any) -> Any:
        from peft import LoraConfig

        targets = options.target_modules or default_targets(
            "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", info)
        return LoraConfig(r=options.r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                          target_modules=targets, use_dora=options.use_dora, bias=options.bias,
                          task_type=_task_type(head))

    def peft_config(self, model: Any, head: str, info: BackboneInfo, options: Any) -> Any:
        return self.lora_config(head, info, options)


@dataclass
class QLoraOptions(LoraOptions):
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "nf4 or fp4"})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={"help": "quantise the quantisation constants"})
    bnb_4bit_compute_dtype: str = field(default="bfloat16", metadata={"help": "bfloat16, float16 or float32"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ValueError("bnb_4bit_quant_type must be nf4 or fp4")
        if self.bnb_4bit_compute_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError("bnb_4bit_compute_dtype must be bfloat16, float16 or float32")


class QLoraAdapter(LoraAdapter):
    name = "qlora"
    description = "QLoRA: LoRA on a 4-bit (bitsandbytes) quantised backbone; needs a CUDA GPU"
    options_class = QLoraOptions

    def check(self, combo: Combination) -> str | None:
        import importlib.util

        import torch

        if not combo.info.pretrained:
            return f"qlora quantises pretrained checkpoints; {combo.info.name!r} is a generated test model"
        if not torch.cuda.is_available() or not combo.context.device.startswith("cuda"):
            return "qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none"
        if importlib.util.find_spec("bitsandbytes") is None:
            return "qlora needs bitsandbytes: pip install 'stmbench[qlora]'"
        return None

    def load_kwargs(self, options: Any, context: Any) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        dtype = getattr(torch, options.bnb_4bit_compute_dtype)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=options.bnb_4bit_quant_type,
                                   bnb_4bit_use_double_quant=options.bnb_4bit_use_double_quant,
                                   bnb_4bit_compute_dtype=dtype)
        return {"quantization_config": quant, "dtype": dtype}

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(transformers_model(model), use_gradient_checkpointing=False)
        return super().wrap(model, head=head, info=info, options=options)


@dataclass
class IA3Options:
    target_modules: Any = field(default=None, metadata={"help": "modules whose activations are rescaled; default: peft's table"})
    feedforward_modules: Any = field(default=None, metadata={"help": "the subset that are feed-forward layers; default: peft's table"})

    def __post_init__(self) -> None:
        self.target_modules = _targets(self.target_modules)
        self.feedforward_modules = _targets(self.feedforward_modules)


class IA3Adapter(PeftAdapter):
    name = "ia3"
    description = "IA3: learned rescaling of keys, values and feed-forward activations"
    options_class = IA3Options
    default_learning_rate = 3e-3

    def peft_config(self, model: Any, head: str, info: BackboneInfo, options: Any) -> Any:
        from peft import IA3Config

        targets = options.target_modules or default_targets("TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING", info)
        ff = options.feedforward_modules or default_targets("TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING", info)
        if targets == "all-linear" or ff == "all-linear":
            raise StmbenchError(f"ia3: peft has no default modules for {info.model_type!r}; "
                                "set ia3.target_modules and ia3.feedforward_modules")
        return IA3Config(target_modules=targets, feedforward_modules=ff, task_type=_task_type(head))


@dataclass
class VirtualTokenOptions:
    num_virtual_tokens: int = field(default=20, metadata={"help": "number of virtual tokens"})

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError("num_virtual_tokens must be at least 1")


@dataclass
class PromptTuningOptions(VirtualTokenOptions):
    init_text: str = field(default="", metadata={"help": "initialise the soft prompt from this text (default: random)"})


class PromptLearningAdapter(PeftAdapter):
    """Soft-prompt methods: they need peft's own model class for the head (not a custom head)."""

    def check(self, combo: Combination) -> str | None:
        strategy = combo.strategy
        if strategy.head_for(combo.task) == HEAD_BASE:
            return (f"{self.name} prepends virtual tokens inside peft's CAUSAL_LM / SEQ_CLS model classes; "
                    f"strategy {strategy.name!r} brings its own head, which peft cannot wrap this way")
        return None


class PromptTuningAdapter(PromptLearningAdapter):
    name = "prompt_tuning"
    description = "prompt tuning: a trained soft prompt, the backbone frozen"
    options_class = PromptTuningOptions
    default_learning_rate = 3e-2

    def peft_config(self, model: Any, head: str, info: BackboneInfo, options: Any) -> Any:
        from peft import PromptTuningConfig

        kwargs: dict[str, Any] = {}
        if options.init_text:
            kwargs = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": options.init_text,
                      "tokenizer_name_or_path": getattr(model.config, "_name_or_path", None)}
        return PromptTuningConfig(task_type=_task_type(head), num_virtual_tokens=options.num_virtual_tokens,
                                  **kwargs)


@dataclass
class PrefixTuningOptions(VirtualTokenOptions):
    prefix_projection: bool = field(default=False, metadata={"help": "reparameterise the prefix with an MLP"})
    encoder_hidden_size: int = field(default=256, metadata={"help": "MLP width when prefix_projection"})


class PrefixTuningAdapter(PromptLearningAdapter):
    name = "prefix_tuning"
    description = "prefix tuning: trained key/value prefixes in every layer, the backbone frozen"
    options_class = PrefixTuningOptions
    default_learning_rate = 1e-2

    def check(self, combo: Combination) -> str | None:
        strategy = combo.strategy
        if strategy.head_for(combo.task) in (HEAD_SEQUENCE_CLASSIFICATION, HEAD_TOKEN_CLASSIFICATION):
            return ("prefix_tuning passes its prefixes as past key values, which transformers' "
                    "sequence-classification models do not accept (peft: 'Model does not support past key "
                    f"values'); use prompt_tuning or lora with {strategy.name!r}")
        return super().check(combo)

    def peft_config(self, model: Any, head: str, info: BackboneInfo, options: Any) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=_task_type(head), num_virtual_tokens=options.num_virtual_tokens,
                                  prefix_projection=options.prefix_projection,
                                  encoder_hidden_size=options.encoder_hidden_size)


@hookimpl
def register_adapters(register):
    for adapter in (LoraAdapter(), QLoraAdapter(), IA3Adapter(), PromptTuningAdapter(), PrefixTuningAdapter()):
        register(adapter)
