"""The ``hf`` teacher: any causal LM the backbones load (a hub id, a local folder, a ``.gguf`` file
through the gguf backbone, a registered test model) writes the rationales, on the run's device.

``--teacher "hf[model=path/to/SmolLM2-135M-Instruct.Q4_1.gguf]"``.  The prompt goes through the
tokenizer's chat template where it has one (an instruct model), else as plain text.  Greedy by default
(``temperature=0``); batches are planned by the token budget of prediction batches
(``context.eval_budget``), prompt plus ``max_new_tokens`` per row.  An answer that did not end
before ``max_new_tokens`` is marked truncated (counted ``too_long``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stmbench import (
    HEAD_CAUSAL_LM, hookimpl, pad_batch, sorted_batches, StmbenchError, Teacher, TeacherAnswer, TeacherOptions,
    TeacherRequest
)


@dataclass
class HFTeacherOptions(TeacherOptions):
    model: str = field(default="", metadata={"help": "hub id, local folder or .gguf file of a causal LM"})
    max_new_tokens: int = field(default=128, metadata={"help": "length budget of one rationale, in tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0: greedy; above 0: sampling (seeded)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling (temperature > 0)"})
    chunk: int = field(default=64, metadata={"help": "rows generated (in length-sorted batches) before they are "
                                                     "written to the set: what a stopped generation may lose"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("the hf teacher needs model=HUB_ID_OR_PATH")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError("max_new_tokens must be between 1 and 4096")
        if self.chunk < 1:
            raise ValueError("chunk must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")


def prompt_ids(tokenizer: Any, request: TeacherRequest) -> list[int]:
    """The request's token ids: through the chat template where the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(request.prompt + "\n")["input_ids"])


class HFTeacher(Teacher):
    name = "hf"
    description = "a causal LM the backbones load (hub id, folder, .gguf) writes the rationales, greedy by default"
    options_class = HFTeacherOptions
    runtime_options = ("chunk",)

    def preflight(self, options: Any, context: Any) -> str | None:
        try:
            info = context.resolve_model(options.model)
        except StmbenchError as exc:
            return f"teacher hf cannot find its model: {exc}"
        if not info.is_decoder:
            return f"teacher hf: {options.model!r} is a {info.model_type} encoder, not a causal LM that can write text"
        return None

    def generate(self, requests: list[TeacherRequest], *, task: Any, options: Any,
                 context: Any) -> Iterator[list[TeacherAnswer]]:
        import torch

        model, tokenizer = context.load_model(options.model, head=HEAD_CAUSAL_LM, task=task)
        try:
            model.to(context.device)
            model.eval()
            stops = {t for t in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None))
                     for t in (t if isinstance(t, list) else [t]) if t is not None}
            budget = context.eval_budget(model, None)
            sampling = {"do_sample": True, "temperature": options.temperature} if options.temperature > 0 \
                else {"do_sample": False}
            if options.temperature > 0:  # seeded once: the draws follow the requests' order
                torch.manual_seed(options.seed)
            for start in range(0, len(requests), options.chunk):
                window = requests[start:start + options.chunk]
                encoded = [prompt_ids(tokenizer, r) for r in window]
                answers: list[TeacherAnswer | None] = [None] * len(window)
                for idx in sorted_batches([len(ids) + r.max_new_tokens for ids, r in zip(encoded, window)], budget):
                    ids, mask = pad_batch([encoded[i] for i in idx], tokenizer.pad_token_id, "left")
                    new_max = max(window[i].max_new_tokens for i in idx)
                    with torch.inference_mode():
                        out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                             max_new_tokens=new_max, pad_token_id=tokenizer.pad_token_id,
                                             eos_token_id=sorted(stops) or None, **sampling)
                    for row, i in enumerate(idx):
                        new = out[row, ids.shape[1]:].tolist()
                        ended = next((k for k, t in enumerate(new) if t in stops), None)
                        kept = new[:ended] if ended is not None else new
                        text = tokenizer.decode(kept, skip_special_tokens=True)
                        answers[i] = TeacherAnswer(text=text.strip(), truncated=ended is None and len(new) >= new_max)
                yield [a for a in answers if a is not None]
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@hookimpl
def register_teachers(register):
    register(HFTeacher())
