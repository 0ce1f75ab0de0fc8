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


def bidirectional_mask(config: Any, inputs_embeds: Any, attention_mask: Any, sequence_ids: Any = None) -> Any:
    """A 4D mask that lets every token attend to every non-pad token (of its own sequence, where
    ``sequence_ids`` number the sequences packed into one row)."""
    import torch

    try:
        from transformers.masking_utils import create_bidirectional_mask, packed_sequence_mask_function
    except ImportError:  # transformers < 5: an additive float mask works for eager and sdpa
        keep = attention_mask[:, None, None, :].to(torch.bool)
        keep = keep.expand(-1, 1, attention_mask.shape[1], -1)
        if sequence_ids is not None:
            keep = keep & (sequence_ids[:, None, :, None] == sequence_ids[:, None, None, :])
        mask = torch.zeros(keep.shape, dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        return mask.masked_fill(~keep, torch.finfo(inputs_embeds.dtype).min)
    within = packed_sequence_mask_function(sequence_ids) if sequence_ids is not None else None
    return create_bidirectional_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                      and_mask_function=within, allow_is_bidirectional_skip=False)


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

        def forward(self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None,
                    position_ids: Any = None, **kwargs: Any) -> Any:
            if position_ids is not None and attention_mask is None and not self.per_token:
                return self.forward_packed(input_ids, position_ids, labels, **kwargs)
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

        packs_sequences = True  #: reads a packed row (``position_ids``, no attention mask) itself

        def forward_packed(self, input_ids: Any, position_ids: Any, labels: Any = None, **kwargs: Any) -> Any:
            """Sequences packed into one row (``position_ids`` restart at 0 for each): attention stays
            within each sequence (causal through transformers' packed masks, or bidirectional), and
            each is pooled on its own, as in a padded batch."""
            sequence_ids = (position_ids == 0).cumsum(-1) - 1  # [1, length]: which sequence a token is in
            embeds = self.backbone.get_input_embeddings()(input_ids)
            flash = {k: v for k, v in kwargs.items() if k.startswith(("cu_seq_lens", "max_length_"))}
            if self.unmask:
                mask = bidirectional_mask(self.config, embeds, torch.ones_like(input_ids), sequence_ids)
                hidden = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                       **flash).last_hidden_state[0]
            else:
                hidden = self.backbone(inputs_embeds=embeds, position_ids=position_ids, **flash).last_hidden_state[0]
            seq = sequence_ids[0]
            counts = torch.bincount(seq)  # tokens per sequence
            if self.pooling == "mean":
                sums = torch.zeros(len(counts), hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
                sums.index_add_(0, seq, hidden)
                pooled = sums / counts.to(hidden.dtype)[:, None]
            else:  # each sequence's last token
                pooled = hidden[counts.cumsum(0) - 1]
            logits = self.head(pooled.to(self.head.weight.dtype))
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits.float(), labels)
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
