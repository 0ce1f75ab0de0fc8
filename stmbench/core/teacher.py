"""Teachers: the plugin kind that writes chain-of-thought rationales (hook ``register_teachers``).

A teacher turns (example, gold label) into a short rationale that ends in the gold answer: the
``cot`` strategy trains on it.  The core builds each request from the task's teacher prompt (data:
the ``teacher:`` section of the task YAML, or :data:`DEFAULT_TEACHER_PROMPT`), hands the teacher a
list of :class:`TeacherRequest` and stores what it yields in a rationale set
(:mod:`stmbench.run.rationales`), checked with :func:`classify`.  Built-in teachers: ``hf`` (a causal
LM the backbones load) and ``openai`` (an OpenAI-compatible server), and ``folder`` (rationales a
user brings).
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from stmbench.core.types import Plugin

if TYPE_CHECKING:  # pragma: no cover
    from stmbench.core.context import Context
    from stmbench.tasks.task import Task

#: what a rationale is counted as: only ``consistent`` ones train under ``keep=consistent``
STATUSES = ("consistent", "contradicting", "no_answer", "empty", "too_long")
KEEP = ("consistent", "all")

#: the teacher prompt of a task whose YAML has no ``teacher:`` section (``{prompt}`` is the task's own
#: ``complex`` prompt, else its first, rendered for the example and followed by the answer word)
DEFAULT_TEACHER_PROMPT: dict[str, Any] = {
    "system": "You are a careful annotator. You are shown a labelled example and its correct answer. "
              "Explain in one or two short sentences why that answer is correct, then repeat the answer.",
    "prompt": "{prompt}{word}\n\nThe correct answer is \u201c{word}\u201d ({label}). Explain briefly why, "
              "and end with: {marker}{word}",
    "examples": [],
}


@dataclass
class TeacherOptions:
    """The option every built-in teacher has (subclass it for a teacher's own options): ``keep``."""

    keep: str = field(default="consistent", metadata={"help": "consistent: train only on rationales whose answer "
                                                              "is the gold label; all: on every one"})

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(map(repr, KEEP))}")


@dataclass(frozen=True)
class TeacherRequest:
    """One example for a teacher: the chat ``messages`` (a system turn, few-shot user/assistant pairs,
    the example's user turn), the ``example`` itself and the generation budget."""

    messages: tuple[dict[str, str], ...]
    example: dict[str, Any]  #: ``text_a``, ``text_b``, ``label`` (the gold label's index)
    task: str
    split: str
    max_new_tokens: int

    @property
    def prompt(self) -> str:
        """The messages as one plain text, for a model without a chat template."""
        return "\n\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class TeacherAnswer:
    """What a teacher wrote for one request; ``truncated``: it stopped at its length budget."""

    text: str
    truncated: bool = False


class Teacher(Plugin):
    """Writes rationales.  Subclass, give it a ``name`` and an ``options_class``, implement
    :meth:`generate`, and ``register`` an instance in ``register_teachers``."""

    kind = "teacher"
    #: option names that change nothing in what is generated or trained on (concurrency, timeouts, the
    #: API-key variable's name): part of neither the run id nor the rationale set's key
    runtime_options: ClassVar[tuple[str, ...]] = ()

    def preflight(self, options: Any, context: Context) -> str | None:
        """Why this teacher cannot work as configured (a missing API-key variable, an unreachable
        endpoint, an unknown model), in one line; ``None`` when it can.  Called once per grid before
        anything trains."""
        return None

    @abc.abstractmethod
    def generate(self, requests: list[TeacherRequest], *, task: Task, options: Any,
                 context: Context) -> Iterator[list[TeacherAnswer]]:
        """Yield answers for ``requests`` in their order, in chunks as they are done (the core writes
        each chunk to the rationale set before asking for the next, so a stopped generation resumes
        after the last chunk).  ``options`` is an instance of :attr:`options_class`."""

    def display(self, options: dict[str, Any]) -> str:
        """A short name for tables: ``hf[SmolLM2-135M-Instruct.Q4_1.gguf]``."""
        from stmbench.spec.run import teacher_label

        return teacher_label(self.name, options)

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(identity, runtime)``: the options that are part of a run's id, and the
        :attr:`runtime_options` (stored beside them, never hashed)."""
        return ({k: v for k, v in options.items() if k not in self.runtime_options},
                {k: v for k, v in options.items() if k in self.runtime_options})

    def set_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options that decide what is generated (the rationale set's key): all but ``keep`` (which
        rows train) and the :attr:`runtime_options`."""
        return {k: v for k, v in sorted(options.items()) if k not in self.runtime_options and k != "keep"}


@dataclass(frozen=True)
class TeacherPrompt:
    """A task's teacher prompt: a system turn, a user template, few-shot examples of good rationales."""

    system: str
    prompt: str
    examples: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, task: Task) -> TeacherPrompt:
        raw = getattr(task, "teacher", None) or DEFAULT_TEACHER_PROMPT
        return cls(system=raw.get("system", ""), prompt=raw["prompt"],
                   examples=tuple(raw.get("examples") or ()))

    @property
    def sha256(self) -> str:
        blob = json.dumps({"system": self.system, "prompt": self.prompt, "examples": list(self.examples)},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def _user(self, task: Task, example: dict[str, Any], label: int) -> str:
        lab = task.labels[label]
        base = "complex" if "complex" in task.prompts else next(iter(task.prompts))
        return self.prompt.format(text_a=example["text_a"], text_b=example.get("text_b") or "", word=lab.word,
                                  label=lab.name, marker=task.answer_marker,
                                  prompt=task.render(base, example))

    def messages(self, task: Task, example: dict[str, Any]) -> tuple[dict[str, str], ...]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        values = [lab.value for lab in task.labels]
        for shot in self.examples:
            out.append({"role": "user", "content": self._user(task, shot, values.index(str(shot["label"])))})
            out.append({"role": "assistant", "content": shot["rationale"]})
        out.append({"role": "user", "content": self._user(task, example, int(example["label"]))})
        return tuple(out)


def _word_after(text: str, at: int, task: Any) -> tuple[int, int]:
    """The label whose word follows the answer marker found at ``at`` (the longest word that matches,
    spaces skipped) and where that word ends; ``(-1, -1)`` when no label word follows."""
    rest = text[at + len(task.answer_marker):]
    stripped = rest.lstrip()
    matches = [i for i, w in enumerate(task.label_words) if stripped.startswith(w)]
    if not matches:
        return -1, -1
    label = max(matches, key=lambda i: len(task.label_words[i]))
    return label, len(text) - len(stripped) + len(task.label_words[label])


def parse_answer(text: str, task: Any) -> int:
    """The label whose word follows the last answer marker in ``text``, or -1."""
    at = text.rfind(task.answer_marker)
    return -1 if at < 0 else _word_after(text, at, task)[0]


def end_at_answer(answer: TeacherAnswer, task: Any) -> TeacherAnswer:
    """The answer cut right after its first final answer (the answer marker and a label word): a
    rationale ends in its answer, and what a model writes after it (another question, a second
    answer) is dropped; an answer cut this way did not run out of its length budget."""
    text, at = answer.text, 0
    while (at := text.find(task.answer_marker, at)) >= 0:
        label, end = _word_after(text, at, task)
        if label >= 0:
            return TeacherAnswer(text[:end], truncated=False)
        at += len(task.answer_marker)
    return answer


def split_rationale(text: str, task: Any) -> str:
    """The reasoning of a teacher's text: what comes before its last answer marker (all of it when it
    has none), stripped; the ``cot`` target appends the gold answer to it."""
    at = text.rfind(task.answer_marker)
    return (text[:at] if at >= 0 else text).strip()


def classify(answer: TeacherAnswer, gold: int, task: Any) -> str:
    """One of :data:`STATUSES` (of an answer :func:`end_at_answer` has cut): ``empty`` (no reasoning), ``too_long`` (stopped at the length budget),
    ``no_answer`` (no final answer after the answer marker), ``contradicting`` (its final answer is
    not the gold label), else ``consistent``."""
    if not split_rationale(answer.text, task):
        return "empty"
    if answer.truncated:
        return "too_long"
    said = parse_answer(answer.text, task)
    if said < 0:
        return "no_answer"
    return "consistent" if said == gold else "contradicting"
