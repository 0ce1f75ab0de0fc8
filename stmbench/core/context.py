"""What a plugin may use of the running stmbench: :class:`Context`.

Every contract method that needs more than its arguments (``Backbone.resolve`` and ``load``,
``check``, ``Adapter.load_kwargs``, ``Strategy.feature_encoder``, ``feature_key`` and ``predict``)
receives one as ``context``.  It is the whole of what a plugin may rely on; the session behind it
(plugin manager, catalogue, caches) is the core's own business and may change.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable
    from pathlib import Path

    from stmbench.core.budget import TokenBudget
    from stmbench.common.settings import Settings
    from stmbench.tasks.task import Task, TaskData


class Context:
    """The settings, data access, cache folder, hooks and logger a plugin may use.

    Built by the core, one per process; plugins never construct one."""

    def __init__(self, *, settings: Settings, task_data: Callable[..., TaskData], hook: Any,
                 names: Callable[[str], list[str]], device: Callable[[], str],
                 eval_budget: Callable[..., TokenBudget], budgets: list[TokenBudget] | None = None,
                 backbone_for: Callable[[str], Any] | None = None):
        self._settings = settings
        self._task_data = task_data
        self._hook = hook
        self._names = names
        self._device = device
        self._eval_budget = eval_budget
        self._budgets = budgets
        self._backbone_for = backbone_for

    def recording_budgets(self, budgets: list[TokenBudget]) -> Context:
        """The same context, but every budget :meth:`eval_budget` plans is appended to ``budgets``
        (the pipeline hands one to a run's ``predict`` and records the budget in its result)."""
        return Context(settings=self._settings, task_data=self._task_data, hook=self._hook, names=self._names,
                       device=self._device, eval_budget=self._eval_budget, budgets=budgets,
                       backbone_for=self._backbone_for)

    @property
    def settings(self) -> Settings:
        """This invocation's :class:`stmbench.common.settings.Settings` (read them; do not change them)."""
        return self._settings

    @property
    def cache_dir(self) -> Path:
        """A folder a plugin may keep files in between runs and invocations (build outputs, exports);
        use a subfolder named after the plugin."""
        return self._settings.cache_dir

    @property
    def device(self) -> str:
        """The device runs use: ``cpu``, ``cuda``, ``cuda:1`` or ``mps``."""
        return self._device()

    @property
    def trust_remote_code(self) -> bool:
        """Whether the user allowed a checkpoint's own Python code (``--trust-remote-code``)."""
        return self._settings.trust_remote_code

    @property
    def hook(self) -> Any:
        """The hooks of every loaded plugin (pluggy's hook relay), to call a hook a plugin declared
        itself: ``context.hook.generate_rationales(task=..., examples=..., run=...)``."""
        return self._hook

    @property
    def logger(self) -> logging.Logger:
        """The logger for plugin messages (``stmbench.core.catalogue``); a module's own logger works too."""
        return logging.getLogger("stmbench.core.catalogue")

    def task_data(self, task: Task, split: str, *, skip_bad_rows: bool = False) -> TaskData:
        """A split of ``task`` (``train``, ``validation`` or ``test``), loaded and validated once per
        process: its ``dataset`` has ``text_a``, ``text_b``, ``label`` (and maybe ``rationale``), or, for
        a task with a tag per token, ``tokens`` and ``tags``."""
        return self._task_data(task, split, skip_bad_rows=skip_bad_rows)

    def names(self, kind: str) -> list[str]:
        """The registered names of one kind (``backbone``, ``adapter``, ``strategy``, ``task``,
        ``executor``), for messages that list what exists."""
        return self._names(kind)

    def load_model(self, name: str, *, head: str, task: Task) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``name`` (a hub id, a folder, a ``.gguf`` file, a registered name)
        through the backbone that serves it, as ``--backbones`` would load it, on no particular device
        (a teacher plugin loads its model this way)."""
        return self._backbone(name).load(name, head=head, task=task, context=self, load_kwargs={})

    def resolve_model(self, name: str) -> Any:
        """The :class:`stmbench.core.types.BackboneInfo` of ``name`` (config only, nothing loaded), or
        a :class:`stmbench.common.errors.StmbenchError` saying why it cannot be found."""
        return self._backbone(name).resolve(name, self)

    def _backbone(self, name: str) -> Any:
        if self._backbone_for is None:
            from stmbench.common.errors import StmbenchError

            raise StmbenchError("this context cannot load models")
        return self._backbone_for(name)

    def eval_budget(self, model: Any, spec: Any, *, full_logits: bool = False) -> TokenBudget:
        """How to batch ``model``'s predictions in run ``spec``: a :class:`stmbench.core.budget.TokenBudget`
        (``budget.batches(lengths)`` gives index batches, longest first, each within the budget of
        padded tokens and ``per_device_eval_batch_size`` rows).  Planned from the device's free
        memory and the model's sizes unless ``--eval-batch-tokens`` is set (``spec`` may be ``None``:
        the default settings); ``full_logits=True``
        when the forward pass projects every position onto the vocabulary (far more memory per
        token).  The run's result records the budget."""
        budget = self._eval_budget(model, spec, full_logits=full_logits)
        if self._budgets is not None:
            self._budgets.append(budget)
        return budget
