"""``label_supervised``: LS-LLaMA (Li et al., 2023, arXiv 2310.01208).

The backbone's final hidden states are pooled (the last non-pad token, or the mean over tokens), a
linear head maps them to the labels, and the loss is cross-entropy over labels.  With
``unmask=true`` the causal mask is removed in every decoder layer, so each token attends to the whole
input (LS-unLLaMA): the backbone gets a bidirectional 4D attention mask (which transformers passes
through unchanged) and every attention module's ``is_causal`` is switched off.

LS-LLaMA's recipe: LoRA r=12, alpha=32, lr 1e-4, batch 8, 20 epochs, max length 64 (see
``examples/ls-llama.yaml``).  On tasks with a tag per token (NER) the head reads every position
instead of a pooled one: LS-LLaMA's token-level setting, where removing the causal mask lets each
token see the context to its right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stmbench import HEAD_BASE, hookimpl
from stmbench_plugins.strategies.discriminative import DiscriminativeStrategy


@dataclass
class LabelSupervisedOptions:
    pooling: str = field(default="last", metadata={"help": "last (the last non-pad token) or mean (over tokens)"})
    unmask: bool = field(default=False, metadata={"help": "remove the causal mask in every decoder layer"})

    def __post_init__(self) -> None:
        if self.pooling not in ("last", "mean"):
            raise ValueError("pooling must be 'last' or 'mean'")


def bidirectional_mask(config: Any, inputs_embeds: Any, attention_mask: Any) -> Any:
    """A 4D mask that lets every token attend to every non-pad token."""
    import torch

    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers < 5: an additive float mask works for eager and sdpa
        keep = attention_mask[:, None, None, :].to(torch.bool)
        keep = keep.expand(-1, 1, attention_mask.shape[1], -1)
        mask = torch.zeros(keep.shape, dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        return mask.masked_fill(~keep, torch.finfo(inputs_embeds.dtype).min)
    return create_bidirectional_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                      allow_is_bidirectional_skip=False)


def _module_class() -> type:
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

    class LabelSupervisedModel(torch.nn.Module):
        """A transformers base model with a pooled linear head (and optionally no causal mask)."""

        def __init__(self, backbone: Any, num_labels: int, pooling: str, unmask: bool, per_token: bool = False):
            super().__init__()
            self.per_token = per_token  # a label per position (token tasks) instead of a pooled one
            self.backbone = backbone
            self.config = backbone.config
            self.pooling = pooling
            self.unmask = unmask
            self.num_labels = num_labels
            self.head = torch.nn.Linear(backbone.config.hidden_size, num_labels)
            if unmask:
                for module in backbone.modules():
                    if hasattr(module, "is_causal"):
                        module.is_causal = False

        def encode(self, input_ids: Any, attention_mask: Any, **extra: Any) -> Any:
            """The backbone's final hidden states, with the causal mask removed when ``unmask``."""
            embeds = self.backbone.get_input_embeddings()(input_ids)
            mask = bidirectional_mask(self.config, embeds, attention_mask) if self.unmask else attention_mask
            return self.backbone(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state

        def forward(self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, **kwargs: Any) -> Any:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            extra = {k: v for k, v in kwargs.items() if k == "token_type_ids"}
            hidden = self.encode(input_ids, attention_mask, **extra)
            if self.per_token:
                logits = self.head(hidden.to(self.head.weight.dtype))
                loss = None
                if labels is not None:
                    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                                             ignore_index=-100)
                return TokenClassifierOutput(loss=loss, logits=logits)
            weights = attention_mask.to(hidden.dtype)
            if self.pooling == "mean":
                pooled = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
            else:  # the rightmost non-pad position (works with left or right padding)
                positions = torch.arange(attention_mask.shape[1], device=hidden.device)
                last = (attention_mask * positions).argmax(-1)
                pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            logits = self.head(pooled.to(self.head.weight.dtype))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

        def trainable_head_modules(self) -> list[str]:
            """The head this strategy brings (every adapter trains and saves it)."""
            return ["head"]

        def transformers_model(self) -> Any:
            """The transformers model under the head (what quantisation prepares)."""
            return self.backbone

        def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
            self.backbone.gradient_checkpointing_enable(**kwargs)

    return LabelSupervisedModel


class LabelSupervisedStrategy(DiscriminativeStrategy):
    name = "label_supervised"
    description = "LS-LLaMA: pooled latent representation -> linear head; option unmask removes the causal mask"
    head = HEAD_BASE
    options_class = LabelSupervisedOptions

    def head_for(self, task: Any) -> str:
        return HEAD_BASE  # its own head, pooled or per token

    def check(self, combo: Any) -> str | None:
        if combo.strategy_options.unmask and not combo.info.is_decoder:
            return f"unmask removes a causal mask; {combo.info.name!r} is an encoder that has none"
        return super().check(combo)

    def prepare_model(self, model: Any, *, tokenizer: Any, task: Any, options: LabelSupervisedOptions) -> Any:
        return _module_class()(model, len(task.labels), options.pooling, options.unmask, per_token=task.is_tokens)


@hookimpl
def register_strategies(register):
    register(LabelSupervisedStrategy())
