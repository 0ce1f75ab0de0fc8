"""stmbench: is this language model a good backbone for supervised fine-tuning on NLU tasks, and
which way of fine-tuning it works best?

A plugin needs one import: ``from stmbench import hookimpl, Strategy, Prediction, ...`` (the base
classes of :mod:`stmbench.types`, the :class:`~stmbench.context.Context` plugins receive, and
pluggy's markers).  The base classes load lazily, so ``import stmbench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from stmbench.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

#: names re-exported from :mod:`stmbench.types` and :mod:`stmbench.context` (loaded on first use)
_LAZY = {
    **{name: "stmbench.types" for name in (
        "Adapter", "Backbone", "BackboneInfo", "Combination", "Executor", "FunctionGenerator", "Generator", "HEADS", "HEAD_BASE", "HEAD_CAUSAL_LM",
        "HEAD_SEQUENCE_CLASSIFICATION", "HEAD_TOKEN_CLASSIFICATION", "Label", "Plugin", "Prediction", "Runner", "Strategy", "Task",
        "WorkQueue")},
    "Context": "stmbench.context",
    "StmbenchError": "stmbench.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stmbench' has no attribute {name!r}")


__all__ = ["__version__", "hookimpl", "hookspec", *_LAZY]
