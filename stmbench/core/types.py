"""Base classes for the five kinds of plugin objects.

Subclass one, give it a ``name``, implement its abstract methods, and hand an instance to the
matching ``register`` callback.  Names are open strings: any plugin can add new ones, and no part of
stmbench tests a plugin's name: what a plugin can do is said by the attributes declared here
(``Adapter.trains_all``, ``Strategy.trains``, ``BackboneInfo.pretrained``, ...).  Plugins reach the
running stmbench only through the :class:`stmbench.core.context.Context` they are handed.  Everything
heavy (torch, transformers, peft) is imported inside methods, so listing plugins stays fast.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from stmbench.core.context import Context
    from stmbench.spec.run import RunSpec
    from stmbench.tasks.task import Task

#: Model heads a strategy can ask a backbone for.
HEAD_CAUSAL_LM = "causal_lm"
HEAD_SEQUENCE_CLASSIFICATION = "sequence_classification"
HEAD_BASE = "base"  # hidden states only (AutoModel), for strategies that bring their own head
HEAD_TOKEN_CLASSIFICATION = "token_classification"  # a label per token (AutoModelForTokenClassification)
HEADS = (HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION, HEAD_BASE, HEAD_TOKEN_CLASSIFICATION)


def build_options(options_class: type | None, values: dict[str, Any] | None, owner: str) -> dict[str, Any]:
    """Validate ``values`` against an options dataclass and return the full, normalised dict.

    Unknown keys are an error that lists the known ones; the dataclass's ``__post_init__`` validates
    values.  With no options class, any non-empty ``values`` is an error.
    """
    from stmbench.common.errors import StmbenchError

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
    #: a real pretrained checkpoint; ``False`` for generated test models with random weights (nothing
    #: to quantise, and their scores say nothing about a model)
    pretrained: bool = True
    #: anything else a backbone knows about where the weights came from (a GGUF backbone: the file,
    #: its SHA-256, its quantisation type, ``dequantized``); stored in each result's ``backbone_info``
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """A strategy's predictions for the evaluation examples, in their order.

    The pipeline scores ``labels`` against the gold labels and stores the rest in the run's result.
    """

    #: one label index per example; ``-1`` marks an example with no parsable answer (counted wrong)
    labels: list[int]
    #: extra numbers merged into the result's ``metrics`` (e.g. ``unparsable``); never ``accuracy``
    metrics: dict[str, float] = field(default_factory=dict)
    #: real against processed tokens of the prediction batches (:meth:`stmbench.core.modeling.PaddingMeter.report`),
    #: stored as the result's ``padding.predict``
    padding: dict[str, Any] | None = None
    #: anything else worth keeping (scoring mode, sample outputs), stored as ``prediction_info``
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Combination:
    """One planned run as ``check`` sees it, before anything loads: the objects of every axis, their
    validated options and the (normalised) run spec."""

    info: BackboneInfo
    backbone: Backbone
    task: Task
    strategy: Strategy
    adapter: Adapter
    strategy_options: Any  #: an instance of the strategy's ``options_class`` (``None`` without one)
    adapter_options: Any  #: an instance of the adapter's ``options_class`` (``None`` without one)
    spec: RunSpec
    context: Context


class Plugin(abc.ABC):
    """Common fields of the catalogue kinds.

    Methods marked abstract must be implemented; a class that misses one cannot be instantiated.
    """

    kind: ClassVar[str] = ""
    #: the name users give on the command line; registering a name twice is an error
    name: str = ""
    #: one line for ``stmbench plugins``
    description: str = ""
    #: a dataclass whose fields are this object's options (``field(metadata={"help": ...})``)
    options_class: ClassVar[type | None] = None

    def options(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate and complete user-given options with the defaults: the plain mapping a
        :class:`~stmbench.spec.run.RunSpec` stores (and hashes)."""
        return build_options(self.options_class, values, f"{self.kind} {self.name!r}")

    def typed_options(self, values: dict[str, Any] | None = None) -> Any:
        """The options as an instance of :attr:`options_class` (what the hooks that take ``options``
        receive: ``options.r``, not ``options["r"]``); ``None`` for an object without options."""
        normalised = self.options(values)
        return None if self.options_class is None else self.options_class(**normalised)

    def check(self, combo: Combination) -> str | None:
        """Return why this object cannot serve ``combo``, or ``None`` when it can.

        Called by the planner for the backbone, the adapter and the strategy of every combination
        before anything loads; a reason rejects that run (it is listed) while the grid goes on."""
        return None

    def contract_errors(self) -> list[str]:
        """What this object misses of the contract beyond its abstract methods (the catalogue refuses
        it with these reasons)."""
        return []

    #: the declared attributes ``stmbench plugins NAME`` shows (each kind lists its own)
    capability_names: ClassVar[tuple[str, ...]] = ()

    def capabilities(self) -> dict[str, Any]:
        """The declared attributes of this object and their values."""
        return {name: getattr(self, name) for name in self.capability_names}


class Backbone(Plugin):
    """Loads a tokenizer and a model for a name given to ``--backbones``."""

    kind = "backbone"
    capability_names = ("catch_all",)
    #: serves every name that no other backbone claims (the built-in ``hf``: hub ids and folders)
    catch_all: ClassVar[bool] = False

    def claims(self, name: str) -> bool:
        """Whether this backbone serves ``name``.  By default: exactly its own name."""
        return name == self.name

    @abc.abstractmethod
    def resolve(self, name: str, context: Context) -> BackboneInfo:
        """Describe ``name`` cheaply (config only) so incompatible runs are rejected up front.

        Raise :class:`stmbench.common.errors.StmbenchError` with a clear message when it cannot be found.
        """

    @abc.abstractmethod
    def load(self, name: str, *, head: str, task: Task, context: Context,
             load_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Return ``(model, tokenizer)`` with the asked ``head`` (one of :data:`HEADS`).

        With ``sequence_classification`` the head has ``len(task.labels)`` outputs.  ``load_kwargs``
        come from the adapter (dtype, quantisation) and go to ``from_pretrained``.  The tokenizer must
        have a pad token distinct from EOS, set on ``model.config`` too.  The pipeline seeds the run
        before and after loading, so a fresh head is initialised the same way every time.
        """

    def display_name(self, name: str) -> str:
        """The name people read for ``name`` on leaderboards, in figure names and CLI lines (the full
        name stays in each result's spec).  By default a hub id or registered name as given, and a
        local path's last component (``models/my-model`` -> ``my-model``); ``--backbone-name``
        overrides it."""
        import os

        if os.sep in name or (os.altsep and os.altsep in name):
            if os.path.exists(os.path.expanduser(name)):
                return os.path.basename(os.path.normpath(name)) or name
        return name

    def empty_model(self, name: str, *, head: str, task: Task, context: Context) -> tuple[Any, Any]:
        """``(model, tokenizer or None)``: the model with the asked ``head`` built without weights
        (on PyTorch's ``meta`` device, from its config), for counting its parameters before a run
        (``stmbench run --dry-run``'s bill).  Raise ``NotImplementedError`` (the default) where the
        backbone cannot; the bill then loads the model with :meth:`load`."""
        raise NotImplementedError

    def default_training(self, adapter: Adapter, strategy: Strategy) -> dict[str, Any]:
        """Training settings this backbone recommends where the user gave none (e.g. a learning
        rate for a tiny random model).  Empty by default: the adapter's defaults apply."""
        return {}


class Adapter(Plugin):
    """Wraps a model for training and reports what trains."""

    kind = "adapter"
    capability_names = ("default_learning_rate", "trains", "trains_all")
    #: learning rate used when neither the user nor the backbone gives one
    default_learning_rate: ClassVar[float] = 2e-5
    #: ``False`` for an adapter that trains nothing; the planner gives strategies that do not train
    #: (``Strategy.trains = False``) such an adapter (the built-in ``none``) and no other
    trains: ClassVar[bool] = True
    #: every parameter of the backbone trains (full fine-tuning), so settings tuned for parameter-
    #: efficient methods (a large learning rate) do not fit it
    trains_all: ClassVar[bool] = False

    def load_kwargs(self, options: Any, context: Context) -> dict[str, Any]:
        """Extra keyword arguments for the backbone's ``from_pretrained`` (e.g. quantisation)."""
        return {}

    @abc.abstractmethod
    def wrap(self, model: Any, *, head: str, info: BackboneInfo, options: Any) -> Any:
        """Return the model to train (the same object or a wrapper such as a ``PeftModel``).
        ``options`` is an instance of :attr:`options_class` (``None`` without one).

        A model that a strategy wrapped in its own module (``head`` is ``base``) names its head
        modules with ``trainable_head_modules()`` and its transformers model with
        ``transformers_model()``: :func:`stmbench.core.modeling.head_modules` and
        :func:`stmbench.core.modeling.transformers_model` read them for any model."""


class Strategy(Plugin):
    """Turns a task into training features and predictions."""

    kind = "strategy"
    capability_names = ("head", "trains", "needs_decoder", "lm_loss_on_labels", "features_version", "task_kinds",
                        "uses_rationales")
    #: the model head this strategy needs (one of :data:`HEADS`)
    head: ClassVar[str] = HEAD_CAUSAL_LM
    #: ``False`` for strategies that only evaluate (zero/few-shot): the planner gives them the
    #: adapter that trains nothing and train size 0, and they need not implement
    #: :meth:`feature_encoder` and :meth:`data_collator`
    trains: ClassVar[bool] = True
    #: True when the strategy scores or generates text and so needs a causal LM
    needs_decoder: ClassVar[bool] = False
    #: True when the training features carry causal-LM ``labels`` (-100 where no loss) and the loss
    #: is next-token cross-entropy on them: the pipeline then projects only the labelled positions
    #: onto the vocabulary (``logits_to_keep``) and computes that loss itself, with the same value
    lm_loss_on_labels: ClassVar[bool] = False
    #: part of the tokenisation cache key: bump it when :meth:`feature_encoder`'s output changes
    features_version: ClassVar[int] = 1
    #: the task kinds (``Task.task_kind``) this strategy serves; ``tokens`` tasks (a tag per token)
    #: need a strategy that declares them
    task_kinds: ClassVar[tuple[str, ...]] = ("pair", "nli", "single")
    #: True when the training targets hold a rationale per example (``cot``): the planner then gives
    #: the run the grid's teacher (``RunSpec.teacher``) and rejects it where the task has no source of
    #: rationales; the pipeline hands :meth:`feature_encoder` rows with a ``rationale`` column
    uses_rationales: ClassVar[bool] = False

    def head_for(self, task: Task) -> str:
        """The model head this strategy needs for ``task`` (:attr:`head` unless the task's kind asks
        for another, e.g. :data:`HEAD_TOKEN_CLASSIFICATION`)."""
        return self.head

    def check(self, combo: Combination) -> str | None:
        """By default: a strategy rejects task kinds it does not declare in :attr:`task_kinds`, and
        one that ``needs_decoder`` rejects encoders."""
        info = combo.info
        if combo.task.task_kind not in self.task_kinds:
            return (f"strategy {self.name!r} does not do {combo.task.task_kind} tasks ({combo.task.name!r}); it "
                    f"serves {', '.join(self.task_kinds)}")
        if self.needs_decoder and not info.is_decoder:
            return (
                f"strategy {self.name!r} needs a causal language model; {info.name!r} is a "
                f"{info.model_type} encoder (use 'discriminative' for encoders)"
            )
        return None

    def contract_errors(self) -> list[str]:
        if not self.trains:
            return []
        return [f"it trains but does not implement {method}" for method in ("feature_encoder", "data_collator")
                if getattr(type(self), method) is getattr(Strategy, method)]

    def normalize(self, spec: RunSpec, info: BackboneInfo) -> RunSpec:
        """Clear the axes this strategy ignores for this backbone, so equal runs get one id.

        By default the ``shots`` axis is dropped (only in-context strategies use it).
        """
        return spec.replace(shots=None)

    def prepare_model(self, model: Any, *, tokenizer: Any, task: Task, options: Any) -> Any:
        """Adjust the freshly loaded model before the adapter wraps it (a custom head, say).
        ``options`` is an instance of :attr:`options_class` (``None`` without one); in other hooks,
        ``self.typed_options(spec.strategy_options)`` gives the same.

        A strategy that wraps the model in its own ``torch.nn.Module`` gives the wrapper two
        methods: ``trainable_head_modules()`` (the names of its own head submodules, which every
        adapter trains and saves) and ``transformers_model()`` (the model it wraps)."""
        return model

    def feature_encoder(self, *, task: Task, tokenizer: Any, spec: RunSpec, context: Context) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
        """A batched function (for ``Dataset.map(batched=True)``) from a batch of examples
        (``text_a``, ``text_b``, ``label``, maybe ``rationale``) to model features.

        Required when :attr:`trains`.  The pipeline caches its output per task data, split,
        tokenizer and :meth:`feature_key`.
        """
        raise NotImplementedError(f"strategy {self.name!r} does not train")

    def feature_key(self, spec: RunSpec, context: Context) -> dict[str, Any]:
        """Everything besides the data, the tokenizer and the strategy's name that the features
        depend on; part of the tokenisation cache key."""
        return {"prompt": spec.prompt, "max_seq_length": spec.training.max_seq_length,
                "options": spec.strategy_options, "version": self.features_version}

    def data_collator(self, tokenizer: Any, spec: RunSpec) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """The collator the Trainer uses for the features of :meth:`feature_encoder` (required when
        :attr:`trains`)."""
        raise NotImplementedError(f"strategy {self.name!r} does not train")

    @abc.abstractmethod
    def predict(self, model: Any, *, data: Any, task: Task, tokenizer: Any, spec: RunSpec,
                context: Context) -> Prediction:
        """Predict a label for every example of ``data`` (the evaluation split, a ``datasets.Dataset``)."""


class WorkQueue(Protocol):
    """The driver's queue of runs, as an executor sees it (:class:`stmbench.run.study.WorkQueue`)."""

    def take(self) -> RunSpec | None:
        """Claim and return the next run nobody holds or has finished; ``None`` when none is free now."""

    def done(self, spec: RunSpec, result: Any, predictions: dict[str, Any] | None = None) -> Any:
        """Store a run's outcome and release its claim."""

    def finished(self) -> bool:
        """Nothing left here or held by other workers."""

    def wait(self, seconds: float | None = None) -> None:
        """Pause while other workers hold the remaining runs."""

    @property
    def open(self) -> int:
        """Runs neither taken by this process nor finished."""


class Runner(Protocol):
    """Runs one spec (picklable: it can travel to a worker process) (:class:`stmbench.run.study.Runner`)."""

    def __call__(self, spec: RunSpec) -> tuple[Any, dict[str, Any] | None]:
        """``(result, predictions)`` of one run; never raises for the run's own failures."""

    def failed(self, spec: RunSpec, reason: str) -> Any:
        """The result of a run whose process died."""


class Executor(Plugin):
    """Runs the runs of a study and hands each outcome back to the driver, which stores it.

    The driver's :class:`WorkQueue` hands out runs one at a time (``take()`` claims the next one,
    ``None`` when none is free now); the :class:`Runner` runs one (``run(spec) -> (result,
    predictions)``, in this process, or pickled into a worker process); ``work.done(spec, result,
    predictions)`` stores an outcome; ``run.failed(spec, reason)`` makes the result of a run whose
    process died.  Loop until ``work.finished()``, calling ``work.wait()`` when nothing can be taken
    while other workers hold the remaining runs.  ``options`` were validated against
    :attr:`options_class` before anything ran.
    """

    kind = "executor"

    @abc.abstractmethod
    def execute(self, work: WorkQueue, *, run: Runner, options: Any) -> None:
        """Run every run ``work`` hands out until it is finished."""


__all__ = [
    "Adapter", "Backbone", "BackboneInfo", "Combination", "Executor", "HEADS", "HEAD_BASE", "HEAD_CAUSAL_LM",
    "HEAD_SEQUENCE_CLASSIFICATION", "HEAD_TOKEN_CLASSIFICATION", "Plugin", "Prediction", "Runner", "Strategy",
    "WorkQueue", "build_options", "options_help",
]
