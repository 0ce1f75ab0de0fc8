"""The stmbench plugin contract: every hook a plugin may implement, one docstring each.

A plugin is a module (or any object) with functions decorated by ``stmbench.hookimpl`` whose names
are hooks below.  It is found through the entry-point group ``stmbench`` of an installed
distribution, through ``--plugin module.path``, or is one of the built-ins listed in
``stmbench.core.catalogue.DEFAULT_PLUGINS`` (which are loaded the same way).

Three kinds of hooks:

* ``register_hookspecs`` lets a plugin declare hooks of its own, for other plugins to implement.
* **Catalogue hooks** (``register_*``) are handed a ``register`` callback; a plugin calls it once
  per object it contributes.  The core checks the type and refuses duplicate names.
* **Lifecycle hooks** are called for every run, so a plugin can observe or extend training without
  forking the pipeline.

Hook arguments are passed by keyword; an implementation may accept any subset of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from collections.abc import Callable

    from stmbench.store.result import RunResult
    from stmbench.spec.run import RunSpec
    from stmbench.core.metrics import Metric
    from stmbench.core.teacher import Teacher
    from stmbench.core.types import Adapter, Backbone, Executor, Strategy
    from stmbench.tasks.generators import Generator
    from stmbench.tasks.task import Task

PROJECT = "stmbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- the contract itself ----------------------------------------------------------------------


@hookspec(historic=True)
def register_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Declare hooks of your own: ``plugin_manager.add_hookspecs(MyHooks)``.

    Called once for every plugin as it is registered (before the catalogue hooks), so a plugin can
    add hooks that other plugins implement: the built-in ``cot`` strategy declares
    ``generate_rationales`` this way.  Implementations of a hook nobody declared are an error.
    """


# --- catalogue hooks -------------------------------------------------------------------------


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Contribute backbones: ``register(MyBackbone())`` for each :class:`stmbench.core.types.Backbone`.

    A backbone turns a name given to ``--backbones`` into a tokenizer and a model with the head a
    strategy asks for.  A name that no backbone claims goes to the built-in ``hf`` backbone, which
    treats it as a hub id or a local directory.
    """


@hookspec
def register_adapters(register: Callable[[Adapter], None]) -> None:
    """Contribute adapters: ``register(MyAdapter())`` for each :class:`stmbench.core.types.Adapter`.

    An adapter wraps a loaded model for training (full fine-tuning, LoRA, ...) and may add
    keyword arguments to the model's ``from_pretrained`` call (quantisation, for example).
    """


@hookspec
def register_strategies(register: Callable[[Strategy], None]) -> None:
    """Contribute strategies: ``register(MyStrategy())`` for each :class:`stmbench.core.types.Strategy`.

    A strategy decides which model head is loaded, how a task's examples become training features,
    and how predictions are made (answer-word scoring, a classification head, ...).
    """


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Contribute tasks: ``register(task)`` for each :class:`stmbench.core.types.Task`.

    Most tasks are data: ``stmbench.tasks.task.load_task_file(path)`` turns a task YAML file into a
    task object.  Folders given with ``--task-dir`` are registered through this same hook.
    """


@hookspec
def register_generators(register: Callable[[Generator], None]) -> None:
    """Contribute the data generators of synthetic tasks: ``register(MyGenerator())`` for each
    :class:`stmbench.core.types.Generator` (or ``register(FunctionGenerator("name", fn))``).

    A task file's ``generator:`` may only name a generator registered here (by its name, or by its
    ``function`` as ``module:attr``): task files are data and never make stmbench import code.
    """


@hookspec
def register_metrics(register: Callable[[Metric], None]) -> None:
    """Contribute metrics: ``register(MyMetric())`` for each :class:`stmbench.core.metrics.Metric`.

    A metric computes one number from a run's predictions and gold labels.  Runs store the metrics
    their task lists (and the built-ins every run records); the leaderboard computes any registered
    metric that serves a task from the stored predictions, offers it in the page's metric toggle and
    in ``stmbench leaderboard --metric``.  The built-ins (``accuracy``, ``macro_f1``, ``entity_f1``
    and the other token scores) are registered this way.
    """


@hookspec
def register_teachers(register: Callable[[Teacher], None]) -> None:
    """Contribute teachers: ``register(MyTeacher())`` for each :class:`stmbench.core.teacher.Teacher`.

    A teacher writes the rationales that ``cot`` trains on: given requests built from the task's
    teacher prompt (the example and its gold answer), it yields one text per request that explains
    the answer and ends with it.  ``--teacher NAME[KEY=VALUE,...]`` picks one; the built-ins are
    ``hf`` (a causal LM the backbones load), ``openai`` (an OpenAI-compatible server) and ``folder``
    (rationales a user brings, ``--rationales DIR``).
    """


@hookspec
def register_executors(register: Callable[[Executor], None]) -> None:
    """Contribute executors: ``register(MyExecutor())`` for each :class:`stmbench.core.types.Executor`.

    An executor runs the runs that the driver's work queue hands out (in this process, in worker
    processes, on a Ray cluster) with the runner it is given, and hands every outcome back to the
    work queue, which stores it.  See :class:`stmbench.core.types.Executor`.
    """


# --- lifecycle hooks -------------------------------------------------------------------------


@hookspec
def trainer_callbacks(run: RunSpec) -> list[Any] | None:
    """Return extra ``transformers.TrainerCallback`` objects for the Trainer of ``run``.

    Called once per trained run, before the Trainer is built.  Return a list (possibly empty) or
    ``None``.  Use it for loggers, early stopping, or custom progress reporting.
    """


@hookspec
def run_started(run: RunSpec) -> None:
    """Called when ``run`` starts, before its data or model is loaded."""


@hookspec
def run_finished(run: RunSpec, result: RunResult) -> None:
    """Called when ``run`` ends, with the :class:`stmbench.store.result.RunResult` that will be stored
    (``status`` is ``ok`` or ``failed``; ``result.to_dict()`` is the stored JSON).  Result sinks
    (MLflow, W&B, a database) implement this hook.  The result must not be modified: it has already
    been decided what is stored.
    """
