"""Base classes for the five kinds of plugin objects.

Subclass one, give it a ``name``, and hand an instance to the matching ``register`` callback.
Names are open strings: any plugin can add new ones.  Everything heavy (torch, transformers, peft)
is imported inside methods, so listing plugins stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from stmbench.session import Session
    from stmbench.spec import RunSpec
    from stmbench.study import Runner, WorkQueue

#: Model heads a strategy can ask a backbone for.
HEAD_CAUSAL_LM = "causal_lm"
HEAD_SEQUENCE_CLASSIFICATION = "sequence_classification"
HEAD_BASE = "base"  # hidden states only (AutoModel), for strategies that bring their own head
HEADS = (HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION, HEAD_BASE)


def build_options(options_class: type | None, values: dict[str, Any] | None, owner: str) -> dict[str, Any]:
    """Validate ``values`` against an options dataclass and return the full, normalised dict.

    Unknown keys are an error that lists the known ones; the dataclass's ``__post_init__`` validates
    values.  With no options class, any non-empty ``values`` is an error.
    """
    from stmbench.errors import StmbenchError

    values = dict(values or {})
    if options_class is None:
        if values:
            raise StmbenchError(f"{owner} takes no options, got: {', '.join(sorted(values))}")
        return {}
    known = {f.name for f in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise StmbenchError(
            f"unknown option(s) for {owner}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return dataclasses.asdict(options_class(**values))
    except (TypeError, ValueError) as exc:
        raise StmbenchError(f"bad option for {owner}: {exc}") from exc


def options_help(options_class: type | None) -> list[dict[str, Any]]:
    """Describe an options dataclass: name, default and help text of each field."""
    if options_class is None:
        return []
    out = []
    for f in dataclasses.fields(options_class):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        out.append({"name": f.name, "default": default, "help": f.metadata.get("help", "")})
    return out


@dataclass(frozen=True)
class BackboneInfo:
    """What is known about a backbone before any weights are loaded (from its config)."""

    name: str  #: the name the user gave (hub id, path, or a registered name)
    backbone: str  #: the backbone plugin that serves it
    model_type: str  #: ``config.model_type``, e.g. ``llama``, ``qwen2``, ``bert``
    is_decoder: bool  #: a causal language model (can score and generate text)
    is_encoder: bool  #: a bidirectional encoder (BERT-style)
    source: str = ""  #: where it comes from: a hub id, a local path, or ``generated``


@dataclass
class Prediction:
    """A strategy's predictions for the evaluation examples, in their order.

    ``labels`` holds label indices; ``-1`` marks an example with no parsable answer (counted wrong).
    ``extra`` goes into the result's metrics (for example the count of unparsable outputs).
    """

    labels: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


class Plugin:
    """Common fields of the catalogue kinds."""

    kind: ClassVar[str] = ""
    name: str = ""
    description: str = ""
    #: a dataclass whose fields are this object's options (``field(metadata={"help": ...})``)
    options_class: ClassVar[type | None] = None

    def options(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate and complete user-given options with the defaults."""
        return build_options(self.options_class, values, f"{self.kind} {self.name!r}")


class Backbone(Plugin):
    """Loads a tokenizer and a model for a name given to ``--backbones``."""

    kind = "backbone"

    def claims(self, name: str) -> bool:
        """Whether this backbone serves ``name``.  By default: exactly its own name."""
        return name == self.name

    def resolve(self, name: str, session: Session) -> BackboneInfo:
        """Describe ``name`` cheaply (config only) so incompatible runs are rejected up front.

        Raise :class:`stmbench.errors.StmbenchError` with a clear message when it cannot be found.
        """
        raise NotImplementedError

    def load(
        self,
        name: str,
        *,
        head: str,
        num_labels: int,
        task: Task,
        session: Session,
        load_kwargs: dict[str, Any],
        seed: int,
    ) -> tuple[Any, Any]:
        """Return ``(model, tokenizer)`` with the asked ``head`` (one of :data:`HEADS`).

        ``load_kwargs`` come from the adapter (dtype, quantisation) and go to ``from_pretrained``.
        The tokenizer must have a pad token distinct from EOS, set on ``model.config`` too.
        """
        raise NotImplementedError

    def default_training(self, adapter: Adapter, strategy: Strategy) -> dict[str, Any]:
        """Training settings this backbone recommends where the user gave none (e.g. a learning
        rate for a tiny random model).  Empty by default: the adapter's defaults apply."""
        return {}


class Adapter(Plugin):
    """Wraps a model for training and reports what trains."""

    kind = "adapter"
    #: learning rate used when neither the user nor the backbone gives one
    default_learning_rate: ClassVar[float] = 2e-5
    #: False for adapters that cannot train (``none``: used by strategies that do not train)
    trains: ClassVar[bool] = True

    def check(self, info: BackboneInfo, strategy: Strategy, options: dict[str, Any], session: Session) -> str | None:
        """Return why this adapter cannot serve the combination, or ``None`` when it can."""
        return None

    def load_kwargs(self, options: dict[str, Any], session: Session) -> dict[str, Any]:
        """Extra keyword arguments for the backbone's ``from_pretrained`` (e.g. quantisation)."""
        return {}

    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: dict[str, Any]) -> Any:
        """Return the model to train (the same object or a wrapper such as a ``PeftModel``)."""
        raise NotImplementedError


class Strategy(Plugin):
    """Turns a task into training features and predictions."""

    kind = "strategy"
    #: the model head this strategy needs (one of :data:`HEADS`)
    head: ClassVar[str] = HEAD_CAUSAL_LM
    #: False for strategies that only evaluate (zero/few-shot)
    trains: ClassVar[bool] = True
    #: True when the strategy scores or generates text and so needs a causal LM
    needs_decoder: ClassVar[bool] = False
    #: True when the training features carry causal-LM ``labels`` (-100 where no loss) and the loss
    #: is next-token cross-entropy on them: the pipeline then projects only the labelled positions
    #: onto the vocabulary (``logits_to_keep``) and computes that loss itself, with the same value
    lm_loss_on_labels: ClassVar[bool] = False

    def check(self, info: BackboneInfo, adapter: Adapter, task: Task, options: dict[str, Any]) -> str | None:
        """Return why this strategy cannot serve the combination, or ``None`` when it can."""
        if self.needs_decoder and not info.is_decoder:
            return (
                f"strategy {self.name!r} needs a causal language model; {info.name!r} is a "
                f"{info.model_type} encoder (use 'discriminative' for encoders)"
            )
        return None

    def normalize(self, spec: RunSpec, info: BackboneInfo) -> RunSpec:
        """Clear the axes this strategy ignores for this backbone, so equal runs get one id.

        By default the ``shots`` axis is dropped (only in-context strategies use it).
        """
        return spec.replace(shots=None)

    def prepare_model(self, model: Any, *, tokenizer: Any, task: Task, options: dict[str, Any]) -> Any:
        """Adjust the freshly loaded model before the adapter wraps it (a custom head, say)."""
        return model

    def feature_encoder(self, *, task: Task, tokenizer: Any, spec: RunSpec, session: Session) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
        """A batched function (for ``Dataset.map(batched=True)``) from a batch of examples
        (``text_a``, ``text_b``, ``label``, maybe ``rationale``) to model features.

        The pipeline caches its output per task data, split, tokenizer and :meth:`feature_key`.
        """
        raise NotImplementedError

    def feature_key(self, spec: RunSpec, session: Session) -> dict[str, Any]:
        """Everything besides the data, the tokenizer and the strategy's name that the features
        depend on; part of the tokenisation cache key."""
        return {"prompt": spec.prompt, "max_seq_length": spec.training.max_seq_length,
                "options": spec.strategy_options, "version": getattr(self, "features_version", 1)}

    def data_collator(self, tokenizer: Any, spec: RunSpec) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """The collator the Trainer uses for the features of :meth:`feature_encoder`."""
        raise NotImplementedError

    def predict(self, model: Any, *, data: Any, task: Task, tokenizer: Any, spec: RunSpec, session: Session) -> Prediction:
        """Predict a label for every example of ``data`` (the evaluation split)."""
        raise NotImplementedError


class Executor(Plugin):
    """Runs the runs of a study and hands each outcome back to the driver, which stores it.

    The driver's :class:`stmbench.study.WorkQueue` hands out runs one at a time (``take()`` claims
    the next one, ``None`` when none is free now); the :class:`stmbench.study.Runner` runs one
    (``run(spec) -> (result, predictions)``, in this process, or pickled into a worker process);
    ``work.done(spec, result, predictions)`` stores an outcome; ``run.failed(spec, reason)`` makes
    the result of a run whose process died.  Loop until ``work.finished()``, calling ``work.wait()``
    when nothing can be taken while other workers hold the remaining runs.  ``options`` were
    validated against :attr:`options_class`.
    """

    kind = "executor"

    def execute(self, work: WorkQueue, *, run: Runner, options: dict[str, Any]) -> None:
        raise NotImplementedError


# Task lives in stmbench.tasks (it is data-driven); re-exported here so plugins import one module.
from stmbench.tasks import Label, Task  # noqa: E402

KINDS: dict[str, type[Plugin]] = {
    "backbone": Backbone,
    "adapter": Adapter,
    "strategy": Strategy,
    "task": Task,  # type: ignore[dict-item]
    "executor": Executor,
}

__all__ = [
    "Adapter", "Backbone", "BackboneInfo", "Executor", "HEADS", "HEAD_BASE", "HEAD_CAUSAL_LM",
    "HEAD_SEQUENCE_CLASSIFICATION", "KINDS", "Label", "Plugin", "Prediction", "Strategy", "Task",
    "build_options", "options_help",
]
