"""The public API: every name a plugin (in ``plugins/``, ``examples/`` or a pip package) may import.

``from stmbench import X`` and ``from stmbench.api import X`` give the same object.  Nothing else of
stmbench is public: ``tests/test_contract.py`` fails when ``plugins/`` or ``examples/`` import from any
other module.  Names load on first use (the table below says from where), so listing plugins stays
cheap.

The groups:

- **Markers**: ``hookimpl``, ``hookspec`` (pluggy's, for the project ``stmbench``).
- **Base classes of the catalogue kinds**: ``Backbone``, ``Adapter``, ``Strategy``, ``Task``,
  ``Executor``, ``Generator`` (``FunctionGenerator``), ``Metric``, ``Teacher`` (with ``TeacherOptions``,
  ``TeacherRequest``, ``TeacherAnswer``), and ``Plugin`` (their common fields).
- **What plugins are handed and return**: ``Context``, ``RunSpec``, ``TrainingSettings``,
  ``BackboneInfo``, ``Combination``, ``Prediction``, ``RunResult``, ``Label``, ``WorkQueue``,
  ``Runner``; the model heads ``HEADS`` and ``HEAD_*``.
- **Helpers plugins use**: the token budget of prediction batches (``TokenBudget``, ``as_budget``),
  the model helpers (``PaddingMeter``, ``sorted_batches``, ``pad_batch``, ``model_device``,
  ``keeps_logits``, ``head_modules``, ``transformers_model``, ``choose_pad_token``,
  ``attach_pad_token``, ``IGNORE_INDEX``), hub access that fails clearly offline (``from_pretrained``,
  ``hub_available``, ``offline_reason``), task folders (``load_task_dir``, ``load_task_file``), the
  lm-eval task export (``lm_eval_task_config``, ``write_jsonl``), the answer parsing of rationales
  (``parse_answer``, ``split_rationale``), bounded reads of files from outside
  (``read_untrusted_bytes``), and what a worker process needs
  (``preload_run_modules``, ``RUN_MODULES``, ``pid_alive``, ``tune_host_allocator``: glibc's
  allocator settings for training on a CPU; ``run_rank_here``: one rank of a run whose processes
  another launcher started, as Ray Train does).
- **Errors**: ``StmbenchError`` (a clear one-line message, no traceback), ``UnknownNameError``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> (module, attribute)
_NAMES: dict[str, tuple[str, str]] = {
    # markers
    "hookimpl": ("stmbench.core.hookspecs", "hookimpl"),
    "hookspec": ("stmbench.core.hookspecs", "hookspec"),
    # base classes and what plugins are handed
    **{name: ("stmbench.core.types", name) for name in (
        "Adapter", "Backbone", "BackboneInfo", "Combination", "Executor", "HEADS", "HEAD_BASE", "HEAD_CAUSAL_LM",
        "HEAD_SEQUENCE_CLASSIFICATION", "HEAD_TOKEN_CLASSIFICATION", "Plugin", "Prediction", "Runner", "Strategy",
        "WorkQueue")},
    "Metric": ("stmbench.core.metrics", "Metric"),
    **{name: ("stmbench.core.teacher", name) for name in (
        "Teacher", "TeacherAnswer", "TeacherOptions", "TeacherRequest", "parse_answer", "split_rationale")},
    "Generator": ("stmbench.tasks.generators", "Generator"),
    "FunctionGenerator": ("stmbench.tasks.generators", "FunctionGenerator"),
    "Task": ("stmbench.tasks.task", "Task"),
    "Label": ("stmbench.tasks.task", "Label"),
    "load_task_dir": ("stmbench.tasks.task", "load_task_dir"),
    "load_task_file": ("stmbench.tasks.task", "load_task_file"),
    "Context": ("stmbench.core.context", "Context"),
    "RunSpec": ("stmbench.spec.run", "RunSpec"),
    "TrainingSettings": ("stmbench.spec.training", "TrainingSettings"),
    "RunResult": ("stmbench.store.result", "RunResult"),
    # helpers
    "TokenBudget": ("stmbench.core.budget", "TokenBudget"),
    "as_budget": ("stmbench.core.budget", "as_budget"),
    **{name: ("stmbench.core.modeling", name) for name in (
        "HEAD_MODULES", "IGNORE_INDEX", "PaddingMeter", "attach_pad_token", "choose_pad_token", "head_modules", "keeps_logits",
        "model_device", "pad_batch", "sorted_batches", "transformers_model")},
    "from_pretrained": ("stmbench.common.hub", "from_pretrained"),
    "hub_available": ("stmbench.common.hub", "hub_available"),
    "offline_reason": ("stmbench.common.hub", "offline_reason"),
    "lm_eval_task_config": ("stmbench.tasks.lm_eval", "task_config"),
    "write_jsonl": ("stmbench.tasks.lm_eval", "write_jsonl"),
    "read_untrusted_bytes": ("stmbench.common.untrusted", "read_bytes"),
    "RUN_MODULES": ("stmbench.run.study", "RUN_MODULES"),
    "preload_run_modules": ("stmbench.run.study", "preload"),
    "pid_alive": ("stmbench.run.claims", "pid_alive"),
    "run_rank_here": ("stmbench.run.rank", "run_here"),
    "tune_host_allocator": ("stmbench.common.hostmem", "tune"),
    # errors
    "StmbenchError": ("stmbench.common.errors", "StmbenchError"),
    "UnknownNameError": ("stmbench.common.errors", "UnknownNameError"),
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"stmbench.api has no public name {name!r}; it has: {', '.join(__all__)}")
    module, attribute = _NAMES[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:  # pragma: no cover - what type checkers and readers see
    from stmbench.common.errors import StmbenchError, UnknownNameError
    from stmbench.common.hostmem import tune as tune_host_allocator
    from stmbench.common.hub import from_pretrained, hub_available, offline_reason
    from stmbench.core.context import Context
    from stmbench.core.hookspecs import hookimpl, hookspec
    from stmbench.core.budget import TokenBudget, as_budget
    from stmbench.core.metrics import Metric
    from stmbench.core.teacher import Teacher, TeacherAnswer, TeacherOptions, TeacherRequest, parse_answer, split_rationale
    from stmbench.common.untrusted import read_bytes as read_untrusted_bytes
    from stmbench.core.modeling import (HEAD_MODULES, IGNORE_INDEX, PaddingMeter, attach_pad_token, choose_pad_token,
                                        head_modules, keeps_logits, model_device, pad_batch, sorted_batches,
                                        transformers_model)
    from stmbench.core.types import (HEAD_BASE, HEAD_CAUSAL_LM, HEAD_SEQUENCE_CLASSIFICATION,
                                     HEAD_TOKEN_CLASSIFICATION, HEADS, Adapter, Backbone, BackboneInfo,
                                     Combination, Executor, Plugin, Prediction, Runner, Strategy, WorkQueue)
    from stmbench.run.claims import pid_alive
    from stmbench.run.rank import run_here as run_rank_here
    from stmbench.run.study import RUN_MODULES
    from stmbench.run.study import preload as preload_run_modules
    from stmbench.spec.run import RunSpec
    from stmbench.spec.training import TrainingSettings
    from stmbench.store.result import RunResult
    from stmbench.tasks.generators import FunctionGenerator, Generator
    from stmbench.tasks.lm_eval import task_config as lm_eval_task_config
    from stmbench.tasks.lm_eval import write_jsonl
    from stmbench.tasks.task import Label, Task, load_task_dir, load_task_file
