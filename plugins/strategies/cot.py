"""``cot``: generative fine-tuning whose target is a short rationale followed by the answer.

Target: ``<rationale><answer marker><verbalizer word><eos>`` after the prompt (whose own trailing
answer marker is dropped, so the model writes the rationale first).  Rationales come from the run's
teacher (``--teacher``, ``--rationales DIR``: the pipeline hands this strategy rows whose
``rationale`` column holds the teacher's, checked and filtered), else from the task data's
``rationale`` column (the ``sample`` generator writes one), else from a plugin's
``generate_rationales`` hook, a hook this plugin declares itself
(:class:`CotHooks`, added through ``register_hookspecs`` as any plugin adds its own hooks).  Prediction generates greedily and parses the
word after the last answer marker; an output with no parsable answer counts as wrong and is counted
in the result (``metrics.unparsable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stmbench import (
    HEAD_CAUSAL_LM, hookimpl, hookspec, model_device, pad_batch, PaddingMeter, parse_answer, Prediction,
    sorted_batches, StmbenchError, Strategy
)
from stmbench_plugins.strategies._common import rows
from stmbench_plugins.strategies.generative import lm_features, seq2seq_collator


class CotHooks:
    """The hook ``cot`` adds to the contract."""

    @hookspec(firstresult=True)
    def generate_rationales(self, task: Any, examples: list[dict[str, Any]], run: Any) -> list[str] | None:
        """Return one rationale string per example for chain-of-thought training, or ``None``.

        Called by the ``cot`` strategy when the task's data has no ``rationale`` column.  The first
        plugin that returns a list wins.  ``examples`` are dicts with ``text_a``, ``text_b`` and
        ``label`` (the label index).  A teacher-model plugin is the typical implementation.
        """


@hookimpl
def register_hookspecs(plugin_manager: Any) -> None:
    plugin_manager.add_hookspecs(CotHooks)


@dataclass
class CotOptions:
    max_new_tokens: int = field(default=64, metadata={"help": "generation budget for rationale and answer"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


def cot_prompt(task: Any, prompt: str, example: dict[str, Any]) -> str:
    text = task.render(prompt, example)
    return text[: -len(task.answer_marker)] if text.endswith(task.answer_marker) else text


class CotStrategy(Strategy):
    name = "cot"
    description = "generative with a rationale before the answer; predicts by generating and parsing"
    head = HEAD_CAUSAL_LM
    needs_decoder = True
    lm_loss_on_labels = True
    uses_rationales = True
    options_class = CotOptions

    def rationales(self, batch: list[dict[str, Any]], *, task: Any, spec: Any, context: Any) -> list[str]:
        if all(ex.get("rationale") for ex in batch) or (
                spec.teacher is not None and all(isinstance(ex.get("rationale"), str) for ex in batch)):
            return [ex["rationale"] for ex in batch]  # a teacher's (kept with keep=all even when empty)
        given = context.hook.generate_rationales(task=task, examples=batch, run=spec)
        if given is None:
            raise StmbenchError(
                f"cot: task {task.name!r} has no rationale column and no plugin implements generate_rationales"
            )
        if len(given) != len(batch):
            raise StmbenchError(f"generate_rationales returned {len(given)} rationales for {len(batch)} examples")
        return list(given)

    def feature_key(self, spec: Any, context: Any) -> dict[str, Any]:
        # rationales may come from plugins: which ones are loaded is part of what the features depend on
        impls = context.hook.generate_rationales.get_hookimpls()
        return {**super().feature_key(spec, context), "rationale_plugins": sorted(i.plugin_name for i in impls)}

    def feature_encoder(self, *, task: Any, tokenizer: Any, spec: Any, context: Any) -> Any:
        words = task.label_words
        eos = tokenizer.eos_token or ""

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            examples = [dict(zip(batch, values)) for values in zip(*batch.values())]
            reasons = self.rationales(examples, task=task, spec=spec, context=context)
            prompts = [cot_prompt(task, spec.prompt, ex) for ex in examples]
            targets = [f"{r}{task.answer_marker}{words[ex['label']]}{eos}" for r, ex in zip(reasons, examples)]
            return lm_features(tokenizer, prompts, targets, spec.training.max_seq_length)

        return encode

    def data_collator(self, tokenizer: Any, spec: Any) -> Any:
        return seq2seq_collator(tokenizer)

    def predict(self, model: Any, *, data: Any, task: Any, tokenizer: Any, spec: Any, context: Any) -> Prediction:
        import torch

        device = model_device(model)
        max_new = self.typed_options(spec.strategy_options).max_new_tokens
        room = max(1, spec.training.max_seq_length - max_new)
        prompts = [cot_prompt(task, spec.prompt, ex) for ex in rows(data)]
        encoded = [ids[-room:] for ids in tokenizer(prompts)["input_ids"]]
        labels: list[int] = [-1] * len(encoded)
        samples: list[str] = [""] * len(encoded)
        meter = PaddingMeter()  # the prompts; generated tokens are not counted
        model.eval()
        with torch.inference_mode():
            budget = context.eval_budget(model, spec)
            for idx in sorted_batches([len(ids) + max_new for ids in encoded], budget):
                ids, mask = pad_batch([encoded[i] for i in idx], tokenizer.pad_token_id, "left")
                meter.add_mask(mask)
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                     max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                new = out[:, ids.shape[1]:]
                for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    samples[i] = text
                    labels[i] = parse_answer(text, task)
        unparsable = sum(1 for x in labels if x < 0)
        return Prediction(labels, metrics={"unparsable": unparsable, "unparsable_rate": unparsable / max(1, len(labels))},
                          padding=meter.report(), info={"examples": samples[:5]})


@hookimpl
def register_strategies(register):
    register(CotStrategy())
